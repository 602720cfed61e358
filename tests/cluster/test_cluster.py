"""Three secure nodes formed as one cluster (what `make up SECURE=1 NODES=3` starts, through the same launcher), under
faults: a data node killed mid-bulk, then one of two Triton replicas killed mid-bulk.

Run by `make test-cluster`, not by `make test`: three JVMs, two Triton servers and the adapter take minutes to start
on two cores. The nodes are started by `localstack.services.opensearch_node`, the models deployed by the real
reconciler as admin; the adapter requires its token and sends to both Triton replicas. Each bulk is accounted for
document by document (tests/integration/test_nothing_lost.py says how): indexed with its vectors, or dead-lettered
with its image and then replayed.
"""

from __future__ import annotations

import base64
import os
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import psutil
import pytest
from opensearchpy import OpenSearch

from bootstrap.opensearch_api import Cluster, connect
from bootstrap.reconcile import Reconciler
from bootstrap.redeploy import ensure_deployed, managed_models
from client.queries import Filters, image_query, object_query, text_query
from common.config import Settings, load_config
from common.credentials import INGEST_USER, SEARCH_USER
from common.model_facts import ClipFacts
from localstack.opensearch_node import OpenSearchNode, wait_green
from localstack.processes import free_http_and_transport_ports, free_port
from localstack.services import start_cluster
from tests.adapter_metrics import failovers_total
from tests.conftest import AdapterProcess
from tests.integration.test_nothing_lost import _kill_mid_bulk, account, plain_bulk, replay_until_done, shape_docs

pytestmark = pytest.mark.cluster

NODES = 3
BULK = 200  # documents in the bulk during which a node is killed
BASELINE_TAG = "cluster-baseline"


@dataclass
class ClusterStack:
    settings: Settings
    nodes: list[OpenSearchNode]
    adapter: AdapterProcess
    admin: OpenSearch
    cluster: Cluster
    dimension: int  # of the served CLIP's vectors

    def health(self) -> dict[str, Any]:
        return dict(self.admin.cluster.health())

    def hits(self, body: dict) -> list[str]:
        """The ids a query returns, asked as vs_search (the user the README's secure examples use)."""
        searcher = connect(self.settings.opensearch, user=SEARCH_USER)
        response = searcher.search(index=self.settings.index.name, body=body)
        return [hit["_id"] for hit in response["hits"]["hits"]]

    def victim(self) -> OpenSearchNode:
        """A node other than the one the clients talk to (node 0) and than the elected cluster manager: the data node
        whose loss the cluster must absorb without a re-election."""
        manager = self.admin.cat.cluster_manager(format="json")[0]["node"]
        return next(n for n in self.nodes[1:] if n.node_name != manager)


def _shard_copies(stack: ClusterStack, ids: list[str]) -> dict[str, list[dict[str, dict]]]:
    """What every started copy of each shard holds of `ids`: {shard: [{id: vectors of the document}, ...]}, read
    from that copy alone. The vectors come back through the k-NN plugin's derived source, so a copy that indexed a
    document without them shows it."""
    index = stack.settings.index.name
    copies: dict[str, list[dict[str, dict]]] = {}
    for row in stack.admin.cat.shards(index=index, format="json"):
        assert row["state"] == "STARTED", row
        body = {"size": len(ids), "query": {"ids": {"values": ids}},
                "_source": ["global_image_embedding", "detected_objects.object_embedding"]}
        hits = stack.admin.search(index=index, body=body,
                                  preference=f"_shards:{row['shard']}|_only_nodes:{row['node']}")["hits"]["hits"]
        copies.setdefault(row["shard"], []).append({hit["_id"]: hit["_source"] for hit in hits})
    return copies


def _wait_green(admin: OpenSearch, nodes: int, timeout_s: float = 300) -> float:
    started = time.monotonic()
    health = wait_green(admin, nodes, timeout_s)
    assert health["status"] == "green" and health["number_of_nodes"] == nodes, health
    return time.monotonic() - started


@pytest.fixture(scope="module")
def stack(triton_server, second_triton, clip_facts: ClipFacts,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterStack]:
    run = tmp_path_factory.mktemp("cluster-run")
    http, transport = free_http_and_transport_ports(NODES)
    settings = load_config(
        run_dir=str(run),
        opensearch={"security": True, "url": f"http://127.0.0.1:{http}", "transport_port": transport, "nodes": NODES},
        triton={"endpoints": [triton_server.http_url, second_triton.http_url]},
        adapter={"port": free_port(), "url_fetch_allow_private": True},
    )
    started = time.monotonic()
    nodes = start_cluster(settings)
    adapter = AdapterProcess(settings, run / "adapter.log")
    try:
        admin = connect(settings.opensearch)
        rss = [psutil.Process(n.pid).memory_info().rss / 2**20 for n in nodes if n.pid]
        print(f"\n{NODES} secure nodes green in {time.monotonic() - started:.1f} s; JVM RSS per node (MiB): "
              f"{', '.join(f'{r:.0f}' for r in rss)}")
        adapter.start()
        cluster = Cluster(admin, settings.opensearch.url)
        Reconciler(cluster, settings).run(clip_facts)
        yield ClusterStack(settings, nodes, adapter, admin, cluster, clip_facts.embedding_dim)
    finally:
        adapter.stop()
        for node in reversed(nodes):
            node.stop()


@pytest.fixture(scope="module")
def baseline(stack: ClusterStack) -> dict[str, dict]:
    """Queries over a tagged set indexed before any fault: their hits must not change through one."""
    docs = shape_docs(BASELINE_TAG, 30)
    for body in docs.values():
        body["tags"] = [BASELINE_TAG]
    ingest = connect(stack.settings.opensearch, user=INGEST_USER)
    assert not plain_bulk(ingest, stack.settings.index.name, docs)["errors"]
    stack.admin.indices.refresh(index=stack.settings.index.name)
    only = Filters(tags=(BASELINE_TAG,))
    image = base64.b64decode(docs[f"{BASELINE_TAG}-3"]["image_b64"])
    return {"text": text_query("a red circle", k=10, filters=only),
            "objects": object_query("a blue square", k=10, filters=only),
            "image": image_query(image, k=10, filters=only)}


def test_three_secure_nodes_form_one_green_cluster_and_every_node_serves_the_models(stack: ClusterStack) -> None:
    _wait_green(stack.admin, NODES, timeout_s=120)  # the indices the bootstrap just created get their replicas
    health = stack.health()
    assert health["status"] == "green" and health["number_of_nodes"] == NODES == health["number_of_data_nodes"]
    index = stack.settings.index.name
    settings = next(iter(stack.admin.indices.get_settings(index=index).values()))["settings"]["index"]
    assert (settings["number_of_shards"], settings["number_of_replicas"]) == (str(NODES), "1")
    nodes = stack.cluster.model_nodes()
    assert len(nodes) == NODES
    for name in managed_models(stack.settings):
        model = stack.cluster.find_model(name)
        assert model is not None, name
        assert stack.cluster.nodes_holding(model["id"]) == nodes, f"{name} is not deployed on every node"
    for i in range(NODES):  # every node speaks TLS verified by the project's CA and refuses anonymous requests
        url = stack.settings.opensearch.node_url(i)
        assert httpx.get(f"{url}/", verify=stack.settings.opensearch.verify).status_code == 401


def test_a_node_killed_mid_bulk_loses_nothing_and_the_hits_stay_the_same(stack: ClusterStack,
                                                                        baseline: dict[str, dict]) -> None:
    before = {mode: stack.hits(body) for mode, body in baseline.items()}
    assert all(before.values()), before
    victim = stack.victim()
    during: dict[str, list[str]] = {}
    back_after: list[float] = []

    def kill() -> None:
        assert victim.pid is not None
        os.killpg(victim.pid, signal.SIGKILL)
        victim.stop()  # reaps it

    def restart() -> None:
        during.update({mode: stack.hits(body) for mode, body in baseline.items()})
        started = time.monotonic()
        victim.start(300)
        back_after.append(time.monotonic() - started)
        # what the supervisor does each time a node is up again: the models onto the node that lacks them
        outcome = ensure_deployed(stack.settings, stack.cluster)
        assert all(v in ("served", "deployed") for v in outcome.values()), outcome

    docs = shape_docs("node-kill", BULK)
    response = _kill_mid_bulk(stack.admin, stack.settings, stack.adapter.url, docs, kill, restart, 5)
    rejected = [item for item in response["items"] if next(iter(item.values())).get("error")]
    green_s = _wait_green(stack.admin, NODES)
    first = account(stack.admin, stack.settings, docs)
    print(f"\n{victim.node_name} killed mid-bulk of {BULK}: { {k: len(v) for k, v in first.items()} }, "
          f"{len(rejected)} rejected in the bulk response; node back in {back_after[0]:.0f} s, green "
          f"{green_s:.0f} s later")
    assert not rejected, rejected[:3]
    assert not first["lost"] and not first["both"] and not first["permanent"], first
    assert len(first["indexed"]) + len(first["retryable"]) == BULK
    final = replay_until_done(stack.admin, stack.settings, docs)
    assert sorted(final["indexed"]) == sorted(docs), {k: len(v) for k, v in final.items()}
    # the killed node's copies recovered from the others (by files, or by replaying the operations they missed, read
    # from the other copy's _source since the index keeps no _recovery_source; printed below which it was): each copy
    # holds the same documents with the same vectors
    recoveries = stack.admin.cat.recovery(index=stack.settings.index.name, format="json", active_only="false")
    print("peer recoveries (shard, target, files, operations replayed):",
          [(r["shard"], r["target_node"], r["files"], r["translog_ops_recovered"]) for r in recoveries
           if r["type"] == "peer"])
    copies = _shard_copies(stack, sorted(docs))
    assert sorted(len(held) for held in copies.values()) == [2] * NODES, "a primary and a replica of every shard"
    assert sum(len(held[0]) for held in copies.values()) == BULK
    for primary, replica in copies.values():
        assert primary == replica
        for vectors in primary.values():
            assert len(vectors["global_image_embedding"]) == stack.dimension
            assert all(len(o["object_embedding"]) == stack.dimension for o in vectors.get("detected_objects", []))
    assert any(vectors.get("detected_objects") for held in copies.values() for vectors in held[0].values())
    assert during == before, "a query answered differently while a node was down"
    assert {mode: stack.hits(body) for mode, body in baseline.items()} == before
    nodes = stack.cluster.model_nodes()
    for name in managed_models(stack.settings):
        model = stack.cluster.find_model(name)
        assert model is not None and stack.cluster.nodes_holding(model["id"]) == nodes, f"{name} not on every node"


def test_one_of_two_triton_replicas_killed_mid_bulk_loses_nothing(stack: ClusterStack, second_triton) -> None:
    docs = shape_docs("cluster-replica-kill", 40)

    def kill() -> None:
        os.killpg(second_triton.proc.pid, signal.SIGKILL)
        second_triton.proc.wait(10)

    response = _kill_mid_bulk(stack.admin, stack.settings, stack.adapter.url, docs, kill, lambda: None, 0)
    assert not response["errors"], response
    where = account(stack.admin, stack.settings, docs)
    failovers = failovers_total(stack.adapter.url, stack.settings.adapter_token)
    print(f"\none of two Triton replicas killed mid-bulk on {NODES} nodes: { {k: len(v) for k, v in where.items()} }, "
          f"{failovers:.0f} requests re-sent to the other")
    assert sorted(where["indexed"]) == sorted(docs), {k: len(v) for k, v in where.items()}
    assert failovers > 0

