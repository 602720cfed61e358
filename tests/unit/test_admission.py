"""The adapter's back-pressure and failure classification, without servers."""

from __future__ import annotations

import asyncio
import time

import pytest

from connectors.adapter.admission import Admission, Busy, Outage
from connectors.adapter.triton import InferenceFailed, TritonUnavailable, classify


def run(coro):
    return asyncio.run(coro)


def test_requests_wait_their_turn_in_arrival_order():
    order: list[int] = []

    async def scenario() -> None:
        gate = Admission(concurrency=1, max_wait_s=5, max_queued_bytes=10**6)

        async def one(i: int) -> None:
            async with gate.slot(10):
                order.append(i)
                await asyncio.sleep(0.01)

        await asyncio.gather(*(one(i) for i in range(6)))
        assert gate.running == 0 and gate.waiting == 0 and gate.waiting_bytes == 0

    run(scenario())
    assert order == list(range(6))


def test_a_request_that_would_wait_too_long_is_refused_at_once():
    async def scenario() -> tuple[float, Busy]:
        gate = Admission(concurrency=1, max_wait_s=0.5, max_queued_bytes=10**6)
        async with gate.slot():
            await asyncio.sleep(0.3)  # measured service time 0.3 s
        release = asyncio.Event()

        async def holder() -> None:
            async with gate.slot():
                await release.wait()

        tasks = [asyncio.create_task(holder()) for _ in range(2)]  # one runs, one waits: ~0.6 s ahead
        await asyncio.sleep(0.05)
        t0 = time.monotonic()
        with pytest.raises(Busy) as refused:
            async with gate.slot():
                pass
        elapsed = time.monotonic() - t0
        release.set()
        await asyncio.gather(*tasks)
        return elapsed, refused.value

    elapsed, busy = run(scenario())
    assert elapsed < 0.1, "refused on arrival, not after waiting"
    assert "requests ahead" in str(busy) and busy.retry_after_s >= 1


def test_a_request_that_waits_past_the_limit_is_refused_and_frees_its_place():
    async def scenario() -> Admission:
        gate = Admission(concurrency=1, max_wait_s=0.2, max_queued_bytes=10**6)
        release = asyncio.Event()

        async def holder() -> None:
            async with gate.slot():
                await release.wait()

        task = asyncio.create_task(holder())
        await asyncio.sleep(0.01)
        with pytest.raises(Busy, match="no slot within"):
            async with gate.slot(100):
                pass
        assert gate.waiting == 0 and gate.waiting_bytes == 0
        release.set()
        await task
        async with gate.slot():  # the slot is usable again: nothing leaked
            pass
        return gate

    gate = run(scenario())
    assert gate.refused == 1 and gate.running == 0


def test_waiting_bytes_are_bounded():
    async def scenario() -> None:
        gate = Admission(concurrency=1, max_wait_s=5, max_queued_bytes=1000)
        release = asyncio.Event()

        async def holder(nbytes: int) -> None:
            async with gate.slot(nbytes):
                await release.wait()

        tasks = [asyncio.create_task(holder(10)), asyncio.create_task(holder(900))]
        await asyncio.sleep(0.01)
        assert gate.waiting == 1 and gate.waiting_bytes == 900
        with pytest.raises(Busy, match="image bytes would wait"):
            async with gate.slot(200):
                pass
        release.set()
        await asyncio.gather(*tasks)

    run(scenario())


def test_an_outage_is_worth_retrying_only_for_its_window():
    outage = Outage(retry_window_s=0.2)
    assert outage.worth_retrying
    outage.failed()
    assert outage.worth_retrying
    time.sleep(0.25)
    outage.failed()  # a later failure does not restart the window
    assert not outage.worth_retrying
    outage.recovered()
    assert outage.worth_retrying and outage.since is None


@pytest.mark.parametrize(("message", "kind"), [
    ("in ensemble 'analyze_image', truncated: the JPEG file ends before its image data does", InferenceFailed),
    ("not_an_image: cannot identify image file", InferenceFailed),
    ("decode_failed: the PNG image could not be decoded", InferenceFailed),
    ("too_large: image header declares too many pixels", InferenceFailed),
    ("Server not ready", TritonUnavailable),
    ("failed to connect to all addresses", TritonUnavailable),
    ("Deadline Exceeded", TritonUnavailable),
    ("Request for unknown model: 'analyze_image' is not found", TritonUnavailable),
    ("Stub process is unhealthy and it will be restarted", TritonUnavailable),
])
def test_only_the_preprocessing_image_codes_blame_the_image(message, kind):
    assert classify(message) is kind
