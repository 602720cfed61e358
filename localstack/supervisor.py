"""Keeps the local stack running: starts OpenSearch, Triton, the adapter and the viewer, and restarts whichever
dies.

`make up` starts this as a detached process (`python -m localstack.supervisor`); it launches each service in its
own session, polls them once a second, and relaunches one that exited, with a backoff that doubles while it
keeps failing (so a service that cannot start does not spin). What it sees goes to `supervisor.json` in the run
folder (pid, restarts, last exit) for `make status`; SIGTERM (`make down`) stops the services in reverse order.

A service already running when the supervisor starts (a previous supervisor died) is adopted by its pid rather
than started twice. Each time an OpenSearch node has (re)started and answers, the managed models are deployed again
unless every node serves them, so ingest and neural queries work after a crash without `make bootstrap`.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from bootstrap.redeploy import ensure_deployed
from common.config import Settings, load_config
from localstack.processes import stop_pid
from localstack.services import (
    launch_adapter,
    launch_viewer,
    opensearch_names,
    opensearch_node,
    run_dir,
    service_healthy,
    triton_name,
    triton_server,
)

STATE_FILE = "supervisor.json"
PID_FILE = "supervisor.pid"
HEALTHY_RESET_S = 60.0  # a service up this long has its failure backoff reset
MAX_BACKOFF_S = 60.0


@dataclass
class ServiceState:
    name: str
    pid: int | None = None
    restarts: int = 0
    last_exit: int | None = None
    last_start: float = 0.0
    consecutive_failures: int = 0
    next_start: float = 0.0
    history: list[str] = field(default_factory=list)


@dataclass
class Service:
    """One supervised process: how to launch it (returns the child), where its pid file is, and optionally what
    to do each time it has come up (`ready` says when; `after_ready` runs once per start, in the background)
    and after it is stopped (`after_stop`: what a process killed on its way down can leave behind)."""

    name: str
    launch: Callable[[], subprocess.Popen]
    pid_file: Path
    ready: Callable[[], bool] | None = None
    after_ready: Callable[[], None] | None = None
    after_stop: Callable[[], None] | None = None
    state: ServiceState = field(init=False)
    proc: subprocess.Popen | None = None
    awaiting_ready: bool = False

    def __post_init__(self) -> None:
        self.state = ServiceState(self.name)

    def alive(self) -> bool:
        if self.proc is not None:
            return self.proc.poll() is None
        return self.state.pid is not None and pid_alive(self.state.pid)

    def exit_code(self) -> int | None:
        return self.proc.returncode if self.proc is not None else None


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie child of ours counts as dead
        return os.waitpid(pid, os.WNOHANG)[0] != pid
    except ChildProcessError:
        return True


def read_pid(path: Path) -> int | None:
    try:
        pid = int(path.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
    return pid if pid_alive(pid) else None


def _launch_node(settings: Settings, node: int) -> subprocess.Popen:
    return opensearch_node(settings, node).launch()


def _launch_triton(settings: Settings, replica: int) -> subprocess.Popen:
    return triton_server(settings, replica).launch()


def _release_triton_shm(settings: Settings, replica: int) -> None:
    triton_server(settings, replica).release_orphaned_shm()


def services(settings: Settings) -> list[Service]:
    """The OpenSearch nodes, the local Triton replicas, the adapter, the viewer: in start order. Each node that comes
    up gets the models deployed again (ML Commons serves a remote model only on the nodes it was deployed to)."""
    run = run_dir(settings)

    def redeploy() -> None:
        print(f"supervisor: models after OpenSearch start: {ensure_deployed(settings)}", file=sys.stderr, flush=True)

    return [
        *(Service(name, partial(_launch_node, settings, i), run / name / "opensearch.pid",
                  ready=partial(service_healthy, settings, name), after_ready=redeploy)
          for i, name in enumerate(opensearch_names(settings))),
        *(Service(triton_name(i), partial(_launch_triton, settings, i), run / f"{triton_name(i)}.pid",
                  after_stop=partial(_release_triton_shm, settings, i))
          for i in range(settings.triton.local_replicas)),
        Service("adapter", lambda: launch_adapter(settings), run / "adapter.pid"),
        Service("viewer", lambda: launch_viewer(settings), run / "viewer.pid"),
    ]


class Supervisor:
    def __init__(self, run: Path, supervised: list[Service], poll_s: float = 1.0) -> None:
        self.run = run
        self.services = supervised
        self.poll_s = poll_s
        self.stopping = False

    @classmethod
    def for_stack(cls, settings: Settings) -> Supervisor:
        """The local stack's services, as the config names them."""
        return cls(run_dir(settings), services(settings))

    def write_state(self) -> None:
        state = {"pid": os.getpid(), "updated": time.time(), "services": [asdict(s.state) for s in self.services]}
        tmp = self.run / (STATE_FILE + ".tmp")
        tmp.write_text(json.dumps(state, indent=2))
        tmp.replace(self.run / STATE_FILE)

    def _start(self, service: Service) -> None:
        try:
            service.proc = service.launch()
        except Exception as exc:  # a launch that fails (port taken, missing files) is retried with backoff
            service.proc = None
            self._failed(service, f"launch failed: {exc}")
            return
        service.state.pid = service.proc.pid
        service.state.last_start = time.time()
        service.awaiting_ready = service.after_ready is not None
        service.pid_file.parent.mkdir(parents=True, exist_ok=True)
        service.pid_file.write_text(str(service.proc.pid))

    def _failed(self, service: Service, what: str) -> None:
        s = service.state
        s.consecutive_failures += 1
        # the first failure restarts at once, then 1, 2, 4 … seconds up to MAX_BACKOFF_S
        delay = 0.0 if s.consecutive_failures == 1 else min(MAX_BACKOFF_S, 2.0 ** (s.consecutive_failures - 2))
        s.next_start = time.monotonic() + delay
        s.history = [*s.history[-9:], f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {what}"]
        print(f"supervisor: {service.name} {what}", file=sys.stderr, flush=True)

    def adopt_or_start(self) -> None:
        for service in self.services:
            pid = read_pid(service.pid_file)
            if pid is not None:
                service.state.pid = pid
                service.state.last_start = time.time()
            else:
                self._start(service)
        self.write_state()

    def _check_ready(self, service: Service) -> None:
        if service.awaiting_ready and service.ready is not None and service.ready():
            service.awaiting_ready = False
            assert service.after_ready is not None
            threading.Thread(target=service.after_ready, name=f"{service.name}-ready", daemon=True).start()

    def tick(self) -> None:
        changed = False
        for service in self.services:
            s = service.state
            if service.alive():
                self._check_ready(service)
                if s.consecutive_failures and time.time() - s.last_start > HEALTHY_RESET_S:
                    s.consecutive_failures = 0
                    changed = True
                continue
            if s.pid is not None:  # it was running and is gone
                s.last_exit = service.exit_code()
                s.pid = None
                service.proc = None
                self._failed(service, f"exited (code {s.last_exit})")
                changed = True
            if time.monotonic() >= s.next_start:
                s.restarts += 1
                self._start(service)
                changed = True
        if changed:
            self.write_state()

    def stop_all(self) -> None:
        for service in reversed(self.services):
            if service.state.pid is not None and service.alive():
                stop_pid(service.state.pid, timeout_s=60)
            if service.after_stop is not None:
                service.after_stop()
            service.pid_file.unlink(missing_ok=True)
            service.state.pid = None
        self.write_state()

    def serve(self) -> None:
        def request_stop(*_: Any) -> None:
            self.stopping = True

        signal.signal(signal.SIGTERM, request_stop)
        signal.signal(signal.SIGINT, request_stop)
        (self.run / PID_FILE).write_text(str(os.getpid()))
        self.adopt_or_start()
        try:
            while not self.stopping:
                time.sleep(self.poll_s)
                self.tick()
        finally:
            self.stop_all()
            (self.run / PID_FILE).unlink(missing_ok=True)


def state(settings: Settings) -> dict[str, Any] | None:
    """What the running supervisor last wrote, or None when none runs."""
    run = run_dir(settings)
    if read_pid(run / PID_FILE) is None:
        return None
    try:
        return dict(json.loads((run / STATE_FILE).read_text()))
    except (FileNotFoundError, ValueError):
        return None


def main() -> int:
    Supervisor.for_stack(load_config()).serve()
    return 0


if __name__ == "__main__":
    sys.exit(main())
