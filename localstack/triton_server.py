"""Runs the embedded Triton (the `tritonserver` binary and python backend from the nvidia-pytriton wheel).

Two facts (docs/design.md#facts) shape this file: the python stub must run inside the project's venv (numpy < 2,
our packages importable), and it needs the shared libpython of that interpreter on LD_LIBRARY_PATH.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from localstack.processes import StartupError, stop_pid, wait_until

STUB_NAME = "triton_python_backend_stub"
SHM_DIR = Path("/dev/shm")
SHM_PREFIX = "vs_triton_"
SHM_ORPHAN_AGE_S = 60.0


def pytriton_server_dir() -> Path:
    """The folder of the server shipped inside the pytriton wheel."""
    try:
        import pytriton
    except ImportError as exc:  # pragma: no cover - only without the dependency
        raise StartupError("nvidia-pytriton is not installed in this environment (run `make venv`)") from exc
    return Path(pytriton.__file__).parent / "tritonserver"


def prepare_backends(cache: Path) -> Path:
    """Lays out a backend directory whose python backend carries the stub for this interpreter's version."""
    src = pytriton_server_dir()
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = src / "python_backend_stubs" / version / STUB_NAME
    if not stub.exists():
        raise StartupError(f"the pytriton wheel has no python backend stub for Python {version}: {stub}")
    backends = cache / "triton" / "backends"
    python_dir = backends / "python"
    python_dir.mkdir(parents=True, exist_ok=True)
    for item in [*(src / "backends" / "python").glob("*.*"), stub]:
        target = python_dir / item.name
        if not target.exists() or target.stat().st_size != item.stat().st_size:
            shutil.copy2(item, target)
    return backends


def server_env() -> dict[str, str]:
    """The environment the stub needs: this venv first on PATH, and libpython on LD_LIBRARY_PATH."""
    env = dict(os.environ)
    venv_bin = str(Path(sys.executable).parent)
    env["PATH"] = os.pathsep.join([venv_bin, env.get("PATH", "")])
    env["VIRTUAL_ENV"] = str(Path(sys.prefix))
    libpython = str(Path(sys.base_prefix) / "lib")
    # the stub we copy out of the wheel still needs the wheel's bundled libraries (libcudart & co.)
    wheel_libs = str(pytriton_server_dir().parent.parent / "nvidia_pytriton.libs")
    env["LD_LIBRARY_PATH"] = os.pathsep.join(
        p for p in [libpython, wheel_libs, env.get("LD_LIBRARY_PATH", "")] if p)
    repo_root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in [repo_root, env.get("PYTHONPATH", "")] if p)
    # Each python-backend model runs in its own stub process; keep their thread pools small on small machines.
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def mapped_shm_names() -> set[str]:
    """Names of the /dev/shm files some live process has mapped (read from every /proc/PID/maps we may read)."""
    names: set[str] = set()
    for maps in Path("/proc").glob("[0-9]*/maps"):
        try:
            text = maps.read_text(errors="replace")
        except OSError:  # the process ended, or is not ours to read
            continue
        for line in text.splitlines():
            at = line.find(str(SHM_DIR) + "/")
            if at >= 0:
                names.add(line[at + len(str(SHM_DIR)) + 1:].removesuffix(" (deleted)"))
    return names


def _parent_name(proc: Path) -> str:
    ppid = (proc / "stat").read_text().rsplit(")", 1)[1].split()[1]
    return (Path("/proc") / ppid / "comm").read_text().strip()


def kill_orphaned_stubs(prefix: str) -> int:
    """SIGKILL python-backend stubs of ours whose server is gone (their parent is no longer a tritonserver). A stub
    notices its server's death only while idle: one was seen 30 minutes after its server segfaulted, still holding
    its shared memory."""
    killed = 0
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            cmdline = (proc / "cmdline").read_bytes().split(b"\0")
            if not (cmdline[0].endswith(STUB_NAME.encode())
                    and any(arg.startswith(prefix.encode()) for arg in cmdline[1:])):
                continue
            orphaned = _parent_name(proc) != "tritonserver"
        except (OSError, ValueError, IndexError):
            continue
        if orphaned:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(proc.name), signal.SIGKILL)
                killed += 1
    if killed:
        time.sleep(0.5)  # their mappings go when they are reaped
    return killed


def remove_orphaned_shm(prefix: str, min_age_s: float) -> int:
    """Unlink python-backend shared-memory regions of ours that no process maps any more.

    Triton unlinks its stubs' regions (64 MiB each, one per model instance) only when it shuts down cleanly. A
    server that is killed leaves them in /dev/shm, which is memory: a day of kill-and-restart tests once left
    15 GiB there and the next test run was OOM-killed. Only files no live process maps are removed, and with
    `min_age_s` only ones old enough not to belong to a server that is starting right now.
    """
    if not SHM_DIR.is_dir():
        return 0
    candidates = [p for p in SHM_DIR.glob(f"{prefix}*") if p.is_file()]
    if not candidates:
        return 0
    mapped = mapped_shm_names()
    now = time.time()
    removed = 0
    for path in candidates:
        try:
            if path.name in mapped or now - path.stat().st_mtime < min_age_s:
                continue
            path.unlink()
            removed += 1
        except FileNotFoundError:
            continue
    return removed


class TritonServer:
    """One tritonserver process bound to 127.0.0.1 on the given ports."""

    def __init__(self, repository: Path, cache: Path, http_port: int, grpc_port: int, metrics_port: int,
                 log_file: Path) -> None:
        self.repository = repository
        self.cache = cache
        self.http_port = http_port
        self.grpc_port = grpc_port
        self.metrics_port = metrics_port
        self.log_file = log_file
        self.proc: subprocess.Popen | None = None

    @property
    def http_url(self) -> str:
        return f"127.0.0.1:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def shm_prefix(self) -> str:
        """This server's /dev/shm region prefix: one per port, so its leftovers can be found and removed."""
        return f"{SHM_PREFIX}{self.grpc_port}_"

    def release_orphaned_shm(self) -> None:
        """Remove regions a killed server on these ports left behind (and its stubs, if they outlived it), and old
        ones of any of our servers."""
        kill_orphaned_stubs(self.shm_prefix)
        remove_orphaned_shm(self.shm_prefix, min_age_s=0)
        remove_orphaned_shm(SHM_PREFIX, min_age_s=SHM_ORPHAN_AGE_S)

    def command(self) -> list[str]:
        binary = pytriton_server_dir() / "bin" / "tritonserver"
        return [
            str(binary),
            f"--model-repository={self.repository}",
            f"--backend-directory={prepare_backends(self.cache)}",
            "--http-address=127.0.0.1", f"--http-port={self.http_port}",
            "--grpc-address=127.0.0.1", f"--grpc-port={self.grpc_port}",
            "--metrics-address=127.0.0.1", f"--metrics-port={self.metrics_port}",
            "--strict-readiness=true",
            "--exit-on-error=true",
            "--log-verbose=0",
            "--exit-timeout-secs=10",
            # python backend tensors travel through /dev/shm; start big enough for a batch of 640x640 inputs
            "--backend-config=python,shm-default-byte-size=67108864",
            "--backend-config=python,shm-growth-byte-size=67108864",
            f"--backend-config=python,shm-region-prefix-name={self.shm_prefix}",
        ]

    def launch(self) -> subprocess.Popen:
        """Start tritonserver without waiting for it (a supervisor watches it instead)."""
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        self.release_orphaned_shm()
        with self.log_file.open("ab") as log:
            self.proc = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT, env=server_env(),
                                         start_new_session=True)
        return self.proc

    def start(self, timeout_s: float = 300) -> TritonServer:
        self.launch()
        try:
            wait_until(self.ready, self.proc, timeout_s, f"tritonserver (HTTP {self.http_port})", self.log_file)
        except BaseException:
            self.stop()  # a server that never became ready must not linger
            raise
        return self

    def ready(self) -> bool:
        return httpx.get(f"http://{self.http_url}/v2/health/ready", timeout=2).status_code == 200

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            stop_pid(self.proc.pid)
        self.proc = None
        self.release_orphaned_shm()

    def __enter__(self) -> TritonServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
