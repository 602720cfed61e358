"""Each part installs only what it runs: the adapter must import with the base and [adapter] packages alone."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# importable names of packages the adapter must not need (they belong to other extras)
FOREIGN = ("torch", "torchvision", "open_clip", "timm", "ultralytics", "onnx", "onnxruntime", "nvidia", "pytriton",
           "opensearchpy", "rich")

PROBE = """
import builtins, sys
real_import = builtins.__import__
foreign = set(sys.argv[1].split(","))
def guarded(name, *args, **kwargs):
    if name.split(".")[0] in foreign:
        raise ImportError(f"the adapter imported {name}, which is not in its extra")
    return real_import(name, *args, **kwargs)
builtins.__import__ = guarded
import connectors.adapter.app
print("ok")
"""


def test_the_adapter_imports_without_other_extras():
    result = subprocess.run([sys.executable, "-c", PROBE, ",".join(FOREIGN)], cwd=ROOT, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-2000:]


def test_the_adapter_extra_lists_what_the_adapter_imports():
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    names = " ".join(extras["adapter"])
    for package in ("fastapi", "uvicorn", "tritonclient", "prometheus-client", "pillow"):
        assert package in names, package
    assert not any(p in names for p in ("torch", "opensearch-py", "onnxruntime", "nvidia-dali"))
