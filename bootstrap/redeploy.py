"""After OpenSearch restarts, make sure the managed models are served again, without a person.

ML Commons redeploys models by itself after a restart, but only a few times in a model's lifetime and not
always successfully (its first attempt can fail with "Fetching master key timed out"). The supervisor runs this
once OpenSearch answers after each start: every managed model that is not deployed *and* held by a node is
deployed (waiting for a redeploy already in flight rather than racing it). It creates nothing: a model that
does not exist yet is the bootstrap's job.
"""

from __future__ import annotations

import time

from bootstrap.deploy import ModelDeployer, is_deployed
from bootstrap.lock import bootstrap_lock
from bootstrap.opensearch_api import Cluster, ClusterError, cluster_for
from common.config import Settings


def managed_models(settings: Settings) -> list[str]:
    return [settings.ml_commons.embed_model, settings.ml_commons.analyze_model]


def ensure_deployed(settings: Settings, cluster: Cluster | None = None, timeout_s: float = 600,
                    pause_s: float = 5) -> dict[str, str]:
    """Model name → what was done ("already deployed", "deployed", "absent", or the last error). Right after a restart
    ML Commons answers 500 until its system indices are ready, so failed rounds are repeated until `timeout_s`."""
    cluster = cluster or cluster_for(settings.opensearch)
    deadline = time.monotonic() + timeout_s
    while True:
        outcome: dict[str, str] = {}
        try:
            with bootstrap_lock(cluster):  # never two deploys of one model at once (a bootstrap may be running)
                for name in managed_models(settings):
                    outcome[name] = _ensure_one(cluster, name)
        except ClusterError as exc:
            outcome["lock"] = f"error: {exc}"
        if not any(v.startswith("error") for v in outcome.values()) or time.monotonic() > deadline:
            return outcome
        time.sleep(pause_s)


def _ensure_one(cluster: Cluster, name: str) -> str:
    try:
        found = cluster.find_model(name)
        if found is None:
            return "absent"
        model_id = found["id"]
        if is_deployed(cluster, model_id, found.get("model_state", "")):
            return "already deployed"
        ModelDeployer(cluster).deploy(model_id, name=name)
        return "deployed"
    except ClusterError as exc:
        return f"error: {exc}"
