"""The local stack behind `make up` / `make down` / `make status`: OpenSearch, Triton, the adapter and the viewer
(the search page) on 127.0.0.1, started and kept running by the supervisor.

`up` starts the supervisor unless one runs (so a second `make up` is safe), waits until every service answers,
then bootstraps; `down` stops the supervisor, which stops exactly what it started.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from functools import partial

from rich.console import Console

from client.queries import text_query
from common.config import REPO_ROOT, Settings
from common.credentials import SEARCH_USER
from localstack import supervisor
from localstack.opensearch_dist import ensure_distribution
from localstack.processes import stop_pid, wait_until
from localstack.security import ensure_secrets
from localstack.services import health_urls, opensearch_names, run_dir, service_healthy, triton_names

console = Console()


def start_supervisor(settings: Settings) -> subprocess.Popen | None:
    """The supervisor starts (and keeps restarting) the services; None when one already runs."""
    if supervisor.read_pid(run_dir(settings) / supervisor.PID_FILE) is not None:
        return None
    with (run_dir(settings) / "supervisor.log").open("ab") as out:
        return subprocess.Popen([sys.executable, "-m", "localstack.supervisor"], stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True, cwd=REPO_ROOT)


def waithealthy(settings: Settings, proc: subprocess.Popen | None) -> None:
    timeouts = {"adapter": 120.0, "viewer": 60.0}  # each OpenSearch node: 240 s, each Triton replica: 360 s
    run = run_dir(settings)
    for name in health_urls(settings):
        node = name.startswith("opensearch")
        log = run / name / "logs" / "console.log" if node else run / f"{name}.log"
        timeout = 240.0 if node else timeouts.get(name, 360.0)
        with console.status(f"waiting for {name} …"):
            wait_until(partial(service_healthy, settings, name), proc, timeout, name, log)
        console.print(f"{name}: up")


def example_query(settings: Settings) -> str:
    body = json.dumps(text_query("a red circle"))
    o = settings.opensearch
    secured = ""
    if o.security:
        # the password stays in the credentials file (users.vs_search), not on the screen or in shell history
        secured = f"--cacert {o.ca_path} -u {SEARCH_USER}:\"$PASSWORD\" " if o.ca_path else f"-u {SEARCH_USER} "
    return (f"curl -s {secured}-XPOST '{o.url}/{settings.index.name}/_search' "
            f"-H 'Content-Type: application/json' -d '{body}'")


def up(settings: Settings, bootstrap: Callable[[], None] | None = None) -> int:
    """Starts the supervisor (which starts the services), waits for them, then runs `bootstrap` if given."""
    from export.__main__ import ensure_models

    ensure_models(settings)
    ensure_distribution(settings.cache, settings.opensearch.version, secure=settings.opensearch.security)
    if settings.opensearch.security:
        ensure_secrets(settings)  # before anything waits on them: health checks log in, the adapter needs its token
    proc = start_supervisor(settings)
    console.print("supervisor: " + ("started" if proc else "already running"))
    waithealthy(settings, proc)
    if bootstrap is not None:
        bootstrap()
    status(settings)
    console.print("\nTry a neural text query (no model id needed, the search pipeline supplies it):")
    if settings.opensearch.security:
        path = settings.opensearch.credentials_path
        read = f"import json; print(json.load(open('{path}'))['users']['{SEARCH_USER}'])"
        console.print(f'PASSWORD=$(python3 -c "{read}")', highlight=False, soft_wrap=True)
    console.print(example_query(settings), highlight=False, soft_wrap=True)
    console.print(f"\nOr look at the results, boxes drawn: {settings.viewer.url}/?q=a+red+circle", highlight=False)
    return 0


def status(settings: Settings) -> int:
    t, a = settings.triton, settings.adapter
    supervised = {sv["name"]: sv for sv in (supervisor.state(settings) or {}).get("services", [])}
    tritons: list[tuple[str, str | None, str]] = []
    for i, replica in enumerate(triton_names(settings)):
        http, grpc, metrics = t.replica_ports(i)
        tritons += [(f"Triton{' ' + str(i) if i else ''} HTTP", replica, f"http://{t.host}:{http}"),
                    ("  gRPC", None, f"{t.host}:{grpc}"), ("  metrics", None, f"http://{t.host}:{metrics}/metrics")]
    tritons += [("Triton (remote)", None, url) for url in t.endpoints]
    nodes = [(f"OpenSearch{' ' + str(i) if i else ''}", name, settings.opensearch.node_url(i))
             for i, name in enumerate(opensearch_names(settings))]
    rows = [
        *nodes,
        *tritons,
        ("adapter", "adapter", f"http://{a.host}:{a.port}"),
        ("viewer", "viewer", f"{settings.viewer.url}/"),
    ]
    for label, name, where in rows:
        state = ("up" if service_healthy(settings, name) else "down") if name else ""
        sv = supervised.get(name or "")
        restarts = f"restarts {sv['restarts']}" + (f", last exit {sv['last_exit']}" if sv["last_exit"] is not None
                                                    else "") if sv else ""
        console.print(f"  {label:<15} {where:<40} {state:<5} {restarts}")
    console.print(f"  supervisor: {'running' if supervised else 'not running'}; logs: {run_dir(settings)}")
    return 0


def down(settings: Settings) -> int:
    """Stops the supervisor, which stops the services; without one, stops what the pid files name."""
    run = run_dir(settings)
    pid = supervisor.read_pid(run / supervisor.PID_FILE)
    if pid is not None:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and supervisor.pid_alive(pid):
            time.sleep(0.5)
        console.print(f"supervisor: stopped (pid {pid})")
    tritons = [(name, run / f"{name}.pid") for name in triton_names(settings)]
    for name, pid_file in (("viewer", run / "viewer.pid"), ("adapter", run / "adapter.pid"), *tritons,
                           *((name, run / name / "opensearch.pid") for name in opensearch_names(settings))):
        pid = supervisor.read_pid(pid_file)
        if pid is None:
            console.print(f"{name}: not running")
            continue
        stop_pid(pid)
        pid_file.unlink(missing_ok=True)
        console.print(f"{name}: stopped (pid {pid})")
    return 0
