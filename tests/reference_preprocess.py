"""An independent reference for `preprocess/graph.py`, written with Pillow, OpenCV and NumPy.

* decode: Pillow, ``ImageOps.exif_transpose`` (EXIF orientation applied), ``convert("RGB")`` (the alpha
  channel is dropped, not composited: the policy documented in ``preprocess/validate.py``);
* YOLO branch: ultralytics' ``LetterBox`` geometry (auto=False, scaleup=True, center=True) written out here:
  r = min(S/h, S/w), new size = max(round(w*r), 1) x max(round(h*r), 1) with Python's round, cv2.resize
  INTER_LINEAR, cv2.copyMakeBorder with top = round(dh - 0.1), left = round(dw - 0.1), then ÷255 and CHW;
* CLIP branch: open_clip's own eval transform, ``open_clip.image_transform(R, is_train=False, mean, std,
  interpolation, resize_mode="shortest")``, applied to the decoded Pillow image.

Nothing here imports the module under test.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps


@dataclass(frozen=True)
class ReferenceOutputs:
    yolo_input: np.ndarray  # float32 [3,S,S], ÷255 scale
    clip_input: np.ndarray  # float32 [3,R,R], normalized with mean/std
    image_size: tuple[int, int]  # (h, w)
    letterbox: tuple[float, int, int]  # (r, left, top)
    decoded_image: np.ndarray  # uint8 [H,W,3]


def decode_reference(data: bytes) -> np.ndarray:
    """Pillow decode with the EXIF orientation applied and alpha dropped; uint8 [H,W,3] RGB."""
    image = Image.open(io.BytesIO(data))
    image.load()
    image = ImageOps.exif_transpose(image).convert("RGB")
    return np.asarray(image, dtype=np.uint8).copy()


def letterbox_params(height: int, width: int, size: int) -> tuple[float, int, int, int, int]:
    """(r, new_w, new_h, left, top) exactly as ultralytics' LetterBox computes them."""
    r = min(size / height, size / width)
    new_w = max(round(width * r), 1)
    new_h = max(round(height * r), 1)
    dw = (size - new_w) / 2
    dh = (size - new_h) / 2
    left = round(dw - 0.1)
    top = round(dh - 0.1)
    return r, new_w, new_h, left, top


def letterbox_reference(rgb: np.ndarray, size: int, pad_value: int) -> tuple[np.ndarray, tuple[float, int, int]]:
    """Letterboxed uint8 image → float32 [3,S,S] on the ÷255 scale, plus (r, left, top)."""
    import cv2

    height, width = rgb.shape[:2]
    r, new_w, new_h, left, top = letterbox_params(height, width, size)
    resized = rgb
    if (width, height) != (new_w, new_h):
        resized = cv2.resize(rgb, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    bottom = size - new_h - top
    right = size - new_w - left
    padded = cv2.copyMakeBorder(resized, top, bottom, left, right, cv2.BORDER_CONSTANT,
                                value=(pad_value, pad_value, pad_value))
    assert padded.shape == (size, size, 3), padded.shape
    return (padded.astype(np.float32) / 255.0).transpose(2, 0, 1).copy(), (r, left, top)


def clip_reference(rgb: np.ndarray, image_size: int, mean: Sequence[float], std: Sequence[float],
                   interpolation: str) -> np.ndarray:
    """open_clip's eval preprocessing of the decoded image; float32 [3,R,R], normalized."""
    import open_clip

    transform = open_clip.image_transform(image_size, is_train=False, mean=tuple(mean), std=tuple(std),
                                          interpolation=interpolation, resize_mode="shortest")
    return transform(Image.fromarray(rgb)).numpy().astype(np.float32)


def reference_preprocess(data: bytes, *, clip_size: int, mean: Sequence[float], std: Sequence[float],
                         interpolation: str, yolo_size: int = 640, pad_value: int = 114) -> ReferenceOutputs:
    rgb = decode_reference(data)
    yolo, letterbox = letterbox_reference(rgb, yolo_size, pad_value)
    clip = clip_reference(rgb, clip_size, mean, std, interpolation)
    return ReferenceOutputs(yolo_input=yolo, clip_input=clip, image_size=(rgb.shape[0], rgb.shape[1]),
                            letterbox=letterbox, decoded_image=rgb)


def unnormalize(clip_input: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """Undo (x - mean)/std: back to the ÷255 scale, for comparisons in pixel units."""
    m = np.asarray(mean, dtype=np.float64).reshape(3, 1, 1)
    s = np.asarray(std, dtype=np.float64).reshape(3, 1, 1)
    return clip_input.astype(np.float64) * s + m
