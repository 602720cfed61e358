"""The documents the ingestion tests send: generated shape images of mixed sizes and formats, plus bad ones."""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass, field

from PIL import Image

from export.shapes.dataset import render
from tests import image_kinds

SEED = 9001  # not the training seed


@dataclass
class Doc:
    id: str
    body: dict
    image: bytes | None = None  # what the adapter will analyze (None for URL docs until fetched)
    bad: bool = False
    tags: list[str] = field(default_factory=list)


def _encode(image: Image.Image, fmt: str) -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return out.getvalue()


def good_docs(count: int = 44) -> list[Doc]:
    docs = []
    for i in range(count):
        image, boxes = render(SEED, i)
        fmt = "PNG" if i % 5 == 0 else "JPEG"
        if i % 7 == 3:
            image = image.convert("L")
        data = _encode(image, fmt)
        tags = sorted({b.name for b in boxes}) + (["even"] if i % 2 == 0 else ["odd"])
        body = {"image_id": f"shape-{i}", "filename": f"shapes_{i:03d}.{fmt.lower()}",
                "upload_date": f"2026-{1 + i % 12:02d}-{1 + i % 27:02d}", "tags": tags,
                "metadata": {"source": "generated", "index": i},
                "image_b64": base64.b64encode(data).decode()}
        docs.append(Doc(f"shape-{i}", body, data, tags=tags))
    for name in ("png_rgba", "jpeg_cmyk", "jpeg_exif_6", "jpeg_wide_4000x100"):
        data = image_kinds.GOOD_KINDS[name]()
        docs.append(Doc(f"kind-{name}", {"image_id": f"kind-{name}", "filename": name, "tags": ["kind"],
                                         "image_b64": base64.b64encode(data).decode()}, data, tags=["kind"]))
    return docs


def oversized_jpeg(max_pixels: int) -> bytes:
    side = int(max_pixels ** 0.5) + 64
    return _encode(Image.new("RGB", (side, side), (120, 30, 200)), "JPEG")


def bad_docs(max_pixels: int, dead_url: str) -> list[Doc]:
    truncated = image_kinds.truncated_jpeg()
    cases = {
        "truncated": {"image_b64": base64.b64encode(truncated).decode()},
        "not-an-image": {"image_b64": base64.b64encode(image_kinds.text_bytes()).decode()},
        "empty-string": {"image_b64": ""},
        "unreachable-url": {"image_url": dead_url},
        "oversized": {"image_b64": base64.b64encode(oversized_jpeg(max_pixels)).decode()},
    }
    return [Doc(f"bad-{name}", {"image_id": f"bad-{name}", "filename": name, "tags": ["bad"], **fields}, bad=True)
            for name, fields in cases.items()]
