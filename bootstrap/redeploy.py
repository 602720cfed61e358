"""After OpenSearch restarts, make sure the managed models are served again, without a person.

ML Commons redeploys models by itself after a restart, but only a few times in a model's lifetime and not
always successfully (its first attempt can fail with "Fetching master key timed out"). The supervisor runs this
once OpenSearch answers after each start: every managed model that is not deployed *and* held by a node is
deployed (waiting for a redeploy already in flight rather than racing it). It creates nothing: a model that
does not exist yet is the bootstrap's job.
"""

from __future__ import annotations

from bootstrap.opensearch_api import DEPLOYED, Cluster, ClusterError, connect
from common.config import Settings


def managed_models(settings: Settings) -> list[str]:
    return [settings.ml_commons.embed_model, settings.ml_commons.analyze_model]


def ensure_deployed(settings: Settings, cluster: Cluster | None = None) -> dict[str, str]:
    """Model name → what was done ("served", "deployed", "absent", or the error)."""
    cluster = cluster or Cluster(connect(settings.opensearch), settings.opensearch.url)
    outcome: dict[str, str] = {}
    for name in managed_models(settings):
        try:
            found = cluster.find_model(name)
            if found is None:
                outcome[name] = "absent"
                continue
            model_id = found["id"]
            if cluster.model_state(model_id) == DEPLOYED and cluster.served_on(model_id):
                outcome[name] = "served"
                continue
            cluster.deploy_model(model_id, name=name)
            outcome[name] = "deployed"
        except ClusterError as exc:
            outcome[name] = f"error: {exc}"
    return outcome
