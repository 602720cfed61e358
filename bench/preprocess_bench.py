"""Throughput of the CPU preprocessing wrapper (`preprocess.runtime.DaliPreprocessor`) on 640x480 JPEGs.

    python bench/preprocess_bench.py [--images 64] [--batch 16] [--threads 2] [--rounds 5] [--json out.json]

Prints images/s for the whole `run()` (validation + DALI, both branches) and for the validation alone.
Measures only; asserts nothing.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import time

import numpy as np
from PIL import Image


def make_jpegs(count: int, width: int = 640, height: int = 480, seed: int = 0) -> list[bytes]:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    out = []
    for _ in range(count):
        phase = rng.uniform(0, 6.28, size=3)
        img = np.stack([127 + 100 * np.sin(xx / rng.uniform(20, 90) + phase[c]) * np.cos(yy / 70.0)
                        for c in range(3)], axis=-1)
        img += rng.normal(0, 8, size=img.shape)
        buf = io.BytesIO()
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(buf, "JPEG", quality=90)
        out.append(buf.getvalue())
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--clip-size", type=int, default=256)
    parser.add_argument("--json", help="also write the figures to this JSON file")
    args = parser.parse_args(argv)

    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from preprocess.runtime import DaliPreprocessor

    images = make_jpegs(args.images)
    # MobileCLIP2-S2-like constants (the bench needs no exported model; speed does not depend on them).
    pre = DaliPreprocessor(args.clip_size, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), "bilinear",
                           max_pixels=40_000_000, num_threads=args.threads, batch_size=args.batch)
    t0 = time.perf_counter()
    first = pre.run(images[: args.batch])  # builds the pipeline
    build_s = time.perf_counter() - t0
    failed = [r for r in first if not hasattr(r, "yolo_input")]
    if failed:
        print("unexpected errors:", failed)
        return 1

    runs = []
    for _ in range(args.rounds):
        t0 = time.perf_counter()
        pre.run(images)
        runs.append(time.perf_counter() - t0)
    best = min(runs)
    t0 = time.perf_counter()
    for data in images:
        pre.validate(data)
    validate_s = time.perf_counter() - t0

    figures = {
        "images": args.images,
        "batch_size": args.batch,
        "num_threads": args.threads,
        "first_call_incl_build_s": round(build_s, 3),
        "images_per_s_best": round(args.images / best, 1),
        "images_per_s_median": round(args.images / float(np.median(runs)), 1),
        "validation_only_images_per_s": round(args.images / validate_s, 1),
        "cpu_count": os.cpu_count(),
    }
    for key, value in figures.items():
        print(f"{key:32s} {value}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(figures, fh, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
