"""int8 vs fp32 on the CPU, side by side in one run: what one image costs the models at each precision.

Per image the analysis runs what the server runs: the detector on the letterboxed image, the image encoder on the
whole image, then on every detected object's crop (one batch). Preprocessing (serving DALI code, crops) is done
once, outside the timings, and shared by both precisions; each precision detects its own objects and embeds its
own crops. Rounds alternate the precisions so both see the same machine load. Sessions are configured as the cpu
profile's `onnx_runner` configures them (2 intra-op threads, no spinning). Text queries are timed the same way.
The ratio fp32 ÷ int8 of ms per image is the ingest speedup the models allow (the target is ≥ 1.8×).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from bench.images import image_set
from bench.stats import median, ratio, summary
from common.config import Settings
from common.model_facts import ClipFacts, Precision, YoloFacts

PRECISIONS: tuple[Precision, Precision] = ("fp32", "int8")
TEXTS = ("a red circle", "two blue squares and a star", "a yellow cross on grass", "a green triangle")


def _session(path: Path):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


class Models:
    """The three ONNX sessions of one precision."""

    def __init__(self, clip: ClipFacts, clip_dir: Path, yolo: YoloFacts, yolo_dir: Path, precision: Precision) -> None:
        self.yolo_facts = yolo
        self.detector = _session(yolo_dir / yolo.file_for(precision))
        self.image = _session(clip_dir / clip.image_file_for(precision))
        self.text = _session(clip_dir / clip.text_file_for(precision))


def _analyze(models: Models, clip: ClipFacts, pre: Any, timings: dict[str, list[float]]) -> int:
    """One image through detector → global embedding → crops; returns the number of objects."""
    from triton_repo.runtime.boxes import to_original, valid_detections
    from triton_repo.runtime.crops import crops_batch

    y = models.yolo_facts
    t0 = time.perf_counter()
    (out,) = models.detector.run([y.output_name], {y.input_name: pre.yolo_input[None]})
    t1 = time.perf_counter()
    models.image.run(None, {"clip_input": pre.clip_input[None]})
    t2 = time.perf_counter()
    boxes = to_original(valid_detections(out[0])[:, :4], pre.letterbox, pre.image_size)
    crops = crops_batch(pre.decoded_image, boxes, clip.image_size, clip.mean, clip.std, clip.interpolation).numpy()
    t3 = time.perf_counter()
    if len(crops):
        models.image.run(None, {"clip_input": crops})
    t4 = time.perf_counter()
    timings["detector"].append((t1 - t0) * 1000)
    timings["image_encoder"].append((t2 - t1) * 1000)
    timings["crops"].append((t4 - t3) * 1000)
    timings["models_total"].append((t2 - t0 + t4 - t3) * 1000)
    return len(crops)


def run(settings: Settings, clip: ClipFacts, clip_dir: Path, yolo: YoloFacts, yolo_dir: Path, images: int,
        rounds: int, progress: Callable[[], None] = lambda: None) -> dict[str, Any]:
    import open_clip

    from preprocess.runtime import DaliPreprocessor, PreprocessResult

    models = {p: Models(clip, clip_dir, yolo, yolo_dir, p) for p in PRECISIONS}
    shared = image_set(images)
    pre = DaliPreprocessor.from_facts(clip, yolo, max_pixels=settings.models.max_image_pixels, batch_size=8)
    inputs = [r for r in pre.run([im.jpeg for im in shared]) if isinstance(r, PreprocessResult)]
    # open_clip names the bundled shapes CLIP by its folder (ClipFacts.open_clip_name), a MobileCLIP2 by its variant
    tokenizer = open_clip.get_tokenizer(getattr(clip, "open_clip_name", "") or clip.variant)
    tokens = tokenizer(list(TEXTS), context_length=clip.context_length).numpy()
    for m in models.values():  # first runs allocate; not timed
        _analyze(m, clip, inputs[0], {k: [] for k in ("detector", "image_encoder", "crops", "models_total")})
        m.text.run(None, {"tokens": tokens[:1].astype(np.int64)})
    kinds = ("detector", "image_encoder", "crops", "models_total", "text")
    timings: dict[str, dict[str, list[float]]] = {p: {k: [] for k in kinds} for p in PRECISIONS}
    per_round: dict[str, list[float]] = {p: [] for p in PRECISIONS}
    objects: dict[str, int] = dict.fromkeys(PRECISIONS, 0)
    for r in range(rounds):
        order = PRECISIONS if r % 2 == 0 else PRECISIONS[::-1]
        for p in order:
            t0 = time.perf_counter()
            objects[p] = sum(_analyze(models[p], clip, item, timings[p]) for item in inputs)
            per_round[p].append((time.perf_counter() - t0) * 1000 / len(inputs))
            for row in tokens:
                t1 = time.perf_counter()
                models[p].text.run(None, {"tokens": row[None].astype(np.int64)})
                timings[p]["text"].append((time.perf_counter() - t1) * 1000)
        progress()
    ms_per_image = {p: summary(v) for p, v in per_round.items()}
    speedups = [ratio(a, b) for a, b in zip(per_round["fp32"], per_round["int8"], strict=True)]
    assert clip.int8 is not None and yolo.int8 is not None
    return {
        "images": len(inputs), "rounds": rounds, "image_set": f"bench.images seed, {images} JPEGs",
        "objects_per_image": {p: round(objects[p] / len(inputs), 2) for p in PRECISIONS},
        "ms_per_image": ms_per_image,
        "per_model_ms": {p: {k: summary(v) for k, v in t.items()} for p, t in timings.items()},
        "speedup_per_round": speedups, "speedup": round(median(speedups), 3),
        "model_speedups": {k: ratio(median(timings["fp32"][k]), median(timings["int8"][k]))
                           for k in ("detector", "image_encoder", "crops", "text")},
        "methods": {"clip": clip.int8.methods, "yolo": yolo.int8.methods},
        "sizes_mb": {p: {"detector": _mb(yolo_dir / yolo.file_for(p)), "image": _mb(clip_dir / clip.image_file_for(p)),
                         "text": _mb(clip_dir / clip.text_file_for(p))} for p in PRECISIONS},
    }


def _mb(path: Path) -> float:
    return round(path.stat().st_size / 1e6, 1)
