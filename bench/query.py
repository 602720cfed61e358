"""Query latency: a `neural` query_text through the search pipeline against its parts — the embedding call
alone (Triton `embed_text` over gRPC, the adapter's `/v1/embed`, ML Commons `_predict`) and `knn` with the
same vector precomputed — for the global vector and for the nested per-object vectors.

Kinds are interleaved query by query (the order rotates), so machine noise falls on all of them alike.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
import tritonclient.grpc as grpcclient

from bench.context import Context
from bench.stats import median, summary
from common import triton_io
from common.contract import EMBED_TEXT_MODEL, EMBEDDING

TEXTS = (
    "a red circle", "a blue square", "a green triangle", "a yellow star", "a purple cross",
    "two circles on a gradient", "a small white star", "a black square on a noisy background",
    "an orange triangle", "a cross next to a circle", "shapes on a blue background", "a pink star",
    "a large grey circle", "a rotated square", "a tiny red cross", "three triangles", "a teal circle",
    "a star and a square", "a dark background with a bright shape", "a brown cross",
)
K = 10
GLOBAL, OBJECT = "global_image_embedding", "detected_objects.object_embedding"


def embed_text(client: grpcclient.InferenceServerClient, text: str) -> np.ndarray:
    return client.infer(EMBED_TEXT_MODEL, [triton_io.text_input(grpcclient, text)]).as_numpy(EMBEDDING)[0]


def _wrap(field: str, kind: str, params: dict[str, Any]) -> dict[str, Any]:
    inner = {kind: {field: {**params, "k": K}}}
    if field == OBJECT:
        nested = {"path": "detected_objects", "score_mode": "max", "query": inner,
                  "inner_hits": {"_source": False, "size": 1}}
        return {"size": K, "_source": False, "query": {"nested": nested}}
    return {"size": K, "_source": False, "query": inner}


def run(ctx: Context, index: str, queries: int, warmup: int = 3,
        progress: Callable[[], None] | None = None) -> dict[str, Any]:
    triton = grpcclient.InferenceServerClient(ctx.triton_grpc)
    vectors = {t: embed_text(triton, t).tolist() for t in TEXTS}
    model = ctx.embed_model_id

    def search(body: dict[str, Any]) -> Any:
        return ctx.cluster.request("POST", f"/{index}/_search", body)

    calls: dict[str, Callable[[str], Any]] = {
        "triton_embed_text": lambda t: embed_text(triton, t),
        "adapter_embed": lambda t: ctx.adapter.post("/v1/embed", json={"text": t}).raise_for_status(),
        "ml_predict": lambda t: ctx.cluster.request("POST", f"/_plugins/_ml/models/{model}/_predict",
                                                    {"parameters": {"inputText": t}}),
        "knn": lambda t: search(_wrap(GLOBAL, "knn", {"vector": vectors[t]})),
        "neural": lambda t: search(_wrap(GLOBAL, "neural", {"query_text": t})),
        "nested_knn": lambda t: search(_wrap(OBJECT, "knn", {"vector": vectors[t]})),
        "nested_neural": lambda t: search(_wrap(OBJECT, "neural", {"query_text": t})),
    }
    names = list(calls)
    times: dict[str, list[float]] = {n: [] for n in names}
    took: dict[str, list[float]] = {n: [] for n in names}
    hits: dict[str, list[int]] = {n: [] for n in names}
    for i in range(-warmup, queries):
        text = TEXTS[i % len(TEXTS)]
        shift = i % len(names)
        for name in names[shift:] + names[:shift]:
            t0 = time.perf_counter()
            out = calls[name](text)
            elapsed = (time.perf_counter() - t0) * 1000
            if i < 0:
                continue
            times[name].append(elapsed)
            if isinstance(out, dict) and "took" in out:
                took[name].append(float(out["took"]))
                hits[name].append(len(out["hits"]["hits"]))
        if progress and i >= 0:
            progress()
    triton.close()

    def p50(name: str) -> float:
        return median(times[name])

    def paired(neural: str, embed: str, knn: str) -> float:
        return round(median([n - e - k for n, e, k in zip(times[neural], times[embed], times[knn], strict=True)]), 2)

    gaps = {}
    for scope, neural, knn in (("global", "neural", "knn"), ("nested", "nested_neural", "nested_knn")):
        gaps[scope] = {
            "neural_p50_ms": round(p50(neural), 2),
            "embed_p50_ms": round(p50("adapter_embed"), 2),
            "knn_p50_ms": round(p50(knn), 2),
            "gap_p50_ms": round(p50(neural) - p50("adapter_embed") - p50(knn), 2),
            "gap_paired_median_ms": paired(neural, "adapter_embed", knn),
            "gap_vs_ml_predict_p50_ms": round(p50(neural) - p50("ml_predict") - p50(knn), 2),
            "gap_vs_triton_embed_p50_ms": round(p50(neural) - p50("triton_embed_text") - p50(knn), 2),
        }
    return {
        "queries_per_kind": queries, "k": K, "index": index,
        "latency_ms": {n: summary(times[n]) for n in names},
        "server_took_ms": {n: summary(took[n]) for n in names if took[n]},
        "mean_hits": {n: round(float(np.mean(hits[n])), 1) for n in names if hits[n]},
        "gaps": gaps,
    }
