"""Repeated queries through OpenSearch with the adapter's query cache: latency of repeats vs cold queries, and
throughput of a realistic mix (most queries are repeats), with the cache's memory.

Cold queries are texts never sent before (each one misses the cache); repeats hit it. Both go through the whole
path: OpenSearch's neural query → ML Commons → the adapter → (Triton on a miss) → k-NN.
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx

from bench.context import Context
from bench.stats import summary
from client.queries import text_query

WORDS = ("red", "green", "blue", "yellow", "circle", "square", "star", "triangle", "cross", "small", "large",
         "two", "a", "on", "grass", "night")


def cold_text(rng: random.Random) -> str:
    """A query no one has sent: random words plus a unique token."""
    return " ".join(rng.choice(WORDS) for _ in range(4)) + f" {uuid.uuid4().hex[:8]}"


def _timed_search(client: httpx.Client, index: str, text: str) -> float:
    t0 = time.perf_counter()
    response = client.post(f"/{index}/_search", json=text_query(text, k=10))
    elapsed = (time.perf_counter() - t0) * 1000
    response.raise_for_status()
    return elapsed


def run(ctx: Context, index: str, repeats: int = 30, mix: int = 100, concurrency: int = 8,
        progress: Callable[[], None] = lambda: None) -> dict[str, Any]:
    rng = random.Random(7)
    o = ctx.settings.opensearch
    auth = o.auth()
    make_client = lambda: httpx.Client(base_url=o.url, auth=auth, verify=o.verify, timeout=60)  # noqa: E731
    client = make_client()
    cold = [_timed_search(client, index, cold_text(rng)) for _ in range(repeats)]
    progress()
    hot_text = cold_text(rng)
    _timed_search(client, index, hot_text)  # the first time it is cold
    hot = [_timed_search(client, index, hot_text) for _ in range(repeats)]
    progress()
    popular = [cold_text(rng) for _ in range(10)]
    for text in popular:
        _timed_search(client, index, text)
    queries = [rng.choice(popular) if rng.random() < 0.8 else cold_text(rng) for _ in range(mix)]
    clients = [make_client() for _ in range(concurrency)]
    t0 = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        latencies = list(pool.map(lambda iq: _timed_search(clients[iq[0] % concurrency], index, iq[1]),
                                  enumerate(queries)))
    seconds = time.perf_counter() - t0
    progress()
    for c in [client, *clients]:
        c.close()
    stats = ctx.adapter.get("/v1/queue").json().get("embed_cache", {})
    # what the index holds matters as much as the cache: each hit's `_source` is read and filtered (an empty index
    # answered the mix at ~220 q/s, 1000 documents at ~90 here)
    documents = ctx.request("GET", f"/{index}/_count")["count"]
    return {"documents": documents, "cold_ms": summary(cold), "repeated_ms": summary(hot),
            "mix": {"queries": mix, "repeat_share": 0.8, "concurrency": concurrency, "seconds": round(seconds, 2),
                    "queries_per_s": round(mix / seconds, 1), "latency_ms": summary(latencies)},
            "cache": stats}
