"""The query-embedding cache: hits skip the encoder, the bound holds, a model change never serves old vectors."""

from __future__ import annotations

import asyncio

import numpy as np

from connectors.adapter.cache import EmbeddingCache


class Model:
    """Counts encoder calls; its identity can change like a redeployed model."""

    def __init__(self) -> None:
        self.name, self.calls, self.identity_reads = "v1", 0, 0

    async def identity(self) -> str:
        self.identity_reads += 1
        return self.name

    def encode(self, text: str):
        async def compute() -> np.ndarray:
            self.calls += 1
            return np.full(4, float(len(text)) + (10 if self.name == "v2" else 0), dtype=np.float32)
        return compute


def run(coro):
    return asyncio.run(coro)


def test_a_repeated_query_is_served_from_the_cache():
    model = Model()
    cache = EmbeddingCache(10, model.identity)

    async def scenario():
        first = await cache.get_or_compute("text", b"a red circle", model.encode("a red circle"))
        again = await cache.get_or_compute("text", b"a red circle", model.encode("a red circle"))
        other = await cache.get_or_compute("image", b"a red circle", model.encode("xx"))  # same bytes, other kind
        return first, again, other

    first, again, other = run(scenario())
    assert np.array_equal(first, again) and model.calls == 2 and not np.array_equal(first, other)
    assert cache.snapshot()["hits"] == 1 and cache.snapshot()["misses"] == 2
    assert cache.snapshot()["bytes"] == 2 * 4 * 4


def test_the_least_recently_used_entry_goes_first():
    model = Model()
    cache = EmbeddingCache(2, model.identity)

    async def scenario():
        for text in ("a", "bb", "a", "ccc"):  # "bb" is the least recently used when "ccc" arrives
            await cache.get_or_compute("text", text.encode(), model.encode(text))
        calls = model.calls
        await cache.get_or_compute("text", b"a", model.encode("a"))
        await cache.get_or_compute("text", b"bb", model.encode("bb"))
        return calls

    calls_before = run(scenario())
    assert calls_before == 3 and model.calls == 4  # "a" was kept, "bb" had to be computed again
    assert cache.snapshot()["entries"] == 2


def test_a_model_change_empties_the_cache():
    model = Model()
    cache = EmbeddingCache(10, model.identity, recheck_s=0)

    async def scenario():
        old = await cache.get_or_compute("text", b"q", model.encode("q"))
        model.name = "v2"
        new = await cache.get_or_compute("text", b"q", model.encode("q"))
        return old, new

    old, new = run(scenario())
    assert old[0] == 1.0 and new[0] == 11.0 and model.calls == 2


def test_the_identity_is_rechecked_after_an_outage_only():
    model = Model()
    cache = EmbeddingCache(10, model.identity, recheck_s=3600)

    async def scenario():
        for _ in range(3):
            await cache.get_or_compute("text", b"q", model.encode("q"))
        reads = model.identity_reads
        model.name = "v2"
        cache.expire_identity()
        await cache.get_or_compute("text", b"q", model.encode("q"))
        return reads

    assert run(scenario()) == 1 and model.identity_reads == 2 and model.calls == 2


def test_size_zero_turns_the_cache_off():
    model = Model()
    cache = EmbeddingCache(0, model.identity)

    async def scenario():
        for _ in range(3):
            await cache.get_or_compute("text", b"q", model.encode("q"))

    run(scenario())
    assert model.calls == 3 and model.identity_reads == 0
