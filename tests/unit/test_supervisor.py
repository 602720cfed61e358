"""The supervisor's restart logic on tiny real processes (no servers): restart, backoff, adoption, stop."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from localstack import supervisor
from localstack.supervisor import Service, Supervisor


def sleeper() -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)


def crasher() -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"], start_new_session=True)


def make(tmp_path: Path, *services: Service) -> Supervisor:
    return Supervisor(tmp_path, list(services), poll_s=0.01)


def test_a_dead_service_is_restarted_and_counted(tmp_path):
    service = Service("svc", sleeper, tmp_path / "svc.pid")
    sup = make(tmp_path, service)
    sup.adopt_or_start()
    first = service.state.pid
    os.killpg(first, signal.SIGKILL)
    service.proc.wait(5)
    sup.tick()
    assert service.state.restarts == 1 and service.state.last_exit == -signal.SIGKILL
    assert service.state.pid not in (None, first) and service.alive()
    assert json.loads((tmp_path / supervisor.STATE_FILE).read_text())["services"][0]["restarts"] == 1
    assert int((tmp_path / "svc.pid").read_text()) == service.state.pid
    sup.stop_all()
    assert not service.alive() and not (tmp_path / "svc.pid").exists()


def test_a_service_that_keeps_failing_backs_off(tmp_path):
    service = Service("bad", crasher, tmp_path / "bad.pid")
    sup = make(tmp_path, service)
    sup.adopt_or_start()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and service.state.consecutive_failures < 3:
        sup.tick()
        time.sleep(0.05)
    assert service.state.consecutive_failures >= 3
    # the third failure waits 2 s before the next start: ticking now starts nothing
    restarts = service.state.restarts
    for _ in range(10):
        sup.tick()
    assert service.state.restarts == restarts
    assert service.state.next_start - time.monotonic() > 1


def test_a_running_service_is_adopted_not_started_twice(tmp_path):
    proc = sleeper()
    (tmp_path / "svc.pid").write_text(str(proc.pid))
    launched = []
    service = Service("svc", lambda: launched.append(1) or sleeper(), tmp_path / "svc.pid")
    sup = make(tmp_path, service)
    sup.adopt_or_start()
    assert not launched and service.state.pid == proc.pid and service.alive()
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(5)
    sup.tick()
    assert launched == [1] and service.state.restarts == 1
    sup.stop_all()


def test_after_ready_runs_once_per_start(tmp_path):
    calls = []
    service = Service("svc", sleeper, tmp_path / "svc.pid", ready=lambda: True, after_ready=lambda: calls.append(1))
    sup = make(tmp_path, service)
    sup.adopt_or_start()
    for _ in range(3):
        sup.tick()
    time.sleep(0.2)
    assert calls == [1]
    os.killpg(service.state.pid, signal.SIGKILL)
    service.proc.wait(5)
    for _ in range(3):
        sup.tick()
    time.sleep(0.2)
    assert calls == [1, 1]
    sup.stop_all()
