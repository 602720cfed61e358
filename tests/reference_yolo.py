"""Test helpers for the YOLO ONNX model: an independent letterbox, box matching, and the exported detector.

The letterbox here is written from the contract (docs/design.md#triton-models, `YoloFacts`), not from the code under
test: scale r = min(S/h, S/w), resized size (round(w·r), round(h·r)) at least 1 px, bilinear (cv2
INTER_LINEAR), centred with the odd pixel of padding at the bottom/right, pad value 114, ÷255, RGB, CHW.
Mapping back divides by the per-axis scale the resize actually applied (new_w/w, new_h/h), which differs
from r by the rounding of the resized size.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from common.config import Settings
from common.model_facts import YoloFacts


@dataclass(frozen=True)
class Letterboxed:
    tensor: np.ndarray  # float32 [3, S, S]
    scale: float
    pad_x: int
    pad_y: int
    width: int  # original
    height: int
    new_width: int  # resized, inside the padding
    new_height: int


def letterbox(rgb: np.ndarray, size: int = 640, pad_value: int = 114) -> Letterboxed:
    height, width = rgb.shape[:2]
    scale = min(size / width, size / height)
    new_w, new_h = max(round(width * scale), 1), max(round(height * scale), 1)
    canvas = np.full((size, size, 3), pad_value, dtype=np.uint8)
    pad_x, pad_y = (size - new_w) // 2, (size - new_h) // 2
    resized = rgb if (new_w, new_h) == (width, height) else cv2.resize(
        rgb, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    canvas[pad_y:pad_y + new_h, pad_x:pad_x + new_w] = resized
    tensor = np.ascontiguousarray(canvas.transpose(2, 0, 1), dtype=np.float32) / np.float32(255.0)
    return Letterboxed(tensor, scale, pad_x, pad_y, width, height, new_w, new_h)


def to_original(boxes: np.ndarray, lb: Letterboxed) -> np.ndarray:
    """Boxes in letterboxed-input pixels → original image pixels, clipped to the image."""
    out = boxes.astype(np.float64).copy()
    out[:, [0, 2]] = (out[:, [0, 2]] - lb.pad_x) * (lb.width / lb.new_width)
    out[:, [1, 3]] = (out[:, [1, 3]] - lb.pad_y) * (lb.height / lb.new_height)
    out[:, [0, 2]] = out[:, [0, 2]].clip(0, lb.width)
    out[:, [1, 3]] = out[:, [1, 3]].clip(0, lb.height)
    return out


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix [len(a), len(b)] of x1y1x2y2 boxes."""
    a, b = np.asarray(a, np.float64).reshape(-1, 4), np.asarray(b, np.float64).reshape(-1, 4)
    tl = np.maximum(a[:, None, :2], b[None, :, :2])
    br = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(br - tl, 0, None), axis=2)
    area_a = np.prod(a[:, 2:] - a[:, :2], axis=1)
    area_b = np.prod(b[:, 2:] - b[:, :2], axis=1)
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-12)


def greedy_match(iou: np.ndarray, threshold: float) -> list[tuple[int, int]]:
    """Pairs (i, j), highest IoU first, each index used once, IoU ≥ threshold."""
    pairs: list[tuple[int, int]] = []
    if iou.size == 0:
        return pairs
    used_i, used_j = set(), set()
    for flat in np.argsort(-iou, axis=None):
        i, j = np.unravel_index(flat, iou.shape)
        if iou[i, j] < threshold:
            break
        if i in used_i or j in used_j:
            continue
        used_i.add(i)
        used_j.add(j)
        pairs.append((int(i), int(j)))
    return pairs


@dataclass(frozen=True)
class Detections:
    boxes: np.ndarray  # [N, 4] letterboxed-input pixels
    scores: np.ndarray  # [N]
    classes: np.ndarray  # [N] int


def split_output(output: np.ndarray) -> list[Detections]:
    """`output0` [B, max_det, 6] → per image, the rows that hold a detection (score > 0)."""
    result = []
    for rows in output:
        keep = rows[:, 4] > 0
        rows = rows[keep]
        result.append(Detections(rows[:, :4].copy(), rows[:, 4].copy(), rows[:, 5].round().astype(int)))
    return result


def run_onnx(session, facts: YoloFacts, images_rgb: list[np.ndarray], batch: int | None = None
             ) -> tuple[list[Detections], list[Letterboxed]]:
    """Letterboxes the images (reference code above) and runs them through the ONNX model in batches."""
    batch = batch or facts.max_batch
    boxed = [letterbox(im, facts.input_size, facts.pad_value) for im in images_rgb]
    detections: list[Detections] = []
    for start in range(0, len(boxed), batch):
        x = np.stack([b.tensor for b in boxed[start:start + batch]])
        (out,) = session.run([facts.output_name], {facts.input_name: x})
        assert out.shape == (len(x), facts.max_det, 6), out.shape
        detections.extend(split_output(out))
    return detections, boxed


_TEMP_DIRS: list[Path] = []
_SHAPES: dict[tuple, tuple[YoloFacts, Path]] = {}


def _cleanup() -> None:
    for path in _TEMP_DIRS:
        shutil.rmtree(path, ignore_errors=True)


atexit.register(_cleanup)


def shapes_detector(settings: Settings) -> tuple[YoloFacts, Path]:
    """The bundled shapes detector exported to ONNX: (facts, model folder). Once per test process.

    With the default config this is the very artifact `make models` produces (`settings.yolo_dir`,
    exported there if missing); with another detector configured, the shapes detector is exported into a
    temporary folder with the configured thresholds.
    """
    from export.yolo import ensure_yolo

    m = settings.models
    key = (m.yolo_weights, m.conf_threshold, m.iou_threshold, m.max_det, settings.triton.max_batch_size)
    if key not in _SHAPES:
        if m.yolo_weights is None:
            _SHAPES[key] = ensure_yolo(settings), settings.yolo_dir
        else:
            bundled = settings.model_copy(update={"models": m.model_copy(update={"yolo_weights": None})})
            directory = Path(tempfile.mkdtemp(prefix="shapes-yolo-"))
            _TEMP_DIRS.append(directory)
            _SHAPES[key] = ensure_yolo(bundled, out_dir=directory), directory
    return _SHAPES[key]


def onnx_session(model_dir: Path, facts: YoloFacts):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    return ort.InferenceSession(str(model_dir / facts.file), options, providers=["CPUExecutionProvider"])
