"""Stage `relevance`: the bundled models judged through OpenSearch on held-out generated scenes (bench/relevance.py).

Text, object, hybrid and image queries; the thresholds are bench/relevance.py's.
"""

from __future__ import annotations

import argparse
from typing import Any

from bench.stage import Results, Stage, StageEnv, Target, option, target
from bench.tables import Row, num, table

OPTIONS = (
    option("--relevance-scenes", "held-out scenes indexed (default 240 quick, 1000 full)", quick=240, full=1000,
           type=int),
    option("--relevance-copies", "image → image queries (copies of scenes)", type=int, default=100),
)


def steps(args: argparse.Namespace) -> int:
    return 3


def run(env: StageEnv) -> dict[str, Any]:
    from bench import relevance

    args = env.args
    return relevance.run(env.ctx.settings, args.relevance_scenes, args.relevance_copies, env.tag,
                         lambda label: env.progress(f"relevance: {label}"))


def targets(rel: dict[str, Any], results: Results) -> list[Target]:
    from bench.relevance import COPY_TARGET, HYBRID_TARGET, OBJECT_TARGET, TEXT_TARGET

    n = f"{rel['scenes']} held-out scenes"
    return [target(f"text → image precision@10, \"a {{colour}} {{shape}}\" ({n})", rel["text"]["mean"], TEXT_TARGET,
                   True, f"{rel['text']['queries']} queries"),
            target(f"object query: matched object of the queried colour and shape ({n})", rel["objects_query"]["rate"],
                   OBJECT_TARGET, True, f"{rel['objects_query']['hits']} hits"),
            target(f"hybrid + class filter precision@10 ({n})", rel["hybrid"]["mean"], HYBRID_TARGET, True,
                   f"hits without the class: {rel['hybrid']['hits_without_class']}"),
            target(f"image → image: a smaller recompressed copy finds its original first ({n})", rel["image"]["rate"],
                   COPY_TARGET, True, f"{rel['image']['copies']} copies")]


def markdown(rel: dict[str, Any], results: Results) -> list[str]:
    lines = ["## Relevance through OpenSearch (held-out generated scenes, bench/relevance.py)", "",
             f"{rel['scenes']} scenes holding {rel['objects']} objects indexed through the pipeline in "
             f"{rel['index_seconds']} s ({rel['indexed']} indexed); queries restricted to them by tag.", ""]
    rows = [[name, round(r.get("mean", r.get("rate", 0.0)), 3), r.get("queries", r.get("copies", "")),
             "; ".join(f"{q} {v:.2f}" for q, v in r.get("worst", []))]
            for name, r in (("text → image precision@10", rel["text"]),
                            ("object query: matched object right", rel["objects_query"]),
                            ("hybrid + class filter precision@10", rel["hybrid"]),
                            ("image → image: copy first", rel["image"]))]
    lines += table(["measure", "value", "queries", "worst queries"], rows)
    return lines


def figures(s: dict[str, Any]) -> list[Row]:
    n = f"{s['scenes']} held-out scenes"
    return [(f"text → image precision@10, {n}", num(s["text"]["mean"])),
            ("object query: matched object of the colour and shape", num(s["objects_query"]["rate"])),
            ("hybrid + class filter precision@10", num(s["hybrid"]["mean"])),
            ("image → image: a recompressed copy finds its original first", num(s["image"]["rate"]))]


STAGE = Stage(name="relevance", run=run, steps=steps, options=OPTIONS, targets=targets, markdown=markdown,
              figures=figures)
