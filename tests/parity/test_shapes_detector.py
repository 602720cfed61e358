"""The bundled shapes detector actually detects: precision and recall ≥ 0.9 at IoU 0.5.

Fresh images from the generator with a seed the training never saw, 320..1280 px, run through the exported
ONNX model the way the server runs it (letterboxed to 640), boxes mapped back to original pixels.
A detection is a true positive when it overlaps an unmatched ground-truth shape of the same class with
IoU ≥ 0.5. `pytest -s` prints the figures.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from common.config import load_config
from export.shapes.dataset import CLASS_NAMES, render
from tests.reference_yolo import box_iou, greedy_match, onnx_session, run_onnx, shapes_detector, to_original

SEED = 2025  # training uses seed 0
N_IMAGES = 80
MIN_PRECISION = 0.9
MIN_RECALL = 0.9


def test_shapes_detector_precision_recall():
    settings = load_config()
    facts, directory = shapes_detector(settings)
    assert facts.class_names == list(CLASS_NAMES)
    session = onnx_session(directory, facts)

    samples = [render(SEED, i) for i in range(N_IMAGES)]
    images = [np.asarray(image) for image, _ in samples]
    detections, boxed = run_onnx(session, facts, images)

    tp, fp, fn = Counter(), Counter(), Counter()
    for (_, truth), det, lb in zip(samples, detections, boxed, strict=True):
        pred_boxes = to_original(det.boxes, lb)
        for c in range(len(CLASS_NAMES)):
            p = pred_boxes[det.classes == c]
            t = np.array([[b.x1, b.y1, b.x2, b.y2] for b in truth if b.class_id == c]).reshape(-1, 4)
            matched = len(greedy_match(box_iou(p, t), 0.5))
            tp[c] += matched
            fp[c] += len(p) - matched
            fn[c] += len(t) - matched

    total_tp, total_fp, total_fn = sum(tp.values()), sum(fp.values()), sum(fn.values())
    precision = total_tp / max(total_tp + total_fp, 1)
    recall = total_tp / max(total_tp + total_fn, 1)
    per_class = ", ".join(
        f"{name} P {tp[c] / max(tp[c] + fp[c], 1):.3f} R {tp[c] / max(tp[c] + fn[c], 1):.3f}"
        for c, name in enumerate(CLASS_NAMES)
    )
    print(f"\nshapes detector on {N_IMAGES} fresh images (seed {SEED}): {total_tp + total_fn} shapes, "
          f"{total_tp + total_fp} detections, TP {total_tp} FP {total_fp} FN {total_fn}; "
          f"precision {precision:.3f}, recall {recall:.3f}\n  {per_class}")
    assert precision >= MIN_PRECISION
    assert recall >= MIN_RECALL
