"""Deterministic generators of every image kind the preprocessing must handle, as encoded bytes.

`GOOD_KINDS` maps a name to a function returning bytes that must preprocess correctly; `BAD_KINDS` maps a
name to (function, expected error code). Everything is generated from fixed seeds, so the bytes are the
same on every run and every machine with the same Pillow.
"""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Callable

import numpy as np
from PIL import Image

EXIF_ORIENTATION_TAG = 0x0112


def synthetic_photo(width: int, height: int, seed: int = 0) -> np.ndarray:
    """An RGB uint8 [H,W,3] image with gradients, hard-edged shapes and mild noise (exercises resampling)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    u = xx / max(width - 1, 1)
    v = yy / max(height - 1, 1)
    img = np.stack(
        [
            200 * u + 30 * np.sin(v * 9.0),
            180 * v + 40 * np.cos(u * 7.0),
            120 + 100 * np.sin((u + v) * 5.0),
        ],
        axis=-1,
    )
    for _ in range(6):  # rectangles with sharp edges
        x0, y0 = rng.integers(0, max(width, 1)), rng.integers(0, max(height, 1))
        rw, rh = rng.integers(1, max(width // 3, 2)), rng.integers(1, max(height // 3, 2))
        img[y0 : y0 + rh, x0 : x0 + rw] = rng.integers(0, 256, size=3)
    for _ in range(4):  # discs
        cx, cy = rng.uniform(0, width), rng.uniform(0, height)
        rad = rng.uniform(2, max(min(width, height) / 4, 3))
        mask = (xx - cx) ** 2 + (yy - cy) ** 2 < rad**2
        img[mask] = rng.integers(0, 256, size=3)
    img += rng.normal(0, 6, size=img.shape)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def _encode(image: Image.Image, fmt: str, **params) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt, **params)
    return buf.getvalue()


def jpeg_rgb() -> bytes:
    return _encode(Image.fromarray(synthetic_photo(640, 480, 1)), "JPEG", quality=90)


def jpeg_odd_size() -> bytes:
    """Odd dimensions with 4:2:0 chroma subsampling, portrait."""
    return _encode(Image.fromarray(synthetic_photo(333, 517, 2)), "JPEG", quality=85, subsampling=2)


def jpeg_444() -> bytes:
    return _encode(Image.fromarray(synthetic_photo(410, 300, 3)), "JPEG", quality=95, subsampling=0)


def jpeg_progressive() -> bytes:
    return _encode(Image.fromarray(synthetic_photo(500, 380, 4)), "JPEG", quality=88, progressive=True)


def png_rgb() -> bytes:
    return _encode(Image.fromarray(synthetic_photo(500, 375, 5)), "PNG")


def png_rgba() -> bytes:
    """RGBA with alpha ranging over 0..255, including fully transparent regions over non-black colour."""
    rgb = synthetic_photo(400, 300, 6)
    xx = np.arange(400)[None, :].repeat(300, axis=0)
    alpha = np.clip(xx * 255 // 399, 0, 255).astype(np.uint8)
    alpha[:40, :] = 0
    return _encode(Image.fromarray(np.dstack([rgb, alpha]), "RGBA"), "PNG")


def png_gray_alpha() -> bytes:
    gray = synthetic_photo(300, 200, 7)[..., 1]
    alpha = np.full_like(gray, 128)
    alpha[:, :50] = 0
    return _encode(Image.fromarray(np.dstack([gray, alpha]), "LA"), "PNG")


def png_palette() -> bytes:
    img = Image.fromarray(synthetic_photo(320, 240, 8)).quantize(colors=64, method=Image.Quantize.MEDIANCUT)
    return _encode(img, "PNG")


def png_gray() -> bytes:
    return _encode(Image.fromarray(synthetic_photo(360, 270, 9)[..., 0], "L"), "PNG")


def jpeg_gray() -> bytes:
    return _encode(Image.fromarray(synthetic_photo(480, 360, 10)[..., 2], "L"), "JPEG", quality=90)


def jpeg_cmyk() -> bytes:
    rgb = synthetic_photo(400, 300, 11)
    return _encode(Image.fromarray(rgb).convert("CMYK"), "JPEG", quality=92)


def _jpeg_with_orientation(orientation: int) -> Callable[[], bytes]:
    def make() -> bytes:
        img = Image.fromarray(synthetic_photo(320, 200, 20 + orientation))
        exif = Image.Exif()
        exif[EXIF_ORIENTATION_TAG] = orientation
        return _encode(img, "JPEG", quality=90, exif=exif.tobytes())

    make.__name__ = f"jpeg_exif_orientation_{orientation}"
    return make


def png_1x1() -> bytes:
    return _encode(Image.new("RGB", (1, 1), (200, 30, 90)), "PNG")


def jpeg_1x1() -> bytes:
    return _encode(Image.new("RGB", (1, 1), (20, 230, 90)), "JPEG", quality=95)


def jpeg_wide_4000x100() -> bytes:
    return _encode(Image.fromarray(synthetic_photo(4000, 100, 30)), "JPEG", quality=90)


def jpeg_tall_100x4000() -> bytes:
    return _encode(Image.fromarray(synthetic_photo(100, 4000, 31)), "JPEG", quality=90)


def jpeg_large_3000x2000() -> bytes:
    return _encode(Image.fromarray(synthetic_photo(3000, 2000, 32)), "JPEG", quality=85)


def webp_rgb() -> bytes:
    """A format PIL decodes but that is rarer in practice; exercises the non-JPEG/PNG route."""
    return _encode(Image.fromarray(synthetic_photo(300, 220, 33)), "WEBP", lossless=True)


def gif_palette() -> bytes:
    """GIF: not a DALI format, must go through the PIL fallback."""
    img = Image.fromarray(synthetic_photo(260, 180, 34)).quantize(colors=32)
    return _encode(img, "GIF")


GOOD_KINDS: dict[str, Callable[[], bytes]] = {
    "jpeg_rgb": jpeg_rgb,
    "jpeg_odd_size": jpeg_odd_size,
    "jpeg_444": jpeg_444,
    "jpeg_progressive": jpeg_progressive,
    "png_rgb": png_rgb,
    "png_rgba": png_rgba,
    "png_gray_alpha": png_gray_alpha,
    "png_palette": png_palette,
    "png_gray": png_gray,
    "jpeg_gray": jpeg_gray,
    "jpeg_cmyk": jpeg_cmyk,
    **{f"jpeg_exif_{o}": _jpeg_with_orientation(o) for o in range(1, 9)},
    "png_1x1": png_1x1,
    "jpeg_1x1": jpeg_1x1,
    "jpeg_wide_4000x100": jpeg_wide_4000x100,
    "jpeg_tall_100x4000": jpeg_tall_100x4000,
    "jpeg_large_3000x2000": jpeg_large_3000x2000,
    "webp_rgb": webp_rgb,
    "gif_palette": gif_palette,
}


# ---------------------------------------------------------------------------------------------- bad inputs


def empty() -> bytes:
    return b""


def text_bytes() -> bytes:
    return b"this is not an image, it is a sentence that happens to be sent as an image\n" * 3


def random_bytes() -> bytes:
    return np.random.default_rng(99).integers(0, 256, size=4096, dtype=np.uint8).tobytes()


def truncated_jpeg() -> bytes:
    data = jpeg_rgb()
    return data[: len(data) // 2]


def truncated_png() -> bytes:
    data = png_rgb()
    return data[: len(data) // 2]


def jpeg_header_only() -> bytes:
    """A JPEG cut right after its frame header: the size is readable, the pixels are not there."""
    data = jpeg_rgb()
    sos = data.find(b"\xff\xda")
    return data[: sos + 2]


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def png_huge_header() -> bytes:
    """A tiny file whose PNG header claims 30000 x 30000 pixels (900 MP): must be refused from the header."""
    ihdr = struct.pack(">IIBBBBB", 30000, 30000, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")


def jpeg_huge_header() -> bytes:
    """A small JPEG whose frame header is patched to claim 60000 x 50000 pixels (3 GP)."""
    data = bytearray(jpeg_rgb())
    for marker in (b"\xff\xc0", b"\xff\xc2"):
        pos = data.find(marker)
        if pos >= 0:
            # segment: FFC0, length(2), precision(1), height(2), width(2)
            struct.pack_into(">HH", data, pos + 5, 50000, 60000)
            return bytes(data)
    raise AssertionError("no SOF marker in the generated JPEG")


def png_corrupt_data() -> bytes:
    """A structurally complete PNG (every chunk, valid CRCs, IEND) whose compressed pixel data is garbage."""
    data = bytearray(png_rgb())
    pos = data.find(b"IDAT")
    (length,) = struct.unpack_from(">I", data, pos - 4)
    start = pos + 4
    for i in range(start + 40, start + length - 10, 7):
        data[i] ^= 0x5A
    struct.pack_into(">I", data, start + length, zlib.crc32(bytes(data[pos : start + length])))
    return bytes(data)


def truncated_gif() -> bytes:
    data = gif_palette()
    return data[: len(data) // 2]


def png_above_limit_small() -> bytes:
    """A real, decodable 2000 x 1500 PNG (3 MP): refused only when the configured limit is below 3 MP."""
    return _encode(Image.new("RGB", (2000, 1500), (10, 20, 30)), "PNG")


BAD_KINDS: dict[str, tuple[Callable[[], bytes], str]] = {
    "empty": (empty, "empty"),
    "text_bytes": (text_bytes, "not_an_image"),
    "random_bytes": (random_bytes, "not_an_image"),
    "truncated_jpeg": (truncated_jpeg, "truncated"),
    "truncated_png": (truncated_png, "truncated"),
    "jpeg_header_only": (jpeg_header_only, "truncated"),
    "png_huge_header": (png_huge_header, "too_large"),
    "jpeg_huge_header": (jpeg_huge_header, "too_large"),
    "png_corrupt_data": (png_corrupt_data, "decode_failed"),
    "truncated_gif": (truncated_gif, "truncated"),
}
