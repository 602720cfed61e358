"""Vector search quality and speed: recall@10 of the images index's Lucene HNSW against exact search.

A bench index gets the `global_image_embedding` mapping of the images template verbatim (so the same
engine, space, m and ef_construction the config renders) and its k-NN settings; it is loaded with random
unit vectors of the served model's dimension. Truth is brute-force cosine in numpy on the same vectors.
Lucene searches each segment's graph and merges the hits, so recall rises with the segment count (reported);
`--force-merge` queries one graph instead (reproducible, the worst case; ~16 min for 100k here).
Each query runs as the product's queries run (`k` only) and with `method_parameters.ef_search` at 1, 2, 4
and 8 × the configured `index.hnsw_ef_search`: the first two differ only if the index-level ef_search
setting is ignored, and the sweep shows what ef reaches the recall target.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from bench.context import Context, create_index, delete_index, index_template_body
from bench.stats import summary

K = 10
FIELD = "vec"
BULK_DOCS = 1000
EF_FACTORS = (1, 2, 4, 8)
LOAD_STREAMS = 2


def vectors(count: int, dim: int, seed: int) -> np.ndarray:
    """Random unit vectors, rounded to 6 decimals (what is sent is exactly what the truth is computed on)."""
    rng = np.random.default_rng(seed)
    data = rng.standard_normal((count, dim))
    data /= np.linalg.norm(data, axis=1, keepdims=True)
    return np.round(data, 6)


def index_body(ctx: Context) -> tuple[dict[str, Any], dict[str, Any]]:
    template = index_template_body(ctx, with_ingest_pipeline=False)
    mapping = template["mappings"]["properties"]["global_image_embedding"]
    knn_settings = {k: v for k, v in template["settings"].get("index", {}).items() if k.startswith("knn")}
    body = {"settings": {"index": {**knn_settings, "number_of_shards": 1, "number_of_replicas": 0,
                                   "refresh_interval": "-1"}},
            "mappings": {"dynamic": False, "properties": {FIELD: mapping}}}
    return body, mapping


def _bulk_lines(data: np.ndarray, start: int) -> bytes:
    lines = []
    for offset, row in enumerate(data.tolist()):
        lines.append(f'{{"index":{{"_id":"{start + offset}"}}}}')
        lines.append(f'{{"{FIELD}":{json.dumps(row)}}}')
    return ("\n".join(lines) + "\n").encode()


def load(ctx: Context, index: str, data: np.ndarray, progress: Callable[[int], None] | None = None) -> float:
    """Bulk-loads `data` (ids = row numbers) in LOAD_STREAMS parallel streams with refresh off, then refreshes."""

    def send(start: int) -> int:
        response = ctx.request("POST", f"/{index}/_bulk", content=_bulk_lines(data[start:start + BULK_DOCS], start))
        if response.get("errors"):
            first = next(i for i in response["items"] if "error" in next(iter(i.values())))
            raise RuntimeError(f"bulk load into {index} failed: {first}")
        return min(BULK_DOCS, len(data) - start)

    t0 = time.perf_counter()
    with ThreadPoolExecutor(LOAD_STREAMS) as pool:
        for done in pool.map(send, range(0, len(data), BULK_DOCS)):
            if progress:
                progress(done)
    ctx.request("POST", f"/{index}/_refresh")
    return time.perf_counter() - t0


def run_one(ctx: Context, count: int, queries: int, tag: str, force_merge: bool = False,
            progress: Callable[[int], None] | None = None) -> dict[str, Any]:
    s = ctx.settings.index
    dim = ctx.clip.embedding_dim
    index = f"{s.name}-bench-{tag}-recall-{count}"
    body, mapping = index_body(ctx)
    data = vectors(count, dim, seed=count)
    probes = vectors(queries, dim, seed=count + 1)
    unit = data / np.linalg.norm(data, axis=1, keepdims=True)
    t0 = time.perf_counter()
    scores = probes @ unit.T
    truth = np.argsort(-scores, axis=1)[:, :K]
    exact_ms = (time.perf_counter() - t0) * 1000 / queries
    create_index(ctx, index, body)
    try:
        load_s = load(ctx, index, data, progress)
        segments_loaded = len(ctx.request("GET", f"/_cat/segments/{index}", params={"format": "json"}))
        t0 = time.perf_counter()
        if force_merge:  # one graph: recall independent of how the load was flushed (minutes for 100k vectors)
            ctx.os.post(f"/{index}/_forcemerge", params={"max_num_segments": "1"}, timeout=3600).raise_for_status()
            ctx.request("POST", f"/{index}/_refresh")
        merge_s = time.perf_counter() - t0
        segments = len(ctx.request("GET", f"/_cat/segments/{index}", params={"format": "json"}))
        modes: dict[str, dict[str, Any]] = {"k_only": {}}
        for factor in EF_FACTORS:
            ef = s.hnsw_ef_search * factor
            modes[f"ef_{ef}"] = {"method_parameters": {"ef_search": ef}}
        results: dict[str, dict[str, list[float]]] = {m: {"recall": [], "ms": [], "took": []} for m in modes}
        for i, probe in enumerate(probes.tolist()):
            for mode, extra in modes.items():
                query = {"size": K, "_source": False,
                         "query": {"knn": {FIELD: {"vector": probe, "k": K, **extra}}}}
                t1 = time.perf_counter()
                found = ctx.request("POST", f"/{index}/_search", query)
                results[mode]["ms"].append((time.perf_counter() - t1) * 1000)
                results[mode]["took"].append(float(found["took"]))
                ids = {int(h["_id"]) for h in found["hits"]["hits"]}
                results[mode]["recall"].append(len(ids & set(truth[i].tolist())) / K)
    finally:
        delete_index(ctx, index)
    return {
        "vectors": count, "dimension": dim, "queries": queries, "k": K, "segments": segments,
        "segments_after_load": segments_loaded, "force_merge_seconds": round(merge_s, 1),
        "method": mapping.get("method", {}), "index_ef_search": s.hnsw_ef_search,
        "load_seconds": round(load_s, 1), "load_docs_per_s": round(count / load_s, 1),
        "exact_numpy_ms_per_query": round(exact_ms, 3),
        "modes": {
            mode: {"recall_at_10": round(float(np.mean(r["recall"])), 4), "recall_min": round(min(r["recall"]), 2),
                   "latency_ms": summary(r["ms"]), "took_ms": summary(r["took"])}
            for mode, r in results.items()
        },
    }
