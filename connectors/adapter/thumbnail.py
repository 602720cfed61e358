"""The small picture a results page shows: made where the image already is, once, at ingest.

A browser cannot be handed the original (the index never keeps raw images, and a 20 MB photo per result would be
unusable anyway), so the adapter answers each analysis with a JPEG of at most `MAX_SIDE` pixels, base64, which
the ingest pipeline copies into the document. It is oriented like the boxes (EXIF orientation applied, as the
preprocessing does), so a page can draw the boxes, given in original pixels, over it by scaling with
width/height alone.
"""

from __future__ import annotations

import base64
import io
import logging

from PIL import Image, ImageOps

MAX_SIDE = 320
QUALITY = 80

log = logging.getLogger("visual_search.adapter")


def _fitted(size: tuple[int, int], max_side: int) -> tuple[int, int]:
    """The size `Image.thumbnail` gives `size` within max_side × max_side (EXIF rotation swaps nothing here:
    draft scales both sides alike)."""
    width, height = size
    scale = min(1.0, max_side / max(width, height, 1))
    return max(1, round(width * scale)), max(1, round(height * scale))


def small_picture(image: bytes, max_side: int = MAX_SIDE) -> Image.Image | None:
    """The picture at most `max_side` pixels on either side, oriented, RGB; None when Pillow cannot read the image.

    Called only after the models accepted the image (so its pixel count is already bounded). A picture Pillow
    cannot make is not worth failing a document whose analysis succeeded: the page shows a placeholder instead.
    The perceptual hash is computed from it too (connectors.adapter.fingerprint).
    """
    try:
        with Image.open(io.BytesIO(image)) as opened:
            # JPEG: decode at 1/2..1/8 scale straight away (DCT scaling), far cheaper than a full decode. Asked for
            # the thumbnail's own size: draft never goes below what it is asked for, so asking for a square
            # max_side × max_side kept a 640×480 photo at full size (and its resize cost 4 of its 5 ms).
            opened.draft("RGB", _fitted(opened.size, max_side))
            picture = ImageOps.exif_transpose(opened)
            # alpha dropped, grey and CMYK converted, like the preprocessing: the picture shows what the models saw
            picture = picture.convert("RGB")
            picture.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
            return picture
    except Exception as exc:  # whatever Pillow (or a plugin patched into it) raises, the document is not failed
        log.warning("no thumbnail: %s: %s", exc.__class__.__name__, exc)
        return None


def thumbnail_jpeg(picture: Image.Image, quality: int = QUALITY) -> str:
    """The picture as a base64 JPEG."""
    out = io.BytesIO()
    picture.save(out, format="JPEG", quality=quality, optimize=True)
    return base64.b64encode(out.getvalue()).decode("ascii")


def make_thumbnail(image: bytes, max_side: int = MAX_SIDE, quality: int = QUALITY) -> str | None:
    """Base64 JPEG no larger than `max_side` on either side; None when Pillow cannot read the image."""
    picture = small_picture(image, max_side)
    return None if picture is None else thumbnail_jpeg(picture, quality)
