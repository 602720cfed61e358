"""Relevance through OpenSearch on a held-out set of generated scenes: does search find what it says?

The scenes come from another seed than any training, on backgrounds the bundled CLIP never saw and at other sizes
(`dataset.HELD_OUT_STYLE`); their true contents are known, so every hit can be judged. They are indexed through
the real ingest pipeline (detector, CLIP, per-object embeddings) and searched with the README's query bodies
(`client.queries`), restricted by a tag to this set, so other documents in the index do not count. Measures:

* text → image: precision@10 of "a {colour} {shape}" — a hit is relevant when the picture holds such an object;
  a query's precision is over min(10, pictures holding one), so a query with 4 such pictures is not capped at 0.4;
* object: the nested object query's matched object (inner hit) is such an object — the detected box overlaps a
  true one (IoU ≥ 0.5) of that colour and shape;
* hybrid + class filter: lexical + neural with the detected class as a filter: precision as for text, and every
  hit must hold a detected object of that class;
* image → image: a smaller, recompressed copy of an indexed picture finds that picture first.
"""

from __future__ import annotations

import base64
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from opensearchpy import OpenSearch

from client.bulk import BulkOutcome, Doc, bulk_index
from client.queries import Filters, hybrid_query, image_query, matched_object, object_query, text_query
from client.results import search
from export.shapes.captions import Caption, all_object_queries
from export.shapes.dataset import HELD_OUT_SEED, HELD_OUT_STYLE, Box, jpeg_bytes, render, smaller_copy

MIN_IOU = 0.5
COPY_SCALE, COPY_QUALITY = 0.7, 75
# the product's quality targets (the spec's), held by tests/integration/test_relevance.py and reported by the bench
TEXT_TARGET, OBJECT_TARGET, HYBRID_TARGET, COPY_TARGET = 0.8, 0.9, 0.9, 0.95


@dataclass(frozen=True)
class Scene:
    id: str
    boxes: list[Box]
    jpeg: bytes

    def holds(self, query: Caption) -> bool:
        return query.is_true_of(Counter((b.colour, b.name) for b in self.boxes))


def held_out_scenes(count: int, tag: str) -> list[Scene]:
    scenes = []
    for i in range(count):
        image, boxes = render(HELD_OUT_SEED, i, style=HELD_OUT_STYLE)
        scenes.append(Scene(f"{tag}-{i:05d}", boxes, jpeg_bytes(image, 90)))
    return scenes


def index_scenes(client: OpenSearch, index: str, scenes: list[Scene], tag: str) -> BulkOutcome:
    docs = [Doc(s.id, {"image_id": s.id, "filename": f"scene_{s.id}.jpg", "tags": [tag],
                       "image_b64": base64.b64encode(s.jpeg).decode()}) for s in scenes]
    return bulk_index(client, index, docs, label=f"indexing {len(docs)} held-out scenes")


def _iou(a: dict[str, float], b: Box) -> float:
    ix = max(0.0, min(a["x2"], b.x2) - max(a["x1"], b.x1))
    iy = max(0.0, min(a["y2"], b.y2) - max(a["y1"], b.y1))
    inter = ix * iy
    union = (a["x2"] - a["x1"]) * (a["y2"] - a["y1"]) + (b.x2 - b.x1) * (b.y2 - b.y1) - inter
    return inter / union if union > 0 else 0.0


def _object_is(scene: Scene, detected: dict[str, Any], query: Caption) -> bool:
    """The detected box is, by overlap, a true object of the queried colour and shape."""
    (colour, shape), _ = query.terms[0]
    bbox = detected.get("bbox") or {}
    if not bbox:
        return False
    best = max(scene.boxes, key=lambda b: _iou(bbox, b))
    return _iou(bbox, best) >= MIN_IOU and (best.colour, best.name) == (colour, shape)


def _precision(hits: list[Scene], query: Caption, relevant: int) -> float:
    return sum(s.holds(query) for s in hits[:10]) / min(10, relevant)


class Measure:
    """Runs the measures against one index, on the scenes indexed with `tag`."""

    def __init__(self, client: OpenSearch, index: str, scenes: list[Scene], tag: str) -> None:
        self.client, self.index, self.tag = client, index, tag
        self.scenes = {s.id: s for s in scenes}
        self.only = Filters(tags=(tag,))

    def _hits(self, body: dict) -> list[dict]:
        return list(search(self.client, self.index, body)["hits"]["hits"])

    def _scene(self, hit: dict) -> Scene:
        return self.scenes[hit["_source"]["image_id"]]

    def _queries(self) -> list[tuple[Caption, int]]:
        """Every "a {colour} {shape}" with at least one picture holding it, and how many do."""
        counted = [(q, sum(s.holds(q) for s in self.scenes.values())) for q in all_object_queries()]
        return [(q, n) for q, n in counted if n]

    def text(self) -> dict[str, Any]:
        per = {q.text: _precision([self._scene(h) for h in self._hits(text_query(q.text, 10, filters=self.only))],
                                  q, n) for q, n in self._queries()}
        return _summary(per)

    def objects(self) -> dict[str, Any]:
        right = total = 0
        worst: dict[str, float] = {}
        for q, _ in self._queries():
            hits = self._hits(object_query(q.text, 10, filters=self.only))
            matched = [(h, matched_object(h)) for h in hits]
            ok = [m is not None and _object_is(self._scene(h), m[1], q) for h, m in matched]
            right, total = right + sum(ok), total + len(ok)
            worst[q.text] = sum(ok) / len(ok) if ok else 0.0
        return {"rate": right / total if total else 0.0, "hits": total, "queries": len(worst),
                "worst": sorted(worst.items(), key=lambda kv: kv[1])[:3]}

    def hybrid(self) -> dict[str, Any]:
        per: dict[str, float] = {}
        unfiltered = 0
        for q, _ in self._queries():
            shape = q.terms[0][0][1]
            filters = Filters(classes=(shape,), tags=(self.tag,))
            hits = self._hits(hybrid_query(q.text, q.text, 10, filters=filters))
            scenes = [self._scene(h) for h in hits]
            unfiltered += sum(not any(o.get("class_name") == shape for o in h["_source"].get("detected_objects", []))
                              for h in hits)
            relevant = sum(s.holds(q) for s in self.scenes.values())
            per[q.text] = _precision(scenes, q, relevant)
        return {**_summary(per), "hits_without_class": unfiltered}

    def image(self, copies: int, progress: Callable[[], None] = lambda: None) -> dict[str, Any]:
        from io import BytesIO

        from PIL import Image

        first = 0
        chosen = list(self.scenes.values())[:copies]
        for scene in chosen:
            picture = Image.open(BytesIO(scene.jpeg))
            copy = jpeg_bytes(smaller_copy(picture, COPY_SCALE, COPY_QUALITY), 95)
            hits = self._hits(image_query(copy, 1, filters=self.only))
            first += bool(hits) and hits[0]["_source"]["image_id"] == scene.id
            progress()
        return {"rate": first / len(chosen), "copies": len(chosen)}


def _summary(per_query: dict[str, float]) -> dict[str, Any]:
    values = list(per_query.values())
    return {"mean": sum(values) / len(values), "queries": len(values),
            "worst": sorted(per_query.items(), key=lambda kv: kv[1])[:3]}


def measure_all(client: OpenSearch, index: str, scenes: list[Scene], tag: str, copies: int) -> dict[str, Any]:
    m = Measure(client, index, scenes, tag)
    return {"scenes": len(scenes), "objects": sum(len(s.boxes) for s in scenes),
            "text": m.text(), "objects_query": m.objects(), "hybrid": m.hybrid(), "image": m.image(copies)}


def run(settings: Any, count: int, copies: int, tag: str, progress: Callable[[str], None],
        more: Callable[[Measure], dict[str, Any]] | None = None) -> dict[str, Any]:
    """The bench stage: index `count` held-out scenes into the product's index, measure, delete them again.
    `more`: further measures on the same indexed scenes (the stage adds bench/beyond.py's), merged into the result."""
    import time

    from bootstrap.opensearch_api import connect

    client = connect(settings.opensearch)
    index = settings.index.name
    label = f"relevance-{tag}"
    progress("drawing held-out scenes")
    scenes = held_out_scenes(count, label)
    try:
        progress("indexing them through the pipeline")
        start = time.perf_counter()
        outcome = index_scenes(client, index, scenes, label)
        seconds = time.perf_counter() - start
        client.indices.refresh(index=index)
        progress("measuring")
        m = Measure(client, index, scenes, label)
        result = {"scenes": len(scenes), "objects": sum(len(s.boxes) for s in scenes),
                  "indexed": client.count(index=index, body={"query": {"term": {"tags": label}}})["count"],
                  "dead_lettered": outcome.by_index.get(settings.index.dead_letter, 0),
                  "index_seconds": round(seconds, 1),
                  "text": m.text(), "objects_query": m.objects(), "hybrid": m.hybrid(), "image": m.image(copies)}
        if more is not None:
            result |= more(m)
    finally:
        client.delete_by_query(index=index, body={"query": {"term": {"tags": label}}}, refresh=True,
                               conflicts="proceed")
    return result
