"""Repeated queries through OpenSearch with the adapter's query cache: latency of repeats vs cold queries, and
throughput of a realistic mix (most queries are repeats), with the cache's memory.

Cold queries are texts never sent before (each one misses the cache); repeats hit it. Both go through the whole
path: OpenSearch's neural query → ML Commons → the adapter → (Triton on a miss) → k-NN → the hits' `_source`.

The index is the bench's own, not whatever the stack holds, so runs compare: generated documents shaped like
ingest's (bench.store.documents) plus a thumbnail-sized incompressible payload (a real thumbnail is ~4.7 KB of base64
JPEG, bench --only thumbnails), in the images template as shipped and with the other stored-fields codec beside it
(bench.store: LZ4 or DEFLATE, whichever `index.codec` does not choose), and with the k-NN plugin's derived source
the other way round from `index.derived_source` (when on, a hit's `_source` is stored without its vectors, and
OpenSearch's time reading a hit is mostly parsing the vectors' numbers in order to filter them out).
Every index is loaded and warmed by an untimed mix before any is measured. Each variant is also queried with
`size: 0`: the embedding (cache) and the k-NN search without reading any hit,
which splits a query's time between the cache path and the index's fetch of ten `_source`s.
"""

from __future__ import annotations

import base64
import random
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import numpy as np

from bench import store
from bench.context import Context, create_index, delete_index
from bench.stats import ratio, summary
from client.queries import text_query

WORDS = ("red", "green", "blue", "yellow", "circle", "square", "star", "triangle", "cross", "small", "large",
         "two", "a", "on", "grass", "night")
VARIANTS = ("template", "other codec", "other derived source")
THUMBNAIL_BYTES = 3500  # → ~4.7 KB of base64, a real thumbnail's median
HITS = 10
# Rounds of each mix; the median is reported. One 100-query mix lasts about half a second here, so a single round
# moved ±15 % between runs on this shared machine (bench/results/20261130T044423 vs T044448).
MIX_ROUNDS = 5


def cold_text(rng: random.Random) -> str:
    """A query no one has sent: random words plus a unique token."""
    return " ".join(rng.choice(WORDS) for _ in range(4)) + f" {uuid.uuid4().hex[:8]}"


def with_thumbnails(docs: list[dict[str, Any]], seed: int = 3) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    return [{**d, "thumbnail": base64.b64encode(rng.bytes(THUMBNAIL_BYTES)).decode()} for d in docs]


class Searcher:
    """Timed neural text queries against one index, `size` hits each (0: embed and search, read no hit)."""

    def __init__(self, ctx: Context, index: str, size: int) -> None:
        o = ctx.settings.opensearch
        self.url, self.auth, self.verify = o.url, o.auth(), o.verify
        self.index, self.size = index, size

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, auth=self.auth, verify=self.verify, timeout=60)

    def timed(self, client: httpx.Client, text: str) -> float:
        body = {**text_query(text, k=HITS), "size": self.size}
        t0 = time.perf_counter()
        # the shard request cache would answer a repeated `size: 0` query without searching: off, so both search
        response = client.post(f"/{self.index}/_search", json=body, params={"request_cache": "false"})
        elapsed = (time.perf_counter() - t0) * 1000
        response.raise_for_status()
        return elapsed

    def mix(self, queries: list[str], concurrency: int) -> dict[str, Any]:
        clients = [self.client() for _ in range(concurrency)]
        t0, cpu0 = time.perf_counter(), time.process_time()
        with ThreadPoolExecutor(concurrency) as pool:
            latencies = list(pool.map(lambda iq: self.timed(clients[iq[0] % concurrency], iq[1]), enumerate(queries)))
        seconds, cpu = time.perf_counter() - t0, time.process_time() - cpu0
        for c in clients:
            c.close()
        return {"queries": len(queries), "concurrency": concurrency, "seconds": round(seconds, 2),
                "queries_per_s": round(len(queries) / seconds, 1), "latency_ms": summary(latencies),
                # the bench's own share of the two shared cores: a real client runs elsewhere
                "client_cpu_cores": round(cpu / seconds, 2)}


def measure(ctx: Context, index: str, rng: random.Random, repeats: int, mix: int,
            concurrency: int) -> dict[str, Any]:
    """Cold, repeated and mixed queries with ten hits read, then repeated and mixed with none read."""
    full, bare = Searcher(ctx, index, HITS), Searcher(ctx, index, 0)
    client = full.client()
    cold = [full.timed(client, cold_text(rng)) for _ in range(repeats)]
    hot_text = cold_text(rng)
    full.timed(client, hot_text)  # the first time it is cold
    hot = [full.timed(client, hot_text) for _ in range(repeats)]
    hot_bare = [bare.timed(client, hot_text) for _ in range(repeats)]
    popular = [cold_text(rng) for _ in range(10)]
    for text in popular:
        full.timed(client, text)
    client.close()
    rounds: dict[str, list[dict[str, Any]]] = {"mix": [], "mix_no_hits": []}
    for _ in range(MIX_ROUNDS):  # alternating, so both see the same machine
        queries = [rng.choice(popular) if rng.random() < 0.8 else cold_text(rng) for _ in range(mix)]
        fresh = [q if q in popular else cold_text(rng) for q in queries]  # the same mix, its misses new again
        rounds["mix"].append(full.mix(queries, concurrency))
        rounds["mix_no_hits"].append(bare.mix(fresh, concurrency))
    return {"cold_ms": summary(cold), "repeated_ms": summary(hot), "repeated_no_hits_ms": summary(hot_bare),
            **{name: _median_round(results) for name, results in rounds.items()}}


def _median_round(results: list[dict[str, Any]]) -> dict[str, Any]:
    """The round with the median throughput, and every round's."""
    rates = [r["queries_per_s"] for r in results]
    return {**sorted(results, key=lambda r: r["queries_per_s"])[len(results) // 2], "rounds_queries_per_s": rates}


def warm(ctx: Context, index: str, rng: random.Random, queries: int, concurrency: int) -> None:
    """An untimed mix first: right after `make up` OpenSearch's JIT is cold, and whichever index is measured first
    pays for it (in a run right after `make up`, the index measured first gave 152.5 q/s; the same variant 206.8 in
    runs on a warm node, bench/results/20261130T020431 vs T012526)."""
    texts = [cold_text(rng) for _ in range(10)]
    Searcher(ctx, index, HITS).mix([rng.choice(texts) for _ in range(queries)], concurrency)


def run(ctx: Context, tag: str, documents: int = 1000, repeats: int = 30, mix: int = 100, concurrency: int = 8,
        progress: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    rng = random.Random(7)
    docs = with_thumbnails(store.documents(documents, ctx.clip.embedding_dim)[0])
    indices = {variant: f"{ctx.settings.index.name}-bench-{tag}-cache-{i}" for i, variant in enumerate(VARIANTS)}
    variants = []
    try:
        bodies = {}
        for variant, index in indices.items():
            progress(f"loading {variant}")
            bodies[variant] = store.variant_body(ctx, variant)
            create_index(ctx, index, bodies[variant])
            store.load(ctx, index, docs)
        for variant, index in indices.items():
            progress(f"warming {variant}")
            warm(ctx, index, rng, 3 * mix, concurrency)
        for variant, index in indices.items():
            progress(variant)
            variants.append({"variant": variant, **store.stored_fields(bodies[variant]),
                             "documents": ctx.cluster.count(index),
                             **measure(ctx, index, rng, repeats, mix, concurrency)})
    finally:
        for index in indices.values():
            delete_index(ctx, index)
    shipped = variants[0]
    return {"documents": documents, "hits": HITS, "repeat_share": 0.8, "variants": variants, "warmed": 3 * mix,
            "repeated_ratios": {v["variant"]: ratio(shipped["repeated_ms"]["p50"], v["repeated_ms"]["p50"])
                                for v in variants[1:]},
            "cache": ctx.adapter.get("/v1/queue").json().get("embed_cache", {})}
