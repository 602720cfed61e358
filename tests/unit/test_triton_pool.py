"""The adapter's pool of Triton replicas: fewest in flight first, a failed replica's request re-sent elsewhere."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import numpy as np
import pytest

from connectors.adapter.triton import InferenceFailed, TritonModels, TritonPool, TritonUnavailable


class Replica:
    def __init__(self, url: str, delay: float = 0.0) -> None:
        self.url, self.delay = url, delay
        self.fail: Exception | None = None
        self.calls = 0
        self.up = True

    async def analyze(self, image: bytes) -> dict[str, Any]:
        self.calls += 1
        await asyncio.sleep(self.delay)
        if self.fail is not None:
            raise self.fail
        return {"served_by": np.array(self.url)}

    async def ready(self) -> bool:
        return self.up

    async def close(self) -> None:
        pass


def pool(*replicas: Replica) -> TritonPool:
    return TritonPool(cast(list[TritonModels], list(replicas)))


def test_requests_spread_by_fewest_in_flight() -> None:
    a, b = Replica("a", delay=0.05), Replica("b", delay=0.05)
    p = pool(a, b)

    async def many() -> list[dict[str, Any]]:
        return list(await asyncio.gather(*(p.analyze(b"x") for _ in range(10))))

    served = [str(r["served_by"]) for r in asyncio.run(many())]
    assert served.count("a") == 5 and served.count("b") == 5
    assert p.in_flight == [0, 0]


def test_a_dead_replicas_request_is_sent_to_another_and_it_is_set_aside() -> None:
    a, b = Replica("a"), Replica("b")
    a.fail = TritonUnavailable("Triton at a: connection reset")
    p = pool(a, b)
    assert str(asyncio.run(p.analyze(b"x"))["served_by"]) == "b"
    assert p.failovers == 1
    calls = a.calls
    for _ in range(3):  # set aside: the next requests go straight to b
        assert str(asyncio.run(p.analyze(b"x"))["served_by"]) == "b"
    assert a.calls == calls


def test_a_bad_image_is_not_sent_again() -> None:
    a, b = Replica("a"), Replica("b")
    a.fail = b.fail = InferenceFailed("not_an_image: no known image signature")
    p = pool(a, b)
    with pytest.raises(InferenceFailed):
        asyncio.run(p.analyze(b"x"))
    assert a.calls + b.calls == 1


def test_every_replica_down_is_unavailable_and_ready_needs_one() -> None:
    a, b = Replica("a"), Replica("b")
    a.fail = b.fail = TritonUnavailable("down")
    a.up = False
    p = pool(a, b)
    with pytest.raises(TritonUnavailable):
        asyncio.run(p.analyze(b"x"))
    assert a.calls == b.calls == 1
    assert asyncio.run(p.ready())
    b.up = False
    assert not asyncio.run(p.ready())


def test_replica_urls_from_the_config() -> None:
    from common.config import load_config

    local = load_config(triton={"replicas": 3, "http_port": 8000})
    assert local.triton.urls == ["127.0.0.1:8000", "127.0.0.1:8010", "127.0.0.1:8020"]
    assert local.triton.local_replicas == 3
    remote = load_config(triton={"replicas": 3, "endpoints": ["gpu-1:8000", "gpu-2:8000"]})
    assert remote.triton.urls == ["gpu-1:8000", "gpu-2:8000"] and remote.triton.local_replicas == 0
