"""One `_bulk` of many images in one request, beside the same images streamed the way the README says.

What a user does first: send everything at once. The figures: images/s of that one request, and where every
document went (indexed, dead-lettered with its image, lost), then after the documented client step (`replay`
of retryable dead letters); beside it the streaming client (small bulks, few in flight) on the same images.
"""

from __future__ import annotations

import base64
import io
import time
from collections.abc import Callable
from typing import Any

from opensearchpy import OpenSearch

from bench.context import Context, create_index, delete_index, index_template_body
from client.bulk import Doc, bulk_index
from client.replay import replay
from common import contract
from export.shapes.dataset import render

SEED = 5150  # not the training seed


def small_jpegs(count: int) -> list[tuple[str, str]]:
    """(id, base64) of generated scenes at their native size, about 12 KB each: the issue's 1000 in 12 MB."""
    out = []
    for i in range(count):
        scene, _ = render(SEED, i)
        buf = io.BytesIO()
        scene.convert("RGB").save(buf, "JPEG", quality=85)
        out.append((f"bulk-{i}", base64.b64encode(buf.getvalue()).decode()))
    return out


def _dead_letters(client: OpenSearch, dead: str, index: str) -> dict[str, bool]:
    """Dead letters of `index`: id → whether the dead letter still holds the image (replayable)."""
    client.indices.refresh(index=dead)
    query = {"query": {"term": {f"{contract.FAILURE_FIELD}.index": index}},
             "_source": False, "script_fields": {"has_image": {
                 "script": f"params._source.containsKey('{contract.IMAGE_FIELD}')"}}, "size": 10000}
    hits = client.search(index=dead, body=query, request_timeout=120)["hits"]["hits"]
    return {h["_id"]: bool(h["fields"]["has_image"][0]) for h in hits}


def _account(client: OpenSearch, dead: str, index: str, sent: int) -> dict[str, int]:
    client.indices.refresh(index=index)
    indexed = client.count(index=index)["count"]
    letters = _dead_letters(client, dead, index)
    with_image = sum(letters.values())
    return {"sent": sent, "indexed": indexed, "dead_lettered": len(letters), "dead_lettered_with_image": with_image,
            "lost": sent - indexed - with_image}


def _one_bulk(ctx: Context, index: str, docs: list[tuple[str, str]]) -> float:
    body = b"".join(Doc(doc_id, {"image_id": doc_id, contract.IMAGE_FIELD: b64}).action(index) for doc_id, b64 in docs)
    t0 = time.perf_counter()
    ctx.cluster.bulk(body, timeout_s=3600)
    return time.perf_counter() - t0


def run(ctx: Context, count: int, tag: str, progress: Callable[[str], None]) -> dict[str, Any]:
    base, dead = ctx.settings.index.name, ctx.settings.index.dead_letter
    one, stream = f"{base}-bench-{tag}-onebulk", f"{base}-bench-{tag}-stream"
    client = ctx.cluster.client
    docs = small_jpegs(count)
    body = index_template_body(ctx, with_ingest_pipeline=True)
    out: dict[str, Any] = {"images": count, "mean_jpeg_kb": round(sum(len(b) * 3 / 4 for _, b in docs)
                                                                   / count / 1024, 1)}
    try:
        for name in (one, stream):
            create_index(ctx, name, body)
        progress(f"streaming {count} images (bulks of 16, 2 in flight)")
        t0 = time.perf_counter()
        outcome = bulk_index(client, stream, [Doc(i, {"image_id": i, contract.IMAGE_FIELD: b}) for i, b in docs],
                             label="bench: streaming")
        seconds = time.perf_counter() - t0
        out["streaming"] = {"seconds": round(seconds, 1), "images_per_s": round(count / seconds, 2),
                            "item_retries": outcome.retries, **_account(client, dead, stream, count)}
        progress(f"one _bulk of {count} images")
        seconds = _one_bulk(ctx, one, docs)
        first = _account(client, dead, one, count)
        out["one_bulk"] = {"seconds": round(seconds, 1), "images_per_s": round(count / seconds, 2), **first}
        progress("replaying its retryable dead letters")
        t0 = time.perf_counter()
        rounds = 0
        while rounds < 5 and _account(client, dead, one, count)["dead_lettered_with_image"]:
            replay(client, one, dead)
            rounds += 1
        out["one_bulk_after_replay"] = {"replay_rounds": rounds, "replay_seconds": round(time.perf_counter() - t0, 1),
                                        **_account(client, dead, one, count)}
        out["one_bulk_x_streaming"] = round(out["one_bulk"]["images_per_s"] / out["streaming"]["images_per_s"], 2)
    finally:
        for name in (one, stream):
            delete_index(ctx, name)
        mine = {"query": {"terms": {f"{contract.FAILURE_FIELD}.index": [one, stream]}}}
        client.delete_by_query(index=dead, body=mine, refresh=True, request_timeout=300)
    return out
