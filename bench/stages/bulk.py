"""Stage `bulk`: one `_bulk` of every image in one request, beside the streaming client (bench/bigbulk.py)."""

from __future__ import annotations

import argparse
from typing import Any

from bench.stage import Results, Stage, StageEnv, Target, option, target
from bench.tables import Row, num, table

OPTIONS = (option("--bulk-images", "images in the one-request _bulk (default 100 quick, 1000 full)", quick=100,
                  full=1000, type=int),)


def steps(args: argparse.Namespace) -> int:
    return 3


def run(env: StageEnv) -> dict[str, Any]:
    from bench import bigbulk

    return bigbulk.run(env.ctx, env.args.bulk_images, env.tag, lambda label: env.progress(f"bulk: {label}"))


def targets(bulk: dict[str, Any], results: Results) -> list[Target]:
    return [target("one _bulk of all images ≥ 0.9 × streaming images/s", bulk["one_bulk_x_streaming"], 0.9, True,
                   f"{bulk['images']} images"),
            target("one _bulk: documents lost (after replay)", bulk["one_bulk_after_replay"]["lost"]
                   + bulk["one_bulk_after_replay"]["dead_lettered"], 0, False, "lost + still dead-lettered")]


def markdown(bulk: dict[str, Any], results: Results) -> list[str]:
    lines = ["## One `_bulk` of every image in one request, beside streaming", "",
             f"{bulk['images']} generated JPEGs (mean {bulk['mean_jpeg_kb']} KiB). Streaming: the project's "
             "client (bulks of 16, 2 in flight, retries of 429/503 items). One bulk: a single request, then "
             "`replay` of its retryable dead letters (the README's client step).", ""]
    rows = []
    for name in ("streaming", "one_bulk", "one_bulk_after_replay"):
        r = bulk[name]
        rows.append([name.replace("_", " "), r.get("seconds", r.get("replay_seconds", "—")),
                     r.get("images_per_s", "—"), r["sent"], r["indexed"], r["dead_lettered"],
                     r["dead_lettered_with_image"], r["lost"]])
    lines += table(["pass", "seconds", "images/s", "sent", "indexed", "dead-lettered", "… with image", "lost"],
                   rows)
    lines += [f"One bulk ÷ streaming (images/s): {bulk['one_bulk_x_streaming']}×.", ""]
    return lines


def figures(s: dict[str, Any]) -> list[Row]:
    after = s["one_bulk_after_replay"]
    return [(f"one `_bulk` of {s['images']} images vs streaming, images/s",
             f"{num(s['one_bulk']['images_per_s'])} vs {num(s['streaming']['images_per_s'])} "
             f"({num(s['one_bulk_x_streaming'])}×)"),
            ("one `_bulk`: indexed after replay, lost", f"{after['indexed']} of {after['sent']}, {after['lost']} lost")]


STAGE = Stage(name="bulk", title="one big _bulk", run=run, steps=steps, options=OPTIONS, targets=targets,
              markdown=markdown, figures=figures)
