"""Stage `ingest`: images/s through OpenSearch's pipeline vs Triton called directly vs a naive PyTorch loop.

The measurement is bench/ingest.py; it runs on the shared image set (bench/stages/shared.py), whose size
(`--images`) and rounds (`--rounds`) are declared here although query, thumbnails and int8 read them too.
"""

from __future__ import annotations

import argparse
from typing import Any

from bench.stage import Results, Stage, StageEnv, Target, option, target
from bench.tables import Row, num, spread, table

OPTIONS = (
    option("--images", "images in the shared set (default 8 quick, 24 full)", quick=8, full=24, type=int),
    option("--rounds", "ingestion rounds (default 3 quick, 5 full)", quick=3, full=5, type=int),
    option("--concurrency", "client concurrencies", type=int, nargs="+", default=[1, 2, 4]),
    option("--bulk-size", "documents per OpenSearch _bulk while ingesting", type=int, default=2),
    option("--naive-threads", "torch threads of the naive baseline (default: what a plain ultralytics + open_clip "
           "script gets)", type=int),
    option("--compare-triton", "a second Triton (e.g. a prototype fix) measured as the `triton_alt` direct path in "
           "the same ingest rounds", metavar="HOST:GRPC_PORT"),
)


def steps(args: argparse.Namespace) -> int:
    paths = 3 if args.compare_triton else 2
    return args.rounds * (paths * len(args.concurrency) + 1) + 1


def run(env: StageEnv) -> dict[str, Any]:
    from bench.ingest import run_stage
    from bench.naive import NaivePipeline

    ctx, shared, args = env.ctx, env.shared, env.args
    with env.status("loading the naive PyTorch baseline (ultralytics + open_clip) …"):
        naive = NaivePipeline(ctx.settings, ctx.clip, ctx.yolo, args.naive_threads)
    result = run_stage(ctx, shared.images, rounds=args.rounds, concurrencies=args.concurrency,
                       bulk_size=args.bulk_size, os_index=shared.os_index, naive_index=shared.naive_index,
                       naive=naive, progress=lambda label: env.progress(f"ingest: {label}"),
                       alt_triton=args.compare_triton)
    result["naive_pipeline"] = naive.describe()
    shared.analyzed = True
    return result


def targets(ingest: dict[str, Any], results: Results) -> list[Target]:
    out = [target("OpenSearch ingest ≥ 0.85 × direct Triton (peak vs peak)",
                  ingest["opensearch_peak_x_triton_peak"]["p50"], 0.85, True,
                  f"per round {spread(ingest['opensearch_peak_x_triton_peak'])}"),
           target("Triton ingest ≥ 2 × naive PyTorch loop (Triton peak)", ingest["triton_peak_x_naive"]["p50"], 2.0,
                  True, f"per round {spread(ingest['triton_peak_x_naive'])}; at concurrency 1: "
                  f"{ingest['triton_c1_x_naive']['p50']}×")]
    if "triton_alt_peak_x_triton_peak" in ingest:
        alt = ingest["triton_alt_peak_x_triton_peak"]
        out.append({"target": "(comparison) --compare-triton server peak ÷ served Triton peak", "measured":
                    alt["p50"], "threshold": None, "pass": None, "note": f"per round {spread(alt)}"})
    return out


def markdown(ingest: dict[str, Any], results: Results) -> list[str]:
    im = results["images"]
    lines = ["## Ingestion throughput", "",
             f"{im['count']} JPEG images ({', '.join(im['sizes'])}; mean {im['mean_jpeg_kb']} KiB), "
             f"{ingest['rounds']} rounds; images/s as median (min–max) over rounds; ratios are computed within "
             f"each round. OpenSearch: parallel `_bulk` streams of {ingest['bulk_size']} documents (the "
             "documents of one bulk are analyzed concurrently). Naive: one process, one image at a time, "
             "then one `_bulk` of the vectors.", ""]
    rows = []
    for row in ingest["rows"]:
        rows.append([row["path"], row["concurrency"], spread(row["images_per_s"]),
                     spread(row.get("x_triton_same_concurrency", {})), spread(row.get("x_naive", {})),
                     row["objects_per_image"] if row["path"] != "opensearch" else "—", row["errors"]])
    lines += table(["path", "concurrency", "images/s", "× Triton (same conc.)", "× naive", "objects/image",
                    "errors"], rows)
    direct = [r for r in ingest["rows"] if r["path"] == "triton"]
    if direct and all(r["objects_per_image"] == 0 for r in direct):
        lines += ["**Note:** the served detector found no object in these images, so the per-object path "
                  "(box_embedding crops in Triton, one eager CLIP call per crop in the naive loop) did not run: "
                  "these figures cover detection + the global embedding only.", ""]
    n = ingest.get("naive_pipeline", {})
    if n:
        lines += [f"Naive loop per image: decode {n['decode_ms_per_image']} ms, detect {n['detect_ms_per_image']}"
                  f" ms, global embedding {n['embed_image_ms_per_image']} ms, object crops "
                  f"{n['embed_crops_ms_per_image']} ms ({n['crops']} crops in {n['images']} images; "
                  f"torch threads {n['torch_threads']}).", ""]
    rows = []
    for path, b in ingest.get("breakdown", {}).items():
        for model, s in b["triton_models"].items():
            rows.append([path, f"triton:{model}", s["requests"], s["mean_batch"], s["total_ms"], s["queue_ms"],
                         s["compute_infer_ms"]])
        for endpoint, s in b["adapter_endpoints"].items():
            rows.append([path, f"adapter:{endpoint}", s["requests"], "—", s["mean_ms"], "—", "—"])
    if rows:
        lines += ["Server-side time per request during those passes (Triton statistics, adapter histogram):", ""]
        lines += table(["path", "stage", "requests", "mean batch", "ms/request", "queue ms", "compute ms"], rows)
    return lines


def figures(s: dict[str, Any]) -> list[Row]:
    peak = s["peak_images_per_s"]
    return [("images/s through OpenSearch, peak (median of rounds)", num(peak["opensearch"]["p50"])),
            ("images/s Triton direct, peak", num(peak["triton"]["p50"])),
            ("OpenSearch ÷ Triton direct", num(s["opensearch_peak_x_triton_peak"]["p50"])),
            ("Triton ÷ naive PyTorch loop", num(s["triton_peak_x_naive"]["p50"]))]


STAGE = Stage(name="ingest", run=run, steps=steps, options=OPTIONS, shares_image_set=True, targets=targets,
              markdown=markdown, figures=figures)
