"""The naive baseline: what a user writes without this product — ultralytics (PyTorch) + open_clip (PyTorch
eager) in a plain loop, one image at a time, every object crop embedded on its own.

Same variants and weights as the served models: CLIP through `export.mobileclip.load_clip` with the
configured weights (the same seeded random init offline), YOLO from the checkpoint the export used.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from PIL import Image

from common.config import REPO_ROOT, Settings
from common.model_facts import ClipFacts, YoloFacts


@dataclass
class Analysis:
    embedding: list[float]
    objects: list[dict[str, Any]]


def yolo_checkpoint(settings: Settings, facts: YoloFacts) -> Path:
    """The .pt the served detector was exported from (its metadata names it); refuses a random-init export."""
    if facts.weights.startswith("checkpoint:"):
        path = Path(facts.weights.removeprefix("checkpoint:"))
        path = path if path.is_absolute() else REPO_ROOT / path
        if path.is_file():
            return path
    from export.yolo import resolve_weights

    overrides = {"yolo_weights": facts.requested_weights}
    choice = resolve_weights(settings.model_copy(update={"models": settings.models.model_copy(update=overrides)}))
    if choice.kind not in ("bundled", "checkpoint"):
        raise RuntimeError(f"the served detector has no local checkpoint ({facts.weights}); the naive baseline "
                           "needs the same weights")
    return Path(choice.source)


class NaivePipeline:
    def __init__(self, settings: Settings, clip: ClipFacts, yolo: YoloFacts, threads: int | None = None) -> None:
        """threads: torch intra-op threads; None keeps what a plain script gets (ultralytics' predictor setup
        sets cpu_count - 1)."""
        import open_clip

        from export.mobileclip import load_clip
        from export.ultralytics_offline import load_yolo_class

        self.yolo_facts = yolo
        self.yolo_weights = yolo_checkpoint(settings, yolo)
        self.detector = load_yolo_class()(str(self.yolo_weights))
        # the predictor's setup (first call) sets torch's thread count; an explicit choice goes after it
        self.detector.predict(Image.new("RGB", (64, 64)), imgsz=yolo.input_size, device="cpu", verbose=False)
        if threads:
            torch.set_num_threads(threads)
        self.clip, self.clip_source = load_clip(clip.variant, settings.models.clip_weights)
        self.reset()
        self.transform = open_clip.image_transform(clip.image_size, is_train=False, mean=clip.mean, std=clip.std,
                                                   resize_mode=clip.resize_mode, interpolation=clip.interpolation)

    def reset(self) -> None:
        """Zeroes the per-step timers (after the warm-up)."""
        self.seconds = {"decode": 0.0, "detect": 0.0, "embed_image": 0.0, "embed_crops": 0.0}
        self.counts = {"images": 0, "crops": 0}

    def describe(self) -> dict[str, Any]:
        n = max(self.counts["images"], 1)
        per_image = {f"{k}_ms_per_image": round(v * 1000 / n, 1) for k, v in self.seconds.items()}
        crops = self.counts["crops"]
        per_crop = round(self.seconds["embed_crops"] * 1000 / crops, 1) if crops else None
        return {"yolo_checkpoint": str(self.yolo_weights), "clip_weights": self.clip_source,
                "torch": torch.__version__, "torch_threads": torch.get_num_threads(), **self.counts,
                **per_image, "embed_ms_per_crop": per_crop}

    @torch.no_grad()
    def _embed(self, image: Image.Image) -> np.ndarray:
        # open_clip is untyped and nn.Module types the method it does not declare as `Tensor | Module`
        encode_image = cast(Callable[..., torch.Tensor], self.clip.encode_image)
        return encode_image(self.transform(image)[None], normalize=True)[0].numpy()

    @torch.no_grad()
    def analyze(self, jpeg: bytes) -> Analysis:
        t0 = time.perf_counter()
        image = Image.open(io.BytesIO(jpeg)).convert("RGB")
        f = self.yolo_facts
        t1 = time.perf_counter()
        result = self.detector.predict(image, imgsz=f.input_size, conf=f.conf_threshold, iou=f.iou_threshold,
                                       max_det=f.max_det, device="cpu", verbose=False)[0]
        t2 = time.perf_counter()
        objects = []
        names = result.names
        for box, cls, conf in zip(result.boxes.xyxy.tolist(), result.boxes.cls.tolist(),
                                  result.boxes.conf.tolist(), strict=True):
            x1, y1, x2, y2 = box
            crop = image.crop((round(x1), round(y1), max(round(x2), round(x1) + 1), max(round(y2), round(y1) + 1)))
            objects.append({"bbox": {"x1": x1, "y1": y1, "x2": x2, "y2": y2}, "class_id": int(cls),
                            "class_name": str(names[int(cls)]), "confidence": float(conf),
                            "object_embedding": self._embed(crop).tolist()})
        t3 = time.perf_counter()
        embedding = self._embed(image).tolist()
        t4 = time.perf_counter()
        for key, seconds in (("decode", t1 - t0), ("detect", t2 - t1), ("embed_crops", t3 - t2),
                             ("embed_image", t4 - t3)):
            self.seconds[key] += seconds
        self.counts["images"] += 1
        self.counts["crops"] += len(objects)
        return Analysis(embedding, objects)
