"""Client-side helpers an app would write: bulk-index a folder of images and run the example queries.

The images go to OpenSearch as base64 in `image_b64`; OpenSearch's default ingest pipeline does the rest
(models, detections, embeddings, dead-lettering). Nothing here calls a model.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from opensearchpy import OpenSearch
from rich.progress import Progress

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"}


def image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)


def document(path: Path, root: Path) -> dict:
    tags = [part for part in path.relative_to(root).parent.parts]
    return {"image_id": str(path.relative_to(root)), "filename": path.name, "tags": tags,
            "upload_date": datetime.now(UTC).isoformat(timespec="seconds"),
            "image_b64": base64.b64encode(path.read_bytes()).decode()}


def _batches(paths: list[Path], size: int) -> Iterator[list[Path]]:
    for start in range(0, len(paths), size):
        yield paths[start:start + size]


def ingest_folder(client: OpenSearch, index: str, folder: Path, batch: int = 16) -> dict[str, int]:
    """`_bulk` in small batches (each image costs a model call server side); counts where documents went."""
    paths = image_files(folder)
    counts: dict[str, int] = {}
    with Progress() as progress:
        task = progress.add_task(f"indexing {len(paths)} images into {index}", total=len(paths))
        for chunk in _batches(paths, batch):
            body: list[dict] = []
            for path in chunk:
                body += [{"index": {"_index": index, "_id": str(path.relative_to(folder))}}, document(path, folder)]
            response = client.bulk(body=body, request_timeout=600)
            for item in response["items"]:
                result = next(iter(item.values()))
                where = result.get("_index", "?") if "error" not in result else "rejected"
                counts[where] = counts.get(where, 0) + 1
            progress.advance(task, len(chunk))
    client.indices.refresh(index=index)
    return counts


def write_sample_images(folder: Path, count: int = 48, seed: int = 2024) -> Path:
    """Generated shape images, in sub-folders by their most common shape (the folder names become tags)."""
    from export.shapes.dataset import render

    for i in range(count):
        image, boxes = render(seed, i)
        names = [b.name for b in boxes] or ["empty"]
        target = folder / max(set(names), key=names.count) / f"sample_{i:03d}.jpg"
        target.parent.mkdir(parents=True, exist_ok=True)
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=90)
        target.write_bytes(buffer.getvalue())
    return folder
