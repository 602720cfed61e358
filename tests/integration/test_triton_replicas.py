"""Two Triton replicas behind the adapter: one is killed mid-bulk, and what it was analyzing is re-sent to the
other, so every document is indexed at once — none dead-lettered, nothing to replay."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from common.config import Settings
from tests.adapter_metrics import failovers_total
from tests.conftest import AdapterProcess
from tests.integration.test_nothing_lost import _kill_mid_bulk, account, shape_docs

pytestmark = pytest.mark.integration


@pytest.fixture
def pooled_adapter(stack_settings: Settings, adapter_process: AdapterProcess, triton_server, second_triton,
                   tmp_path: Path) -> Iterator[AdapterProcess]:
    """The adapter on its usual port (the connectors' URL), sending to both replicas."""
    endpoints = [stack_settings.triton.http_url, second_triton.http_url]
    pooled = AdapterProcess(stack_settings.model_copy(update={
        "triton": stack_settings.triton.model_copy(update={"endpoints": endpoints})}), tmp_path / "adapter.log")
    adapter_process.stop()
    try:
        yield pooled.start()
    finally:
        pooled.stop()
        adapter_process.start()


def analyses_served(http_port: int) -> int:
    stats = httpx.get(f"http://127.0.0.1:{http_port}/v2/models/analyze_image/stats", timeout=10).json()
    return int(stats["model_stats"][0]["inference_stats"]["success"]["count"])


def test_one_replica_killed_mid_bulk_loses_nothing(os_client, stack_settings, bootstrapped, pooled_adapter,
                                                   triton_server, second_triton):
    health = httpx.get(f"{pooled_adapter.url}/health", timeout=10).json()
    assert len(health["triton"]) == 2, health
    docs = shape_docs("replica-kill", 40)
    served_by_second: list[int] = []

    def kill() -> None:
        served_by_second.append(analyses_served(second_triton.http_port))
        os.killpg(second_triton.proc.pid, signal.SIGKILL)
        second_triton.proc.wait(10)

    first_before = analyses_served(triton_server.http_port)
    response = _kill_mid_bulk(os_client, stack_settings, pooled_adapter.url, docs, kill, lambda: None, 0)
    assert not response["errors"], response
    where = account(os_client, stack_settings, docs)
    print(f"\none of two replicas killed mid-bulk: { {k: len(v) for k, v in where.items()} }; the killed one had "
          f"served {served_by_second[0]}, the other {analyses_served(triton_server.http_port) - first_before}")
    assert served_by_second[0] > 0, "the second replica should have taken part before it was killed"
    assert sorted(where["indexed"]) == sorted(docs), {k: len(v) for k, v in where.items()}
    # the dead replica had the fewest in flight, so it was tried again, failed, and the request went to the other
    assert failovers_total(pooled_adapter.url) > 0
