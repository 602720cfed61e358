"""Free networks: a detector and two encoders that cost next to nothing, for measuring the path around the models.

On a GPU the real networks take a few milliseconds per image; what the rest of the path costs (the ingest pipeline,
ML Commons, the connector, the adapter, Triton's ensemble and python-backend steps, the crops, the thumbnail, the
index) is then the product's ceiling. To measure that path on any machine, `models.free_networks: true` serves
these graphs instead of the exported ones: the same names, tensors, shapes and metadata (dimension, resolution,
class names, the NMS output layout), read from the real export's facts, so everything around them runs unchanged.

What they compute, in a few microseconds per image:

* detector: the same `CONSTANT_BOXES` for every image, around the centre of the letterboxed frame (the letterbox
  centres the image, so the centre always holds image pixels and every box maps inside the original picture);
* image encoder: the channel means of a `GRID` × `GRID` grid of its input through a fixed random projection,
  L2-normalized, so different pictures (and crops) get different unit vectors spread over 48 dimensions and the vector
  index does real work (the channel means of the whole input alone put every vector on a 3-dimensional surface,
  where HNSW searches, such as the duplicate lookup's, explore far more than on real embeddings);
* text encoder: the tokens through a fixed random projection, L2-normalized.

Never the default and meaningless for search: their facts say so in `weights`, which every indexed document
carries in `model.clip_weights` / `model.detector_weights`.
"""

from __future__ import annotations

import shutil

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from common.config import Settings
from common.model_facts import ClipFacts, YoloFacts

# Boxes per image: about what the bundled detector finds in a generated scene (bench --only ceiling reports the
# objects per document of both), so the crops, embeddings and nested documents cost what they do for real.
CONSTANT_BOXES = 3
BOX_HALF = 24  # half a box side, in letterboxed pixels (640 frame)
GRID = 4  # the image encoder pools its input to GRID × GRID cells per channel
SEED = 20261206
WEIGHTS_PREFIX = "free-networks"


def _projection(rows: int, dim: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(SEED + rows)
    return rng.standard_normal((rows, dim)).astype(np.float32), rng.standard_normal(dim).astype(np.float32)


def _model(nodes: list, inputs: list, outputs: list, initializers: list, name: str, opset: int) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, name, inputs, outputs, initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                              producer_name="export.free_networks")
    onnx.checker.check_model(model, full_check=True)
    return model


def _unit_projection(features: str, rows: int, dim: int, output: str) -> tuple[list, list]:
    """Nodes `features` [B, rows] → `output` [B, dim], unit length."""
    weight, bias = _projection(rows, dim)
    nodes = [helper.make_node("MatMul", [features, "w"], ["projected"]),
             helper.make_node("Add", ["projected", "b"], ["shifted"]),
             helper.make_node("LpNormalization", ["shifted"], [output], axis=-1, p=2)]
    return nodes, [numpy_helper.from_array(weight, "w"), numpy_helper.from_array(bias, "b")]


def image_encoder(clip: ClipFacts, input_name: str = "clip_input", output_name: str = "embedding") -> onnx.ModelProto:
    size = clip.image_size
    if size % GRID:
        raise ValueError(f"the free image encoder pools {size} px into a {GRID}×{GRID} grid: not a multiple")
    cell = size // GRID
    pool = helper.make_node("AveragePool", [input_name], ["cells"], kernel_shape=[cell, cell], strides=[cell, cell])
    flat = helper.make_node("Flatten", ["cells"], ["means"], axis=1)
    nodes, weights = _unit_projection("means", 3 * GRID * GRID, clip.embedding_dim, output_name)
    return _model([pool, flat, *nodes],
                  [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, ["batch", 3, size, size])],
                  [helper.make_tensor_value_info(output_name, TensorProto.FLOAT, ["batch", clip.embedding_dim])],
                  weights, "free_image_encoder", clip.opset)


def text_encoder(clip: ClipFacts, input_name: str = "tokens", output_name: str = "embedding") -> onnx.ModelProto:
    cast = helper.make_node("Cast", [input_name], ["tokens_f"], to=TensorProto.FLOAT)
    scale = helper.make_node("Mul", ["tokens_f", "inv_vocab"], ["features"])
    nodes, weights = _unit_projection("features", clip.context_length, clip.embedding_dim, output_name)
    inv_vocab = numpy_helper.from_array(np.array(1.0 / clip.vocab_size, dtype=np.float32), "inv_vocab")
    return _model([cast, scale, *nodes],
                  [helper.make_tensor_value_info(input_name, TensorProto.INT64, ["batch", clip.context_length])],
                  [helper.make_tensor_value_info(output_name, TensorProto.FLOAT, ["batch", clip.embedding_dim])],
                  [*weights, inv_vocab], "free_text_encoder", clip.opset)


def constant_detections(yolo: YoloFacts, boxes: int = CONSTANT_BOXES) -> np.ndarray:
    """[1, max_det, 6] rows as the NMS graph writes them: x1, y1, x2, y2 (letterboxed pixels), score, class id,
    sorted by score, zero rows after the last detection."""
    rows = np.zeros((1, yolo.max_det, 6), dtype=np.float32)
    centre = yolo.input_size / 2
    for i in range(min(boxes, yolo.max_det)):
        dx = (i - (boxes - 1) / 2) * BOX_HALF  # side by side, overlapping, all around the centre
        rows[0, i] = (centre + dx - BOX_HALF, centre - BOX_HALF, centre + dx + BOX_HALF, centre + BOX_HALF,
                      0.9 - 0.1 * i, i % len(yolo.class_names))
    return rows


def detector(yolo: YoloFacts, boxes: int = CONSTANT_BOXES) -> onnx.ModelProto:
    """The same detections for every image of the batch: `output0` [B, max_det, 6] from `images` [B, 3, S, S]."""
    nodes = [helper.make_node("Shape", [yolo.input_name], ["shape"]),
             helper.make_node("Slice", ["shape", "zero", "one"], ["batch"]),
             helper.make_node("Concat", ["batch", "rows_cols"], ["target"], axis=0),
             helper.make_node("Expand", ["detections", "target"], [yolo.output_name])]
    constants = [numpy_helper.from_array(constant_detections(yolo, boxes), "detections"),
                 numpy_helper.from_array(np.array([0], dtype=np.int64), "zero"),
                 numpy_helper.from_array(np.array([1], dtype=np.int64), "one"),
                 numpy_helper.from_array(np.array([yolo.max_det, 6], dtype=np.int64), "rows_cols")]
    size = yolo.input_size
    return _model(nodes,
                  [helper.make_tensor_value_info(yolo.input_name, TensorProto.FLOAT, ["batch", 3, size, size])],
                  [helper.make_tensor_value_info(yolo.output_name, TensorProto.FLOAT, ["batch", yolo.max_det, 6])],
                  constants, "free_detector", yolo.opset)


def weights_label(source_weights: str, source_exported_at: str) -> str:
    """What the free facts say their weights are: that they are not a model, and which export they stand in for."""
    return (f"{WEIGHTS_PREFIX} (benchmark only, meaningless for search: constant boxes, {GRID}x{GRID}-pooled-pixel "
            "vectors) "
            f"standing in for {source_weights}, exported {source_exported_at}")


def is_free(weights: str) -> bool:
    return weights.startswith(WEIGHTS_PREFIX)


def _current(directory, expected_weights: str, loader, files) -> bool:
    try:
        facts = loader.load(directory)
    except (FileNotFoundError, ValueError):
        return False
    return facts.weights == expected_weights and all((directory / f).is_file() for f in files(facts))


def ensure_free_networks(settings: Settings, clip: ClipFacts, yolo: YoloFacts) -> tuple[ClipFacts, YoloFacts]:
    """Writes the free graphs and their facts into `settings.clip_dir` / `settings.yolo_dir` (the free-networks
    folders when `models.free_networks` is on), from the real exports' facts; skipped when already written for
    those exports."""
    clip_dir, yolo_dir = settings.clip_dir, settings.yolo_dir
    clip_weights = weights_label(clip.weights, clip.exported_at)
    free_clip = clip.model_copy(update={"weights": clip_weights, "int8": None, "export_seconds": None})
    if not _current(clip_dir, clip_weights, ClipFacts, lambda f: (f.image_file, f.text_file, *f.carried_files)):
        clip_dir.mkdir(parents=True, exist_ok=True)
        onnx.save(image_encoder(clip), clip_dir / clip.image_file)
        onnx.save(text_encoder(clip), clip_dir / clip.text_file)
        for name in clip.carried_files:  # the real tokenizer's config: the free text encoder takes its tokens
            shutil.copy2(settings.exported_clip_dir / name, clip_dir / name)
        free_clip.save(clip_dir)
    yolo_weights = weights_label(yolo.weights, yolo.exported_at)
    free_yolo = yolo.model_copy(update={"weights": yolo_weights, "int8": None, "export_seconds": None,
                                        "weights_sha256": None})
    if not _current(yolo_dir, yolo_weights, YoloFacts, lambda f: (f.file,)):
        yolo_dir.mkdir(parents=True, exist_ok=True)
        onnx.save(detector(yolo), yolo_dir / yolo.file)
        free_yolo.save(yolo_dir)
    return free_clip, free_yolo
