"""The local stack behind `make up` / `make down`: OpenSearch, Triton and the adapter on 127.0.0.1.

Each service runs detached with its pid and log under `<cache>/run/`; `up` leaves a healthy service alone,
so a second `make up` is safe while the stack runs, and `down` stops exactly what `up` started.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
from rich.console import Console

from bootstrap.opensearch_dist import ensure_distribution
from bootstrap.opensearch_node import OpenSearchNode
from bootstrap.processes import StartupError, port_open, stop_pid, wait_until
from bootstrap.triton_server import TritonServer
from common.config import Settings
from triton_repo.render import render_repository

console = Console()


def run_dir(settings: Settings) -> Path:
    path = settings.cache / "run"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _pid(path: Path) -> int | None:
    try:
        pid = int(path.read_text().strip())
        os.kill(pid, 0)
        return pid
    except (FileNotFoundError, ValueError, ProcessLookupError):
        return None


def _healthy(url: str) -> bool:
    try:
        return httpx.get(url, timeout=3).status_code == 200
    except httpx.HTTPError:
        return False


def opensearch_node(settings: Settings) -> OpenSearchNode:
    home = ensure_distribution(settings.cache, settings.opensearch.version)
    return OpenSearchNode(home, run_dir(settings) / "opensearch", http_port=settings.opensearch.http_port,
                          transport_port=settings.opensearch.transport_port, heap=settings.opensearch.heap)


def start_opensearch(settings: Settings) -> str:
    if _healthy(f"{settings.opensearch.url}/_cluster/health"):
        return "already running"
    opensearch_node(settings).start()
    return "started"


def start_triton(settings: Settings) -> str:
    t = settings.triton
    if _healthy(f"http://{t.http_url}/v2/health/ready"):
        return "already running"
    repo = render_repository(settings, run_dir(settings) / "triton_repo")
    server = TritonServer(repo, settings.cache, t.http_port, t.grpc_port, t.metrics_port,
                          run_dir(settings) / "triton.log").start()
    (run_dir(settings) / "triton.pid").write_text(str(server.proc.pid))
    return "started"


def adapter_command() -> list[str]:
    return [sys.executable, "-m", "connectors.adapter.app"]


def start_adapter(settings: Settings) -> str:
    a = settings.adapter
    if _healthy(f"http://{a.host}:{a.port}/health"):
        return "already running"
    if port_open(a.port, a.host):
        raise StartupError(f"port {a.port} is taken by something that is not a healthy adapter")
    log = run_dir(settings) / "adapter.log"
    with log.open("ab") as out:
        proc = subprocess.Popen(adapter_command(), stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                cwd=Path(__file__).resolve().parent.parent)
    try:
        wait_until(lambda: _healthy(f"http://{a.host}:{a.port}/health"), proc, 60, "adapter", log)
    except BaseException:
        stop_pid(proc.pid)
        raise
    (run_dir(settings) / "adapter.pid").write_text(str(proc.pid))
    return "started"


def example_query(settings: Settings) -> str:
    return (f"curl -s -XPOST '{settings.opensearch.url}/{settings.index.name}/_search' "
            "-H 'Content-Type: application/json' -d '{\"query\": {\"neural\": {\"global_image_embedding\": "
            "{\"query_text\": \"a red circle\", \"k\": 5}}}, \"_source\": {\"excludes\": "
            "[\"global_image_embedding\", \"detected_objects.object_embedding\"]}}'")


def up(settings: Settings, bootstrap: bool = True) -> int:
    from export.__main__ import ensure_models

    ensure_models(settings)
    for name, start in (("OpenSearch", start_opensearch), ("Triton", start_triton), ("adapter", start_adapter)):
        with console.status(f"starting {name} …"):
            outcome = start(settings)
        console.print(f"{name}: {outcome}")
    if bootstrap:
        from bootstrap.cli import cmd_bootstrap

        cmd_bootstrap(type("Args", (), {"dry_run": False, "skip_preflight": False})())
    status(settings)
    console.print("\nTry a neural text query (no model id needed, the search pipeline supplies it):")
    console.print(example_query(settings), highlight=False, soft_wrap=True)
    return 0


def status(settings: Settings) -> int:
    t, a = settings.triton, settings.adapter
    rows = [
        ("OpenSearch", settings.opensearch.url, f"{settings.opensearch.url}/_cluster/health"),
        ("Triton HTTP", f"http://{t.http_url}", f"http://{t.http_url}/v2/health/ready"),
        ("Triton gRPC", t.grpc_url, None),
        ("Triton metrics", f"http://{t.host}:{t.metrics_port}/metrics", None),
        ("adapter", f"http://{a.host}:{a.port}", f"http://{a.host}:{a.port}/health"),
    ]
    for name, where, health in rows:
        state = ("up" if _healthy(health) else "down") if health else ""
        console.print(f"  {name:<15} {where:<40} {state}")
    console.print(f"  logs: {run_dir(settings)}")
    return 0


def down(settings: Settings) -> int:
    run = run_dir(settings)
    for name, pid_file in (("adapter", run / "adapter.pid"), ("Triton", run / "triton.pid"),
                           ("OpenSearch", run / "opensearch" / "opensearch.pid")):
        pid = _pid(pid_file)
        if pid is None:
            console.print(f"{name}: not running")
            continue
        stop_pid(pid)
        pid_file.unlink(missing_ok=True)
        console.print(f"{name}: stopped (pid {pid})")
    return 0
