"""The bench stages are registered once (bench/stages/): the command line, the runner's split and the report read
them from there, so a stage added to the registry is parsed, planned, reported and targeted with nothing else."""

from __future__ import annotations

import argparse
import io
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from rich.progress import Progress

from bench import report, stages
from bench.__main__ import _run_stage, build_parser, defaults, parse_args
from bench.stage import Results, Stage, StageEnv, Target, option, target
from bench.stages.memory import SECTION as MEMORY


def fake_stage(name: str, **fields: Any) -> Stage:
    def markdown(result: Any, results: Results) -> list[str]:
        return [f"## {name}: {result['value']}", ""]

    def targets(result: Any, results: Results) -> list[Target]:
        return [target(f"{name} value ≥ 1", result["value"], 1, True)]

    return Stage(**{"name": name, "run": lambda env: {"value": 1}, "steps": lambda args: 1,
                    "figures": lambda result: [], "markdown": markdown, "targets": targets, **fields})


def test_stage_names_and_option_flags_are_unique():
    names = stages.names()
    flags = [o.flag for stage in stages.STAGES for o in stage.options]
    assert len(set(names)) == len(names)
    assert len(set(flags)) == len(flags)
    assert not {"--quick", "--only"} & set(flags)


def test_every_stage_option_is_in_the_parser():
    usage = build_parser().format_help()
    args = defaults(parse_args([]))
    for stage in stages.STAGES:
        for o in stage.options:
            assert o.flag in usage, (stage.name, o.flag)
            assert hasattr(args, o.dest), (stage.name, o.dest)
            if o.full is not None:
                assert getattr(args, o.dest) == o.full


def test_only_offers_exactly_the_registered_stages():
    assert "{" + ",".join(stages.names()) + "}" in build_parser().format_usage()
    for name in stages.names():
        assert parse_args(["--only", name]).only == [name]
    with pytest.raises(SystemExit):
        parse_args(["--only", "no-such-stage"])
    assert defaults(parse_args([])).only == stages.names()


def test_quick_and_full_defaults_come_from_the_stage():
    registry = [fake_stage("fake", options=(option("--fake-count", "how many", quick=2, full=20, type=int),))]
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    stages.add_options(parser, registry)
    for argv, expected in (([], 20), (["--quick"], 2), (["--fake-count", "7"], 7)):
        args = parser.parse_args(argv)
        stages.fill_in_defaults(args, registry)
        assert args.fake_count == expected


def test_the_offline_online_split_comes_from_the_definitions():
    whole = stages.plan(stages.names())
    assert [s.name for s in whole.offline] == [s.name for s in stages.STAGES if not s.needs_stack]
    assert {s.name for s in whole.offline} == {"int8", "ceiling"}  # the models alone; a stack of its own
    assert [s.name for s in whole.image_set] == ["ingest", "query"]
    assert not stages.plan(["int8", "ceiling"]).needs_stack
    registry = [fake_stage("a"), fake_stage("b", needs_stack=False), fake_stage("c", shares_image_set=True)]
    chosen = stages.plan(["a", "b", "c"], registry)
    assert ([s.name for s in chosen.image_set], [s.name for s in chosen.online], [s.name for s in chosen.offline]) \
        == (["c"], ["a"], ["b"])
    assert not stages.plan(["b"], registry).needs_stack


def test_the_report_holds_every_stage_once_and_the_memory_section():
    assert sorted(s.name for s in stages.REPORT) == sorted([*stages.names(), MEMORY.name])


def test_the_report_uses_each_stage_markdown_and_targets():
    fake = fake_stage("fake")
    results = {"timestamp": "t", "mode": "quick", "json_file": "t.json", "load_average_end": [0.0],
               "machine": {"cpu_model": "cpu", "logical_cores": 2, "memory_gb": 1, "load_average": [0.0]},
               "servers": {"opensearch": "o", "lucene": "l", "triton": "t", "profile": "cpu"},
               "models": {"clip": {"variant": "c", "weights": "w"}, "yolo": {"name": "y", "weights": "w"}},
               "fake": {"value": 3}}
    found = report.targets(results, [fake])
    assert [(t["target"], t["measured"], t["pass"]) for t in found] == [("fake value ≥ 1", 3, True)]
    results["targets"] = found
    page = report.markdown(results, [fake])
    assert "## fake: 3" in page and "| fake value ≥ 1 | 3 | 1 | **pass** |" in page
    del results["fake"]  # a stage that did not run has no section and no targets
    assert "## fake" not in report.markdown(results, [fake]) and report.targets(results, [fake]) == []


def test_a_stage_runs_with_a_progress_bar_of_its_steps():
    seen: list[str] = []

    def run(env: StageEnv) -> dict[str, Any]:
        env.progress("fake: first")
        env.progress()
        seen.append(env.tag)
        return {"value": 1}

    stage = fake_stage("fake", run=run, steps=lambda args: 2, title="a fake")
    env = StageEnv(args=argparse.Namespace(), settings=None, tag="tag", status=Console().status)  # type: ignore[arg-type]
    with Progress(console=Console(file=io.StringIO())) as progress:
        assert _run_stage(stage, env, progress) == {"value": 1}
        (task,) = progress.tasks
    assert (task.description, task.completed, task.total, seen) == ("a fake", 2, 2, ["tag"])


def test_the_registry_imports_no_server_library():
    """bench/figures.py and the report read every stage's module: a stage imports its measurement inside `run`."""
    code = ("import sys, bench.figures, bench.report\n"
            "print(sorted({'numpy', 'httpx', 'opensearchpy', 'torch'} & set(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[2]).stdout
    assert out.strip() == "[]"
