"""One OpenSearch node beside a cluster of several, on the same machine: start time, memory per node, bulk ingest.

Each cluster is started for this stage only (free ports, a temporary run folder, the launcher `make up NODES=N` uses,
security as the stack has it), bootstrapped by the real reconciler against the running stack's adapter and Triton,
then sent the same generated images through the project's streaming client. Ingest is bound by the models (one
Triton on the same cores), so more nodes buy availability and room for the index, not speed here; the figures say
what the extra JVMs cost.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil

from bench.bigbulk import small_jpegs
from bench.context import Context
from bootstrap.opensearch_api import Cluster
from bootstrap.opensearch_api import connect as os_connect
from bootstrap.reconcile import Reconciler
from client.bulk import Doc, bulk_index
from common import contract
from common.config import Settings, load_config
from localstack.opensearch_node import OpenSearchNode
from localstack.processes import free_http_and_transport_ports
from localstack.services import start_cluster


def cluster_settings(ctx: Context, nodes: int, run: Path) -> Settings:
    """The stack's config with a cluster of `nodes` of its own: its own ports and run folder, the same adapter."""
    http, transport = free_http_and_transport_ports(nodes)
    o = ctx.settings.opensearch
    return load_config(
        run_dir=str(run),
        opensearch={"url": f"http://127.0.0.1:{http}", "transport_port": transport, "nodes": nodes,
                    "security": o.security, "heap": o.heap},
        adapter={**ctx.settings.adapter.model_dump(), "token": ctx.settings.adapter_token},
        triton=ctx.settings.triton.model_dump(),
    )


def _rss_mib(nodes: list[OpenSearchNode]) -> list[float]:
    return [round(psutil.Process(n.pid).memory_info().rss / 2**20) for n in nodes if n.pid is not None]


def measure(ctx: Context, nodes: int, docs: list[tuple[str, str]], progress: Callable[[str], None]) -> dict[str, Any]:
    run = Path(tempfile.mkdtemp(prefix=f"bench-cluster-{nodes}-"))
    started: list[OpenSearchNode] = []
    try:
        settings = cluster_settings(ctx, nodes, run)
        progress(f"{nodes} node(s): starting")
        t0 = time.perf_counter()
        started = start_cluster(settings)
        start_s = time.perf_counter() - t0
        idle = _rss_mib(started)
        progress(f"{nodes} node(s): bootstrap")
        client = os_connect(settings.opensearch)
        Reconciler(Cluster(client, settings.opensearch.url), settings).run(ctx.clip)
        progress(f"{nodes} node(s): {len(docs)} images")
        t0 = time.perf_counter()
        outcome = bulk_index(client, settings.index.name,
                             [Doc(i, {"image_id": i, contract.IMAGE_FIELD: b}) for i, b in docs],
                             label=f"bench: {nodes} node(s)")
        seconds = time.perf_counter() - t0
        client.indices.refresh(index=settings.index.name)
        return {"nodes": nodes, "start_to_green_s": round(start_s, 1), "rss_mib_idle": idle,
                "rss_mib_after_ingest": _rss_mib(started), "images": len(docs), "seconds": round(seconds, 1),
                "images_per_s": round(len(docs) / seconds, 2),
                "indexed": client.count(index=settings.index.name)["count"], "item_retries": outcome.retries,
                "shards": settings.index.shards, "replicas": settings.index.replicas}
    finally:
        for node in reversed(started):
            node.stop()
        shutil.rmtree(run, ignore_errors=True)


def run(ctx: Context, sizes: list[int], images: int, progress: Callable[[str], None]) -> dict[str, Any]:
    docs = small_jpegs(images)
    rows = [measure(ctx, n, docs, progress) for n in sizes]
    one = rows[0]
    for row in rows:
        row["images_per_s_x_first"] = round(row["images_per_s"] / one["images_per_s"], 2)
        row["start_x_first"] = round(row["start_to_green_s"] / one["start_to_green_s"], 2)
    return {"rows": rows, "security": ctx.settings.opensearch.security}
