"""Parity: the YOLO ONNX model (NMS inside) finds what ultralytics' own PyTorch `predict` finds.

Both run the bundled shapes detector (so there are real detections) with the same thresholds. The ONNX model
is fed by the independent letterbox in `tests/reference_yolo.py`; its boxes are mapped back to original pixels
and compared with ultralytics' original-image boxes. `pytest -s` prints the figures.
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from common.config import load_config
from export.shapes import CHECKPOINT
from export.shapes.dataset import render
from tests.reference_yolo import (
    box_iou,
    greedy_match,
    letterbox,
    onnx_session,
    run_onnx,
    shapes_detector,
    split_output,
    to_original,
)

SEED = 4242  # not the training seed (0)
MIN_IOU = 0.99
MAX_PX = 1.0


def _images() -> list[np.ndarray]:
    images = [np.asarray(render(SEED, i)[0]) for i in range(10)]
    base = np.asarray(render(SEED, 10)[0])
    images.append(np.ascontiguousarray(base[: max(base.shape[0] // 4, 80)]))  # very wide strip
    images.append(np.asarray(Image.fromarray(np.asarray(render(SEED, 11)[0])).resize((213, 160))))  # upscaled
    rng = np.random.default_rng(SEED)
    images.append(rng.integers(0, 256, size=(480, 640, 3), dtype=np.uint8))  # noise, no shapes
    return images


@pytest.fixture(scope="module")
def detector():
    settings = load_config()
    facts, directory = shapes_detector(settings)
    return facts, onnx_session(directory, facts)


@pytest.fixture(scope="module")
def torch_model():
    from export.ultralytics_offline import load_yolo_class

    return load_yolo_class()(str(CHECKPOINT))


def test_onnx_matches_ultralytics_predict(detector, torch_model, tmp_path):
    facts, session = detector
    images = _images()
    paths = []
    for i, rgb in enumerate(images):  # PNG: lossless, so both sides decode the very same pixels
        path = tmp_path / f"img{i:02d}.png"
        Image.fromarray(rgb).save(path)
        paths.append(str(path))

    onnx_dets, boxed = run_onnx(session, facts, images)
    results = torch_model.predict(paths, imgsz=facts.input_size, conf=facts.conf_threshold,
                                  iou=facts.iou_threshold, max_det=facts.max_det, device="cpu", verbose=False)

    total, ious, px, score_diff = 0, [], [], []
    for i, (det, lb, res) in enumerate(zip(onnx_dets, boxed, results, strict=True)):
        pt_boxes = res.boxes.xyxy.cpu().numpy().astype(np.float64)
        pt_cls = res.boxes.cls.cpu().numpy().round().astype(int)
        pt_conf = res.boxes.conf.cpu().numpy()
        onnx_boxes = to_original(det.boxes, lb)
        assert len(det.boxes) == len(pt_boxes), f"image {i}: ONNX {len(det.boxes)} boxes, PyTorch {len(pt_boxes)}"
        iou = box_iou(onnx_boxes, pt_boxes)
        pairs = greedy_match(iou, 0.5)
        assert len(pairs) == len(pt_boxes), f"image {i}: only {len(pairs)} of {len(pt_boxes)} boxes pair up"
        for a, b in pairs:
            assert det.classes[a] == pt_cls[b], f"image {i}: class {det.classes[a]} vs {pt_cls[b]}"
            ious.append(iou[a, b])
            px.append(np.abs(onnx_boxes[a] - pt_boxes[b]).max())
            score_diff.append(abs(det.scores[a] - pt_conf[b]))
        total += len(pt_boxes)

    print(f"\nYOLO parity ({len(images)} images, conf {facts.conf_threshold}, iou {facts.iou_threshold}): "
          f"{total} boxes on both sides, IoU min {min(ious):.5f}, max |px| diff {max(px):.4f} px, "
          f"max |score| diff {max(score_diff):.2e}")
    assert total >= 20, "too few detections for a meaningful parity check"
    assert min(ious) >= MIN_IOU
    assert max(px) <= MAX_PX


def test_batched_equals_one_by_one(detector):
    facts, session = detector
    images = _images()[: min(6, facts.max_batch)]
    batched, _ = run_onnx(session, facts, images)
    single, _ = run_onnx(session, facts, images, batch=1)
    worst = 0.0
    for a, b in zip(batched, single, strict=True):
        assert len(a.boxes) == len(b.boxes)
        np.testing.assert_array_equal(a.classes, b.classes)
        if len(a.boxes):
            worst = max(worst, float(np.abs(a.boxes - b.boxes).max()))
    print(f"\nYOLO batch {len(images)} vs batch 1: same boxes, max |diff| {worst:.2e} px")
    assert worst <= 1e-2


def test_batch_limit_is_max_batch(detector):
    """ultralytics unrolls NMS over the export batch: images past `max_batch` come back empty (documented)."""
    facts, session = detector
    rgb = np.asarray(render(SEED, 0)[0])
    x = np.stack([letterbox(rgb, facts.input_size, facts.pad_value).tensor] * (facts.max_batch + 1))
    (out,) = session.run([facts.output_name], {facts.input_name: x})
    dets = split_output(out)
    counts = [len(d.boxes) for d in dets]
    print(f"\nYOLO batch {facts.max_batch + 1} (max_batch {facts.max_batch}): detections per image {counts}")
    assert out.shape == (facts.max_batch + 1, facts.max_det, 6)
    assert all(c == counts[0] > 0 for c in counts[: facts.max_batch])
    assert counts[facts.max_batch] == 0
