"""Where the time goes inside the servers while a stage runs: Triton's per-model statistics and the adapter's
request histogram, read before and after, so each figure covers exactly that stage.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import httpx

from bench.context import Context

PHASES = ("queue", "compute_input", "compute_infer", "compute_output")
_ADAPTER_LINE = re.compile(r'^adapter_request_seconds_(sum|count)\{endpoint="([^"]+)"\} (\S+)$', re.M)


@dataclass
class Snapshot:
    triton: dict[str, dict[str, float]]
    adapter: dict[str, dict[str, float]]


def _triton(ctx: Context) -> dict[str, dict[str, float]]:
    stats = httpx.get(f"{ctx.triton_http}/v2/models/stats", timeout=10).json()["model_stats"]
    out = {}
    for model in stats:
        row = {"requests": float(model["inference_stats"]["success"]["count"]),
               "executions": float(model["execution_count"]),
               "success_ns": float(model["inference_stats"]["success"]["ns"])}
        for phase in PHASES:
            row[f"{phase}_ns"] = float(model["inference_stats"][phase]["ns"])
        out[model["name"]] = row
    return out


def _adapter(ctx: Context) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for kind, endpoint, value in _ADAPTER_LINE.findall(ctx.adapter.get("/metrics").text):
        out.setdefault(endpoint, {})[kind] = float(value)
    return out


def snapshot(ctx: Context) -> Snapshot:
    return Snapshot(_triton(ctx), _adapter(ctx))


def _sub(a: dict[str, dict[str, float]], b: dict[str, dict[str, float]], sign: float) -> dict[str, dict[str, float]]:
    keys = set(a) | set(b)
    return {k: {f: a.get(k, {}).get(f, 0.0) + sign * b.get(k, {}).get(f, 0.0)
                for f in set(a.get(k, {})) | set(b.get(k, {}))} for k in keys}


def delta(before: Snapshot, after: Snapshot) -> Snapshot:
    return Snapshot(_sub(after.triton, before.triton, -1), _sub(after.adapter, before.adapter, -1))


def add(total: Snapshot | None, part: Snapshot) -> Snapshot:
    return part if total is None else Snapshot(_sub(total.triton, part.triton, 1), _sub(total.adapter, part.adapter, 1))


def summarize(d: Snapshot) -> dict[str, Any]:
    """Per Triton model: requests, mean batch, mean ms per request end to end and in each phase;
    per adapter endpoint: requests and mean ms."""
    models = {}
    for name, row in sorted(d.triton.items()):
        requests = row.get("requests", 0.0)
        if requests <= 0:
            continue
        out = {"requests": requests, "mean_batch": round(requests / max(row.get("executions", 0.0), 1), 2),
               "total_ms": round(row.get("success_ns", 0.0) / requests / 1e6, 2)}
        for phase in PHASES:
            out[f"{phase}_ms"] = round(row.get(f"{phase}_ns", 0.0) / requests / 1e6, 2)
        models[name] = out
    endpoints = {e: {"requests": r["count"], "mean_ms": round(r.get("sum", 0.0) / r["count"] * 1000, 2)}
                 for e, r in sorted(d.adapter.items()) if r.get("count", 0.0) > 0 and e.startswith("/v1/")}
    return {"triton_models": models, "adapter_endpoints": endpoints}
