"""A killed Triton's shared-memory regions are memory until someone unlinks them: only orphans may go."""

from __future__ import annotations

import mmap
import os
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
