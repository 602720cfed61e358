"""Facts about an exported model, written beside it at export time and read by everything downstream.

The index dimension, Triton tensor shapes, preprocessing constants and class names all come from here,
so no model fact is typed twice (docs/design.md#model-facts-as-data).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from common.errors import VisualSearchError

METADATA_FILE = "metadata.json"
# open_clip's name for a model whose architecture is a config file of its own (the bundled shapes CLIP): that file
# travels in the export folder, and in the tokenizer's folder of a rendered Triton repository, so neither names a
# path of the checkout it was exported from (a moved checkout, or the repository mounted in a container)
OWN_CONFIG = "local-dir:."
OPEN_CLIP_CONFIG = "open_clip_config.json"


class MissingArtifactError(VisualSearchError, FileNotFoundError):
    """An exported model or its metadata is not where the config says; tells how to produce it."""


Precision = Literal["fp32", "int8"]


class Int8Files(BaseModel):
    """The int8 copies of a model's ONNX files (ONNX Runtime quantization, `models.precision: int8`), beside the fp32
    ones. They are derived from the fp32 files of one export (`source_exported_at`): a re-export writes new facts
    without them, so a stale int8 file is never served; `recipe` moves when the quantization itself changes."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    files: dict[str, str]  # role ("image", "text"; "model" for the detector) → file name in the model folder
    methods: dict[str, str]  # role → how it was quantized (static QDQ with calibration, or dynamic)
    recipe: int
    # whether the CPU that quantized had VNNI: the recipe differs without it (export.quantize.static_types)
    vnni: bool = True
    onnxruntime_version: str
    quantized_at: str
    source_exported_at: str
    quantize_seconds: float | None = None


class _Facts(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    weights: str  # where the weights came from: "random-init (offline)", "checkpoint:<path>", "hub:<id>"
    exported_at: str
    opset: int = 17
    int8: Int8Files | None = Field(default=None)  # written by `python -m export` when models.precision is int8

    def _file_for(self, role: str, fp32_file: str, precision: Precision) -> str:
        if precision == "fp32":
            return fp32_file
        if self.int8 is None or role not in self.int8.files or self.int8.source_exported_at != self.exported_at:
            raise MissingArtifactError(
                f"no int8 {role} model for the {self.exported_at} export (models.precision is int8): run "
                "`make models` (python -m export) to quantize it"
            )
        return self.int8.files[role]

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
    # what open_clip builds and tokenizes it by: the variant name, or OWN_CONFIG
    open_clip_name: str = ""
    export_seconds: float | None = None

    @property
    def carried_files(self) -> tuple[str, ...]:
        """What the export folder holds besides the ONNX files and the metadata: the config it tokenizes by."""
        return (OPEN_CLIP_CONFIG,) if self.open_clip_name == OWN_CONFIG else ()

    def open_clip_ref(self, folder: Path) -> str:
        """The name open_clip's `get_tokenizer` takes for this model, its own config read from `folder` (the export
        folder, or a folder holding a copy of `carried_files`)."""
        if self.open_clip_name == OWN_CONFIG:
            return f"local-dir:{folder}"
        return self.open_clip_name or self.variant

    def image_file_for(self, precision: Precision) -> str:
        """The image encoder's ONNX file at this precision (int8: its quantized copy, which must exist)."""
        return self._file_for("image", self.image_file, precision)

    def text_file_for(self, precision: Precision) -> str:
        return self._file_for("text", self.text_file, precision)


class YoloFacts(_Facts):
    """A YOLO11 detector exported to ONNX with NMS inside the graph (ultralytics `nms=True`).

    Input `images` FP32 [B, 3, 640, 640]: letterboxed (pad value 114, centred), RGB, ÷255, CHW.
    Output `output0` FP32 [B, max_det, 6]: x1, y1, x2, y2 (letterboxed input pixels), score, class id
    (a float holding an integer); rows sorted by score, rows past the detections are all zero.
    The batch axis is dynamic but ultralytics unrolls its NMS loop at export time: only batches of
    1..`max_batch` images are processed; images beyond `max_batch` silently get all-zero rows.
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
    input_name: str = "images"
    output_name: str = "output0"
    max_batch: int = 1  # the largest batch the NMS graph processes (the export batch)
    requested_weights: str | None = None  # `models.yolo_weights` as configured (None: the bundled detector)
    weights_sha256: str | None = None  # of the checkpoint file, when the weights came from one
    ultralytics_version: str | None = None
    export_seconds: float | None = None
    graph_revision: int = 0  # how export.yolo reworked ultralytics' graph (export.yolo.GRAPH_REVISION)

    def file_for(self, precision: Precision) -> str:
        """The detector's ONNX file at this precision (int8: its quantized copy, which must exist)."""
        return self._file_for("model", self.file, precision)
