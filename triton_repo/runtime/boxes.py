"""Detections from the letterboxed 640×640 frame back to the original image, and the pixels to crop."""

from __future__ import annotations

import numpy as np


def valid_detections(detections: np.ndarray) -> np.ndarray:
    """Drops the zero rows the NMS graph pads its fixed-size [max_det, 6] output with."""
    keep = (detections[:, 4] > 0) & (detections[:, 2] > detections[:, 0]) & (detections[:, 3] > detections[:, 1])
    return detections[keep]


def to_original(boxes: np.ndarray, letterbox: np.ndarray, image_hw: np.ndarray) -> np.ndarray:
    """Undoes the letterbox: (x − left) / r, (y − top) / r, clipped to the image."""
    scale, left, top = (float(v) for v in letterbox)
    height, width = (int(v) for v in image_hw)
    out = boxes.astype(np.float32).copy()
    out[:, [0, 2]] = (out[:, [0, 2]] - left) / scale
    out[:, [1, 3]] = (out[:, [1, 3]] - top) / scale
    out[:, [0, 2]] = out[:, [0, 2]].clip(0, width)
    out[:, [1, 3]] = out[:, [1, 3]].clip(0, height)
    return out


def crop_window(box: np.ndarray, image_hw: tuple[int, int]) -> tuple[int, int, int, int]:
    """Integer pixel window of a box: rounded like PIL's `Image.crop`, clipped, at least one pixel."""
    height, width = image_hw
    x1, y1, x2, y2 = (round(float(v)) for v in box)
    x1, x2 = min(max(x1, 0), width - 1), min(max(x2, 1), width)
    y1, y2 = min(max(y1, 0), height - 1), min(max(y2, 1), height)
    return x1, y1, max(x2, x1 + 1), max(y2, y1 + 1)
