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
    option("--duplicate-copies", "resized + recompressed copies of scenes whose group is judged (default 100 quick, "
           "500 full; a fifth as many exact copies too)", quick=100, full=500, type=int),
    option("--box-clicks", "boxes whose look-alikes are judged (default 10 quick, 30 full)", quick=10, full=30,
           type=int),
    option("--cost-images", "scenes per round of the duplicate lookup's ingest cost (default 40 quick, 100 full; 4 "
           "rounds each way)", quick=40, full=100, type=int),
)


def steps(args: argparse.Namespace) -> int:
    return 3 + 5 + 8


def run(env: StageEnv) -> dict[str, Any]:
    from bench import beyond, relevance

    args = env.args
    sizes = {"resized": args.duplicate_copies, "exact": max(1, args.duplicate_copies // 5), "clicks": args.box_clicks,
             "cost_images": args.cost_images, "cost_rounds": 4}

    def progress(label: str) -> None:
        env.progress(f"relevance: {label}")

    return relevance.run(env.ctx.settings, args.relevance_scenes, args.relevance_copies, env.tag, progress,
                         more=lambda m: beyond.measure_all(m, env.ctx.settings, sizes, progress))


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
                   COPY_TARGET, True, f"{rel['image']['copies']} copies"),
            *_beyond_targets(rel, n)]


def _beyond_targets(rel: dict[str, Any], n: str) -> list[Target]:
    """Duplicate groups, counts, search by a box and the lookup's cost (bench/beyond.py), when they were measured."""
    from bench import beyond

    if "duplicates" not in rel:
        return []
    d, c, like, cost = rel["duplicates"], rel["counts"], rel["like_object"], rel["ingest_cost"]
    return [target(f"a resized (0.5–0.8×) recompressed (q 60–80) copy joins its original's group ({n})",
                   d["resized_joined"], beyond.COPY_JOIN_TARGET, True, f"{d['resized']} copies"),
            target("an exact copy joins its original's group", d["exact_joined"], beyond.EXACT_JOIN_TARGET, True,
                   f"{d['exact']} copies"),
            target(f"different scenes sharing a group ({n})", d["false_share"], beyond.FALSE_SHARE_TARGET, False,
                   f"{d['originals']} originals"),
            target("object_counts equal the detected objects", c["counts_exact"], 1.0, True,
                   f"{c['documents']} documents"),
            target("count filters' precision against detected_objects", c["filter_precision"],
                   beyond.COUNT_PRECISION_TARGET, True, f"{c['filter_hits']} hits"),
            target("search by a box: top 10 hold an object of its class and colour", like["hold_rate"],
                   beyond.LIKE_OBJECT_TARGET, True, f"{like['clicks']} boxes, {like['hits']} hits"),
            target("ingest with ÷ without the duplicate lookup, images/s", cost["ratio"], beyond.INGEST_COST_TARGET,
                   True, f"{cost['rounds']} rounds of {cost['images']} each way, medians")]


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
    return lines + _beyond_markdown(rel)


def _beyond_markdown(rel: dict[str, Any]) -> list[str]:
    if "duplicates" not in rel:
        return []
    d, c, like, cost = rel["duplicates"], rel["counts"], rel["like_object"], rel["ingest_cost"]
    lines = ["", "### Duplicate groups, object counts, search by a box (bench/beyond.py, same scenes)", ""]
    rows = [["resized copy joins its original's group", d["resized_joined"], d["resized"]],
            ["exact copy joins its original's group", d["exact_joined"], d["exact"]],
            ["different scenes sharing a group", d["false_share"], d["originals"]],
            ["object_counts equal the detections", c["counts_exact"], c["documents"]],
            ["count filters: hits holding what the filter says", c["filter_precision"], c["filter_hits"]],
            ["search by a box: hit holds the class and colour", like["hold_rate"], like["hits"]],
            ["search by a box: matched object is the class and colour", like["matched_rate"], like["hits"]]]
    lines += table(["measure", "value", "of"], rows)
    w, wo = cost["with_lookup"], cost["without_lookup"]
    lines += ["", f"Ingest with the duplicate lookup {w['p50']} images/s (rounds {w['min']}–{w['max']}), without it "
              f"{wo['p50']} ({wo['min']}–{wo['max']}): ratio **{cost['ratio']}** ({cost['rounds']} alternating rounds "
              f"of {cost['images']} scenes each way after {cost.get('warm_up_rounds', 1)} unmeasured round(s) each "
              "(until the JIT compiler settled), into two indices of the images template; the adapter hashes "
              "every image either way). CPU ms per image, medians of the rounds (bench/ceiling.py's meter):", ""]
    ms = cost.get("cpu_ms_per_image", {})
    if ms:
        names = [n for n in ms["with"] if n not in ("bench_client",)]
        lines += table(["", *names], [[kind + " the lookup", *[ms[kind][n] for n in names]]
                                      for kind in ("with", "without")])
        lines.append("")
    return lines


def figures(s: dict[str, Any]) -> list[Row]:
    n = f"{s['scenes']} held-out scenes"
    return [(f"text → image precision@10, {n}", num(s["text"]["mean"])),
            ("object query: matched object of the colour and shape", num(s["objects_query"]["rate"])),
            ("hybrid + class filter precision@10", num(s["hybrid"]["mean"])),
            ("image → image: a recompressed copy finds its original first", num(s["image"]["rate"])),
            *_beyond_figures(s)]


def _beyond_figures(s: dict[str, Any]) -> list[Row]:
    if "duplicates" not in s:
        return []
    d = s["duplicates"]
    return [("duplicate groups: resized / exact copies joined, different scenes sharing",
             f"{num(d['resized_joined'])} / {num(d['exact_joined'])} / {num(d['false_share'])}"),
            ("count filters' precision; search by a box, top 10 holding its class and colour",
             f"{num(s['counts']['filter_precision'])}; {num(s['like_object']['hold_rate'])}"),
            ("ingest with ÷ without the duplicate lookup", num(s["ingest_cost"]["ratio"]))]


STAGE = Stage(name="relevance", run=run, steps=steps, options=OPTIONS, targets=targets, markdown=markdown,
              figures=figures)
