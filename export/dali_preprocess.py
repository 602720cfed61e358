"""The dual-branch DALI preprocessing: one pipeline definition, a `device` switch, and a CPU runtime.

One definition (:func:`preprocess_graph`, wrapped by :func:`pipeline_definition`) serves both profiles
(DESIGN.md §4, §5):

* ``device="gpu"``: ``mixed`` (nvJPEG) decoding, input ``encoded_image`` (UINT8 [-1]), for Triton's dali
  backend. :func:`serialize_gpu` writes ``model.dali``; DALI 2.4 needs CUDA to serialize a GPU pipeline, so
  without a GPU it raises :class:`GpuSerializationError`, and :func:`write_autoserialize_model` writes a
  ``dali.py`` that the dali backend serializes itself when it loads the model.
* ``device="cpu"``: CPU decoding, ``device_id=None``; :class:`DaliPreprocessor` runs it inside a Triton
  python-backend model, with per-item validation and errors.

Outputs, in this order (they are Triton tensor names):

``yolo_input``    FP32 [3,S,S]  letterbox to S x S like ultralytics' ``LetterBox`` (scale r = min(S/h, S/w),
                                new size = round(w*r) x round(h*r) with Python's round-half-even and at least
                                1 px, bilinear without antialiasing like cv2 INTER_LINEAR, centred padding
                                ``pad_value`` with left = round(dw - 0.1), top = round(dh - 0.1)), ÷255, CHW.
``clip_input``    FP32 [3,R,R]  open_clip/torchvision eval transform, ``resize_mode="shortest"``: shorter side
                                to R and longer side to int(R*long/short), antialiased resampling with the
                                variant's interpolation exactly as Pillow does it (see
                                :func:`_pil_resample_axis`), centre crop R x R with torchvision's
                                round-half-even offsets, (x/255 - mean)/std, CHW.
``image_size``    INT32 [2]     (h, w) of the decoded, orientation-corrected image.
``letterbox``     FP32 [3]      (r, left, top): original = (letterboxed - (left, top)) / r.
``decoded_image`` UINT8 [H,W,3] the decoded RGB image at its original resolution (for the per-object crops).

All the geometry (letterbox scale and padding, CLIP resize and crop offsets) is computed inside the DALI
graph from the image shape, so the serialized GPU model computes it too.

What DALI 2.4's CPU decoder does (measured against Pillow in ``tests/parity``; identical pixels): it applies
the EXIF orientation of JPEGs (``adjust_orientation=True``, also in ``peek_image_shape``), converts grayscale
and CMYK JPEGs to RGB exactly as Pillow's ``convert("RGB")`` does, and drops the alpha channel of PNGs (RGBA,
LA, palette with transparency) exactly like ``convert("RGB")``. **Alpha policy: drop alpha, no compositing**
(the reference does ``convert("RGB")`` too, before open_clip's transform). The nvJPEG (``mixed``) path could
not be checked here (no GPU; ``test_gpu_pipeline_matches_cpu`` runs where there is one). DALI does not read
GIF, and a decoding error invalidates the whole pipeline object. Hence the CPU runtime:

* validates each item before DALI sees it (empty, not an image, truncated, above the pixel limit: read from
  the header only, so a huge image is never decoded);
* sends JPEG/PNG/simple WebP to the DALI decoder; every other format Pillow reads (GIF, BMP, TIFF, extended
  WebP, PNG/WebP carrying an EXIF orientation) is decoded with Pillow (``exif_transpose`` +
  ``convert("RGB")``) and the decoded pixels go through the *same* graph built with ``source="decoded"``;
* if DALI still fails on a batch, the pipeline is rebuilt and the items are retried one by one; an item DALI
  cannot decode falls back to Pillow, and only an item neither can decode gets ``decode_failed``.
"""

from __future__ import annotations

import io
import struct
import threading
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

from common.contract import IMAGE_ERROR_CODES

if TYPE_CHECKING:  # pragma: no cover
    from common.config import Settings
    from common.model_facts import ClipFacts, YoloFacts

INPUT_NAME = "encoded_image"
DECODED_INPUT_NAME = "rgb_image"
OUTPUT_NAMES = ("yolo_input", "clip_input", "image_size", "letterbox", "decoded_image")
ERROR_CODES = IMAGE_ERROR_CODES  # the adapter reads them to tell a bad image from an outage

Device = Literal["cpu", "gpu"]
Source = Literal["encoded", "decoded"]


@dataclass(frozen=True)
class PreprocessSpec:
    """The preprocessing constants, taken from the exported models' facts (never typed here)."""

    clip_size: int
    mean: tuple[float, float, float]  # 0..1 scale
    std: tuple[float, float, float]  # 0..1 scale
    interpolation: Literal["bilinear", "bicubic"]
    yolo_size: int = 640
    pad_value: int = 114

    def __post_init__(self) -> None:
        if self.interpolation not in ("bilinear", "bicubic"):
            raise ValueError(f"unsupported CLIP interpolation {self.interpolation!r} (bilinear or bicubic)")
        if self.clip_size < 1 or self.yolo_size < 1:
            raise ValueError("clip_size and yolo_size must be positive")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ValueError("mean and std need 3 values each, std > 0")
        if not 0 <= self.pad_value <= 255:
            raise ValueError("pad_value must be within 0..255")

    @classmethod
    def from_facts(cls, clip: ClipFacts, yolo: YoloFacts) -> PreprocessSpec:
        if clip.resize_mode != "shortest":
            raise ValueError(f"only resize_mode 'shortest' is implemented, not {clip.resize_mode!r}")
        return cls(clip_size=clip.image_size, mean=tuple(clip.mean), std=tuple(clip.std),
                   interpolation=clip.interpolation, yolo_size=yolo.input_size, pad_value=yolo.pad_value)


# ------------------------------------------------------------------------------------------ the definition


def _round_half_even(x):
    """Python's round() on a non-negative FLOAT64 DataNode (exact: floor, fraction, tie to even)."""
    import nvidia.dali.math as dmath

    n = dmath.floor(x)
    frac = x - n
    odd = n - 2 * dmath.floor(n / 2)
    return n + (frac > 0.5) + (frac == 0.5) * odd


def preprocess_graph(image, shape, spec: PreprocessSpec, device: Device = "cpu") -> dict:
    """Builds both branches on a decoded HWC uint8 RGB ``image`` (cpu or gpu DataNode).

    ``shape`` is a CPU DataNode holding (h, w, ...) of ``image`` as integers; every size and offset below is
    computed from it on the CPU side of the graph, then fed as arguments to the resize and slice operators.
    """
    import nvidia.dali.fn as fn
    import nvidia.dali.math as dmath
    import nvidia.dali.types as types

    h = fn.cast(shape[0], dtype=types.INT64)
    w = fn.cast(shape[1], dtype=types.INT64)

    # YOLO branch: ultralytics LetterBox(new_shape=S, auto=False, scaleup=True, center=True).
    s = spec.yolo_size
    hf = fn.cast(h, dtype=types.FLOAT64)
    wf = fn.cast(w, dtype=types.FLOAT64)
    r = dmath.min(s / hf, s / wf)
    new_w = dmath.max(_round_half_even(wf * r), 1.0)
    new_h = dmath.max(_round_half_even(hf * r), 1.0)
    # round(dw/2 - 0.1) == floor(dw/2) for the integer dw >= 0 (dw/2 is k or k + 0.5).
    left = fn.cast(dmath.floor((s - new_w) / 2), dtype=types.INT64)
    top = fn.cast(dmath.floor((s - new_h) / 2), dtype=types.INT64)
    letterboxed = fn.resize(
        image,
        resize_x=fn.cast(new_w, dtype=types.FLOAT),
        resize_y=fn.cast(new_h, dtype=types.FLOAT),
        interp_type=types.INTERP_LINEAR,
        antialias=False,  # cv2.INTER_LINEAR does not antialias
    )
    # Centred padding, ÷255 and CHW in one operator: the crop window starts at (-top, -left) of the resized
    # image; crop_pos = left / dw places it there exactly (checked for every width 1..S), fill in output units.
    yolo_input = fn.crop_mirror_normalize(
        letterboxed,
        crop_w=float(s),
        crop_h=float(s),
        crop_pos_x=fn.cast(fn.cast(left, dtype=types.FLOAT64) / dmath.max(s - new_w, 1.0), dtype=types.FLOAT),
        crop_pos_y=fn.cast(fn.cast(top, dtype=types.FLOAT64) / dmath.max(s - new_h, 1.0), dtype=types.FLOAT),
        out_of_bounds_policy="pad",
        fill_values=[spec.pad_value / 255.0] * 3,
        dtype=types.FLOAT,
        output_layout="CHW",
        mean=[0.0, 0.0, 0.0],
        std=[255.0, 255.0, 255.0],
    )

    # CLIP branch: torchvision Resize(R) (shorter side to R, longer to int(R*long/short)) + CenterCrop(R),
    # resampled the way Pillow does it (see _pil_resample_axis), only over the pixels the crop keeps.
    rr = spec.clip_size
    short = dmath.min(h, w)
    clip_w = (rr * w) // short  # == R when w is the shorter side, else int(R*w/h) (exact integer floor)
    clip_h = (rr * h) // short
    crop_top = _half_even_half(clip_h - rr)
    crop_left = _half_even_half(clip_w - rr)
    interp = types.INTERP_LINEAR if spec.interpolation == "bilinear" else types.INTERP_CUBIC
    support = 1.0 if spec.interpolation == "bilinear" else 2.0
    rows = _pil_resample_axis(image, "W", in_len=w, other_len=h, scale=wf / fn.cast(clip_w, dtype=types.FLOAT64),
                              out_start=crop_left, out_len=rr, interp=interp, support=support, device=device)
    clip_crop = _pil_resample_axis(rows, "H", in_len=h, other_len=h * 0 + rr,
                                   scale=hf / fn.cast(clip_h, dtype=types.FLOAT64), out_start=crop_top,
                                   out_len=rr, interp=interp, support=support, device=device)
    clip_input = fn.crop_mirror_normalize(
        clip_crop,
        dtype=types.FLOAT,
        output_layout="CHW",
        mean=[255.0 * m for m in spec.mean],
        std=[255.0 * v for v in spec.std],
    )

    image_size = fn.cast(fn.stack(h, w), dtype=types.INT32)
    letterbox = fn.cast(fn.stack(r, fn.cast(left, dtype=types.FLOAT64), fn.cast(top, dtype=types.FLOAT64)),
                        dtype=types.FLOAT)
    return {
        "yolo_input": yolo_input,
        "clip_input": clip_input,
        "image_size": image_size,
        "letterbox": letterbox,
        "decoded_image": image,
    }


def _pil_resample_axis(image, axis: str, *, in_len, other_len, scale, out_start, out_len: int, interp, support,
                       device: Device = "cpu"):
    """One Pillow resampling pass along ``axis`` ("W" = horizontal, "H" = vertical) of an HWC uint8 image.

    Pillow (``Image.resize``, which open_clip/torchvision use) resamples horizontally then vertically, each
    pass rounding and clipping to uint8, with a kernel widened by the scale factor (antialiasing) and, at the
    image borders, the weights of the taps that fall outside renormalized to sum to 1. DALI's resize instead
    clamps the coordinates at the borders (the edge pixel takes the outside weights), which differs by up to
    ~5% of the range next to a high-contrast border. Emulated here with DALI operators only:

    * zero-pad the axis by more than the kernel support (ceil(support * max(scale, 1)) + 1 pixels), resample
      with an input ROI = the original extent (DALI reads the zeros outside the ROI), and divide by the same
      resampling of a ones mask, i.e. the sum of the in-image weights: the renormalized, truncated kernel;
    * output pixel j of the pass is pixel ``out_start + j`` of the full-size resize (scale = in/out size),
      so the centre crop is folded into the ROI and only the kept pixels are computed;
    * round (half up) and saturate to uint8 after the pass, like Pillow's 8-bit passes.

    ``in_len``/``other_len``/``out_start`` are INT64 DataNodes on the CPU, ``scale`` a FLOAT64 DataNode.
    """
    import nvidia.dali.fn as fn
    import nvidia.dali.math as dmath
    import nvidia.dali.types as types

    f32, f64, i32 = types.FLOAT, types.FLOAT64, types.INT32
    margin = fn.cast(dmath.ceil(support * dmath.max(scale, 1.0)), dtype=types.INT64) + 1
    one = in_len * 0 + 1
    cat_axis = 1 if axis == "W" else 0

    def along(length, across, channels):  # an HWC shape with `length` on `axis`, as INT32
        shape = fn.stack(across, length, channels) if axis == "W" else fn.stack(length, across, channels)
        return fn.cast(shape, dtype=i32)

    # Zero padding (fn.cat of zero strips: cheaper than a padding slice on the CPU).
    zeros = fn.zeros(shape=along(margin, other_len, one * 3), dtype=types.UINT8)
    # The sum of the in-image weights: resample zeros(m) ones(in_len) zeros(m) the same way.
    mask_pad = fn.zeros(shape=along(margin, one, one), dtype=f32)
    mask = fn.cat(mask_pad, fn.ones(shape=along(in_len, one, one), dtype=f32), mask_pad, axis=cat_axis)
    if device == "gpu":
        zeros, mask = zeros.gpu(), mask.gpu()
    padded = fn.cat(zeros, image, zeros, axis=cat_axis)

    first = fn.cast(margin, dtype=f64) + fn.cast(out_start, dtype=f64) * scale
    last = first + out_len * scale
    zero = fn.cast(in_len * 0, dtype=f32)
    first, last = fn.cast(first, dtype=f32), fn.cast(last, dtype=f32)
    other = fn.cast(other_len, dtype=f32)
    n = zero + out_len
    if axis == "W":  # roi/size in (H, W) order
        roi = {"roi_start": fn.stack(zero, first), "roi_end": fn.stack(other, last)}
        size, mask_roi_end, mask_size = fn.stack(other, n), fn.stack(zero + 1, last), fn.stack(zero + 1, n)
    else:
        roi = {"roi_start": fn.stack(first, zero), "roi_end": fn.stack(last, other)}
        size, mask_roi_end, mask_size = fn.stack(n, other), fn.stack(last, zero + 1), fn.stack(n, zero + 1)
    common = {"interp_type": interp, "antialias": True, "dtype": f32, "subpixel_scale": False}
    weighted = fn.resize(padded, size=size, **roi, **common)
    weights = fn.resize(mask, size=mask_size, roi_start=roi["roi_start"], roi_end=mask_roi_end, **common)
    return fn.cast(weighted / weights, dtype=types.UINT8)  # rounds half up and saturates, like Pillow


def _half_even_half(d):
    """round(d / 2) with Python's round-half-even, for a non-negative INT64 DataNode d (torchvision's crop)."""
    k = d // 2
    rem = d - 2 * k
    return k + rem * (k - 2 * (k // 2))


def pipeline_definition(
    spec: PreprocessSpec,
    device: Device = "cpu",
    *,
    source: Source = "encoded",
    batch_size: int = 16,
    num_threads: int = 2,
    device_id: int | None = None,
):
    """The ``@pipeline_def`` function (call it to get a pipeline) running :func:`preprocess_graph`.

    ``device="cpu"``: CPU decoding, ``device_id=None`` (no GPU needed), external source with
    ``prefetch_queue_depth=1, exec_async=False, exec_pipelined=False`` (DESIGN.md §7).
    ``device="gpu"``: ``mixed`` nvJPEG decoding, everything after it on the GPU (``device_id`` defaults to 0;
    the tiny geometry arithmetic stays on the CPU, as operator arguments must).
    ``source="encoded"`` takes ``encoded_image`` (UINT8 [-1], the file bytes); ``source="decoded"`` takes
    ``rgb_image`` (UINT8 [H,W,3], already decoded and orientation-corrected RGB) and skips the decoder: the
    CPU runtime uses it for images only Pillow can decode.
    """
    import nvidia.dali.fn as fn
    import nvidia.dali.types as types
    from nvidia.dali import pipeline_def

    if device not in ("cpu", "gpu"):
        raise ValueError(f"device must be 'cpu' or 'gpu', not {device!r}")
    if source not in ("encoded", "decoded"):
        raise ValueError(f"source must be 'encoded' or 'decoded', not {source!r}")
    if device == "cpu":
        device_id = None
        kwargs = {"prefetch_queue_depth": 1, "exec_async": False, "exec_pipelined": False}
    else:
        device_id = 0 if device_id is None else device_id
        kwargs = {}

    @pipeline_def(batch_size=batch_size, num_threads=num_threads, device_id=device_id, **kwargs)
    def visual_search_preprocess():
        if source == "encoded":
            encoded = fn.external_source(name=INPUT_NAME, dtype=types.UINT8, ndim=1, device="cpu")
            # peek_image_shape reads the header on the CPU (EXIF orientation applied), so the geometry is a
            # CPU argument on both backends.
            shape = fn.peek_image_shape(encoded, adjust_orientation=True)
            image = fn.decoders.image(
                encoded,
                device="mixed" if device == "gpu" else "cpu",
                output_type=types.RGB,
                adjust_orientation=True,
                jpeg_fancy_upsampling=True,  # nvJPEG: chroma upsampling as libjpeg-turbo (the CPU decoder)
            )
        else:
            image = fn.external_source(name=DECODED_INPUT_NAME, dtype=types.UINT8, ndim=3, layout="HWC",
                                       device="cpu")
            shape = image.shape()
            if device == "gpu":
                image = image.gpu()
        outputs = preprocess_graph(image, shape, spec, device)
        return tuple(outputs[name] for name in OUTPUT_NAMES)

    return visual_search_preprocess


def build_pipeline(spec: PreprocessSpec, device: Device = "cpu", **kwargs):
    """An (unbuilt) pipeline from :func:`pipeline_definition` (same keyword arguments)."""
    return pipeline_definition(spec, device, **kwargs)()


class GpuSerializationError(RuntimeError):
    """``model.dali`` cannot be written here: DALI needs a CUDA device to serialize a GPU pipeline."""


def serialize_gpu(
    path: str | Path,
    clip: ClipFacts | None = None,
    yolo: YoloFacts | None = None,
    *,
    spec: PreprocessSpec | None = None,
    batch_size: int = 16,
    num_threads: int = 4,
) -> Path:
    """Writes the GPU (``mixed`` decoding) pipeline to ``path`` (``model.dali`` for Triton's dali backend).

    Give either the two facts objects or a ready ``spec``. DALI 2.4 instantiates the pipeline backend to
    serialize, and a pipeline with a device id needs CUDA: on a machine without a GPU this raises
    :class:`GpuSerializationError`. There, use :func:`write_autoserialize_model` instead (Triton's dali
    backend then serializes the same definition when it loads the model, on the GPU server).
    """
    spec = _spec_from(spec, clip, yolo)
    path = Path(path)
    pipe = build_pipeline(spec, "gpu", source="encoded", batch_size=batch_size, num_threads=num_threads)
    try:
        serialized = pipe.serialize()
    except RuntimeError as exc:
        raise GpuSerializationError(
            f"cannot serialize the GPU DALI pipeline to {path} on this machine: DALI needs a CUDA device to "
            "serialize a pipeline with GPU operators (nvJPEG decoding). Run serialize_gpu on a machine with a "
            "GPU and the DALI version of the Triton dali backend, or write the model with "
            f"write_autoserialize_model() so Triton serializes it at load time. DALI said: "
            f"{str(exc).strip().splitlines()[0]}"
        ) from exc
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(serialized)
    return path


def write_autoserialize_model(
    version_dir: str | Path,
    clip: ClipFacts | None = None,
    yolo: YoloFacts | None = None,
    *,
    spec: PreprocessSpec | None = None,
    batch_size: int = 16,
    num_threads: int = 4,
) -> Path:
    """Writes ``<version_dir>/dali.py`` for the dali backend's autoserialization (no GPU needed here).

    The file holds no pipeline code: it imports :func:`pipeline_definition` from this module with the
    constants baked in, so the Triton server's Python must be able to import ``export.dali_preprocess``
    (put the repository on its ``PYTHONPATH``). Triton serializes it to ``model.dali`` when loading.
    """
    spec = _spec_from(spec, clip, yolo)
    path = Path(version_dir) / "dali.py"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        '"""Generated by export/dali_preprocess.py: Triton\'s dali backend serializes this at load time."""\n\n'
        "from nvidia.dali.plugin.triton import autoserialize\n\n"
        "from export.dali_preprocess import PreprocessSpec, pipeline_definition\n\n"
        f"SPEC = {spec!r}\n\n"
        f"pipeline = autoserialize(pipeline_definition(SPEC, \"gpu\", source=\"encoded\", "
        f"batch_size={int(batch_size)}, num_threads={int(num_threads)}))\n"
    )
    return path


def _spec_from(spec: PreprocessSpec | None, clip, yolo) -> PreprocessSpec:
    if spec is not None:
        return spec
    if clip is None or yolo is None:
        raise ValueError("give either spec= or both the clip and the yolo facts")
    return PreprocessSpec.from_facts(clip, yolo)


# ------------------------------------------------------------------------------------------ the CPU runtime


@dataclass(frozen=True)
class PreprocessResult:
    """One image's outputs (arrays owned by this object, not by DALI)."""

    yolo_input: np.ndarray  # float32 [3,S,S]
    clip_input: np.ndarray  # float32 [3,R,R]
    image_size: np.ndarray  # int32 [2] (h, w)
    letterbox: np.ndarray  # float32 [3] (r, left, top)
    decoded_image: np.ndarray  # uint8 [H,W,3]
    decoder: Literal["dali", "pil"]  # which decoder produced the pixels

    def as_dict(self) -> dict[str, np.ndarray]:
        """The five outputs by Triton tensor name."""
        return {name: getattr(self, name) for name in OUTPUT_NAMES}

    def __repr__(self) -> str:
        h, w = (int(v) for v in self.image_size)
        r, left, top = (float(v) for v in self.letterbox)
        return (f"PreprocessResult(image_size=({h}, {w}), letterbox=(r={r:.6g}, left={left:g}, top={top:g}), "
                f"clip_input={tuple(self.clip_input.shape)}, decoder={self.decoder!r})")


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


def _sniff(data: bytes) -> str | None:
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


class DaliPreprocessor:
    """Runs the CPU variant of the preprocessing on a list of encoded images, one result per item.

    The DALI pipeline for encoded images is built in the constructor and reused (the one for Pillow-decoded
    pixels on first need); a pipeline that DALI invalidated after an error is rebuilt. ``batch_size`` is the
    DALI batch: longer lists are processed in chunks. A lock serializes :meth:`run`. Output arrays are copies
    owned by the results.
    """

    def __init__(
        self,
        clip_size: int,
        mean: Sequence[float],
        std: Sequence[float],
        interpolation: Literal["bilinear", "bicubic"],
        yolo_size: int = 640,
        pad_value: int = 114,
        *,
        max_pixels: int,
        num_threads: int = 2,
        batch_size: int = 16,
    ) -> None:
        if max_pixels < 1:
            raise ValueError("max_pixels must be positive")
        if batch_size < 1:
            raise ValueError("batch_size must be positive")
        self.spec = PreprocessSpec(clip_size=int(clip_size), mean=tuple(float(m) for m in mean),
                                   std=tuple(float(s) for s in std), interpolation=interpolation,
                                   yolo_size=int(yolo_size), pad_value=int(pad_value))
        self.max_pixels = int(max_pixels)
        self.num_threads = int(num_threads)
        self.batch_size = int(batch_size)
        self._pipes: dict[str, object] = {}
        self._lock = threading.Lock()
        self._pipe("encoded")  # built now, so a broken DALI install fails at model load, not per request

    @classmethod
    def from_facts(cls, clip: ClipFacts, yolo: YoloFacts, *, max_pixels: int, num_threads: int = 2,
                   batch_size: int = 16) -> DaliPreprocessor:
        spec = PreprocessSpec.from_facts(clip, yolo)
        return cls(spec.clip_size, spec.mean, spec.std, spec.interpolation, spec.yolo_size, spec.pad_value,
                   max_pixels=max_pixels, num_threads=num_threads, batch_size=batch_size)

    @classmethod
    def from_settings(cls, settings: Settings | None = None, *, num_threads: int = 2,
                      batch_size: int | None = None) -> DaliPreprocessor:
        """Reads the exported models' metadata named by the config (``make models`` writes it)."""
        from common.config import load_config
        from common.model_facts import ClipFacts, YoloFacts

        settings = settings or load_config()
        return cls.from_facts(ClipFacts.load(settings.clip_dir), YoloFacts.load(settings.yolo_dir),
                              max_pixels=settings.models.max_image_pixels, num_threads=num_threads,
                              batch_size=batch_size or settings.triton.max_batch_size)

    # ---------------------------------------------------------------------------------------- public

    def run(self, images: Sequence[bytes]) -> list[PreprocessResult | PreprocessError]:
        """Preprocesses every item; a bad item yields a :class:`PreprocessError` in its slot, never raises."""
        with self._lock:
            results: list[PreprocessResult | PreprocessError | None] = [None] * len(images)
            to_dali: list[tuple[int, bytes]] = []
            to_pil: list[tuple[int, np.ndarray]] = []
            for i, data in enumerate(images):
                try:
                    routed = self._validate(data)
                except Exception as exc:  # a checker bug must cost one item, not the request
                    routed = PreprocessError("decode_failed", f"the image could not be read: {exc!r}")
                if isinstance(routed, PreprocessError):
                    results[i] = routed
                elif isinstance(routed, np.ndarray):
                    to_pil.append((i, routed))
                else:
                    to_dali.append((i, routed))
            for idx, result in self._run_encoded(to_dali):
                if isinstance(result, (PreprocessError, PreprocessResult)):
                    results[idx] = result
                else:  # DALI could not decode it: Pillow's pixels through the decoded variant
                    to_pil.append((idx, result))
            for idx, result in self._run_decoded(to_pil):
                results[idx] = result
            return results  # type: ignore[return-value]

    def validate(self, data) -> PreprocessError | None:
        """The checks :meth:`run` makes before decoding, without decoding: empty, not an image (or not a
        supported format), truncated (file structure), too large (from the header). None when accepted.

        Cheap (no pixel decoding), so an adapter can call it before sending bytes to the GPU model, which has
        no per-item validation in front of it."""
        inspected = self._inspect(data)
        return inspected if isinstance(inspected, PreprocessError) else None

    # ---------------------------------------------------------------------------------------- checks

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
        sniffed = _sniff(data)
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
                image = ImageOps.exif_transpose(image).convert("RGB")
                return np.ascontiguousarray(np.asarray(image, dtype=np.uint8))
        except Image.DecompressionBombError as exc:
            return PreprocessError("too_large", str(exc))
        except Exception as exc:  # OSError, SyntaxError, ValueError, struct.error, EOFError, ...
            text = str(exc)
            if "truncated" in text or isinstance(exc, EOFError):
                return PreprocessError("truncated", f"the {fmt} file is truncated ({text})")
            return PreprocessError("decode_failed", f"the {fmt} image could not be decoded ({text})")

    # ---------------------------------------------------------------------------------------- DALI

    def _pipe(self, source: Source):
        pipe = self._pipes.get(source)
        if pipe is None:
            pipe = build_pipeline(self.spec, "cpu", source=source, batch_size=self.batch_size,
                                  num_threads=self.num_threads)
            pipe.build()
            self._pipes[source] = pipe
        return pipe

    def _run_batch(self, source: Source, arrays: list[np.ndarray], decoder: str) -> list[PreprocessResult]:
        pipe = self._pipe(source)
        pipe.feed_input(INPUT_NAME if source == "encoded" else DECODED_INPUT_NAME, arrays)
        outputs = pipe.run()
        return [
            PreprocessResult(*(np.array(out[k]) for out in outputs), decoder=decoder)  # np.array copies
            for k in range(len(arrays))
        ]

    def _try_batch(self, source: Source, arrays: list[np.ndarray], decoder: str):
        """(results, None) or (None, exception); a failed pipeline is dropped (DALI invalidates it)."""
        try:
            return self._run_batch(source, arrays, decoder), None
        except Exception as exc:
            self._pipes.pop(source, None)
            return None, exc

    def _run_encoded(self, items: list[tuple[int, bytes]]):
        """Yields (index, PreprocessResult | PreprocessError | Pillow pixels for the decoded route)."""
        for start in range(0, len(items), self.batch_size):
            chunk = items[start : start + self.batch_size]
            arrays = [np.frombuffer(data, dtype=np.uint8) for _, data in chunk]
            results, _ = self._try_batch("encoded", arrays, "dali")
            if results is not None:
                yield from zip((i for i, _ in chunk), results, strict=True)
                continue
            for (idx, data), array in zip(chunk, arrays, strict=True):  # isolate the item DALI refused
                results, exc = self._try_batch("encoded", [array], "dali")
                if results is not None:
                    yield idx, results[0]
                    continue
                fallback = self._pil_decode(data, _sniff(data) or "image")
                if isinstance(fallback, PreprocessError):
                    fallback = PreprocessError(fallback.code, f"{fallback.message}; DALI: {_dali_reason(exc)}")
                yield idx, fallback

    def _run_decoded(self, items: list[tuple[int, np.ndarray]]):
        for start in range(0, len(items), self.batch_size):
            chunk = items[start : start + self.batch_size]
            results, _ = self._try_batch("decoded", [a for _, a in chunk], "pil")
            if results is not None:
                yield from zip((i for i, _ in chunk), results, strict=True)
                continue
            for idx, array in chunk:
                results, exc = self._try_batch("decoded", [array], "pil")
                yield idx, (results[0] if results is not None else
                            PreprocessError("decode_failed", f"preprocessing failed: {_dali_reason(exc)}"))


def _dali_reason(exc: BaseException | None) -> str:
    """The informative part of a DALI pipeline error (the lines after "encountered:")."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if "encountered:" in lines:
        lines = lines[lines.index("encountered:") + 1 :]
    lines = [line for line in lines if not line.startswith("Current pipeline object is no longer valid")]
    return " ".join(lines)[:300] or repr(exc)


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
