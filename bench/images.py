"""The one shared image set every ingestion path sees: generated shape scenes at realistic photo sizes.

`export.shapes.dataset.render` draws scenes the bundled detector knows; each is resized to a common camera
size between 640×480 and 1920×1080 and encoded as JPEG (quality 90), deterministically per index.
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass

from PIL import Image

from export.shapes.dataset import render

SEED = 4242  # not the training seed
SIZES: tuple[tuple[int, int], ...] = ((640, 480), (800, 600), (1024, 768), (1280, 720), (1280, 960),
                                      (1600, 900), (1920, 1080))


@dataclass(frozen=True)
class BenchImage:
    id: str
    jpeg: bytes
    width: int
    height: int
    b64: str


def image_set(count: int, seed: int = SEED) -> list[BenchImage]:
    out = []
    for i in range(count):
        scene, _ = render(seed, i)
        width, height = SIZES[i % len(SIZES)]
        if scene.height > scene.width:  # keep the scene's orientation
            width, height = height, width
        buf = io.BytesIO()
        scene.convert("RGB").resize((width, height), Image.Resampling.BILINEAR).save(buf, "JPEG", quality=90)
        data = buf.getvalue()
        out.append(BenchImage(f"bench-{seed}-{i}", data, width, height, base64.b64encode(data).decode()))
    return out


def describe(images: list[BenchImage]) -> dict[str, object]:
    sizes = sorted({f"{im.width}x{im.height}" for im in images})
    total = sum(len(im.jpeg) for im in images)
    return {"count": len(images), "sizes": sizes, "mean_jpeg_kb": round(total / max(len(images), 1) / 1024, 1),
            "seed": SEED}
