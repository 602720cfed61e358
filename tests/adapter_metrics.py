"""Reads the adapter's request counters from its Prometheus endpoint (what the fault tests count)."""

from __future__ import annotations

import httpx


def requests_total(adapter_url: str, endpoint: str, outcome: str | None = None) -> float:
    """Requests the adapter answered on `endpoint` since it started, optionally only with status `outcome`."""
    total = 0.0
    for line in httpx.get(f"{adapter_url}/metrics", timeout=5).text.splitlines():
        if not line.startswith("adapter_requests_total{") or f'endpoint="{endpoint}"' not in line:
            continue
        if outcome is None or f'outcome="{outcome}"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def failovers_total(adapter_url: str, token: str | None = None) -> float:
    """Requests the adapter re-sent to another Triton replica after one failed them, since it started."""
    headers = {"Authorization": f"Bearer {token}"} if token else None
    response = httpx.get(f"{adapter_url}/metrics", headers=headers, timeout=5)
    response.raise_for_status()
    lines = response.text.splitlines()
    return sum(float(line.rsplit(" ", 1)[1]) for line in lines if line.startswith("adapter_triton_failovers_total{"))
