"""Stage `recall`: recall@10 of the images index's Lucene HNSW against exact search (bench/recall.py)."""

from __future__ import annotations

import argparse
from typing import Any

from bench.stage import Results, Stage, StageEnv, Target, option, target
from bench.tables import Row, num, stat, table

VECTOR_KINDS = ("clustered", "random", "clip")  # what bench/recall.py's `vectors` draws

OPTIONS = (
    option("--recall-sizes", "vector counts (default 10000 quick, 10000 100000)", quick=[10_000],
           full=[10_000, 100_000], type=int, nargs="+"),
    option("--force-merge", "force-merge each recall index to one segment before querying (reproducible worst case; "
           "slow for 100k)", action="store_true"),
    option("--recall-queries", "queries per recall index (default 100 quick, 200 full)", quick=100, full=200,
           type=int),
    option("--recall-vectors", "which vectors (bench/recall.py): clustered (default), random (the worst case), clip "
           "(the configured CLIP's embeddings of generated scenes)", nargs="+", choices=VECTOR_KINDS,
           default=["clustered"]),
)


def steps(args: argparse.Namespace) -> int:
    return len(args.recall_vectors) * sum(args.recall_sizes)  # one step per vector loaded


def run(env: StageEnv) -> list[dict[str, Any]]:
    from bench import recall

    args, out = env.args, []
    for kind in args.recall_vectors:
        for count in args.recall_sizes:
            env.progress(f"recall {count // 1000}k {kind}: bulk load", 0)
            out.append(recall.run_one(env.ctx, count, args.recall_queries, env.tag, args.force_merge,
                                      progress=lambda loaded: env.progress(steps=loaded), kind=kind))
    return out


def targets(runs: list[dict[str, Any]], results: Results) -> list[Target]:
    out = []
    for run in runs:
        product = run["modes"]["product"]
        out.append(target(f"recall@10 ≥ 0.95, {run['vectors']} {run.get('kind', 'random')} vectors, the product's "
                          f"query ({run['product_query']})", product["recall_at_10"], 0.95, True,
                          f"latency p50 {stat(product['latency_ms'])} ms, p95 {stat(product['latency_ms'], 'p95')} "
                          "ms"))
    return out


def markdown(runs: list[dict[str, Any]], results: Results) -> list[str]:
    lines = ["## Vector search: recall@10 vs exact", ""]
    rows = []
    for run in runs:
        for mode, r in run["modes"].items():
            rows.append([run["vectors"], run.get("kind", "random"), run["dimension"], mode, r["recall_at_10"],
                         r["recall_min"], stat(r["latency_ms"]), stat(r["latency_ms"], "p95"), stat(r["took_ms"]),
                         run["segments"], run["load_docs_per_s"], run["load_seconds"]])
    method = runs[0]["method"]
    merged = "force-merged to one segment" if results["args"].get("force_merge") else "as loaded"
    lines.append(f"HNSW {method.get('engine')} {method.get('space_type')} {method.get('parameters')}, index "
                 f"{merged}; exact = numpy brute force; vectors: see bench/recall.py. `product` is what the "
                 "product's queries send (client.queries.knn_options: `k` and `method_parameters.ef_search`); "
                 "`k_only` sends `k` alone; `ef_N` adds `method_parameters.ef_search: N`. Latency: client-side ms "
                 "of a `knn` query for 10 hits; load: bulk with refresh off, then one refresh.")
    lines.append("")
    lines += table(["vectors", "kind", "dim", "query", "recall@10", "min", "p50 ms", "p95 ms", "took p50",
                    "segments", "load docs/s", "load s"], rows)
    return lines


def figures(runs: list[dict[str, Any]]) -> list[Row]:
    rows = []
    for run in runs:
        modes = run["modes"]
        rows.append((f"recall@10, {run['vectors']} {run.get('kind', 'random')} vectors, the product's query "
                     f"(k only)", f"{num(modes['product']['recall_at_10'])} ({num(modes['k_only']['recall_at_10'])}),"
                     f" p50 {num(modes['product']['latency_ms']['p50'])} ms"))
    return rows


STAGE = Stage(name="recall", run=run, steps=steps, options=OPTIONS, targets=targets, markdown=markdown,
              figures=figures)
