"""Bytes per image on disk: the images index's store after a force-merge, for generated documents shaped like the
ones ingest writes, in the real index template (settings and mappings as bootstrapped), and what each way of making
it smaller saves.

Documents: one global embedding and 0..6 detected objects (about 2 on average) each with its embedding, box, class
and confidence, plus the image fields (id, filename, url, date, size, tags, model provenance); no thumbnail (the
thumbnails stage measures it). Vectors are drawn from bench.recall's clustered mixture and written to JSON as the
adapter writes them (`template`) or as it wrote them before (`long floats`).

Variants, each its own index, loaded (bulk, refresh off), force-merged to one segment, then `_stats/store`:

* `template`: the index exactly as the template makes it (the configured `index.codec`), vectors as the adapter
  writes them (`common.vectors.wire_floats`: the fewest digits that give back the same float32, ~10 characters);
* `long floats`: the vectors as the adapter wrote them before, float32 printed as float64 (~19 characters a number;
  the indexed float32 values are identical);
* `vector doc values`: the vector fields with doc values, OpenSearch's default: a second copy of every vector,
  which only score scripts read (the template turns them off);
* `recovery source`: `_recovery_source` kept, OpenSearch's default beside a `_source` with excludes: the whole
  original document, vectors included, until a merge after the shard's history retention drops it (the template
  turns it off; replica recovery then reads `_source`);
* `other codec`: the stored fields (`_source`, `_id`) in the codec the config does not choose (`default` = LZ4,
  `best_compression` = DEFLATE): DEFLATE stores fewer bytes, LZ4 reads a hit's stored fields without inflating a
  DEFLATE block, which the knn p50 (ten hits, `_source: false`; `_id` is still read) shows;
* `other derived source`: the k-NN plugin's derived source (`index.knn.derived_source.enabled`, the config's
  `index.derived_source`) the other way round from the config: when on, the vectors (the nested object ones too) are
  kept in the vector index only and put back into `_source` when a document is read (a partial `_update` keeps them:
  that test file again);
* `sq encoder`: lucene scalar quantization of both vector fields (`encoder: sq`); Lucene keeps the float32 vectors
  beside the 7-bit ones, so the disk grows while search memory shrinks; recall@10 of the global field is reported.

Each variant also reports recall@10 of the global field against brute force (queries from the same mixture, the
product's `k` and ef_search), so a saving that costs recall shows.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from bench.context import Context, create_index, delete_index, index_template_body
from bench.recall import clustered_vectors, recall_at_k
from bootstrap import compare
from client.queries import knn_options
from common.config import CODECS
from common.vectors import wire_floats

BULK_DOCS = 500
QUERIES = 100
K = 10
CLASSES = ("circle", "square", "triangle", "star", "cross")
TAGS = ("holiday", "garden", "work", "family", "night", "city", "beach", "snow")
VARIANTS = ("template", "long floats", "vector doc values", "recovery source", "other codec", "other derived source",
            "sq encoder")
DERIVED_SOURCE = compare.DERIVED_SOURCE.removeprefix("index.")  # as bench.context's flat index settings name it


def _long(v: np.ndarray) -> list[float]:
    """As the adapter wrote before: float32 → Python float (float64): ~19 characters a number."""
    return np.asarray(v, dtype=np.float32).tolist()


def documents(count: int, dim: int, seed: int = 15) -> tuple[list[dict[str, Any]], np.ndarray]:
    """(documents with vectors as numpy arrays, the global vectors as indexed)."""
    rng = np.random.default_rng(seed)
    n_objects = np.minimum(rng.poisson(2.0, size=count), 6)
    global_vectors = clustered_vectors(count, dim, seed)
    object_vectors = clustered_vectors(int(n_objects.sum()), dim, seed + 1)
    docs, used = [], 0
    for i in range(count):
        width, height = int(rng.integers(640, 1921)), int(rng.integers(480, 1081))
        objects = []
        for _ in range(n_objects[i]):
            x1, y1 = float(rng.uniform(0, width - 40)), float(rng.uniform(0, height - 40))
            x2, y2 = x1 + float(rng.uniform(20, 400)), y1 + float(rng.uniform(20, 400))
            class_id = int(rng.integers(len(CLASSES)))
            objects.append({"bbox": {"x1": x1, "y1": y1, "x2": min(x2, width), "y2": min(y2, height)},
                            "class_id": class_id, "class_name": CLASSES[class_id],
                            "confidence": float(np.float32(rng.uniform(0.25, 1))),
                            "object_embedding": object_vectors[used]})
            used += 1
        docs.append({
            "image_id": f"img-{i:08d}", "filename": f"photos/2026/{i % 12 + 1:02d}/IMG_{i:06d}.jpg",
            "image_url": f"https://images.example.com/photos/2026/IMG_{i:06d}.jpg",
            "upload_date": f"2026-{i % 12 + 1:02d}-{i % 28 + 1:02d}T10:00:00Z", "width": width, "height": height,
            "tags": sorted({TAGS[int(t)] for t in rng.integers(len(TAGS), size=int(rng.integers(0, 4)))}),
            "model": {"clip_variant": "MobileCLIP2-S2", "clip_weights": "hf-hub:apple/MobileCLIP2-S2",
                      "detector": "yolo11s", "detector_weights": "checkpoint:yolo11s.pt"},
            "global_image_embedding": global_vectors[i], "detected_objects": objects,
        })
    return docs, global_vectors


def _render(doc: dict[str, Any], floats: Callable[[np.ndarray], list[float]]) -> str:
    out = {**doc, "global_image_embedding": floats(doc["global_image_embedding"]),
           "detected_objects": [{**o, "object_embedding": floats(o["object_embedding"])}
                                for o in doc["detected_objects"]]}
    return json.dumps(out)


def variant_body(ctx: Context, variant: str) -> dict[str, Any]:
    """The images template's settings and mappings with `variant`'s change, for an index loaded by `load`."""
    body = index_template_body(ctx, with_ingest_pipeline=False)
    index = body["settings"].setdefault("index", {})
    index.update({"number_of_shards": 1, "number_of_replicas": 0, "refresh_interval": "-1"})
    mappings = body["mappings"]
    if variant == "other codec":
        index["codec"] = next(c for c in CODECS if c != index.get("codec", "default"))
    if variant == "other derived source":
        index[DERIVED_SOURCE] = not _enabled(index.get(DERIVED_SOURCE))
    if variant == "vector doc values":
        for field in _vector_fields(mappings):
            field["doc_values"] = True
    if variant == "recovery source":
        mappings["_source"]["recovery_source_enabled"] = True
    if variant == "sq encoder":
        for field in _vector_fields(mappings):
            field["method"]["parameters"]["encoder"] = {"name": "sq"}
    return body


def _vector_fields(mappings: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    props = mappings["properties"]
    return props["global_image_embedding"], props["detected_objects"]["properties"]["object_embedding"]


def stored_fields(body: dict[str, Any]) -> dict[str, Any]:
    """How a variant's index keeps its `_source`: the codec, and whether its vectors are derived."""
    index = body["settings"]["index"]
    return {"codec": index.get("codec"), "derived_source": _enabled(index.get(DERIVED_SOURCE))}


def _enabled(setting: Any) -> bool:
    """A boolean index setting as the cluster returns it (text) or as a variant sets it."""
    return str(setting).lower() == "true"


def _recall(ctx: Context, index: str, data: np.ndarray) -> dict[str, Any]:
    probes = clustered_vectors(QUERIES, data.shape[1], seed=99)
    truth = np.argsort(-(probes @ data.T), axis=1)[:, :K]
    found, ms = [], []
    for i, probe in enumerate(probes.tolist()):
        query = {"size": K, "_source": False, "query": {"knn": {"global_image_embedding": {
            "vector": probe, **knn_options(K)}}}}
        t0 = time.perf_counter()
        hits = ctx.cluster.request("POST", f"/{index}/_search", query)["hits"]["hits"]
        ms.append((time.perf_counter() - t0) * 1000)
        found.append(recall_at_k(hits, truth[i]))
    return {"recall_at_10": round(float(np.mean(found)), 4), "latency_p50_ms": round(float(np.median(ms)), 2)}


def load(ctx: Context, index: str, docs: list[dict[str, Any]],
         floats: Callable[[np.ndarray], list[float]] = wire_floats) -> int:
    """Bulk-loads `docs` (ids "0", "1", …), then refreshes; returns the `_source` characters sent."""
    sent = 0
    for start in range(0, len(docs), BULK_DOCS):
        lines = []
        for offset, doc in enumerate(docs[start:start + BULK_DOCS]):
            source = _render(doc, floats)
            sent += len(source)
            lines += [json.dumps({"index": {"_id": str(start + offset)}}), source]
        response = ctx.cluster.bulk("\n".join(lines) + "\n", index)
        if response.get("errors"):
            raise RuntimeError(f"bulk into {index} failed: {str(response)[:500]}")
    ctx.cluster.refresh(index)
    return sent


def run_variant(ctx: Context, variant: str, docs: list[dict[str, Any]], data: np.ndarray, tag: str) -> dict[str, Any]:
    index = f"{ctx.settings.index.name}-bench-{tag}-bytes-{VARIANTS.index(variant)}"
    body = variant_body(ctx, variant)
    create_index(ctx, index, body)
    try:
        t0 = time.perf_counter()
        sent = load(ctx, index, docs, _long if variant == "long floats" else wire_floats)
        load_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        ctx.cluster.force_merge(index)
        merge_s = time.perf_counter() - t0
        store = ctx.cluster.request("GET", f"/{index}/_stats/store,docs")["indices"][index]["primaries"]
        files = ctx.cluster.request("GET", f"/{index}/_segments")["indices"][index]["shards"]["0"][0]["segments"]
        per_image = store["store"]["size_in_bytes"] / len(docs)
        return {"variant": variant, **stored_fields(body),
                "documents": store["docs"]["count"], "segments": len(files),
                "store_bytes": store["store"]["size_in_bytes"], "bytes_per_image": round(per_image),
                "source_chars_per_image": round(sent / len(docs)), "load_seconds": round(load_s, 1),
                "merge_seconds": round(merge_s, 1), "projected_10m_gb": round(per_image * 10_000_000 / 1e9, 1),
                **_recall(ctx, index, data)}
    finally:
        delete_index(ctx, index)


def run(ctx: Context, count: int, tag: str, progress: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    docs, data = documents(count, ctx.clip.embedding_dim)
    objects = sum(len(d["detected_objects"]) for d in docs)
    rows = []
    for variant in VARIANTS:
        progress(variant)
        rows.append(run_variant(ctx, variant, docs, data, tag))
    base = rows[0]["bytes_per_image"]
    for row in rows:
        row["x_template"] = round(row["bytes_per_image"] / base, 3)
    return {"images": count, "objects_per_image": round(objects / count, 2), "dimension": ctx.clip.embedding_dim,
            "variants": rows}
