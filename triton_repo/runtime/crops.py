"""The CLIP variant's own preprocessing applied to object crops, on whatever device the image lives on.

Shortest-side resize to R (antialiased, like torchvision on PIL images), centre crop R×R, then the variant's
mean/std. Written with torch so the same code serves the cpu profile and, on CUDA tensors, the gpu profile.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from triton_repo.runtime.boxes import crop_window


def preprocess_crop(image: torch.Tensor, window: tuple[int, int, int, int], size: int, mean: torch.Tensor,
                    std: torch.Tensor, interpolation: str) -> torch.Tensor:
    """One HWC uint8 crop → CHW float32 [3, size, size]."""
    x1, y1, x2, y2 = window
    crop = image[y1:y2, x1:x2].permute(2, 0, 1).unsqueeze(0).float()
    h, w = crop.shape[-2:]
    # torchvision's rule for a shortest-side resize: the long side is truncated, not rounded
    new_h, new_w = (size, int(size * w / h)) if h <= w else (int(size * h / w), size)
    resized = F.interpolate(crop, size=(new_h, new_w), mode=interpolation, antialias=True, align_corners=False)
    resized = resized.clamp(0, 255).round()  # PIL resizes to uint8; keep the same quantization
    top, left = round((new_h - size) / 2), round((new_w - size) / 2)
    square = resized[0, :, top:top + size, left:left + size] / 255.0
    return (square - mean[:, None, None]) / std[:, None, None]


def crops_batch(image: np.ndarray | torch.Tensor, boxes: np.ndarray, size: int, mean: tuple[float, ...],
                std: tuple[float, ...], interpolation: str, device: str = "cpu") -> torch.Tensor:
    """All crops of one image as one [N, 3, size, size] batch, ready for a single clip_image call."""
    tensor = torch.as_tensor(image, device=device)
    hw = (int(tensor.shape[0]), int(tensor.shape[1]))
    mean_t = torch.tensor(mean, dtype=torch.float32, device=device)
    std_t = torch.tensor(std, dtype=torch.float32, device=device)
    if len(boxes) == 0:
        return torch.zeros((0, 3, size, size), dtype=torch.float32, device=device)
    return torch.stack([
        preprocess_crop(tensor, crop_window(box, hw), size, mean_t, std_t, interpolation) for box in boxes
    ])
