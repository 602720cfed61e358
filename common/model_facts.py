"""Facts about an exported model, written beside it at export time and read by everything downstream.

The index dimension, Triton tensor shapes, preprocessing constants and class names all come from here,
so no model fact is typed twice (DESIGN.md §3, §9).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict

METADATA_FILE = "metadata.json"


class MissingArtifactError(FileNotFoundError):
    """An exported model or its metadata is not where the config says; tells how to produce it."""


class _Facts(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    weights: str  # where the weights came from: "random-init (offline)", "checkpoint:<path>", "hub:<id>"
    exported_at: str
    opset: int = 17

    def save(self, directory: Path) -> Path:
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / METADATA_FILE
        path.write_text(self.model_dump_json(indent=2) + "\n")
        return path

    @classmethod
    def load(cls, directory: Path):  # -> Self
        path = Path(directory) / METADATA_FILE
        if not path.exists():
            raise MissingArtifactError(
                f"model metadata missing: {path} (run `make models` to export the models)"
            )
        return cls.model_validate(json.loads(path.read_text()))


class ClipFacts(_Facts):
    """A MobileCLIP2 image + text encoder pair exported to ONNX."""

    kind: Literal["clip"] = "clip"
    variant: str
    embedding_dim: int
    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: Literal["bilinear", "bicubic"]
    resize_mode: Literal["shortest"] = "shortest"
    context_length: int
    vocab_size: int
    image_file: str = "image.onnx"
    text_file: str = "text.onnx"
    open_clip_version: str = ""  # a re-export is due when it moves: random init and configs may change
    export_seconds: float | None = None


class YoloFacts(_Facts):
    """A YOLO11 detector exported to ONNX with NMS inside the graph.

    Output `output0` is [B, max_det, 6]: x1, y1, x2, y2 (letterboxed input pixels), score, class id;
    rows past the detections are zero.
    """

    kind: Literal["yolo"] = "yolo"
    name: str
    input_size: int = 640
    pad_value: int = 114
    class_names: list[str]
    conf_threshold: float
    iou_threshold: float
    max_det: int
    file: str = "model.onnx"
