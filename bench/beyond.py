"""Duplicate groups, object counts and search by a box, measured through OpenSearch on the held-out scenes.

They run on scenes `bench.relevance` indexed (its `Measure`: the index, the scenes and their tag), so the same
1000 pictures serve every measure:

* duplicates: resized (0.5–0.8×, bilinear) and recompressed (JPEG 60–80) copies of some scenes and exact copies of
  others are indexed through the pipeline under a tag of their own; a copy must carry its original's group, and
  two different scenes must not share one (the share of originals whose group another original also has);
* object counts: every document's `object_counts` equals its detected objects counted by class, and every hit of
  a count-filtered query (each class at least two, "at least two circles and no star", each class none) satisfies
  the filter by its detected objects (precision);
* search by a box: a detected box that overlaps a true object is "clicked" — its stored embedding searched with
  `like_object_query` — and each of the top 10 must hold an object of that class and colour (the matched object
  itself is judged too).
"""

from __future__ import annotations

import base64
import io
import random
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

from opensearchpy import OpenSearch, helpers
from PIL import Image

from bench.relevance import MIN_IOU, Measure, Scene, _iou
from client.bulk import Doc, bulk_index
from client.queries import OBJECTS, Count, Filters, like_object_query, matched_object, stored_object_vector, text_query
from common.contract import DUPLICATE_GROUP_FIELD, OBJECT_COUNTS_FIELD
from export.shapes.dataset import CLASS_NAMES

COPY_JOIN_TARGET, EXACT_JOIN_TARGET, FALSE_SHARE_TARGET = 0.95, 1.0, 0.01
COUNT_PRECISION_TARGET, LIKE_OBJECT_TARGET, INGEST_COST_TARGET = 1.0, 0.9, 0.95
SCALES, QUALITIES = (0.5, 0.8), (60, 80)
SEED = 2606  # the copies' sizes and qualities
MAX_WARM_UP_ROUNDS = 6


def resized_copy(scene: Scene, rng: random.Random) -> bytes:
    """A user's copy: resized by 0.5–0.8 and saved once at JPEG quality 60–80."""
    picture = Image.open(io.BytesIO(scene.jpeg)).convert("RGB")
    scale = rng.uniform(*SCALES)
    w, h = picture.size
    out = io.BytesIO()
    picture.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.Resampling.BILINEAR).save(
        out, "JPEG", quality=rng.randint(*QUALITIES))
    return out.getvalue()


def _scan(client: OpenSearch, index: str, tag: str, fields: list[str]) -> Iterator[dict]:
    query = {"query": {"term": {"tags": tag}}, "_source": ["image_id", *fields]}
    yield from helpers.scan(client, index=index, query=query, size=500)


def _groups(client: OpenSearch, index: str, tag: str) -> dict[str, str]:
    return {h["_source"]["image_id"]: h["_source"].get(DUPLICATE_GROUP_FIELD, "")
            for h in _scan(client, index, tag, [DUPLICATE_GROUP_FIELD])}


def duplicates(m: Measure, resized: int, exact: int, progress: Callable[[str], None] = lambda _: None
               ) -> dict[str, Any]:
    """Copies of the first `resized` + `exact` scenes indexed under `<tag>-copies`, judged, then deleted."""
    rng = random.Random(SEED)
    scenes = list(m.scenes.values())
    copy_tag = f"{m.tag}-copies"
    kinds = {s.id: "resized" for s in scenes[:resized]} | {s.id: "exact" for s in scenes[resized:resized + exact]}
    docs = [Doc(f"{s.id}-copy", {"image_id": f"{s.id}-copy", "tags": [copy_tag], "image_b64": base64.b64encode(
        resized_copy(s, rng) if kinds[s.id] == "resized" else s.jpeg).decode()}) for s in scenes if s.id in kinds]
    progress(f"indexing {len(docs)} copies")
    outcome = bulk_index(m.client, m.index, docs, label=f"indexing {len(docs)} copies")
    try:
        m.client.indices.refresh(index=m.index)
        progress("reading the groups")
        originals = _groups(m.client, m.index, m.tag)
        copies = _groups(m.client, m.index, copy_tag)
        joined = {kind: [copies.get(f"{i}-copy") == originals.get(i) for i, k in kinds.items() if k == kind]
                  for kind in ("resized", "exact")}
        shared = Counter(originals.values())
        sharing = [i for i, g in originals.items() if shared[g] > 1]
        return {"originals": len(originals), "resized": len(joined["resized"]), "exact": len(joined["exact"]),
                "copies_indexed": len(copies), "copies_rejected": len(outcome.rejected),
                "resized_joined": _rate(joined["resized"]), "exact_joined": _rate(joined["exact"]),
                "false_share": len(sharing) / max(1, len(originals)), "sharing_examples": sorted(sharing)[:6],
                "groups_without_value": sum(1 for g in originals.values() if not g)}
    finally:
        m.client.delete_by_query(index=m.index, body={"query": {"term": {"tags": copy_tag}}}, refresh=True,
                                 conflicts="proceed")


def _rate(flags: list[bool]) -> float:
    return sum(flags) / len(flags) if flags else 0.0


def _detected(source: dict) -> Counter[str]:
    return Counter(o.get("class_name") for o in source.get(OBJECTS) or [])


def _satisfies(counts: Counter[str], wanted: tuple[Count, ...]) -> bool:
    return all((c.least is None or counts[c.class_name] >= c.least) and (c.most is None or counts[c.class_name]
                                                                        <= c.most) for c in wanted)


def count_queries() -> list[tuple[str, tuple[Count, ...]]]:
    """Each class at least two, each class none, and the README's "at least two circles and no star"."""
    queries = [(f"{c}>=2", (Count.parse(f"{c}>=2"),)) for c in CLASS_NAMES]
    queries += [(f"{c}=0", (Count.parse(f"{c}=0"),)) for c in CLASS_NAMES]
    return [*queries, ("circle>=2, star=0", (Count.parse("circle>=2"), Count.parse("star=0")))]


def counts(m: Measure, k: int = 100) -> dict[str, Any]:
    docs = list(_scan(m.client, m.index, m.tag, [f"{OBJECTS}.class_name", OBJECT_COUNTS_FIELD]))
    exact = [dict(_detected(h["_source"])) == {c: n for c, n in (h["_source"].get(OBJECT_COUNTS_FIELD) or {}).items()
                                                if n} for h in docs]
    per: dict[str, dict[str, int]] = {}
    for label, wanted in count_queries():
        body = text_query("shapes", k, filters=Filters(tags=(m.tag,), counts=wanted),
                          source=["image_id", f"{OBJECTS}.class_name"])
        hits = m._hits(body)
        truth = sum(_satisfies(_detected(h["_source"]), wanted) for h in docs)
        per[label] = {"hits": len(hits), "right": sum(_satisfies(_detected(h["_source"]), wanted) for h in hits),
                      "true_in_set": truth}
    found, right = sum(p["hits"] for p in per.values()), sum(p["right"] for p in per.values())
    return {"documents": len(docs), "counts_exact": _rate(exact), "filter_hits": found,
            "filter_precision": right / found if found else 0.0, "queries": per}


def _clicks(m: Measure, count: int) -> Iterator[tuple[int, dict]]:
    """(object index, {class, colour, document id}) of detected boxes that overlap a true object: one per scene,
    scenes in id order."""
    hits = sorted(_scan(m.client, m.index, m.tag, [f"{OBJECTS}.bbox"]), key=lambda h: h["_source"]["image_id"])
    for hit in hits:
        scene = m.scenes.get(hit["_source"]["image_id"])
        objects = hit["_source"].get(OBJECTS) or []
        if scene is None or not objects:
            continue
        for n, detected in enumerate(objects):
            best = max(scene.boxes, key=lambda b: _iou(detected["bbox"], b))
            if _iou(detected["bbox"], best) >= MIN_IOU:
                yield n, {"class": best.name, "colour": best.colour, "id": hit["_id"]}
                count -= 1
                break
        if count <= 0:
            return


def like_object(m: Measure, clicks: int, k: int = 10) -> dict[str, Any]:
    holds = matched_right = total = 0
    for n, truth in _clicks(m, clicks):
        document = m.client.get(index=m.index, id=truth["id"], _source_includes=[f"{OBJECTS}.object_embedding"])
        body = like_object_query(stored_object_vector(document, n), k, exclude_id=truth["id"],
                                 filters=Filters(tags=(m.tag,)))
        for hit in m._hits(body):
            found = m._scene(hit)
            holds += any((b.name, b.colour) == (truth["class"], truth["colour"]) for b in found.boxes)
            matched = matched_object(hit)
            if matched is not None:
                bbox = matched[1].get("bbox") or {}
                best = max(found.boxes, key=lambda b: _iou(bbox, b)) if bbox else None
                matched_right += best is not None and _iou(bbox, best) >= MIN_IOU and (
                    best.name, best.colour) == (truth["class"], truth["colour"])
            total += 1
    return {"clicks": clicks, "hits": total, "hold_rate": holds / total if total else 0.0,
            "matched_rate": matched_right / total if total else 0.0}


def ingest_cost(client: OpenSearch, settings: Any, scenes: list[Scene], rounds: int, tag: str,
                progress: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    """Images/s through the shipped pipeline and through the same pipeline without the duplicate lookup, alternating
    rounds of the same scenes into two indices of the images template that grow alike; the ratio of the medians.
    Warm-up rounds each way are not measured, until the JVM's JIT compiler takes at most `SETTLED_JIT_SHARE` of a
    round's CPU on both paths (as bench/ceiling.py does; on a fresh node the lookup's search code was still being
    compiled during the measured rounds: 13.7 vs 4.3 ms of JIT per image), as a running cluster would have it."""
    from bench.ceiling import CpuMeter, components, create_like, jit_settled
    from bench.context import without_lookup
    from bench.memory import stack_pids
    from bench.stats import median, summary

    base, pipeline = settings.index.name, settings.index.ingest_pipeline
    plain = f"{pipeline}-bench-{tag}-nolookup"
    without_lookup(client, pipeline, plain)
    names = {"with": f"{base}-bench-{tag}-with-lookup", "without": f"{base}-bench-{tag}-without-lookup"}
    rates: dict[str, list[float]] = {"with": [], "without": []}
    cpu: dict[str, list[dict[str, float]]] = {"with": [], "without": []}
    warm_up = 0
    meter = CpuMeter(components(stack_pids(settings)))

    def one_round(label: str, kind: str) -> tuple[float, dict[str, float]]:
        progress(f"ingest cost: {label}, {kind} the lookup")
        docs = [Doc(f"{s.id}-{label}", {"image_id": s.id, "image_b64": base64.b64encode(s.jpeg).decode()})
                for s in scenes]
        meter.start()
        start = time.perf_counter()
        outcome = bulk_index(client, names[kind], docs, label=f"{kind} the lookup, {label}")
        seconds = time.perf_counter() - start
        return outcome.count(names[kind]) / seconds, meter.stop(len(docs))

    try:
        for kind, name in names.items():
            create_like(client, base, name, True, pipeline=plain if kind == "without" else None)
        for w in range(MAX_WARM_UP_ROUNDS):  # until the JIT compiler has settled on both paths
            readings = [one_round(f"warm-up {w + 1}", kind)[1] for kind in ("with", "without")]
            warm_up = w + 1
            if all(jit_settled(ms) for ms in readings):
                break
        for r in range(rounds):
            for kind in (("with", "without") if r % 2 == 0 else ("without", "with")):
                rate, spent = one_round(f"round {r + 1}", kind)
                cpu[kind].append(spent)
                rates[kind].append(rate)
    finally:
        for name in names.values():
            client.indices.delete(index=name, ignore_unavailable=True)
        client.ingest.delete_pipeline(id=plain)
    components_ms = {kind: {name: round(median([c[name] for c in runs]), 2) for name in runs[0]}
                     for kind, runs in cpu.items()}
    return {"images": len(scenes), "rounds": rounds, "warm_up_rounds": warm_up, "with_lookup": summary(rates["with"]),
            "without_lookup": summary(rates["without"]),
            "ratio": round(median(rates["with"]) / median(rates["without"]), 3), "cpu_ms_per_image": components_ms}


def measure_all(m: Measure, settings: Any, sizes: dict[str, int], progress: Callable[[str], None] = lambda _: None
                ) -> dict[str, Any]:
    """Duplicate groups, object counts, search by a box and the duplicate lookup's cost at ingest, on the scenes `m`
    measures. `sizes`: resized, exact (copies), clicks (boxes), cost_images, cost_rounds."""
    progress("duplicate groups")
    out = {"duplicates": duplicates(m, sizes["resized"], sizes["exact"], progress)}
    progress("object counts")
    out["counts"] = counts(m)
    progress("search by a box")
    out["like_object"] = like_object(m, sizes["clicks"])
    scenes = list(m.scenes.values())[:sizes["cost_images"]]
    out["ingest_cost"] = ingest_cost(m.client, settings, scenes, sizes["cost_rounds"], m.tag, progress)
    return out
