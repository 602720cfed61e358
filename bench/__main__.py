"""`python -m bench [--quick]`: every figure side by side, in one run, against the running stack (`make up`).

Stages (all by default, `--only` picks some): ingest (OpenSearch vs Triton vs naive PyTorch), bulk (one `_bulk`
of every image vs streaming), cache (repeated vs cold queries), query (neural vs embed + knn), recall (Lucene
HNSW vs exact), memory (sampled while ingest and query run), thumbnails (what the results page's thumbnail adds
to each document, sent and on disk), int8 (the ONNX models at fp32 and int8 side by side; needs no running
stack), bytes (index store bytes per image after a force-merge, and what shrinks it), relevance (the bundled
models judged through OpenSearch on held-out generated scenes: text, object, hybrid and image queries), cluster (one
OpenSearch node beside three, started for the stage: start time, memory per node, bulk ingest), ceiling (the path
around the models with free networks, on a stack started for the stage: pipeline vs raw write, CPU ms per image
of each component; its last line is one JSON object). Results go to
bench/results/<timestamp>.json and .md, and bench/results/latest.md. The bench indices are deleted at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import time
from datetime import UTC, datetime
from functools import partial
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from bench import facts, images, memory, query, recall, report
from bench.context import Context, connect, create_index, delete_index, index_template_body
from common.config import load_config
from common.errors import run_command

STAGES = ("ingest", "query", "recall", "bulk", "cache", "thumbnails", "int8", "bytes", "relevance", "cluster",
          "ceiling")
# need no `make up`: int8 runs the exported models alone, ceiling starts (and stops) a stack of its own
OFFLINE_STAGES = {"int8", "ceiling"}
console = Console()


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="a few minutes: fewer images, rounds, queries; 10k recall")
    p.add_argument("--only", nargs="+", choices=STAGES, help="run only these stages")
    p.add_argument("--images", type=int, help="images in the shared set (default 8 quick, 24 full)")
    p.add_argument("--rounds", type=int, help="ingestion rounds (default 3 quick, 5 full)")
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 2, 4], help="client concurrencies")
    p.add_argument("--bulk-size", type=int, default=2, help="documents per OpenSearch _bulk while ingesting")
    p.add_argument("--naive-threads", type=int, help="torch threads of the naive baseline (default: what a plain "
                   "ultralytics + open_clip script gets)")
    p.add_argument("--compare-triton", metavar="HOST:GRPC_PORT", help="a second Triton (e.g. a prototype fix) "
                   "measured as the `triton_alt` direct path in the same ingest rounds")
    p.add_argument("--queries", type=int, help="queries per kind (default 30 quick, 100 full)")
    p.add_argument("--recall-sizes", type=int, nargs="+", help="vector counts (default 10000 quick, 10000 100000)")
    p.add_argument("--force-merge", action="store_true", help="force-merge each recall index to one segment "
                   "before querying (reproducible worst case; slow for 100k)")
    p.add_argument("--recall-queries", type=int, help="queries per recall index (default 100 quick, 200 full)")
    p.add_argument("--recall-vectors", nargs="+", choices=recall.VECTOR_KINDS, default=["clustered"],
                   help="which vectors (bench/recall.py): clustered (default), random (the worst case), clip (the "
                   "configured CLIP's embeddings of generated scenes)")
    p.add_argument("--bulk-images", type=int, help="images in the one-request _bulk (default 100 quick, 1000 full)")
    p.add_argument("--bytes-images", type=int, default=10_000, help="documents per bytes-per-image index")
    p.add_argument("--relevance-scenes", type=int, help="held-out scenes indexed (default 240 quick, 1000 full)")
    p.add_argument("--relevance-copies", type=int, default=100, help="image → image queries (copies of scenes)")
    p.add_argument("--int8-images", type=int, help="images per int8 round (default 8 quick, 24 full)")
    p.add_argument("--cluster-nodes", type=int, nargs="+", default=[1, 3], help="cluster sizes compared")
    p.add_argument("--cluster-images", type=int, help="images sent to each cluster (default 60 quick, 200 full)")
    p.add_argument("--ceiling-images", type=int, help="64×64 JPEGs through the free-network pipeline and raw "
                   "(default 300 quick, 2000 full)")
    p.add_argument("--ceiling-large", type=int, help="640×480 JPEGs through it (default 100 quick, 400 full)")
    return p.parse_args(argv)


def defaults(args: argparse.Namespace) -> argparse.Namespace:
    quick = args.quick
    args.images = args.images or (8 if quick else 24)
    args.rounds = args.rounds or (3 if quick else 5)
    args.queries = args.queries or (30 if quick else 100)
    args.recall_sizes = args.recall_sizes or ([10_000] if quick else [10_000, 100_000])
    args.recall_queries = args.recall_queries or (100 if quick else 200)
    args.bulk_images = args.bulk_images or (100 if quick else 1000)
    args.int8_images = args.int8_images or (8 if quick else 24)
    args.relevance_scenes = args.relevance_scenes or (240 if quick else 1000)
    args.cluster_images = args.cluster_images or (60 if quick else 200)
    args.ceiling_images = args.ceiling_images or (300 if quick else 2000)
    args.ceiling_large = args.ceiling_large or (100 if quick else 400)
    args.only = args.only or list(STAGES)
    return args


def run_offline(args: argparse.Namespace, progress: Progress) -> dict[str, Any]:
    """The stages that need no running stack, on the models the config names."""
    from bench import int8
    from export.__main__ import ensure_models
    from export.quantize import ensure_int8

    settings = load_config()
    results: dict[str, Any] = {
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"), "mode": "quick" if args.quick else "full",
        "args": dict(vars(args)), "machine": facts.machine(), "packages": facts.packages(),
        "servers": {"opensearch": "—", "lucene": "—", "triton": "— (not used)", "profile": settings.profile},
    }
    clip, yolo = ensure_models(settings)
    results["models"] = facts.model_facts(clip, yolo, settings.yolo_dir, provenance={})
    if "int8" in args.only:
        with console.status("int8: quantized copies of the exported models (quantized now if missing) …"):
            clip, yolo = ensure_int8(settings, clip, yolo)
        task = progress.add_task("int8 vs fp32", total=args.rounds)
        results["int8"] = int8.run(settings, clip, settings.clip_dir, yolo, settings.yolo_dir, args.int8_images,
                                   args.rounds, progress=lambda: progress.advance(task))
    if "ceiling" in args.only:
        from bench import ceiling

        rounds = 3 if args.quick else 10
        task = progress.add_task("ceiling", total=5 + rounds)
        results["ceiling"] = ceiling.run(settings, args.ceiling_images, args.ceiling_large, 500, rounds,
                                         lambda label: progress.update(task, description=f"ceiling: {label}",
                                                                       advance=1))
    results["load_average_end"] = [round(v, 2) for v in os.getloadavg()]
    return results


def run(ctx: Context, args: argparse.Namespace, progress: Progress) -> dict[str, Any]:
    from bench import ingest

    now = datetime.now(UTC)
    tag = now.strftime("%Y%m%d%H%M%S")
    base = ctx.settings.index.name
    os_index, naive_index = f"{base}-bench-{tag}-opensearch", f"{base}-bench-{tag}-naive"
    results: dict[str, Any] = {
        "timestamp": now.isoformat(timespec="seconds"), "mode": "quick" if args.quick else "full",
        "args": dict(vars(args)), "machine": facts.machine(), "packages": facts.packages(),
        "servers": facts.servers(ctx), "models": facts.models(ctx), "config": facts.config(ctx),
    }
    idle = memory.snapshot(ctx)
    sampler = memory.MemorySampler(ctx)
    try:
        with sampler:
            if "ingest" in args.only or "query" in args.only:
                with console.status("generating the image set …"):
                    shared = images.image_set(args.images)
                results["images"] = images.describe(shared)
                create_index(ctx, os_index, index_template_body(ctx, with_ingest_pipeline=True))
                create_index(ctx, naive_index, index_template_body(ctx, with_ingest_pipeline=False))
            if "ingest" in args.only:
                from bench.naive import NaivePipeline

                with console.status("loading the naive PyTorch baseline (ultralytics + open_clip) …"):
                    naive = NaivePipeline(ctx.settings, ctx.clip, ctx.yolo, args.naive_threads)
                paths = 3 if args.compare_triton else 2
                steps = args.rounds * (paths * len(args.concurrency) + 1) + 1
                task = progress.add_task("ingest", total=steps)

                def advance(label: str) -> None:
                    progress.update(task, description=f"ingest: {label}", advance=1)

                results["ingest"] = ingest.run_stage(
                    ctx, shared, rounds=args.rounds, concurrencies=args.concurrency, bulk_size=args.bulk_size,
                    os_index=os_index, naive_index=naive_index, naive=naive, progress=advance,
                    alt_triton=args.compare_triton)
                results["ingest"]["naive_pipeline"] = naive.describe()
                progress.update(task, description="ingest", completed=steps)
            if "query" in args.only:
                if "ingest" not in args.only:  # the query stage needs analyzed documents
                    from bench.ingest import OpenSearchIngest

                    with console.status("indexing the image set for the query stage …"):
                        loader = OpenSearchIngest(ctx, os_index, args.bulk_size, 2)
                        loader.run(shared, 2, "q")
                        loader.close()
                ctx.cluster.refresh(os_index)
                task = progress.add_task("query latency", total=args.queries)
                results["query"] = query.run(ctx, os_index, args.queries, progress=lambda: progress.advance(task))
                results["query"]["documents"] = ctx.cluster.count(os_index)
        results["memory"] = {"idle": idle, "under_load": sampler.result(), "pids": memory.stack_pids(ctx)}
    finally:
        for name in (os_index, naive_index):
            with contextlib.suppress(Exception):
                delete_index(ctx, name)

    if "recall" in args.only:
        results["recall"] = []
        for kind in args.recall_vectors:
            for count in args.recall_sizes:
                task = progress.add_task(f"recall {count // 1000}k {kind}: bulk load", total=count)
                results["recall"].append(recall.run_one(ctx, count, args.recall_queries, tag, args.force_merge,
                                                        progress=partial(progress.advance, task), kind=kind))
    if "bytes" in args.only:
        from bench import store

        task = progress.add_task("bytes per image", total=len(store.VARIANTS))
        results["bytes"] = store.run(ctx, args.bytes_images, tag, lambda label: progress.update(
            task, description=f"bytes: {label}", advance=1))
    if "cache" in args.only:
        from bench import cache

        task = progress.add_task("query cache", total=len(cache.VARIANTS))
        results["cache"] = cache.run(ctx, tag, progress=lambda label: progress.update(
            task, description=f"query cache: {label}", advance=1))
    if "thumbnails" in args.only:
        from bench import thumbnails

        task = progress.add_task("thumbnails", total=3)
        with console.status("generating the image set …"):
            shared = images.image_set(args.images)
        results["thumbnails"] = thumbnails.run(ctx, shared, tag, progress=lambda: progress.advance(task))
    if "relevance" in args.only:
        from bench import relevance

        task = progress.add_task("relevance", total=3)
        results["relevance"] = relevance.run(ctx.settings, args.relevance_scenes, args.relevance_copies, tag,
                                             lambda label: progress.update(task, description=f"relevance: {label}",
                                                                           advance=1))
    if "cluster" in args.only:
        from bench import cluster

        task = progress.add_task("cluster sizes", total=3 * len(args.cluster_nodes))
        results["cluster"] = cluster.run(ctx, args.cluster_nodes, args.cluster_images, lambda label: progress.update(
            task, description=f"cluster: {label}", advance=1))
    if "bulk" in args.only:
        from bench import bigbulk

        task = progress.add_task("one big _bulk", total=3)
        results["bulk"] = bigbulk.run(ctx, args.bulk_images, tag, lambda label: progress.update(
            task, description=f"bulk: {label}", advance=1))
    offline = [stage for stage in args.only if stage in OFFLINE_STAGES]
    if offline:
        results.update({k: v for k, v in run_offline(argparse.Namespace(**{**vars(args), "only": offline}),
                                                         progress).items() if k in OFFLINE_STAGES})
    results["load_average_end"] = [round(v, 2) for v in os.getloadavg()]
    return results


def main(argv: list[str] | None = None) -> int:
    args = defaults(parse_args(argv))
    logging.basicConfig(level=logging.WARNING)
    settings = load_config()
    columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn())
    t0 = time.perf_counter()
    if set(args.only) <= OFFLINE_STAGES:
        with Progress(*columns, console=console) as progress:
            results = run_offline(args, progress)
    else:
        ctx = connect(settings)  # StackDown: one line on stderr, exit 2 (common.errors)
        try:
            with Progress(*columns, console=console) as progress:
                results = run(ctx, args, progress)
        finally:
            ctx.close()
    results["wall_seconds"] = round(time.perf_counter() - t0, 1)
    json_path, md_path = report.write(results)
    print(md_path.read_text())
    console.print(f"written: {json_path}, {md_path}, {md_path.parent / 'latest.md'}")
    if "ceiling" in results:  # its figures as one JSON object, the last line, for scripts
        from bench.ceiling import main_line

        print(main_line(results["ceiling"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(run_command(main))
