"""`python -m bench [--quick]`: every figure side by side, in one run, against the running stack (`make up`).

The stages are defined in bench/stages/ (one module each, registered in its `STAGES`); all run by default, `--only`
picks some, and each adds its own options. Stages that need no `make up` (the models alone, or a stack started for
the stage) run after the others, or alone without connecting to the stack. Results go to
bench/results/<timestamp>.json and .md, and bench/results/latest.md. The bench indices are deleted at the end.
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from bench import facts, memory, report, stages
from bench.context import Context, connect
from bench.stage import Results, Stage, StageEnv
from bench.stages.shared import ImageSet
from common.config import Settings, load_config
from common.errors import run_command
from common.model_facts import ClipFacts, YoloFacts

console = Console()


def build_parser() -> argparse.ArgumentParser:
    """`--quick` and `--only`, then every stage's own options (declared in bench/stages/)."""
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="a few minutes: fewer images, rounds, queries; 10k recall")
    p.add_argument("--only", nargs="+", choices=stages.names(), help="run only these stages")
    stages.add_options(p)
    return p


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def defaults(args: argparse.Namespace) -> argparse.Namespace:
    stages.fill_in_defaults(args)
    args.only = args.only or stages.names()
    return args


def _header(args: argparse.Namespace, now: datetime) -> Results:
    return {"timestamp": now.isoformat(timespec="seconds"), "mode": "quick" if args.quick else "full",
            "args": dict(vars(args)), "machine": facts.machine(), "packages": facts.packages()}


def _run_stage(stage: Stage, env: StageEnv, progress: Progress) -> Any:
    """One stage with a progress bar of its own `steps`, which it advances through `env.progress`."""
    title = stage.title or stage.name
    total = stage.steps(env.args)
    task = progress.add_task(title, total=total)

    def advance(label: str | None = None, steps: int = 1) -> None:
        progress.update(task, description=label, advance=steps)

    result = stage.run(replace(env, progress=advance))
    progress.update(task, description=title, completed=total)
    return result


def _run_stages(chosen: Sequence[Stage], env: StageEnv, progress: Progress) -> Results:
    return {stage.name: _run_stage(stage, env, progress) for stage in chosen}


def _exported_models(settings: Settings) -> tuple[ClipFacts, YoloFacts]:
    """The models the config names (exported now if missing): the stages that need no stack read them."""
    from export.__main__ import ensure_models

    return ensure_models(settings)


def run_offline(args: argparse.Namespace, progress: Progress) -> Results:
    """A run of stages that all need no running stack: nothing connects to it."""
    settings = load_config()
    now = datetime.now(UTC)
    results = {**_header(args, now),
               "servers": {"opensearch": "—", "lucene": "—", "triton": "— (not used)", "profile": settings.profile}}
    clip, yolo = _exported_models(settings)
    results["models"] = facts.model_facts(clip, yolo, settings.yolo_dir, provenance={})
    env = StageEnv(args=args, settings=settings, tag=now.strftime("%Y%m%d%H%M%S"), status=console.status,
                   models=(clip, yolo))
    results.update(_run_stages(stages.plan(args.only).offline, env, progress))
    results["load_average_end"] = [round(v, 2) for v in os.getloadavg()]
    return results


def run(ctx: Context, args: argparse.Namespace, progress: Progress) -> Results:
    """A run against the stack: the image-set stages under the memory sampler, the others, then the offline ones."""
    now = datetime.now(UTC)
    plan = stages.plan(args.only)
    env = StageEnv(args=args, settings=ctx.settings, tag=now.strftime("%Y%m%d%H%M%S"), status=console.status,
                   context=ctx)
    results: Results = {**_header(args, now), "servers": facts.servers(ctx), "models": facts.models(ctx),
                        "config": facts.config(ctx)}
    idle = memory.snapshot(ctx)
    sampler = memory.MemorySampler(ctx)
    try:
        with sampler:
            if plan.image_set:
                with console.status("generating the image set …"):
                    env.image_set = ImageSet.generate(ctx.settings.index.name, args.images, env.tag)
                results["images"] = env.image_set.describe()
                env.image_set.create_indices(ctx)
            results.update(_run_stages(plan.image_set, env, progress))
        results["memory"] = {"idle": idle, "under_load": sampler.result(), "pids": memory.stack_pids(ctx.settings)}
    finally:
        if env.image_set is not None:
            env.image_set.delete(ctx)

    results.update(_run_stages(plan.online, env, progress))
    if plan.offline:
        offline = replace(env, context=None, image_set=None, models=_exported_models(ctx.settings))
        results.update(_run_stages(plan.offline, offline, progress))
    results["load_average_end"] = [round(v, 2) for v in os.getloadavg()]
    return results


def main(argv: list[str] | None = None) -> int:
    args = defaults(parse_args(argv))
    logging.basicConfig(level=logging.WARNING)
    settings = load_config()
    columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn())
    t0 = time.perf_counter()
    if not stages.plan(args.only).needs_stack:
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
    for stage in stages.STAGES:
        if stage.last_line is not None and stage.name in results:  # e.g. ceiling's one JSON object, for scripts
            print(stage.last_line(results[stage.name]))
    return 0


if __name__ == "__main__":
    raise SystemExit(run_command(main))
