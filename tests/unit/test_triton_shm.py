"""A killed Triton's shared-memory regions are memory until someone unlinks them: only orphans may go."""

from __future__ import annotations

import mmap
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from localstack import triton_server


@pytest.fixture
def shm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(triton_server, "SHM_DIR", tmp_path)
    return tmp_path


def region(folder: Path, name: str, age_s: float = 0.0) -> Path:
    path = folder / name
    path.write_bytes(b"\0" * mmap.PAGESIZE)
    if age_s:
        then = time.time() - age_s
        os.utime(path, (then, then))
    return path


def test_unmapped_regions_of_the_prefix_are_removed_and_mapped_ones_kept(shm: Path) -> None:
    orphan = region(shm, "vs_triton_8001_a")
    in_use = region(shm, "vs_triton_8001_b")
    other_port = region(shm, "vs_triton_80010_c")
    not_ours = region(shm, "triton_python_backend_shm_region_d")
    with in_use.open("r+b") as f, mmap.mmap(f.fileno(), 0):
        assert in_use.name in triton_server.mapped_shm_names()
        assert triton_server.remove_orphaned_shm("vs_triton_8001_", min_age_s=0) == 1
    assert not orphan.exists()
    assert in_use.exists() and other_port.exists() and not_ours.exists()


def test_young_regions_are_kept_when_an_age_is_asked(shm: Path) -> None:
    """Another server may be starting right now: its regions exist a moment before it maps them."""
    young = region(shm, "vs_triton_9001_a")
    old = region(shm, "vs_triton_9002_b", age_s=3600)
    assert triton_server.remove_orphaned_shm(triton_server.SHM_PREFIX, min_age_s=60) == 1
    assert young.exists() and not old.exists()


def test_a_stub_whose_server_is_gone_is_killed_and_only_ours(tmp_path: Path) -> None:
    """A process named like the stub, with our prefix among its arguments and no tritonserver above it."""
    stub = tmp_path / triton_server.STUB_NAME
    stub.symlink_to(sys.executable)
    sleep = "import time; time.sleep(600)"
    ours = subprocess.Popen([str(stub), "-c", sleep, "vs_triton_7777_region"])
    other_port = subprocess.Popen([str(stub), "-c", sleep, "vs_triton_77770_region"])
    try:
        assert triton_server.kill_orphaned_stubs("vs_triton_7777_") == 1
        assert ours.wait(10) == -signal.SIGKILL
        assert other_port.poll() is None
    finally:
        for proc in (ours, other_port):
            proc.kill()
            proc.wait(10)
