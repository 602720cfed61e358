"""Stage `cluster`: one OpenSearch node beside several, each started for the stage (bench/cluster.py)."""

from __future__ import annotations

import argparse
from typing import Any

from bench.stage import Results, Stage, StageEnv, option
from bench.tables import Row, num, table

OPTIONS = (
    option("--cluster-nodes", "cluster sizes compared", type=int, nargs="+", default=[1, 3]),
    option("--cluster-images", "images sent to each cluster (default 60 quick, 200 full)", quick=60, full=200,
           type=int),
)


def steps(args: argparse.Namespace) -> int:
    return 3 * len(args.cluster_nodes)


def run(env: StageEnv) -> dict[str, Any]:
    from bench import cluster

    args = env.args
    return cluster.run(env.ctx, args.cluster_nodes, args.cluster_images,
                       lambda label: env.progress(f"cluster: {label}"))


def markdown(clusters: dict[str, Any], results: Results) -> list[str]:
    secured = "secured" if clusters["security"] else "unsecured"
    lines = ["## One OpenSearch node beside several (bench/cluster.py)", "",
             f"Each cluster started for the stage on this machine ({secured}), bootstrapped, then sent the "
             "same generated JPEGs through the streaming client (bulks of 16, 2 in flight); the models are the "
             "stack's one Triton on the same cores.", ""]
    rows = [[r["nodes"], f"{r['shards']} / {r['replicas']}", f"{r['start_to_green_s']} ({r['start_x_first']}×)",
             ", ".join(str(m) for m in r["rss_mib_idle"]), ", ".join(str(m) for m in r["rss_mib_after_ingest"]),
             f"{r['images_per_s']} ({r['images_per_s_x_first']}×)", f"{r['indexed']}/{r['images']}"]
            for r in clusters["rows"]]
    lines += table(["nodes", "shards / replicas", "start to green, s", "RSS per node idle (MiB)",
                    "RSS after ingest (MiB)", "images/s", "indexed"], rows)
    return lines


def figures(s: dict[str, Any]) -> list[Row]:
    return [(f"{r['nodes']} node(s): start to green s, images/s, RSS MiB per node after ingest",
             f"{num(r['start_to_green_s'])}, {num(r['images_per_s'])}, "
             + " / ".join(str(m) for m in r["rss_mib_after_ingest"])) for r in s["rows"]]


STAGE = Stage(name="cluster", title="cluster sizes", run=run, steps=steps, options=OPTIONS, markdown=markdown,
              figures=figures)
