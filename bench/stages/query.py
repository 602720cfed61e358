"""Stage `query`: latency of the neural query against its parts (embed, then knn) on the shared image set.

The measurement is bench/query.py; it searches the pipeline index of the shared image set (bench/stages/shared.py)
and indexes the set there itself when ingest did not run.
"""

from __future__ import annotations

import argparse
from typing import Any

from bench.stage import Results, Stage, StageEnv, Target, option, target
from bench.tables import Row, num, stat, table

OPTIONS = (option("--queries", "queries per kind (default 30 quick, 100 full)", quick=30, full=100, type=int),)


def steps(args: argparse.Namespace) -> int:
    return int(args.queries)


def run(env: StageEnv) -> dict[str, Any]:
    from bench import query

    ctx, shared, args = env.ctx, env.shared, env.args
    if not shared.analyzed:  # the query stage needs analyzed documents
        from bench.ingest import OpenSearchIngest

        with env.status("indexing the image set for the query stage …"):
            loader = OpenSearchIngest(ctx, shared.os_index, args.bulk_size, 2)
            loader.run(shared.images, 2, "q")
            loader.close()
    ctx.cluster.refresh(shared.os_index)
    result = query.run(ctx, shared.os_index, args.queries, progress=env.progress)
    result["documents"] = ctx.cluster.count(shared.os_index)
    return result


def targets(query: dict[str, Any], results: Results) -> list[Target]:
    out = []
    for scope in ("global", "nested"):
        g = query["gaps"][scope]
        out.append(target(f"{scope}: neural − (embed + knn) ≤ 5 ms at p50", g["gap_p50_ms"], 5.0, False,
                          f"paired per-query median {g['gap_paired_median_ms']} ms"))
    return out


def markdown(query: dict[str, Any], results: Results) -> list[str]:
    lines = ["## Query latency", "",
             f"{query['queries_per_kind']} queries per kind, interleaved; client-side ms; k = {query['k']}.", ""]
    took = query["server_took_ms"]
    rows = [[name, stat(s), stat(s, "p95"), stat(s, "p99"), stat(took.get(name, {}))]
            for name, s in query["latency_ms"].items()]
    lines += table(["call", "p50", "p95", "p99", "server took p50"], rows)
    rows = [[scope, g["neural_p50_ms"], g["embed_p50_ms"], g["knn_p50_ms"], g["gap_p50_ms"],
             g["gap_paired_median_ms"], g["gap_vs_ml_predict_p50_ms"]] for scope, g in query["gaps"].items()]
    lines += table(["scope", "neural p50", "adapter embed p50", "knn p50", "gap p50", "gap (paired median)",
                    "gap vs ML predict"], rows)
    return lines


def figures(s: dict[str, Any]) -> list[Row]:
    latency, gaps = s["latency_ms"], s["gaps"]
    return [("neural text query p50 ms, global / nested",
             f"{num(latency['neural']['p50'])} / {num(latency['nested_neural']['p50'])}"),
            ("neural − (embed + knn) p50 ms, global / nested",
             f"{num(gaps['global']['gap_p50_ms'])} / {num(gaps['nested']['gap_p50_ms'])}")]


STAGE = Stage(name="query", title="query latency", run=run, steps=steps, options=OPTIONS, shares_image_set=True,
              targets=targets, markdown=markdown, figures=figures)
