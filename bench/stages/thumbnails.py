"""Stage `thumbnails`: what the results page's thumbnail adds to each document, sent and on disk.

The measurement is bench/thumbnails.py, on an image set of its own of `--images` images (the same pictures as the
shared set, generated again: the stage runs apart from ingest and query).
"""

from __future__ import annotations

import argparse
from typing import Any

from bench.stage import Results, Stage, StageEnv
from bench.tables import Row, num, stat, table


def steps(args: argparse.Namespace) -> int:
    return 3


def run(env: StageEnv) -> dict[str, Any]:
    from bench import images, thumbnails

    with env.status("generating the image set …"):
        shared = images.image_set(env.args.images)
    return thumbnails.run(env.ctx, shared, env.tag, progress=env.progress)


def markdown(thumbs: dict[str, Any], results: Results) -> list[str]:
    chars, disk = thumbs["base64_chars_per_document"], thumbs["store_bytes_per_document"]
    lines = ["## Thumbnails (what the results page's picture adds to each document)", "",
             f"{thumbs['images']} bench JPEGs (mean {round(thumbs['source_jpeg_bytes']['mean'] / 1024, 1)} "
             f"KiB); thumbnail: JPEG of at most {thumbs['max_side']} px a side, quality {thumbs['quality']}, "
             "base64 in `_source` (stored, not indexed). On disk: the same documents with and without it, "
             "each index force-merged to one segment.", ""]
    lines += table(["figure", "p50", "mean", "max"], [
        ["base64 bytes per document (sent, in `_source`)", chars["p50"], chars["mean"], chars["max"]],
        ["JPEG bytes", thumbs["jpeg_bytes"]["p50"], thumbs["jpeg_bytes"]["mean"], thumbs["jpeg_bytes"]["max"]],
        ["adapter ms per thumbnail", stat(thumbs["ms_per_thumbnail"]), thumbs["ms_per_thumbnail"]["mean"],
         thumbs["ms_per_thumbnail"]["max"]],
        ["on-disk bytes per document", "—", disk, "—"]])
    lines += [f"The thumbnail is {round(100 * thumbs['share_of_source_image'], 1)} % of the source image's "
              "size.", ""]
    return lines


def figures(s: dict[str, Any]) -> list[Row]:
    return [("thumbnail per document, base64 characters (mean)", num(s["base64_chars_per_document"]["mean"])),
            ("thumbnail per document, bytes on disk", num(s["store_bytes_per_document"]))]


STAGE = Stage(name="thumbnails", run=run, steps=steps, markdown=markdown, figures=figures)
