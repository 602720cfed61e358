"""Back-pressure in front of Triton: bounded waiting, and "busy" instead of failure when the wait is too long.

ML Commons starts the model call of every document of a `_bulk` at once. Sending them all to Triton would
only move the queue; failing them would lose documents. So a fixed number of analyses run at a time, the rest
wait here in arrival order, and a request whose expected wait (or whose bytes) would exceed the configured
bounds is answered "busy" at once: ML Commons retries it later with backoff, and nothing is held unbounded.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from connectors.adapter.errors import AdapterError


class Busy(AdapterError):
    """No room now; the caller should retry after `retry_after_s`."""

    def __init__(self, reason: str, retry_after_s: float) -> None:
        super().__init__(reason)
        self.retry_after_s = retry_after_s


class Admission:
    """A FIFO of requests waiting for one of `concurrency` slots, bounded in time and in bytes.

    The expected wait is estimated from the measured time a slot is held (an exponential moving average),
    so a request that could never start before `max_wait_s` is refused on arrival rather than after it.
    """

    def __init__(self, concurrency: int, max_wait_s: float, max_queued_bytes: int) -> None:
        self.concurrency = concurrency
        self.max_wait_s = max_wait_s
        self.max_queued_bytes = max_queued_bytes
        self._slots = asyncio.Semaphore(concurrency)
        self.waiting = 0
        self.waiting_bytes = 0
        self.running = 0
        self.refused = 0
        self.service_s: float | None = None  # moving average of one slot's hold time

    def expected_wait_s(self) -> float:
        """How long a request arriving now would wait for a slot, from the measured service time."""
        if self.service_s is None or self.running + self.waiting < self.concurrency:
            return 0.0
        return (self.waiting + 1) * self.service_s / self.concurrency

    def _refuse(self, reason: str) -> Busy:
        self.refused += 1
        return Busy(reason, retry_after_s=max(1.0, min(self.expected_wait_s(), 60.0)))

    def _check_room(self, nbytes: int) -> None:
        if self.waiting and self.waiting_bytes + nbytes > self.max_queued_bytes:
            raise self._refuse(f"busy: {self.waiting_bytes + nbytes} image bytes would wait "
                               f"(limit {self.max_queued_bytes})")
        wait = self.expected_wait_s()
        if wait > self.max_wait_s:
            raise self._refuse(f"busy: {self.waiting} requests ahead, about {wait:.0f}s of work "
                               f"(limit {self.max_wait_s:.0f}s)")

    @asynccontextmanager
    async def slot(self, nbytes: int = 0) -> AsyncIterator[None]:
        """Waits for a slot (or raises Busy), holds it for the body of the `async with`, measures the hold."""
        self._check_room(nbytes)
        self.waiting += 1
        self.waiting_bytes += nbytes
        try:
            async with asyncio.timeout(self.max_wait_s):
                await self._slots.acquire()
        except TimeoutError:
            raise self._refuse(f"busy: no slot within {self.max_wait_s:.0f}s") from None
        finally:
            self.waiting -= 1
            self.waiting_bytes -= nbytes
        self.running += 1
        start = time.monotonic()
        try:
            yield
        finally:
            self.running -= 1
            self._slots.release()
            held = time.monotonic() - start
            self.service_s = held if self.service_s is None else 0.8 * self.service_s + 0.2 * held

    def snapshot(self) -> dict[str, float | int | None]:
        return {"running": self.running, "waiting": self.waiting, "waiting_bytes": self.waiting_bytes,
                "refused": self.refused, "service_s": self.service_s, "expected_wait_s": self.expected_wait_s()}


class Outage:
    """Remembers since when Triton has been unreachable, so a short outage is answered "retry" and a long
    one "unavailable": a restart is absorbed by ML Commons' retries, a dead server does not hold bulks for
    the whole retry window."""

    def __init__(self, retry_window_s: float) -> None:
        self.retry_window_s = retry_window_s
        self.since: float | None = None

    def failed(self) -> None:
        if self.since is None:
            self.since = time.monotonic()

    def recovered(self) -> None:
        self.since = None

    @property
    def worth_retrying(self) -> bool:
        return self.since is None or time.monotonic() - self.since < self.retry_window_s
