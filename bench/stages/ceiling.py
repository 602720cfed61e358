"""Stage `ceiling`: the path around the models with free networks, on a stack started for the stage.

Pipeline vs raw write, CPU ms per image of each component (bench/ceiling.py, which also writes the stage's report
section); needs no `make up`. Its last line, after the report, is one JSON object for scripts.
"""

from __future__ import annotations

import argparse
from typing import Any

from bench.stage import Results, Stage, StageEnv, Target, option, target
from bench.tables import Row, num

OPTIONS = (
    option("--ceiling-images", "64×64 JPEGs through the free-network pipeline and raw (default 300 quick, 2000 full)",
           quick=300, full=2000, type=int),
    option("--ceiling-large", "640×480 JPEGs through it (default 100 quick, 400 full)", quick=100, full=400,
           type=int),
)
WARM_UP_IMAGES = 500


def _warm_up_rounds(args: argparse.Namespace) -> int:
    """At most this many warm-up rounds (bench/ceiling.py stops once the JIT compiler settles)."""
    return 3 if args.quick else 10


def steps(args: argparse.Namespace) -> int:
    return 6 + _warm_up_rounds(args)


def run(env: StageEnv) -> dict[str, Any]:
    from bench import ceiling

    args = env.args
    return ceiling.run(env.settings, args.ceiling_images, args.ceiling_large, WARM_UP_IMAGES, _warm_up_rounds(args),
                       lambda label: env.progress(f"ceiling: {label}"))


def targets(ceiling: dict[str, Any], results: Results) -> list[Target]:
    from bench.ceiling import TARGET_RATIO, opensearch_bound_ratio

    return [target(f"ingest ceiling: pipeline ÷ raw write ≥ {TARGET_RATIO}, 64×64 JPEGs, free networks",
                   ceiling["ratio"], TARGET_RATIO, True, f"{ceiling['summary']['pipeline_images_per_s']} vs "
                   f"{ceiling['summary']['raw_bulk_images_per_s']} images/s; lost {ceiling['summary']['lost']}"),
            target("ingest ceiling where the models run on their own machines: raw ÷ pipeline OpenSearch CPU per "
                   f"image ≥ {TARGET_RATIO} (derived, not the issue's)", opensearch_bound_ratio(ceiling), TARGET_RATIO,
                   True, "OpenSearch ms per image, the JIT compiler apart")]


def markdown(ceiling: dict[str, Any], results: Results) -> list[str]:
    from bench.ceiling import markdown as section

    return section(ceiling)


def last_line(ceiling: dict[str, Any]) -> str:
    from bench.ceiling import main_line

    return main_line(ceiling)


def figures(s: dict[str, Any]) -> list[Row]:
    summary = s["summary"]
    cpu, raw = summary["cpu_ms_per_image"], summary["raw_cpu_ms_per_image"]
    return [("pipeline ÷ raw write, 64×64 JPEGs, free networks", num(summary["ratio"])),
            ("the same in OpenSearch's CPU per image (raw ÷ pipeline): where the models run elsewhere",
             num(summary.get("opensearch_bound_ratio", "—"))),
            ("images/s: pipeline vs raw write; pipeline on 640×480 JPEGs",
             f"{num(summary['pipeline_images_per_s'])} vs {num(summary['raw_bulk_images_per_s'])}; "
             f"{num(summary['pipeline_640x480_images_per_s'])}"),
            ("OpenSearch CPU ms per image: pipeline vs raw write",
             f"{num(cpu['opensearch'])} vs {num(raw['opensearch'])}"),
            ("adapter CPU ms per image; all components", f"{num(cpu['adapter'])}; {num(cpu['all_components'])}"),
            ("documents sent, indexed, lost", f"{summary['sent']}, {summary['indexed']}, {summary['lost']}")]


STAGE = Stage(name="ceiling", run=run, steps=steps, options=OPTIONS, needs_stack=False, targets=targets,
              markdown=markdown, figures=figures, last_line=last_line)
