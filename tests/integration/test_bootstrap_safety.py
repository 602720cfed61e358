"""The bootstrap against a real OpenSearch node: concurrent runs, models undeployed by hand, and a restart.

ML Commons registers and deploys remote models without calling the connector's endpoint, so no adapter or
Triton is needed here (the preflight is skipped). The objects get names of their own (`safety-*`) so that
they never meet the ones the stack tests create on the same node, and the ML Commons cluster settings are
put back as they were when the module ends.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bootstrap import desired
from bootstrap.deploy import ModelDeployer
from bootstrap.lock import LOCK_ID, LOCK_INDEX, bootstrap_lock
from bootstrap.opensearch_api import Cluster, connect
from bootstrap.reconcile import Reconciler
from common.config import Settings, load_config
from common.model_facts import ClipFacts

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
NAMES = {"ml_commons": {"model_group": "safety-group", "embed_model": "safety-embed",
                        "analyze_model": "safety-analyze"},
         "index": {"name": "safety-images", "dead_letter": "safety-images-failed",
                   "ingest_pipeline": "safety-ingest", "search_pipeline": "safety-search"}}


def safety_settings(url: str) -> Settings:
    return load_config(opensearch={"url": url}, **NAMES)


def safety_env(url: str) -> dict[str, str]:
    """The same config for a child process, as VS_* overrides."""
    env = {**os.environ, "VS_OPENSEARCH__URL": url}
    for section, values in NAMES.items():
        for key, value in values.items():
            env[f"VS_{section.upper()}__{key.upper()}"] = value
    return env


def run_cli(url: str, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cli", "bootstrap", "--skip-preflight", *args],
                          cwd=ROOT, env=safety_env(url), capture_output=True, text=True, timeout=timeout)


def count_named(cluster: Cluster, kind: str, name: str) -> int:
    return len(cluster.search_ml(kind, name))


def assert_deployed(cluster: Cluster, model_name: str) -> None:
    model = cluster.find_model(model_name)
    assert model is not None, f"no model {model_name}"
    assert cluster.get_model(model["id"])["model_state"] == "DEPLOYED"
    assert cluster.nodes_holding(model["id"]), f"{model_name} is recorded DEPLOYED but no node serves it"


def restore_ml_settings(cluster: Cluster, before: dict, settings: Settings) -> None:
    cluster.put_persistent_settings({key: before.get(key) for key in desired.cluster_settings(settings)})


@pytest.fixture(scope="module")
def shared_node(opensearch_node) -> Iterator[tuple[Cluster, Settings]]:
    settings = safety_settings(opensearch_node.url)
    cluster = Cluster(connect(settings.opensearch), settings.opensearch.url)
    before = cluster.persistent_settings()
    yield cluster, settings
    restore_ml_settings(cluster, before, settings)


def test_two_bootstraps_at_once_create_every_object_once(shared_node, tmp_path: Path):
    cluster, settings = shared_node
    url = settings.opensearch.url
    # Hold the lock while both start, so that both are surely running (and waiting) when it frees: then they
    # contend for real, whatever their start-up times on a loaded machine.
    gate = bootstrap_lock(cluster, owner="test-gate", wait_s=0).acquire()
    logs = [tmp_path / f"runner-{i}.log" for i in range(2)]
    runners = []
    for log in logs:
        with log.open("w") as out:
            runners.append(subprocess.Popen(
                [sys.executable, "-m", "cli", "bootstrap", "--skip-preflight"], cwd=ROOT,
                env={**safety_env(url), "PYTHONUNBUFFERED": "1"}, stdout=out, stderr=subprocess.STDOUT, text=True))
    try:
        deadline = time.monotonic() + 120
        while not all("test-gate" in log.read_text() for log in logs):
            assert time.monotonic() < deadline, "\n".join(log.read_text() for log in logs)
            assert all(r.poll() is None for r in runners), "\n".join(log.read_text() for log in logs)
            time.sleep(0.5)
    finally:
        gate.release()
    codes = [r.wait(600) for r in runners]
    report = "\n".join(f"--- {log.name}\n{log.read_text()}" for log in logs)
    assert codes == [0, 0], report
    mlc = settings.ml_commons
    assert count_named(cluster, "model_groups", mlc.model_group) == 1, report
    for name in (mlc.embed_model, mlc.analyze_model):
        assert count_named(cluster, "connectors", name) == 1, report
        assert count_named(cluster, "models", name) == 1, report
        assert_deployed(cluster, name)
    assert cluster.get_document(LOCK_INDEX, LOCK_ID) is None, "the lock was not released"

    third = run_cli(url, "--dry-run")
    assert third.returncode == 0, third.stderr
    assert "0 change(s)" in third.stdout, third.stdout


def test_a_held_lock_keeps_a_second_bootstrap_waiting_then_lets_it_run(shared_node):
    cluster, settings = shared_node
    with bootstrap_lock(cluster, owner="test-holder", wait_s=0):
        refused = run_cli(settings.opensearch.url, "--lock-wait", "3")
    assert refused.returncode == 2
    assert "test-holder" in refused.stdout + refused.stderr
    again = run_cli(settings.opensearch.url)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "0 change(s)" in again.stdout


def test_model_undeployed_by_hand_is_deployed_again(shared_node, clip_facts: ClipFacts):
    cluster, settings = shared_node
    name = settings.ml_commons.embed_model
    model = cluster.find_model(name)
    assert model is not None
    ModelDeployer(cluster).undeploy(model["id"])
    assert not cluster.nodes_holding(model["id"])

    with bootstrap_lock(cluster):
        plan = Reconciler(cluster, settings).run(clip_facts)
    steps = {f"{s.kind}:{s.name}": s for s in plan.steps}
    assert steps[f"model:{name}"].action == "update", [str(s) for s in plan.steps]
    assert steps[f"model:{name}"].id == model["id"]  # the same model, deployed again
    assert [str(s) for s in plan.changes] == [str(steps[f"model:{name}"])]
    assert_deployed(cluster, name)


def test_restart_with_data_kept_then_bootstrap_leaves_every_model_deployed(settings: Settings,
                                                                           tmp_path_factory: pytest.TempPathFactory):
    """`make down` + `make up` with data kept: ML Commons' own redeploy races the bootstrap (measured on
    2.19.1: it may fail with "Fetching master key timed out" and leave the model stuck); the bootstrap must
    still end with every model deployed and exit 0, and the next one must find nothing to do."""
    from localstack.opensearch_dist import ensure_distribution
    from localstack.opensearch_node import OpenSearchNode
    from localstack.processes import free_ports

    home = ensure_distribution(settings.cache, settings.opensearch.version)
    http_port, transport_port = free_ports(2)
    node = OpenSearchNode(home, tmp_path_factory.mktemp("restart-node"), http_port=http_port,
                          transport_port=transport_port, heap=settings.opensearch.heap)
    with node:
        first = run_cli(node.url)
        assert first.returncode == 0, first.stdout + first.stderr
        node.stop()
        node.start()
        after = run_cli(node.url)  # at once, as `make up` does
        log = (node.logs_dir / f"{node.cluster_name}.log").read_text(errors="replace")
        print(f"ML Commons after the restart: {log.count('Fetching master key timed out')} master-key timeout(s), "
              f"{log.count('Duplicate deploy model task')} duplicate deploy(s)\n{after.stdout}")
        assert after.returncode == 0, after.stdout + after.stderr
        cluster = Cluster(connect(safety_settings(node.url).opensearch), node.url)
        for name in (NAMES["ml_commons"]["embed_model"], NAMES["ml_commons"]["analyze_model"]):
            assert_deployed(cluster, name)
        again = run_cli(node.url, "--dry-run")
        assert "0 change(s)" in again.stdout, again.stdout
