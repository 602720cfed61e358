"""Which int8 recipe a CPU gets: VNNI read from cpuinfo, the per-model types without it."""

from __future__ import annotations

from pathlib import Path

from export.quantize import has_vnni, static_types


def test_vnni_is_read_from_the_cpu_flags(tmp_path: Path):
    with_vnni, without = tmp_path / "a", tmp_path / "b"
    with_vnni.write_text("flags\t\t: fpu avx2 avx512f avx512_vnni\n")
    without.write_text("flags\t\t: fpu avx2 avx512f\n")
    assert has_vnni(with_vnni) and not has_vnni(without)
    assert not has_vnni(tmp_path / "missing")  # unreadable: the recipe that is safe everywhere


def test_without_vnni_each_model_gets_the_types_that_keep_its_fidelity():
    assert static_types("detector", vnni=True) == static_types("image", vnni=True) == ("uint8", False)
    assert static_types("detector", vnni=False) == ("int8", False)
    assert static_types("image", vnni=False) == ("uint8", True)
