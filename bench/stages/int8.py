"""Stage `int8`: the ONNX models at fp32 and int8 side by side on the CPU (bench/int8.py); needs no running stack.

Its rounds are `--rounds` (declared by ingest).
"""

from __future__ import annotations

import argparse
from typing import Any

from bench.stage import Results, Stage, StageEnv, Target, option, target
from bench.tables import Row, num, spread, stat, table

OPTIONS = (option("--int8-images", "images per int8 round (default 8 quick, 24 full)", quick=8, full=24, type=int),)


def steps(args: argparse.Namespace) -> int:
    return int(args.rounds)


def run(env: StageEnv) -> dict[str, Any]:
    from bench import int8
    from export.quantize import ensure_int8

    settings, (clip, yolo) = env.settings, env.exported
    with env.status("int8: quantized copies of the exported models (quantized now if missing) …"):
        clip, yolo = ensure_int8(settings, clip, yolo)
    return int8.run(settings, clip, settings.clip_dir, yolo, settings.yolo_dir, env.args.int8_images, env.args.rounds,
                    progress=env.progress)


def targets(q: dict[str, Any], results: Results) -> list[Target]:
    m = q["model_speedups"]
    return [target("int8 ingest speedup: fp32 ÷ int8 model ms per image (detector + image + crops) ≥ 1.8×",
                   q["speedup"], 1.8, True, f"detector {m['detector']}×, image encoder {m['image_encoder']}×, crops "
                   f"{m['crops']}×; text query {m['text']}×")]


def markdown(q: dict[str, Any], results: Results) -> list[str]:
    lines = ["## int8 vs fp32 on the CPU (ONNX Runtime, the models alone)", "",
             f"{q['images']} bench JPEGs, {q['rounds']} rounds alternating the precisions; preprocessing shared "
             "and not timed; each precision detects its own objects and embeds their crops. ms p50 over images "
             "(text: over queries); ms/image: median over rounds (min–max). Quantization: detector "
             f"{q['methods']['yolo']['model']}; image encoder {q['methods']['clip']['image']}; text encoder "
             f"{q['methods']['clip']['text']}.", ""]
    rows = []
    for p in ("fp32", "int8"):
        t, size = q["per_model_ms"][p], q["sizes_mb"][p]
        rows.append([p, spread(q["ms_per_image"][p]), stat(t["detector"]), stat(t["image_encoder"]), stat(t["crops"]),
                     q["objects_per_image"][p], stat(t["text"]),
                     f"{size['detector']} / {size['image']} / {size['text']}"])
    m = q["model_speedups"]
    rows.append(["fp32 ÷ int8", f"**{q['speedup']}×**", f"{m['detector']}×", f"{m['image_encoder']}×",
                 f"{m['crops']}×", "", f"{m['text']}×", ""])
    lines += table(["precision", "ms/image", "detector", "image encoder", "crops", "objects/image", "text query",
                    "MB detector / image / text"], rows)
    return lines


def figures(s: dict[str, Any]) -> list[Row]:
    m = s["model_speedups"]
    return [("fp32 ÷ int8 model ms per image", num(s["speedup"])),
            ("detector / image encoder / crops / text", f"{num(m['detector'])} / {num(m['image_encoder'])} / "
             f"{num(m['crops'])} / {num(m['text'])}")]


STAGE = Stage(name="int8", title="int8 vs fp32", run=run, steps=steps, options=OPTIONS, needs_stack=False,
              targets=targets, markdown=markdown, figures=figures)
