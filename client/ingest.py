"""Client-side helpers an app would write: bulk-index a folder of images.

The images go to OpenSearch as base64 in `image_b64`; OpenSearch's default ingest pipeline does the rest
(models, detections, embeddings, dead-lettering). Nothing here calls a model.
"""

from __future__ import annotations

import base64
import io
import shutil
from datetime import UTC, datetime
from pathlib import Path

from opensearchpy import OpenSearch

from client.bulk import BulkOutcome, Doc, bulk_index

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"}


def image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)


def document(path: Path, root: Path) -> dict:
    tags = [part for part in path.relative_to(root).parent.parts]
    return {"image_id": str(path.relative_to(root)), "filename": path.name, "tags": tags,
            "upload_date": datetime.now(UTC).isoformat(timespec="seconds"),
            "image_b64": base64.b64encode(path.read_bytes()).decode()}


def ingest_folder(client: OpenSearch, index: str, folder: Path) -> BulkOutcome:
    """Every image under `folder`, its path as the id; small bulks with retries (client.bulk)."""
    docs = [Doc(str(path.relative_to(folder)), document(path, folder)) for path in image_files(folder)]
    outcome = bulk_index(client, index, docs, label=f"indexing {len(docs)} images into {index}")
    client.indices.refresh(index=index)
    return outcome


def write_sample_images(folder: Path, count: int = 48, seed: int = 2024) -> Path:
    """Generated shape images, in sub-folders by their most common shape (the folder names become tags), named by
    what they hold ("sample_007_red-circle_blue-star.jpg"), so that a search result can be judged at a glance.

    They are drawn like the held-out scenes the bundled models' relevance is measured on (objects 7–22 % of the
    long side, at most five), from their own seed: the demo shows the kind of picture the published figures are
    about. (The detector's training style goes down to 5 % and six objects; so small a shape is a few pixels of the
    whole-picture CLIP's 80 px view, and only the object query finds it reliably.)"""
    from export.shapes.dataset import HELD_OUT_STYLE, render

    shutil.rmtree(folder, ignore_errors=True)  # the generator's own folder: samples of an older generator go
    for i in range(count):
        image, boxes = render(seed, i, style=HELD_OUT_STYLE)
        names = [b.name for b in boxes] or ["empty"]
        holds = "_".join(sorted({f"{b.colour}-{b.name}" for b in boxes}))
        target = folder / max(set(names), key=names.count) / f"sample_{i:03d}_{holds}.jpg"
        target.parent.mkdir(parents=True, exist_ok=True)
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=90)
        target.write_bytes(buffer.getvalue())
    return folder
