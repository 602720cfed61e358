"""Vector search quality and speed: recall@10 of the images index's Lucene HNSW against exact search.

A bench index gets the `global_image_embedding` mapping of the images template verbatim (so the same
engine, space, m and ef_construction the config renders) and its k-NN settings; it is loaded (bulk, refresh
off, timed) with unit vectors of the served model's dimension. Truth is brute-force cosine in numpy on the same
vectors. Which vectors (`--recall-vectors`):

* `clustered` (default): a seeded mixture of gaussians on the sphere around a shared direction, as image
  embeddings are (they crowd in a cone and clump by content); queries are fresh draws from the same mixture;
* `random`: uniform on the sphere, the known worst case for HNSW (no structure to navigate);
* `clip`: embeddings of generated scenes and their object crops by the configured CLIP export (ONNX Runtime, the
  served precision), widened to the wanted count by small perturbations; meaningful once the CLIP is trained.

Lucene searches each segment's graph and merges the hits, so recall rises with the segment count (reported);
`--force-merge` queries one graph instead (reproducible, the worst case; ~16 min for 100k here).
Each query runs as the product's queries run (`k` and `method_parameters.ef_search` from client.queries, the
`product` row), with `k` only, and with ef_search swept around the configured `index.hnsw_ef_search`.
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
from client.queries import knn_options

K = 10
FIELD = "vec"
BULK_DOCS = 1000
EF_SWEEP = (50, 100, 200, 400)  # besides the configured ef_search
LOAD_STREAMS = 2
# the mixture: centres around one shared direction (image embeddings sit in a cone: unrelated images have cosine
# ~0.3-0.5), points around their centre (same-content images ~0.6-0.8); fixed, so 10k and 100k share it
CLUSTERS = 200
SHARED_DIRECTION = 0.6
SPREAD = 0.75
MIXTURE_SEED = 15


def recall_at_k(hits: list[dict], truth: np.ndarray) -> float:
    """The share of the exact nearest `truth` (ids as row numbers) among the hits (ids "0", "1", …)."""
    return len({int(h["_id"]) for h in hits} & set(truth.tolist())) / len(truth)


def _unit(data: np.ndarray) -> np.ndarray:
    """Unit rows, rounded to 6 decimals (what is sent is exactly what the truth is computed on)."""
    data = data / np.linalg.norm(data, axis=1, keepdims=True)
    return np.round(data, 6)


def random_vectors(count: int, dim: int, seed: int) -> np.ndarray:
    return _unit(np.random.default_rng(seed).standard_normal((count, dim)))


def clustered_vectors(count: int, dim: int, seed: int) -> np.ndarray:
    """`count` draws from one fixed mixture of gaussians on the sphere (`seed` picks the draws, not the mixture)."""
    mix = np.random.default_rng(MIXTURE_SEED)
    shared = mix.standard_normal(dim)
    shared /= np.linalg.norm(shared)
    offsets = mix.standard_normal((CLUSTERS, dim))
    offsets /= np.linalg.norm(offsets, axis=1, keepdims=True)
    centres = SHARED_DIRECTION * shared + offsets
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    weights = mix.dirichlet(np.full(CLUSTERS, 2.0))  # uneven cluster sizes, as real collections have
    rng = np.random.default_rng(seed)
    members = rng.choice(CLUSTERS, size=count, p=weights)
    noise = rng.standard_normal((count, dim)) * (SPREAD / np.sqrt(dim))
    return _unit(centres[members] + noise)


def clip_vectors(ctx: Context, count: int, seed: int, base: int = 4096) -> np.ndarray:
    """Embeddings of generated scenes and their crops by the configured CLIP (ONNX Runtime, the served precision):
    `base` real ones (about 900 scenes), each widened to count // base vectors by a perturbation well below the
    distances between them (embedding 100k real scenes would take most of an hour on 2 cores)."""
    import io

    import onnxruntime as ort

    from export.shapes.dataset import render
    from preprocess.runtime import DaliPreprocessor, PreprocessResult
    from triton_repo.runtime.crops import crops_batch

    clip = ctx.clip
    session = ort.InferenceSession(str(ctx.settings.clip_dir / clip.image_file_for(ctx.settings.models.precision)),
                                   providers=["CPUExecutionProvider"])
    pre = DaliPreprocessor.from_facts(clip, ctx.yolo, max_pixels=ctx.settings.models.max_image_pixels, batch_size=8)
    embeddings: list[np.ndarray] = []
    index = 0
    while len(embeddings) < base:
        image, boxes = render(seed, index)
        index += 1
        buf = io.BytesIO()
        image.save(buf, format="JPEG", quality=90)
        result = pre.run([buf.getvalue()])[0]
        if not isinstance(result, PreprocessResult):
            continue
        arr = np.array([[b.x1, b.y1, b.x2, b.y2] for b in boxes], dtype=np.float32).reshape(-1, 4)
        crops = crops_batch(result.decoded_image, arr, clip.image_size, clip.mean, clip.std, clip.interpolation)
        batch = np.concatenate([result.clip_input[None], crops.numpy()])
        embeddings.extend(session.run(None, {"clip_input": batch})[0])
    found = np.stack(embeddings[:base]).astype(np.float64)
    rng = np.random.default_rng(seed)
    nearest = np.sort(found @ found.T, axis=1)[:, -2]  # each embedding's closest other one
    jitter = float(np.sqrt(max(1e-6, 2 * (1 - np.median(nearest))))) / 4 / np.sqrt(found.shape[1])
    picks = rng.integers(0, base, size=count)
    return _unit(found[picks] + rng.standard_normal((count, found.shape[1])) * jitter)


def vectors(ctx: Context, kind: str, count: int, seed: int) -> np.ndarray:
    dim = ctx.clip.embedding_dim
    if kind == "random":
        return random_vectors(count, dim, seed)
    if kind == "clustered":
        return clustered_vectors(count, dim, seed)
    return clip_vectors(ctx, count, seed)


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
        response = ctx.cluster.bulk(_bulk_lines(data[start:start + BULK_DOCS], start), index)
        if response.get("errors"):
            first = next(i for i in response["items"] if "error" in next(iter(i.values())))
            raise RuntimeError(f"bulk load into {index} failed: {first}")
        return min(BULK_DOCS, len(data) - start)

    t0 = time.perf_counter()
    with ThreadPoolExecutor(LOAD_STREAMS) as pool:
        for done in pool.map(send, range(0, len(data), BULK_DOCS)):
            if progress:
                progress(done)
    ctx.cluster.refresh(index)
    return time.perf_counter() - t0


def run_one(ctx: Context, count: int, queries: int, tag: str, force_merge: bool = False,
            progress: Callable[[int], None] | None = None, kind: str = "clustered") -> dict[str, Any]:
    s = ctx.settings.index
    dim = ctx.clip.embedding_dim
    index = f"{s.name}-bench-{tag}-recall-{count}"
    body, mapping = index_body(ctx)
    data = vectors(ctx, kind, count, seed=count)
    probes = vectors(ctx, kind, queries, seed=count + 1)
    unit = data / np.linalg.norm(data, axis=1, keepdims=True)
    t0 = time.perf_counter()
    scores = probes @ unit.T
    truth = np.argsort(-scores, axis=1)[:, :K]
    exact_ms = (time.perf_counter() - t0) * 1000 / queries
    create_index(ctx, index, body)
    try:
        load_s = load(ctx, index, data, progress)
        segments_loaded = len(ctx.cluster.request("GET", f"/_cat/segments/{index}", params={"format": "json"}))
        t0 = time.perf_counter()
        if force_merge:  # one graph: recall independent of how the load was flushed (minutes for 100k vectors)
            ctx.cluster.force_merge(index)
        merge_s = time.perf_counter() - t0
        segments = len(ctx.cluster.request("GET", f"/_cat/segments/{index}", params={"format": "json"}))
        modes: dict[str, dict[str, Any]] = {"product": knn_options(K), "k_only": {"k": K}}
        for ef in sorted({*EF_SWEEP, s.hnsw_ef_search}):
            modes[f"ef_{ef}"] = {"k": K, "method_parameters": {"ef_search": ef}}
        results: dict[str, dict[str, list[float]]] = {m: {"recall": [], "ms": [], "took": []} for m in modes}
        for i, probe in enumerate(probes.tolist()):
            for mode, extra in modes.items():
                query = {"size": K, "_source": False,
                         "query": {"knn": {FIELD: {"vector": probe, **extra}}}}
                t1 = time.perf_counter()
                found = ctx.cluster.request("POST", f"/{index}/_search", query)
                results[mode]["ms"].append((time.perf_counter() - t1) * 1000)
                results[mode]["took"].append(float(found["took"]))
                results[mode]["recall"].append(recall_at_k(found["hits"]["hits"], truth[i]))
    finally:
        delete_index(ctx, index)
    return {
        "vectors": count, "kind": kind, "dimension": dim, "queries": queries, "k": K, "segments": segments,
        "product_query": modes["product"],
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
