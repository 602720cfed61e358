"""int8 fidelity (`models.precision: int8`): the quantized copies `export.quantize` writes compute what the fp32
models compute, on real inputs: generated shapes scenes and crops of their shapes (a seed neither training nor
calibration used), preprocessed by the independent reference code, and captions.

* embeddings: cosine to the fp32 embedding ≥ 0.99 for every scene, crop and caption;
* detector: every fp32 detection has an int8 twin of the same class with each box edge within ±2 px (original
  pixels), and nothing else is detected, except detections scored within 0.05 of the confidence threshold (any
  numeric change moves some across a hard cut-off); precision and recall on the shapes set are those of fp32.

Speed is measured in bench (`python -m bench --only int8`), never asserted here. `pytest -s` prints the figures.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from common.config import Settings, load_config
from common.model_facts import ClipFacts, YoloFacts
from export.shapes.dataset import render
from tests.reference_preprocess import clip_reference
from tests.reference_yolo import (
    Detections,
    box_iou,
    greedy_match,
    onnx_session,
    run_onnx,
    shapes_detector,
    to_original,
)

SEED = 2025  # the shapes detector trains on seed 0, the int8 calibration uses export.quantize.CALIBRATION_SEED
N_SCENES = 16
N_DETECTOR_IMAGES = 80
MIN_COSINE = 0.99
MAX_BOX_PX = 2.0
BORDERLINE = 0.05  # a detection scored this close to the confidence threshold may appear or vanish
CAPTIONS = [f"a {colour} {shape}" for colour in ("red", "green", "blue", "yellow")
            for shape in ("circle", "square", "triangle", "star", "cross")] + [
    "two red circles and a blue star", "a photo of a dog", "", "a green cross on a noisy background " * 4]
FIGURES: list[str] = []


@dataclass(frozen=True)
class Int8Models:
    clip: ClipFacts
    clip_dir: Path
    yolo: YoloFacts
    yolo_dir: Path


@pytest.fixture(scope="module", autouse=True)
def _print_figures() -> Iterator[None]:
    yield
    if FIGURES:
        print("\n=== int8 vs fp32 ===\n" + "\n".join(FIGURES))


@pytest.fixture(scope="module")
def int8(settings: Settings, clip_facts: ClipFacts) -> Int8Models:
    """The configured CLIP and the bundled shapes detector, each with its int8 copy (quantized if missing)."""
    from export.quantize import ensure_int8

    yolo, yolo_dir = shapes_detector(settings)
    clip, yolo = ensure_int8(settings, clip_facts, yolo, yolo_dir=yolo_dir)
    return Int8Models(clip, settings.clip_dir, yolo, yolo_dir)


def _session(path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _cosines(fp32: np.ndarray, int8: np.ndarray) -> np.ndarray:
    return np.sum(fp32 * int8, axis=1) / (np.linalg.norm(fp32, axis=1) * np.linalg.norm(int8, axis=1))


def _embed(session: ort.InferenceSession, name: str, batch: np.ndarray) -> np.ndarray:
    return np.concatenate([session.run(None, {name: batch[i:i + 1]})[0] for i in range(len(batch))])


def _image_inputs(clip: ClipFacts) -> tuple[np.ndarray, np.ndarray]:
    """(whole scenes, crops of their shapes), as open_clip preprocesses them."""
    scenes, crops = [], []
    for index in range(N_SCENES):
        image, boxes = render(SEED, index)
        rgb = np.asarray(image)
        scenes.append(clip_reference(rgb, clip.image_size, clip.mean, clip.std, clip.interpolation))
        for box in boxes[:3]:
            x1, y1, x2, y2 = (round(v) for v in (box.x1, box.y1, box.x2, box.y2))
            crops.append(clip_reference(rgb[y1:y2, x1:x2], clip.image_size, clip.mean, clip.std, clip.interpolation))
    return np.stack(scenes), np.stack(crops)


def test_facts_record_the_int8_files(int8: Int8Models):
    for facts, directory in ((int8.clip, int8.clip_dir), (int8.yolo, int8.yolo_dir)):
        assert facts.int8 is not None and facts.int8.source_exported_at == facts.exported_at
        for role, name in facts.int8.files.items():
            assert (directory / name).is_file(), role
            assert facts.int8.methods[role]
    assert int8.clip.image_file_for("int8") != int8.clip.image_file
    assert int8.clip.text_file_for("fp32") == int8.clip.text_file
    assert int8.yolo.file_for("int8") == int8.yolo.int8.files["model"]  # type: ignore[union-attr]


def test_image_embeddings_match_fp32(int8: Int8Models):
    clip, directory = int8.clip, int8.clip_dir
    fp32, quantized = _session(directory / clip.image_file), _session(directory / clip.image_file_for("int8"))
    scenes, crops = _image_inputs(clip)
    for kind, batch in (("scenes", scenes), ("crops", crops)):
        cos = _cosines(_embed(fp32, "clip_input", batch), _embed(quantized, "clip_input", batch))
        FIGURES.append(f"image encoder, {len(batch)} {kind}: cosine to fp32 min {cos.min():.4f} "
                       f"mean {cos.mean():.4f}")
        assert cos.min() >= MIN_COSINE, (kind, np.round(cos, 4).tolist())


def test_text_embeddings_match_fp32(int8: Int8Models):
    import open_clip

    clip, directory = int8.clip, int8.clip_dir
    tokenizer = open_clip.get_tokenizer(clip.open_clip_ref(directory))
    tokens = tokenizer(CAPTIONS, context_length=clip.context_length).numpy()
    tokens = tokens.astype(np.int64)
    fp32, quantized = _session(directory / clip.text_file), _session(directory / clip.text_file_for("int8"))
    cos = _cosines(_embed(fp32, "tokens", tokens), _embed(quantized, "tokens", tokens))
    FIGURES.append(f"text encoder, {len(CAPTIONS)} captions: cosine to fp32 min {cos.min():.4f} mean {cos.mean():.4f}")
    assert cos.min() >= MIN_COSINE, dict(zip(CAPTIONS, np.round(cos, 4).tolist(), strict=True))


def _precision_recall(truth: list[list], detections: list[Detections], boxed: list) -> tuple[float, float]:
    tp = fp = fn = 0
    for boxes, det, lb in zip(truth, detections, boxed, strict=True):
        pred = to_original(det.boxes, lb)
        for c in {b.class_id for b in boxes} | set(det.classes.tolist()):
            p = pred[det.classes == c]
            t = np.array([[b.x1, b.y1, b.x2, b.y2] for b in boxes if b.class_id == c]).reshape(-1, 4)
            matched = len(greedy_match(box_iou(p, t), 0.5))
            tp, fp, fn = tp + matched, fp + len(p) - matched, fn + len(t) - matched
    return tp / max(tp + fp, 1), tp / max(tp + fn, 1)


def test_detections_match_fp32(int8: Int8Models):
    yolo, directory = int8.yolo, int8.yolo_dir
    fp32 = onnx_session(directory, yolo)
    quantized = _session(directory / yolo.file_for("int8"))
    samples = [render(SEED, i) for i in range(N_DETECTOR_IMAGES)]
    images = [np.asarray(image) for image, _ in samples]
    ref, boxed = run_onnx(fp32, yolo, images)
    got, _ = run_onnx(quantized, yolo, images)

    worst, unmatched, total = 0.0, [], 0
    for n, (a, b, lb) in enumerate(zip(ref, got, boxed, strict=True)):
        pa, pb = to_original(a.boxes, lb), to_original(b.boxes, lb)
        same_class = (a.classes[:, None] == b.classes[None, :]).astype(float)
        pairs = greedy_match(box_iou(pa, pb) * same_class, 0.5)
        total += len(a.boxes)
        for i, j in pairs:
            worst = max(worst, float(np.abs(pa[i] - pb[j]).max()))
        matched_a, matched_b = {i for i, _ in pairs}, {j for _, j in pairs}
        unmatched += [(n, "fp32 only", round(float(a.scores[i]), 3)) for i in range(len(a.boxes)) if i not in matched_a]
        unmatched += [(n, "int8 only", round(float(b.scores[j]), 3)) for j in range(len(b.boxes)) if j not in matched_b]

    truth = [boxes for _, boxes in samples]
    p32, r32 = _precision_recall(truth, ref, boxed)
    p8, r8 = _precision_recall(truth, got, boxed)
    FIGURES.append(f"detector, {N_DETECTOR_IMAGES} scenes: {total} fp32 detections, largest box edge difference "
                   f"{worst:.2f} px, unmatched {unmatched}; precision/recall fp32 {p32:.3f}/{r32:.3f}, "
                   f"int8 {p8:.3f}/{r8:.3f}")
    assert [u for u in unmatched if u[2] >= yolo.conf_threshold + BORDERLINE] == []
    assert worst <= MAX_BOX_PX
    assert p8 >= p32 - 0.01 and r8 >= r32 - 0.01


def test_render_points_the_cpu_profile_at_int8(int8: Int8Models, tmp_path: Path):
    """With precision int8 the cpu profile's onnx_runner loads the quantized files; the gpu profile stays fp32 and
    the ensembles' provenance (the query cache's key) says which precision serves."""
    from triton_repo.render import render_configs

    settings = load_config(models={"precision": "int8"})
    cpu = render_configs(settings, int8.clip, int8.yolo, "cpu")
    assert str(settings.clip_dir / int8.clip.image_file_for("int8")) in cpu["clip_image"]
    assert str(settings.clip_dir / int8.clip.text_file_for("int8")) in cpu["clip_text"]
    assert str(settings.yolo_dir / int8.yolo.file_for("int8")) in cpu["yolo"]
    assert '"int8"' in cpu["embed_text"]
    gpu = render_configs(settings.model_copy(update={"triton": settings.triton.model_copy(
        update={"max_batch_size": int8.yolo.max_batch})}), int8.clip, int8.yolo, "gpu")
    assert "int8" not in gpu["embed_text"] and "int8" not in gpu["clip_image"]
