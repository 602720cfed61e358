"""Small helpers shared by the launchers: free ports, waiting for a URL, stopping a process group."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from common.errors import VisualSearchError


class LocalStackError(VisualSearchError):
    """The local stack could not be built, started or stopped."""


class StartupError(LocalStackError):
    """A server did not come up; the message carries the tail of its log."""


def free_ports(count: int) -> list[int]:
    """`count` distinct free ports. They are held open together while chosen: the kernel may give a port just
    released to the next bind, so two separate `free_port()` calls can return the same one (a Triton given one port
    for HTTP and gRPC then refuses to start)."""
    with contextlib.ExitStack() as held:
        socks = [held.enter_context(socket.socket()) for _ in range(count)]
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in socks]


def free_port() -> int:
    return free_ports(1)[0]


def free_consecutive_ports(count: int, low: int = 20000, high: int = 60000) -> int:
    """The first of `count` consecutive free ports (a local cluster's node i listens on base + i)."""
    for base in random.sample(range(low, high - count), 200):
        if all(_bindable(base + i) for i in range(count)):
            return base
    raise LocalStackError(f"found no {count} consecutive free ports between {low} and {high}")


def free_http_and_transport_ports(nodes: int) -> tuple[int, int]:
    """First ports of two disjoint free ranges of `nodes` ports: a local cluster's HTTP and transport ports."""
    http = free_consecutive_ports(nodes)
    while True:
        transport = free_consecutive_ports(nodes)
        if abs(http - transport) >= nodes:
            return http, transport


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def log_tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log written)"


def wait_until(ready: Callable[[], bool], proc: subprocess.Popen | None, timeout_s: float, what: str,
               log: Path) -> None:
    """Polls `ready` until it holds; fails early (with the log tail) when the process dies."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise StartupError(f"{what} exited with code {proc.returncode} while starting. "
                               f"Log {log}:\n{log_tail(log)}")
        try:
            if ready():
                return
        except Exception:
            pass
        time.sleep(0.5)
    raise StartupError(f"{what} not ready after {timeout_s:.0f}s. Log {log}:\n{log_tail(log)}")


def stop_pid(pid: int, timeout_s: float = 30) -> None:
    """SIGTERM the process group, then SIGKILL if it lingers (servers spawn children: stubs, JVM)."""
    for sig, wait in ((signal.SIGTERM, timeout_s), (signal.SIGKILL, 5)):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return
        except PermissionError:
            os.kill(pid, sig)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
                # reap if it is our child
                try:
                    if os.waitpid(pid, os.WNOHANG)[0] == pid:
                        return
                except ChildProcessError:
                    pass
            except ProcessLookupError:
                return
            time.sleep(0.2)
