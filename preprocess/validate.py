"""Per-item input validation, shared by both profiles so that they refuse the same bytes with the same codes.

Error codes are ``common.contract.IMAGE_ERROR_CODES`` (:data:`ERROR_CODES`): the adapter reads them to tell a
bad image from an outage. :class:`ImageValidator` sniffs the format, checks the file structure (a truncated
file), reads the pixel count from the header only (a huge image is never decoded) and decides which decoder
an accepted image goes to. Two users:

* the cpu profile's :class:`preprocess.runtime.DaliPreprocessor` (a subclass), before its DALI pipeline;
* the gpu profile's ``validate_image`` model, through :class:`ImageGate`, before the batched nvJPEG decoder.

Why the routing: what DALI 2.4's CPU decoder does (measured against Pillow in ``tests/parity``; identical
pixels): it applies the EXIF orientation of JPEGs (``adjust_orientation=True``, also in ``peek_image_shape``),
converts grayscale and CMYK JPEGs to RGB exactly as Pillow's ``convert("RGB")`` does, and drops the alpha
channel of PNGs (RGBA, LA, palette with transparency) exactly like ``convert("RGB")``. **Alpha policy: drop
alpha, no compositing** (the reference does ``convert("RGB")`` too, before open_clip's transform). The nvJPEG
(``mixed``) path could not be checked here (no GPU; ``test_gpu_pipeline_matches_cpu`` runs where there is
one). DALI does not read GIF, and a decoding error invalidates the whole pipeline object. Hence JPEG/PNG/simple
WebP go to the DALI decoder; every other format Pillow reads (GIF, BMP, TIFF, extended WebP, PNG/WebP carrying
an EXIF orientation) is decoded with Pillow (``exif_transpose`` + ``convert("RGB")``).

gpu profile: Triton's dali backend decodes a whole dynamic batch in one pipeline run, so a single undecodable
image fails every request of that batch. :class:`ImageGate` gives it the cpu profile's per-item verdicts:

* JPEG (the format nvJPEG decodes on the GPU): header and file-structure checks only (empty, not an image,
  truncated, too many pixels declared), never a pixel decode on the CPU; the original bytes go on;
* every other format (PNG, WebP, GIF, BMP, TIFF; DALI decodes PNG/WebP on the CPU anyway, and cannot read
  GIF/BMP/TIFF or apply a non-JPEG EXIF orientation): decoded with Pillow exactly as the cpu profile's fallback
  does (orientation applied, alpha dropped), so corrupt pixel data is caught here, and handed on as a PNG
  without metadata, which DALI decodes to the same pixels.
"""

from __future__ import annotations

import io
import struct
import warnings
from dataclasses import dataclass

import numpy as np

from common.contract import IMAGE_ERROR_CODES

ERROR_CODES = IMAGE_ERROR_CODES  # the adapter reads them to tell a bad image from an outage


@dataclass(frozen=True)
class PreprocessError:
    """Why one item could not be preprocessed. ``code`` is one of :data:`ERROR_CODES`."""

    code: str
    message: str

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


_JPEG_SIG = b"\xff\xd8\xff"
_PNG_SIG = b"\x89PNG\r\n\x1a\n"
_SIGNATURES = (
    (_JPEG_SIG, "JPEG"),
    (_PNG_SIG, "PNG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"BM", "BMP"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
)
# Formats Pillow may open at all (no EPS/PDF/etc.: some of those shell out to other programs). Pillow's
# JPEG opener also returns multi-picture JPEGs as format "MPO".
_PIL_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")
_SUPPORTED_TEXT = "JPEG, PNG, WebP, GIF, BMP or TIFF"


def sniff(data: bytes) -> str | None:
    """The format its signature names, or None: names a file Pillow refuses, so the error can say why."""
    for sig, name in _SIGNATURES:
        if data.startswith(sig):
            return name
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    return None


def _jpeg_is_complete(data: bytes) -> bool:
    """Walks the marker segments to the first scan, then requires an EOI marker after it."""
    pos, n = 2, len(data)
    while pos + 4 <= n:
        if data[pos] != 0xFF:
            return False
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in (0x01, *range(0xD0, 0xD8)):  # standalone markers
            pos += 2
            continue
        (length,) = struct.unpack_from(">H", data, pos + 2)
        if marker == 0xDA:  # start of scan: the entropy-coded data follows
            scan_start = pos + 2 + length
            return scan_start < n and data.find(b"\xff\xd9", scan_start) >= 0
        pos += 2 + length
    return False


def _png_is_complete(data: bytes) -> bool:
    """Walks the chunks; the file must hold every chunk it announces, up to IEND."""
    pos, n = 8, len(data)
    while pos + 8 <= n:
        (length,) = struct.unpack_from(">I", data, pos)
        kind = data[pos + 4 : pos + 8]
        end = pos + 12 + length
        if end > n:
            return False
        if kind == b"IEND":
            return True
        pos = end
    return False


def _webp_is_simple_and_complete(data: bytes) -> tuple[bool, bool]:
    (riff_size,) = struct.unpack_from("<I", data, 4)
    complete = len(data) >= 8 + riff_size
    simple = data[12:16] in (b"VP8 ", b"VP8L")
    return simple, complete


class ImageValidator:
    """The per-item checks, made without decoding pixels where the format allows it; no DALI involved.

    Only ``max_pixels`` is state: the checks are cheap and stateless otherwise, so the gpu gate uses them where
    no decoding happens, and the cpu runtime inherits them in front of its pipelines.
    """

    def __init__(self, max_pixels: int) -> None:
        if max_pixels < 1:
            raise ValueError("max_pixels must be positive")
        self.max_pixels = int(max_pixels)

    def validate(self, data) -> PreprocessError | None:
        """The checks made before decoding, without decoding: empty, not an image (or not a
        supported format), truncated (file structure), too large (from the header). None when accepted.

        Cheap (no pixel decoding), so an adapter can call it before sending bytes to the GPU model, which has
        no per-item validation in front of it."""
        inspected = self._inspect(data)
        return inspected if isinstance(inspected, PreprocessError) else None

    def _validate(self, data) -> PreprocessError | bytes | np.ndarray:
        """Returns an error, the bytes to give DALI, or the Pillow-decoded RGB pixels for the decoded route."""
        inspected = self._inspect(data)
        if isinstance(inspected, PreprocessError):
            return inspected
        data, fmt, image = inspected
        if self._dali_can_decode(fmt, data, image):
            return data
        return self._pil_decode(data, fmt)

    def _inspect(self, data):
        """PreprocessError, or (bytes, format, lazily opened Pillow image: header read, pixels not)."""
        from PIL import Image

        try:
            data = _as_bytes(data) if data is not None else b""
        except TypeError as exc:
            return PreprocessError("not_an_image", str(exc))
        if len(data) == 0:
            return PreprocessError("empty", "the image is empty (0 bytes)")
        sniffed = sniff(data)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                image = Image.open(io.BytesIO(data), formats=_PIL_FORMATS)  # lazy: header only
        except Image.DecompressionBombError as exc:
            return PreprocessError("too_large", f"image header declares too many pixels (limit {self.max_pixels}): "
                                                f"{exc}")
        except Exception as exc:  # UnidentifiedImageError, OSError, SyntaxError, struct.error, ...
            if sniffed is None:
                return PreprocessError(
                    "not_an_image", f"the bytes are not an image in a supported format ({_SUPPORTED_TEXT})"
                )
            if self._structurally_truncated(sniffed, data):
                return PreprocessError("truncated", f"the {sniffed} file ends before its image data does")
            return PreprocessError("decode_failed", f"the {sniffed} header could not be read: {exc}")

        fmt = image.format or sniffed or "?"
        width, height = image.size
        if width < 1 or height < 1:
            return PreprocessError("decode_failed", f"the {fmt} header declares an empty image {width}x{height}")
        if width * height > self.max_pixels:
            return PreprocessError(
                "too_large",
                f"image is {width}x{height} = {width * height} pixels, above the limit of {self.max_pixels}",
            )
        if self._structurally_truncated(fmt, data):
            return PreprocessError("truncated", f"the {fmt} file ends before its image data does")
        return data, fmt, image

    @staticmethod
    def _structurally_truncated(fmt: str, data: bytes) -> bool:
        try:
            if fmt in ("JPEG", "MPO"):
                return not _jpeg_is_complete(data)
            if fmt == "PNG":
                return not _png_is_complete(data)
            if fmt == "WEBP":
                return not _webp_is_simple_and_complete(data)[1]
        except struct.error:
            return True
        return False

    @staticmethod
    def _dali_can_decode(fmt: str, data: bytes, image) -> bool:
        if fmt in ("JPEG", "MPO"):
            return True  # DALI applies JPEG EXIF orientation and converts gray/CMYK like Pillow
        if fmt not in ("PNG", "WEBP"):
            return False
        if fmt == "WEBP" and not _webp_is_simple_and_complete(data)[0]:
            return False  # DALI reads only the simple (VP8/VP8L) WebP file format
        try:
            orientation = image.getexif().get(0x0112, 1)
        except Exception:
            orientation = 1
        return orientation in (None, 1)  # EXIF orientation outside JPEG: let Pillow apply it

    @staticmethod
    def _pil_decode(data: bytes, fmt: str) -> PreprocessError | np.ndarray:
        """Pillow decode, the same conventions as the DALI path: EXIF orientation applied, alpha dropped."""
        from PIL import Image, ImageOps

        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                image = Image.open(io.BytesIO(data), formats=_PIL_FORMATS)
                image.load()
                rgb = ImageOps.exif_transpose(image).convert("RGB")
                return np.ascontiguousarray(np.asarray(rgb, dtype=np.uint8))
        except Image.DecompressionBombError as exc:
            return PreprocessError("too_large", str(exc))
        except Exception as exc:  # OSError, SyntaxError, ValueError, struct.error, EOFError, ...
            text = str(exc)
            if "truncated" in text or isinstance(exc, EOFError):
                return PreprocessError("truncated", f"the {fmt} file is truncated ({text})")
            return PreprocessError("decode_failed", f"the {fmt} image could not be decoded ({text})")


def _as_bytes(data) -> bytes:
    """Accepts bytes-likes and what a Triton python model holds: a uint8 array, or a 1-element object array."""
    if isinstance(data, bytes):
        return data
    if isinstance(data, np.ndarray):
        if data.dtype == object:
            if data.size != 1:
                raise TypeError(f"expected one encoded image, got an object array of {data.size} items")
            return _as_bytes(data.reshape(-1)[0])
        return np.ascontiguousarray(data).view(np.uint8).reshape(-1).tobytes()
    if isinstance(data, (bytearray, memoryview)):
        return bytes(data)
    if isinstance(data, str):
        raise TypeError("expected the image bytes, got str (decode base64 or read the file first)")
    return bytes(data)


GPU_DECODED_FORMATS = ("JPEG", "MPO")  # what goes to nvJPEG untouched


class ImageGate(ImageValidator):
    """The gpu profile's gate: :class:`ImageValidator`'s verdicts, and bytes the batched decoder cannot fail on."""

    def admit(self, data) -> bytes | PreprocessError:
        """The bytes to give the GPU decoder, or why this item is refused."""
        try:
            inspected = self._inspect(data)
        except Exception as exc:  # a checker bug must cost one item, not the batch
            return PreprocessError("decode_failed", f"the image could not be read: {exc!r}")
        if isinstance(inspected, PreprocessError):
            return inspected
        payload, fmt, _ = inspected
        if fmt in GPU_DECODED_FORMATS:
            return payload
        pixels = self._pil_decode(payload, fmt)
        if isinstance(pixels, PreprocessError):
            return pixels
        return png_bytes(pixels)


def png_bytes(pixels: np.ndarray) -> bytes:
    """Lossless RGB PNG without metadata (no EXIF orientation left to apply twice); fast compression level."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(pixels, dtype=np.uint8), "RGB").save(buf, "PNG", compress_level=1)
    return buf.getvalue()


def admit_rows(gate: ImageGate, rows: np.ndarray) -> np.ndarray | PreprocessError:
    """One Triton request's ``encoded_image`` ([B, L] uint8, B images) → [B, L'] admitted bytes, or the first
    item's error (Triton answers per request: a request carrying a bad image fails as a whole).

    Rows of different lengths are zero-padded at the end, as a client packs images of different lengths into
    one tensor; decoders stop at the image's end marker.
    """
    array = np.asarray(rows, dtype=np.uint8)
    if array.ndim <= 1:
        items = [array.reshape(-1).tobytes()]
    else:
        items = [row.tobytes() for row in array.reshape(array.shape[0], -1)]
    admitted = []
    for item in items:
        verdict = gate.admit(item)
        if isinstance(verdict, PreprocessError):
            return verdict
        admitted.append(verdict)
    width = max(len(a) for a in admitted)
    out = np.zeros((len(admitted), width), dtype=np.uint8)
    for i, data in enumerate(admitted):
        out[i, : len(data)] = np.frombuffer(data, dtype=np.uint8)
    return out
