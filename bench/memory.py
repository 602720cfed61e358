"""Resident memory of the stack's processes, sampled in the background while the other stages load it.

Triton's figure includes its python-backend stubs (one process per model). RSS double-counts pages the
processes share (the stubs' shared-memory regions, libraries); PSS splits them fairly, so both are kept.
OpenSearch reports its JVM heap from `_nodes/stats`.
"""

from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from bench.context import Context
from bench.stats import summary
from common.config import Settings

MB = 1024 * 1024


def _pid_from(path: Path) -> int | None:
    with contextlib.suppress(FileNotFoundError, ValueError):
        pid = int(path.read_text().strip())
        if psutil.pid_exists(pid):
            return pid
    return None


def _listener(port: int) -> int | None:
    with contextlib.suppress(psutil.AccessDenied):
        for conn in psutil.net_connections("tcp"):
            if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port and conn.pid:
                return conn.pid
    return None


def stack_pids(s: Settings) -> dict[str, int]:
    """tritonserver, adapter and OpenSearch: from `make up`'s pid files, else whoever listens on the port."""
    run = s.cache / "run"
    found = {
        "triton": _pid_from(run / "triton.pid") or _listener(s.triton.http_port),
        "adapter": _pid_from(run / "adapter.pid") or _listener(s.adapter.port),
        "opensearch": _pid_from(run / "opensearch" / "opensearch.pid") or _listener(s.opensearch.http_port),
    }
    return {name: pid for name, pid in found.items() if pid is not None}


def _tree(pid: int, children: bool) -> list[psutil.Process]:
    proc = psutil.Process(pid)
    return [proc, *(proc.children(recursive=True) if children else [])]


def _rss_pss(procs: list[psutil.Process]) -> tuple[float, float]:
    rss = pss = 0.0
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            info = proc.memory_full_info()
            rss += info.rss
            pss += getattr(info, "pss", info.rss)
    return rss / MB, pss / MB


def _stub_model(proc: psutil.Process) -> str | None:
    """The model a python-backend stub serves (its first argument is `<repo>/<model>/<version>/model.py`)."""
    with contextlib.suppress(psutil.Error, IndexError):
        script = Path(proc.cmdline()[1])
        if script.name == "model.py":
            return script.parent.parent.name
    return None


@dataclass
class MemorySampler:
    ctx: Context
    interval_s: float = 2.0
    samples: dict[str, list[float]] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def sample(self) -> None:
        pids = stack_pids(self.ctx.settings)
        for name, pid in pids.items():
            with contextlib.suppress(psutil.Error):
                rss, pss = _rss_pss(_tree(pid, children=name == "triton"))
                self.samples.setdefault(f"{name}_rss_mb", []).append(rss)
                self.samples.setdefault(f"{name}_pss_mb", []).append(pss)
                if name == "triton":
                    procs = _tree(pid, children=True)
                    self.samples.setdefault("triton_processes", []).append(len(procs))
                    for proc in procs[1:]:
                        model = _stub_model(proc)
                        if model:
                            self.samples.setdefault(f"triton_stub_{model}_pss_mb", []).append(_rss_pss([proc])[1])
        with contextlib.suppress(Exception):
            nodes = self.ctx.cluster.request("GET", "/_nodes/stats/jvm")["nodes"]
            heap = sum(n["jvm"]["mem"]["heap_used_in_bytes"] for n in nodes.values())
            heap_max = sum(n["jvm"]["mem"]["heap_max_in_bytes"] for n in nodes.values())
            self.samples.setdefault("opensearch_heap_used_mb", []).append(heap / MB)
            self.samples.setdefault("opensearch_heap_max_mb", []).append(heap_max / MB)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.sample()

    def __enter__(self) -> MemorySampler:
        self.sample()
        self._thread = threading.Thread(target=self._loop, name="memory-sampler", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.sample()

    def result(self) -> dict[str, dict[str, float | int]]:
        return {name: summary(values, 1) for name, values in sorted(self.samples.items())}


def snapshot(ctx: Context) -> dict[str, dict[str, float | int]]:
    """One reading (e.g. idle, before the load starts)."""
    sampler = MemorySampler(ctx)
    sampler.sample()
    return sampler.result()
