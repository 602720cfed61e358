"""The dual-branch DALI preprocessing graph: one definition for both profiles, switched by ``device``.

One definition (:func:`preprocess_graph`, wrapped by :func:`pipeline_definition`) serves both profiles
(docs/design.md#two-profiles), so what the cpu profile checks against the reference is what the gpu profile serves:

* ``device="gpu"``: ``mixed`` (nvJPEG) decoding, input ``encoded_image`` (UINT8 [-1]), for Triton's dali
  backend, which imports this module when it autoserializes the model (``export.dali_serialize`` writes the
  ``dali.py`` or ``model.dali`` that points here);
* ``device="cpu"``: CPU decoding, ``device_id=None``; :class:`preprocess.runtime.DaliPreprocessor` runs it
  inside a Triton python-backend model, with per-item validation and errors.

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
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:  # pragma: no cover
    from nvidia.dali.data_node import DataNode

    from common.model_facts import ClipFacts, YoloFacts

INPUT_NAME = "encoded_image"
DECODED_INPUT_NAME = "rgb_image"
OUTPUT_NAMES = ("yolo_input", "clip_input", "image_size", "letterbox", "decoded_image")

Device = Literal["cpu", "gpu"]
Source = Literal["encoded", "decoded"]


@dataclass(frozen=True)
class PreprocessSpec:
    """The preprocessing constants, taken from the exported models' facts (never typed here)."""

    clip_size: int
    mean: tuple[float, ...]  # 0..1 scale, three values (checked below)
    std: tuple[float, ...]  # 0..1 scale, three values
    interpolation: str  # "bilinear" or "bicubic" (checked below: it comes from metadata and model configs)
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

    f32, f64 = types.DALIDataType.FLOAT, types.DALIDataType.FLOAT64
    h = fn.cast(shape[0], dtype=types.DALIDataType.INT64)
    w = fn.cast(shape[1], dtype=types.DALIDataType.INT64)

    # YOLO branch: ultralytics LetterBox(new_shape=S, auto=False, scaleup=True, center=True).
    s = spec.yolo_size
    hf = fn.cast(h, dtype=types.DALIDataType.FLOAT64)
    wf = fn.cast(w, dtype=types.DALIDataType.FLOAT64)
    r = dmath.min(s / hf, s / wf)
    new_w = dmath.max(_round_half_even(wf * r), 1.0)
    new_h = dmath.max(_round_half_even(hf * r), 1.0)
    # round(dw/2 - 0.1) == floor(dw/2) for the integer dw >= 0 (dw/2 is k or k + 0.5).
    left = fn.cast(dmath.floor((s - new_w) / 2), dtype=types.DALIDataType.INT64)
    top = fn.cast(dmath.floor((s - new_h) / 2), dtype=types.DALIDataType.INT64)
    letterboxed = _node(fn.resize(
        image,
        resize_x=fn.cast(new_w, dtype=types.DALIDataType.FLOAT),
        resize_y=fn.cast(new_h, dtype=types.DALIDataType.FLOAT),
        interp_type=types.DALIInterpType.INTERP_LINEAR,
        antialias=False,  # cv2.INTER_LINEAR does not antialias
    ))
    # Centred padding, ÷255 and CHW in one operator: the crop window starts at (-top, -left) of the resized
    # image; crop_pos = left / dw places it there exactly (checked for every width 1..S), fill in output units.
    yolo_input = fn.crop_mirror_normalize(
        letterboxed,
        crop_w=float(s),
        crop_h=float(s),
        crop_pos_x=fn.cast(fn.cast(left, dtype=f64) / dmath.max(s - new_w, 1.0), dtype=f32),
        crop_pos_y=fn.cast(fn.cast(top, dtype=f64) / dmath.max(s - new_h, 1.0), dtype=f32),
        out_of_bounds_policy="pad",
        fill_values=[spec.pad_value / 255.0] * 3,
        dtype=types.DALIDataType.FLOAT,
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
    interp = types.DALIInterpType.INTERP_LINEAR if spec.interpolation == "bilinear" else \
        types.DALIInterpType.INTERP_CUBIC
    support = 1.0 if spec.interpolation == "bilinear" else 2.0
    rows = _pil_resample_axis(image, "W", in_len=w, other_len=h, scale=wf / fn.cast(clip_w, dtype=f64),
                              out_start=crop_left, out_len=rr, interp=interp, support=support, device=device)
    clip_crop = _pil_resample_axis(rows, "H", in_len=h, other_len=h * 0 + rr,
                                   scale=hf / fn.cast(clip_h, dtype=types.DALIDataType.FLOAT64), out_start=crop_top,
                                   out_len=rr, interp=interp, support=support, device=device)
    clip_input = fn.crop_mirror_normalize(
        clip_crop,
        dtype=types.DALIDataType.FLOAT,
        output_layout="CHW",
        mean=[255.0 * m for m in spec.mean],
        std=[255.0 * v for v in spec.std],
    )

    image_size = fn.cast(fn.stack(h, w), dtype=types.DALIDataType.INT32)
    letterbox = fn.cast(fn.stack(r, fn.cast(left, dtype=f64), fn.cast(top, dtype=f64)), dtype=f32)
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
    * round (half up, explicitly, so the CPU and GPU casts agree) and saturate to uint8 after the pass, like
      Pillow's 8-bit passes.

    ``in_len``/``other_len``/``out_start`` are INT64 DataNodes on the CPU, ``scale`` a FLOAT64 DataNode.
    """
    import nvidia.dali.fn as fn
    import nvidia.dali.math as dmath
    import nvidia.dali.types as types

    f32, f64, i32 = types.DALIDataType.FLOAT, types.DALIDataType.FLOAT64, types.DALIDataType.INT32
    margin = fn.cast(dmath.ceil(support * dmath.max(scale, 1.0)), dtype=types.DALIDataType.INT64) + 1
    one = in_len * 0 + 1
    cat_axis = 1 if axis == "W" else 0

    def along(length, across, channels):  # an HWC shape with `length` on `axis`, as INT32
        shape = fn.stack(across, length, channels) if axis == "W" else fn.stack(length, across, channels)
        return fn.cast(shape, dtype=i32)

    # Zero padding (fn.cat of zero strips: cheaper than a padding slice on the CPU).
    zeros = fn.zeros(shape=along(margin, other_len, one * 3), dtype=types.DALIDataType.UINT8)
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
    # Pillow rounds half up. DALI's CPU cast does too, its GPU cast may round half to even: rounding explicitly
    # (floor(x + 0.5), then an exact cast that only saturates) gives the same pixels on both devices.
    return fn.cast(dmath.floor(_node(weighted) / _node(weights) + 0.5), dtype=types.DALIDataType.UINT8)


def _node(out: Any) -> DataNode:
    """A single-output operator's result as the DataNode it is (DALI's stubs type it as a union)."""
    from nvidia.dali.data_node import DataNode

    assert isinstance(out, DataNode), type(out)
    return out


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
    ``prefetch_queue_depth=1, exec_async=False, exec_pipelined=False`` (docs/design.md#facts).
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
    # a CPU-only pipeline needs device_id None (which DALI's stubs do not admit, hence the untyped dict)
    kwargs: dict[str, Any]
    if device == "cpu":
        kwargs = {"device_id": None, "prefetch_queue_depth": 1, "exec_async": False, "exec_pipelined": False}
    else:
        kwargs = {"device_id": 0 if device_id is None else device_id}

    @pipeline_def(batch_size=batch_size, num_threads=num_threads, **kwargs)
    def visual_search_preprocess():
        if source == "encoded":
            encoded = fn.external_source(name=INPUT_NAME, dtype=types.DALIDataType.UINT8, ndim=1, device="cpu")
            # peek_image_shape reads the header on the CPU (EXIF orientation applied), so the geometry is a
            # CPU argument on both backends.
            shape = fn.peek_image_shape(encoded, adjust_orientation=True)
            image = fn.decoders.image(
                encoded,
                device="mixed" if device == "gpu" else "cpu",
                output_type=types.DALIImageType.RGB,
                adjust_orientation=True,
                jpeg_fancy_upsampling=True,  # nvJPEG: chroma upsampling as libjpeg-turbo (the CPU decoder)
            )
        else:
            image = fn.external_source(name=DECODED_INPUT_NAME, dtype=types.DALIDataType.UINT8, ndim=3, layout="HWC",
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

