"""Summaries of repeated measurements: these machines are noisy, so every figure is a distribution."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def summary(values: Sequence[float], digits: int = 2) -> dict[str, float | int]:
    """n, min, p50, p95, p99, max and mean of `values` (empty → n = 0 only)."""
    if not values:
        return {"n": 0}
    arr = np.asarray(values, dtype=np.float64)
    p50, p95, p99 = np.percentile(arr, [50, 95, 99])
    return {"n": len(arr), "min": round(float(arr.min()), digits), "p50": round(float(p50), digits),
            "p95": round(float(p95), digits), "p99": round(float(p99), digits),
            "max": round(float(arr.max()), digits), "mean": round(float(arr.mean()), digits)}


def median(values: Sequence[float]) -> float:
    return float(np.median(np.asarray(values, dtype=np.float64))) if values else float("nan")


def ratio(numerator: float, denominator: float) -> float:
    return round(numerator / denominator, 3) if denominator else float("nan")


