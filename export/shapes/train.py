"""Trains the bundled shapes detector: `yolo11n` from its architecture yaml (random init), on the CPU.

Deterministic settings (fixed seeds, deterministic torch algorithms, no dataloader workers, disk cache),
offline (ultralytics is configured by `export.ultralytics_offline`). The default plan costs about 28 CPU
minutes: ~15 minutes of wall time on 2 idle cores (24.7 minutes measured on 2 cores shared with other
work), plus ~1 minute to generate the 1,280 images. 8 epochs of 1,200 images at 320 px give, on fresh
images letterboxed to 640, precision ≈ 0.98 and recall 1.0 at IoU 0.5.
Training runs at 320 px with the shapes drawn twice as large relative to the image (`size_scale`), so
they cover as many pixels as they do once an image is letterboxed to 640, the size the detector is
exported and used at. The best checkpoint is copied to `export/shapes/shapes_yolo11n.pt` and the
class names to `export/shapes/classes.json`.

    python -m export.shapes.train            # generate the data, train, copy the checkpoint
    python -m export.shapes.train --epochs 2 --train-images 200 --out /tmp/x.pt   # a quick smoke run
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from export.shapes import CHECKPOINT, CLASSES_FILE
from export.shapes.dataset import CLASS_NAMES, write_yolo_dataset

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainPlan:
    seed: int = 0
    train_images: int = 1200
    val_images: int = 80
    imgsz: int = 320
    # shapes drawn this much larger (relative to the image) than the test/inference distribution, so that at
    # imgsz 320 they cover as many pixels as they do in the 640 letterbox the detector is used with
    size_scale: float = 2.0
    epochs: int = 8
    batch: int = 16
    close_mosaic: int = 2
    scale: float = 0.5  # zoom augmentation 0.5..1.5
    mosaic: float = 1.0
    fliplr: float = 0.5
    flipud: float = 0.5
    translate: float = 0.1
    nbs: int = 16  # nominal batch = batch: one optimizer step per batch (ultralytics accumulates to 64)
    optimizer: str = "AdamW"
    lr0: float = 0.002
    warmup_epochs: float = 1.0


def _threads_callback(threads: int):
    import torch

    def set_threads(_trainer) -> None:
        # ultralytics resets torch to (cpu_count - 1) threads for CPU training: 1 thread on 2 cores
        torch.set_num_threads(threads)

    return set_threads


def train(plan: TrainPlan, workdir: Path, out: Path = CHECKPOINT, classes_file: Path = CLASSES_FILE) -> Path:
    from export.ultralytics_offline import load_yolo_class

    YOLO = load_yolo_class()
    t0 = time.perf_counter()
    data_dir = workdir / f"data-seed{plan.seed}-x{plan.size_scale:g}"
    data_yaml = write_yolo_dataset(data_dir, plan.train_images, plan.val_images, plan.seed, plan.size_scale)
    log.info("dataset ready in %.1f s: %s", time.perf_counter() - t0, data_yaml)

    threads = os.cpu_count() or 1
    model = YOLO("yolo11n.yaml")  # the architecture, random init: nothing is downloaded
    for event in ("on_pretrain_routine_start", "on_pretrain_routine_end", "on_train_start"):
        model.add_callback(event, _threads_callback(threads))

    t1 = time.perf_counter()
    model.train(
        data=str(data_yaml),
        epochs=plan.epochs,
        imgsz=plan.imgsz,
        batch=plan.batch,
        device="cpu",
        workers=0,
        seed=plan.seed,
        deterministic=True,
        pretrained=False,
        amp=False,
        cache="disk",  # ultralytics warns that cache="ram" may make training non-deterministic
        plots=False,
        val=False,  # validate once, after the last epoch
        project=str(workdir / "runs"),
        name="shapes",
        exist_ok=True,
        close_mosaic=plan.close_mosaic,
        scale=plan.scale,
        mosaic=plan.mosaic,
        fliplr=plan.fliplr,
        flipud=plan.flipud,
        translate=plan.translate,
        nbs=plan.nbs,
        optimizer=plan.optimizer,
        lr0=plan.lr0,
        warmup_epochs=plan.warmup_epochs,
        degrees=0.0,
        patience=plan.epochs,
        verbose=True,
    )
    train_s = time.perf_counter() - t1
    weights = workdir / "runs" / "shapes" / "weights"
    best = weights / "best.pt" if (weights / "best.pt").exists() else weights / "last.pt"
    out.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(best, out)
    classes_file.write_text(
        json.dumps(
            {
                "names": list(CLASS_NAMES),
                "checkpoint": out.name,
                "architecture": "yolo11n.yaml (random init)",
                "train": {**asdict(plan), "threads": threads, "train_seconds": round(train_s, 1)},
            },
            indent=2,
        )
        + "\n"
    )
    log.info("trained in %.1f s (%.1f min); checkpoint %s (%.1f MB) from %s",
             train_s, train_s / 60, out, out.stat().st_size / 1e6, best.name)
    return out


def main(argv: list[str] | None = None) -> None:
    defaults = TrainPlan()
    parser = argparse.ArgumentParser(description="Train the bundled shapes detector (yolo11n, CPU).")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="dataset and run folder (default: <cache_dir>/shapes-train)")
    parser.add_argument("--out", type=Path, default=CHECKPOINT)
    parser.add_argument("--classes-out", type=Path, default=None)
    for field, value in asdict(defaults).items():
        parser.add_argument(f"--{field.replace('_', '-')}", type=type(value), default=value)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    plan = TrainPlan(**{f: getattr(args, f) for f in asdict(defaults)})
    if args.workdir is None:
        from common.config import load_config

        args.workdir = load_config().cache / "shapes-train"
    classes_out = args.classes_out or (CLASSES_FILE if args.out == CHECKPOINT else args.out.with_suffix(".json"))
    train(plan, args.workdir, args.out, classes_out)


if __name__ == "__main__":
    main()
