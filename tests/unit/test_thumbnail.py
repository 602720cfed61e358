"""The thumbnail the adapter makes for results pages: small, JPEG, oriented like the boxes, never a failure."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from common.config import load_config
from connectors.adapter.app import create_app
from connectors.adapter.thumbnail import MAX_SIDE, make_thumbnail
from tests.triton_double import FakeTriton, analysis

EXIF_ORIENTATION = 0x0112


def encode(image: Image.Image, fmt: str, **options) -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt, **options)
    return out.getvalue()


def decode(thumbnail: str | None) -> Image.Image:
    assert thumbnail is not None
    image = Image.open(io.BytesIO(base64.b64decode(thumbnail, validate=True)))
    image.load()
    return image


@pytest.mark.parametrize(("size", "expected"), [((1280, 640), (320, 160)), ((600, 1200), (160, 320)),
                                                 ((320, 200), (320, 200)), ((40, 30), (40, 30))])
def test_at_most_max_side_keeping_the_aspect_and_never_enlarged(size, expected):
    thumb = decode(make_thumbnail(encode(Image.new("RGB", size, (10, 200, 30)), "JPEG", quality=95)))
    assert thumb.format == "JPEG" and thumb.mode == "RGB"
    assert thumb.size == expected and max(thumb.size) <= MAX_SIDE


def test_exif_orientation_is_applied_like_the_preprocessing():
    """Orientation 6 (rotate 90° clockwise to view): a stored 400×200 image is seen, boxed and drawn as 200×400."""
    stored = Image.new("RGB", (400, 200), (0, 0, 0))
    stored.paste((255, 255, 255), (0, 0, 200, 200))  # the left half white
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = 6
    thumb = decode(make_thumbnail(encode(stored, "JPEG", quality=95, exif=exif.tobytes())))
    assert thumb.size == (160, 320)
    pixels = np.asarray(thumb, dtype=np.float32)
    # rotated clockwise: the stored left half becomes the top half
    assert pixels[:150].mean() > 200 and pixels[170:].mean() < 50


@pytest.mark.parametrize("mode", ["RGBA", "L", "P", "LA", "CMYK"])
def test_any_mode_becomes_an_rgb_jpeg(mode):
    fmt = "JPEG" if mode in ("L", "CMYK") else "PNG"
    image = Image.new("RGB", (500, 250), (200, 30, 30)).convert(mode)
    thumb = decode(make_thumbnail(encode(image, fmt)))
    assert thumb.mode == "RGB" and thumb.size == (320, 160)


def test_a_photo_sized_image_gives_a_few_kilobytes():
    rng = np.random.default_rng(0)
    smooth = Image.fromarray((rng.random((6, 8, 3)) * 255).astype(np.uint8)).resize((2000, 1500), Image.BICUBIC)
    thumbnail = make_thumbnail(encode(smooth, "JPEG", quality=90))
    assert thumbnail is not None and len(thumbnail) < 40_000


@pytest.mark.parametrize("data", [b"", b"not an image at all", encode(Image.new("RGB", (64, 64)), "JPEG")[:200]])
def test_what_pillow_cannot_read_gives_none_not_an_error(data):
    assert make_thumbnail(data) is None


def test_analyze_answers_with_the_thumbnail_and_boxes_in_original_pixels():
    app = create_app(load_config())
    with TestClient(app) as client:
        app.state.triton = FakeTriton(analysis(480, 640, [[10, 20, 110, 220]], [(1, "square")]))
        image = encode(Image.new("RGB", (640, 480), (20, 20, 200)), "JPEG")
        body = client.post("/v1/analyze", json={"image": base64.b64encode(image).decode()}).json()
    assert decode(body["thumbnail"]).size == (320, 240)
    assert (body["width"], body["height"]) == (640, 480)
    assert body["objects"][0]["bbox"] == {"x1": 10, "y1": 20, "x2": 110, "y2": 220}
