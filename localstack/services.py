"""The services of the local stack and how each is launched: shared by `make up` and the supervisor.

Everything a service writes (pid, log, data, the rendered Triton repository) goes under the run folder.
"""

from __future__ import annotations

import ssl
import subprocess
import sys
from pathlib import Path

import httpx

from common.config import REPO_ROOT, Settings
from common.errors import VisualSearchError
from localstack.opensearch_dist import ensure_distribution
from localstack.opensearch_node import CLUSTER_NAME, OpenSearchNode, wait_green
from localstack.processes import StartupError, port_open
from localstack.security import ensure_secrets, prepare
from localstack.triton_server import TritonServer
from triton_repo.render import render_repository


def run_dir(settings: Settings) -> Path:
    path = settings.run_path
    path.mkdir(parents=True, exist_ok=True)
    return path


def healthy(url: str, auth: tuple[str, str] | None = None, verify: bool | ssl.SSLContext = True) -> bool:
    try:
        return httpx.get(url, timeout=3, auth=auth, verify=verify).status_code == 200
    except httpx.HTTPError:
        return False


def service_healthy(settings: Settings, name: str) -> bool:
    """Whether the service answers its health URL; OpenSearch as admin over verified TLS when it is secured (not yet
    healthy while the credentials do not exist: the first secure start writes them)."""
    url = health_urls(settings)[name]
    if not name.startswith("opensearch"):
        return healthy(url)
    try:
        auth, verify = settings.opensearch.auth(), settings.opensearch.verify
    except VisualSearchError:  # no credentials or CA yet
        return False
    return healthy(url, auth, verify)


def opensearch_name(node: int) -> str:
    """Node 0 is "opensearch" (its data folder and pid keep the names of a one-node stack), the others
    "opensearch-<i>"."""
    return "opensearch" if node == 0 else f"opensearch-{node}"


def opensearch_names(settings: Settings) -> list[str]:
    return [opensearch_name(i) for i in range(settings.opensearch.nodes)]


def opensearch_node(settings: Settings, node: int = 0) -> OpenSearchNode:
    """Local node `node` of the configured cluster; secured (TLS, users, roles) when the config says so, with the
    secrets of the run folder."""
    o = settings.opensearch
    home = ensure_distribution(settings.cache, o.version, secure=o.security)
    peers = {OpenSearchNode.name_for(CLUSTER_NAME, o.http_port + i): o.transport_port + i for i in range(o.nodes)}
    return OpenSearchNode(home, run_dir(settings) / opensearch_name(node), http_port=o.http_port + node,
                          transport_port=o.transport_port + node, heap=o.heap, cluster_name=CLUSTER_NAME,
                          security=prepare(settings) if o.security else None, peers=peers)


def start_cluster(settings: Settings, timeout_s: float = 300) -> list[OpenSearchNode]:
    """Every configured node in the foreground (launched together: a cluster forms only once most of its
    manager-eligible nodes run), returned once the cluster is green with all of them; stopped if it never is."""
    from bootstrap.opensearch_api import connect

    if settings.opensearch.security:
        ensure_secrets(settings)
    nodes = [opensearch_node(settings, i) for i in range(settings.opensearch.nodes)]
    try:
        for node in nodes:
            node.launch()
        for node in nodes:
            node.wait_ready(timeout_s)
        health = wait_green(connect(settings.opensearch), len(nodes), timeout_s)
        if health["status"] != "green" or health["number_of_nodes"] != len(nodes):
            raise StartupError(f"the cluster is not green with {len(nodes)} nodes after {timeout_s:.0f}s: {health}")
    except BaseException:
        for node in reversed(nodes):
            node.stop()
        raise
    return nodes


def triton_name(replica: int) -> str:
    """Local replica 0 is "triton" (its pid, log and repository keep their names), the others "triton-<i>"."""
    return "triton" if replica == 0 else f"triton-{replica}"


def triton_names(settings: Settings) -> list[str]:
    return [triton_name(i) for i in range(settings.triton.local_replicas)]


def triton_server(settings: Settings, replica: int = 0) -> TritonServer:
    """Local replica `replica`, with a repository of its own: rendering one must never rewrite a folder another
    server is loading from."""
    name = triton_name(replica)
    repo = render_repository(settings, run_dir(settings) / f"{name}_repo")
    http, grpc, metrics = settings.triton.replica_ports(replica)
    return TritonServer(repo, settings.cache, http, grpc, metrics, run_dir(settings) / f"{name}.log")


def adapter_command() -> list[str]:
    return [sys.executable, "-m", "connectors.adapter.app"]


def viewer_command() -> list[str]:
    return [sys.executable, "-m", "viewer.app"]


def _launch(settings: Settings, name: str, command: list[str], host: str, port: int) -> subprocess.Popen:
    """One of our own Python services, detached, logging to <run>/<name>.log; refuses a port already taken."""
    if port_open(port, host):
        raise StartupError(f"port {port} is taken by something that is not a healthy {name}")
    with (run_dir(settings) / f"{name}.log").open("ab") as out:
        return subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, cwd=REPO_ROOT)


def launch_adapter(settings: Settings) -> subprocess.Popen:
    return _launch(settings, "adapter", adapter_command(), settings.adapter.host, settings.adapter.port)


def launch_viewer(settings: Settings) -> subprocess.Popen:
    return _launch(settings, "viewer", viewer_command(), settings.viewer.host, settings.viewer.port)


def health_urls(settings: Settings) -> dict[str, str]:
    t, a, v = settings.triton, settings.adapter, settings.viewer
    tritons = {triton_name(i): f"http://{t.host}:{t.replica_ports(i)[0]}/v2/health/ready"
               for i in range(t.local_replicas)}
    nodes = {opensearch_name(i): f"{settings.opensearch.node_url(i)}/_cluster/health"
             for i in range(settings.opensearch.nodes)}
    return {**nodes, **tritons,
            "adapter": f"http://{a.host}:{a.port}/health", "viewer": f"{v.url}/health"}
