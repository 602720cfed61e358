"""Session fixtures: the real servers the integration tests talk to, on free ports with temporary data.

Nothing here is a mock: OpenSearch is the distribution assembled from Maven, Triton is the tritonserver from
the pytriton wheel serving the repository rendered for the cpu profile, the adapter is the real app.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from common.config import Settings, load_config
from common.model_facts import ClipFacts, YoloFacts
from localstack.processes import free_port, free_ports, wait_until


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
    from localstack.opensearch_dist import ensure_distribution
    from localstack.opensearch_node import OpenSearchNode

    home = ensure_distribution(settings.cache, settings.opensearch.version)
    http_port, transport_port = free_ports(2)
    with OpenSearchNode(home, tmp_path_factory.mktemp("opensearch"), http_port=http_port,
                        transport_port=transport_port, heap=settings.opensearch.heap) as node:
        yield node


def started_triton(settings: Settings, tmp_path_factory: pytest.TempPathFactory, name: str):
    """A Triton on free ports serving a freshly rendered cpu repository of its own (stopped on exit)."""
    from localstack.triton_server import TritonServer
    from triton_repo.render import render_repository

    work = tmp_path_factory.mktemp(name)
    repo = render_repository(settings, work / "repo", profile="cpu")
    return TritonServer(repo, settings.cache, *free_ports(3), work / "triton.log")


@pytest.fixture(scope="session")
def triton_server(settings: Settings, clip_facts: ClipFacts, yolo_facts: YoloFacts,
                  tmp_path_factory: pytest.TempPathFactory):
    with started_triton(settings, tmp_path_factory, "triton") as server:
        yield server


@pytest.fixture(scope="module")
def second_triton(settings: Settings, clip_facts: ClipFacts, yolo_facts: YoloFacts,
                  tmp_path_factory: pytest.TempPathFactory):
    """Another Triton replica for the module (the fault tests kill it; it is not restarted)."""
    with started_triton(settings, tmp_path_factory, "triton-2") as server:
        yield server


def restart_triton_if_exited(request: pytest.FixtureRequest) -> None:
    """Restarts the session's Triton if it has exited, as `make up`'s supervisor would: one crash must cost one test,
    not every test after it. (Seen in CI before the adapter moved to Triton's HTTP endpoint: 2.51's gRPC frontend
    segfaulted in InferResponseComplete a second after the Triton-killed test restarted it.)"""
    if "triton_server" not in request.fixturenames:
        return
    server = request.getfixturevalue("triton_server")
    if server.proc is None or server.proc.poll() is not None:
        code = None if server.proc is None else server.proc.returncode
        print(f"\nthe session's Triton had exited (code {code}); restarting it", file=sys.stderr)
        server.start()


@pytest.fixture(autouse=True, scope="module")
def _session_triton_alive_for_the_module(request: pytest.FixtureRequest) -> None:
    """Before a module's own module-scoped fixtures (they are set up before any function-scoped one)."""
    restart_triton_if_exited(request)


@pytest.fixture(autouse=True)
def _session_triton_alive(request: pytest.FixtureRequest) -> None:
    restart_triton_if_exited(request)


@pytest.fixture(autouse=True)
def _session_adapter_alive(request: pytest.FixtureRequest) -> None:
    """The same for the session's adapter: a fault test that kills it and fails before restarting it must not fail
    every later test that sends a document."""
    if "adapter_process" not in request.fixturenames:
        return
    adapter = request.getfixturevalue("adapter_process")
    if adapter.proc is None or adapter.proc.poll() is not None:
        print("\nthe session's adapter was not running; starting it", file=sys.stderr)
        adapter.stop()
        adapter.start()


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
        **({"VS_TRITON__ENDPOINTS": json.dumps(settings.triton.endpoints)} if settings.triton.endpoints else {}),
        # secured: the child reads the generated credentials (the adapter its token) from the same run folder
        **({"VS_OPENSEARCH__SECURITY": "true", "VS_RUN_DIR": str(settings.run_path)}
           if settings.opensearch.security else {}),
    }


class AdapterProcess:
    """The real adapter app in its own process; the fault tests kill and restart it."""

    def __init__(self, settings: Settings, log: Path) -> None:
        self.settings = settings
        self.log = log
        self.url = settings.adapter.url
        self.proc: subprocess.Popen | None = None

    def start(self) -> AdapterProcess:
        from localstack.services import adapter_command

        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(adapter_command(), stdout=out, stderr=subprocess.STDOUT,
                                         start_new_session=True, env={**os.environ, **settings_env(self.settings)},
                                         cwd=Path(__file__).resolve().parent.parent)
        wait_until(lambda: httpx.get(f"{self.url}/health", timeout=2).status_code == 200, self.proc, 60,
                   "adapter", self.log)
        return self

    def kill(self) -> None:
        """SIGKILL, as a crash: no graceful shutdown, open connections reset."""
        if self.proc is not None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
            self.proc = None

    def stop(self) -> None:
        from localstack.processes import stop_pid

        if self.proc is not None:
            stop_pid(self.proc.pid)
            self.proc = None


@pytest.fixture(scope="session")
def adapter_process(stack_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AdapterProcess]:
    process = AdapterProcess(stack_settings, tmp_path_factory.mktemp("adapter") / "adapter.log")
    try:
        yield process.start()
    finally:
        process.stop()


@pytest.fixture(scope="session")
def adapter(adapter_process: AdapterProcess) -> str:
    return adapter_process.url


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


@pytest.fixture(scope="module")
def image_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    """A plain HTTP server on 127.0.0.1 for image_url documents: (the folder it serves, its base URL)."""
    import functools
    import http.server
    import threading

    root = tmp_path_factory.mktemp("served")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
