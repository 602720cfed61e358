"""Machine and software facts recorded with every result: a figure means little without them."""

from __future__ import annotations

import contextlib
import os
import platform
from importlib import metadata
from pathlib import Path
from typing import Any

import httpx
import psutil

from bench.context import Context
from common.model_facts import ClipFacts, YoloFacts

PACKAGES = ("numpy", "torch", "torchvision", "onnxruntime", "nvidia-dali-cuda120", "nvidia-pytriton",
            "tritonclient", "open_clip_torch", "timm", "ultralytics", "opensearch-py", "fastapi", "uvicorn",
            "httpx", "pydantic")


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in open("/proc/cpuinfo"):  # noqa: SIM115
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def machine() -> dict[str, Any]:
    return {
        "cpu_model": cpu_model(),
        "logical_cores": os.cpu_count(),
        "physical_cores": psutil.cpu_count(logical=False),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "load_average": [round(v, 2) for v in os.getloadavg()],
    }


def packages() -> dict[str, str]:
    out = {}
    for name in PACKAGES:
        with contextlib.suppress(metadata.PackageNotFoundError):
            out[name] = metadata.version(name)
    return out


def servers(ctx: Context) -> dict[str, Any]:
    root = ctx.cluster.request("GET", "/")
    plugins = ctx.cluster.request("GET", "/_cat/plugins", params={"format": "json"})
    triton = httpx.get(f"{ctx.triton_http}/v2", timeout=10).json()
    return {
        "opensearch": root["version"]["number"], "lucene": root["version"]["lucene_version"],
        "opensearch_plugins": sorted({f"{p['component']} {p['version']}" for p in plugins}),
        "triton": triton.get("version"), "profile": ctx.settings.profile,
    }


def models(ctx: Context) -> dict[str, Any]:
    return model_facts(ctx.clip, ctx.yolo, ctx.yolo_dir, ctx.provenance)


def model_facts(c: ClipFacts, y: YoloFacts, yolo_dir: Path, provenance: dict[str, str]) -> dict[str, Any]:
    """`provenance`: the parameters analyze_image reports its models by (kept under "served" in the results)."""
    return {
        "served": provenance,
        "clip": {"variant": c.variant, "weights": c.weights, "embedding_dim": c.embedding_dim,
                 "image_size": c.image_size, "open_clip": c.open_clip_version},
        "yolo": {"name": y.name, "weights": y.weights, "requested_weights": y.requested_weights,
                 "weights_sha256": y.weights_sha256, "classes": len(y.class_names), "max_batch": y.max_batch,
                 "conf_threshold": y.conf_threshold, "ultralytics": y.ultralytics_version,
                 "dir": str(yolo_dir)},
    }


def config(ctx: Context) -> dict[str, Any]:
    s = ctx.settings
    return {"triton": s.triton.model_dump(), "ml_commons": s.ml_commons.model_dump(), "index": s.index.model_dump()}
