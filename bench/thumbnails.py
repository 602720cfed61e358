"""What the results page's thumbnails cost: bytes per document (sent, and on disk) and adapter time per image.

Every analyzed document carries a JPEG of at most 320 px a side as base64 (made by the adapter, copied by the
ingest pipeline, stored but not indexed). Its cost is measured two ways on the shared bench image set:

* the thumbnail itself, made by the adapter's own function: base64 characters (what the document's `_source`
  grows by), JPEG bytes, and milliseconds per image;
* on disk: the same documents indexed twice into two bench indices, with and without the thumbnail, each
  force-merged to one segment; the store size difference divided by the documents is what each costs to keep.
"""

from __future__ import annotations

import base64
import io
import json
import time
from collections.abc import Callable
from typing import Any

from PIL import Image

from bench.context import Context, create_index, delete_index, store_bytes
from bench.images import BenchImage
from bench.stats import summary
from common.contract import THUMBNAIL_FIELD
from connectors.adapter.thumbnail import MAX_SIDE, QUALITY, make_thumbnail

MAPPING = {"properties": {"image_id": {"type": "keyword"}, "width": {"type": "integer"},
                          "height": {"type": "integer"}, THUMBNAIL_FIELD: {"type": "binary"}}}


def measure(images: list[BenchImage]) -> tuple[list[str], dict[str, Any]]:
    """The thumbnails of `images` and their sizes and times (no server involved)."""
    thumbnails, chars, jpeg_bytes, millis, sides = [], [], [], [], []
    for image in images:
        start = time.perf_counter()
        thumbnail = make_thumbnail(image.jpeg)
        millis.append((time.perf_counter() - start) * 1000)
        if thumbnail is None:
            raise RuntimeError(f"no thumbnail for {image.id}")
        thumbnails.append(thumbnail)
        chars.append(len(thumbnail))
        jpeg_bytes.append(len(thumbnail) * 3 // 4)
        with Image.open(io.BytesIO(base64.b64decode(thumbnail))) as small:
            sides.append(max(small.size))
    source_bytes = [len(image.jpeg) for image in images]
    return thumbnails, {
        "images": len(images), "max_side": MAX_SIDE, "quality": QUALITY,
        "base64_chars_per_document": summary(chars, 0), "jpeg_bytes": summary(jpeg_bytes, 0),
        "longest_side_px": summary(sides, 0), "ms_per_thumbnail": summary(millis),
        "source_jpeg_bytes": summary(source_bytes, 0),
        "share_of_source_image": round(sum(chars) / max(sum(source_bytes), 1), 4),
    }


def _store_bytes(ctx: Context, index: str, documents: list[dict[str, Any]]) -> int:
    lines = []
    for i, doc in enumerate(documents):
        lines += [{"index": {"_index": index, "_id": str(i)}}, doc]
    content = "".join(json.dumps(line) + "\n" for line in lines).encode()
    response = ctx.cluster.bulk(content, params={"refresh": "true"})
    if response.get("errors"):
        raise RuntimeError(f"bulk into {index} failed: {str(response)[:500]}")
    ctx.cluster.force_merge(index)
    return store_bytes(ctx, index)


def run(ctx: Context, images: list[BenchImage], tag: str, progress: Callable[[], None] = lambda: None
        ) -> dict[str, Any]:
    thumbnails, result = measure(images)
    progress()
    base = ctx.settings.index.name
    names = {"with": f"{base}-bench-{tag}-thumbnails", "without": f"{base}-bench-{tag}-no-thumbnails"}
    plain = [{"image_id": image.id, "width": image.width, "height": image.height} for image in images]
    sizes = {}
    try:
        for kind, name in names.items():
            create_index(ctx, name, {"settings": {"number_of_shards": 1, "number_of_replicas": 0},
                                     "mappings": MAPPING})
            documents = ([{**doc, THUMBNAIL_FIELD: thumb} for doc, thumb in zip(plain, thumbnails, strict=True)]
                         if kind == "with" else plain)
            sizes[kind] = _store_bytes(ctx, name, documents)
            progress()
    finally:
        for name in names.values():
            delete_index(ctx, name)
    result["store_bytes"] = sizes
    result["store_bytes_per_document"] = round((sizes["with"] - sizes["without"]) / len(images))
    return result
