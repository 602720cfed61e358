"""gpu profile: the per-item checks of the cpu preprocess, made before the batched nvJPEG decoder.

Triton's dali backend decodes a whole dynamic batch in one pipeline run, so a single undecodable image fails
every request of that batch. The cpu profile's preprocess validates each item first (and decodes the odd
formats with Pillow); this gate gives the gpu profile the same per-item verdicts, with the same error codes
(``common.contract.IMAGE_ERROR_CODES``, which the adapter reads to tell a bad image from an outage):

* JPEG (the format nvJPEG decodes on the GPU): header and file-structure checks only (empty, not an image,
  truncated, too many pixels declared), never a pixel decode on the CPU; the original bytes go on;
* every other format (PNG, WebP, GIF, BMP, TIFF; DALI decodes PNG/WebP on the CPU anyway, and cannot read
  GIF/BMP/TIFF or apply a non-JPEG EXIF orientation): decoded with Pillow exactly as the cpu profile's fallback
  does (orientation applied, alpha dropped), so corrupt pixel data is caught here, and handed on as a PNG
  without metadata, which DALI decodes to the same pixels.

The checks are :class:`export.dali_preprocess.DaliPreprocessor`'s own, so both profiles refuse the same bytes.
"""

from __future__ import annotations

import io

import numpy as np

from export.dali_preprocess import DaliPreprocessor, PreprocessError

GPU_DECODED_FORMATS = ("JPEG", "MPO")  # what goes to nvJPEG untouched


class ImageGate(DaliPreprocessor):
    """DaliPreprocessor's validation without its DALI pipelines (the gate runs where no decoding happens).

    ``__init__`` deliberately skips the parent's, which builds a CPU pipeline: only ``max_pixels`` is used by
    the inherited checks (``_inspect``, ``_pil_decode``, ``_structurally_truncated``).
    """

    def __init__(self, max_pixels: int) -> None:  # the parent's would build a DALI pipeline: see above
        if max_pixels < 1:
            raise ValueError("max_pixels must be positive")
        self.max_pixels = int(max_pixels)

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
