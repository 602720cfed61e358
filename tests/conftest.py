"""Session fixtures: the real servers the integration tests talk to, on free ports with temporary data.

Nothing here is a mock: OpenSearch is the distribution assembled from Maven, Triton is the tritonserver from
the pytriton wheel serving the repository rendered for the cpu profile, the adapter is the real app.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from bootstrap.processes import free_port, wait_until
from common.config import Settings, load_config
from common.model_facts import ClipFacts, YoloFacts


@pytest.fixture(scope="session")
def settings() -> Settings:
    return load_config()


@pytest.fixture(scope="session")
def clip_facts(settings: Settings) -> ClipFacts:
    from export.mobileclip import ensure_clip

    return ensure_clip(settings)


@pytest.fixture(scope="session")
def yolo_facts(settings: Settings) -> YoloFacts:
    from export.yolo import ensure_yolo

    return ensure_yolo(settings)


@pytest.fixture(scope="session")
def opensearch_node(settings: Settings, tmp_path_factory: pytest.TempPathFactory):
    from bootstrap.opensearch_dist import ensure_distribution
    from bootstrap.opensearch_node import OpenSearchNode

    home = ensure_distribution(settings.cache, settings.opensearch.version)
    with OpenSearchNode(home, tmp_path_factory.mktemp("opensearch"), http_port=free_port(),
                        transport_port=free_port(), heap=settings.opensearch.heap) as node:
        yield node


@pytest.fixture(scope="session")
def triton_server(settings: Settings, clip_facts: ClipFacts, yolo_facts: YoloFacts,
                  tmp_path_factory: pytest.TempPathFactory):
    from bootstrap.triton_server import TritonServer
    from triton_repo.render import render_repository

    work = tmp_path_factory.mktemp("triton")
    repo = render_repository(settings, work / "repo", profile="cpu")
    with TritonServer(repo, settings.cache, free_port(), free_port(), free_port(), work / "triton.log") as server:
        yield server


@pytest.fixture(scope="session")
def stack_settings(opensearch_node, triton_server) -> Settings:
    """The config as the test stack sees it: same file, the servers' free ports."""
    adapter_port = free_port()
    return load_config(
        opensearch={"url": opensearch_node.url},
        triton={"http_port": triton_server.http_port, "grpc_port": triton_server.grpc_port,
                "metrics_port": triton_server.metrics_port},
        # the tests serve image_url documents from 127.0.0.1; refusal of private URLs is unit-tested
        adapter={"port": adapter_port, "url_fetch_allow_private": True},
    )


def settings_env(settings: Settings) -> dict[str, str]:
    """Environment overrides that make a child process load the same config as `settings`."""
    return {
        "VS_OPENSEARCH__URL": settings.opensearch.url,
        "VS_TRITON__HTTP_PORT": str(settings.triton.http_port),
        "VS_TRITON__GRPC_PORT": str(settings.triton.grpc_port),
        "VS_TRITON__METRICS_PORT": str(settings.triton.metrics_port),
        "VS_ADAPTER__PORT": str(settings.adapter.port),
        "VS_ADAPTER__URL_FETCH_ALLOW_PRIVATE": str(settings.adapter.url_fetch_allow_private).lower(),
    }


@pytest.fixture(scope="session")
def adapter(stack_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    from bootstrap.processes import stop_pid
    from bootstrap.stack import adapter_command

    log = tmp_path_factory.mktemp("adapter") / "adapter.log"
    url = stack_settings.adapter.url
    with log.open("ab") as out:
        proc = subprocess.Popen(adapter_command(), stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                env={**os.environ, **settings_env(stack_settings)},
                                cwd=Path(__file__).resolve().parent.parent)
    try:
        wait_until(lambda: httpx.get(f"{url}/health", timeout=2).status_code == 200, proc, 60, "adapter", log)
        yield url
    finally:
        stop_pid(proc.pid)


@pytest.fixture(scope="session")
def cluster(stack_settings: Settings):
    from bootstrap.opensearch_api import Cluster, connect

    return Cluster(connect(stack_settings.opensearch), stack_settings.opensearch.url)


@pytest.fixture(scope="session")
def bootstrapped(cluster, stack_settings: Settings, adapter: str, clip_facts: ClipFacts):
    """The first bootstrap of the test cluster; its plan (every step a create/update)."""
    from bootstrap.reconcile import Reconciler

    return Reconciler(cluster, stack_settings).run(clip_facts)


@pytest.fixture(scope="session")
def os_client(stack_settings: Settings):
    from bootstrap.opensearch_api import connect

    return connect(stack_settings.opensearch)


@pytest.fixture(scope="session")
def triton(triton_server):
    import tritonclient.http as http

    return http.InferenceServerClient(triton_server.http_url)
