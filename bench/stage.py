"""What a bench stage is, so that adding one is a module under bench/stages/ and its place in the registry there.

A stage used to be spread over six places (the stage list, argparse and its quick/full defaults, a block in the
runner, one in the report's targets, one in its markdown, one in the figures table). Now a `Stage` carries all of
it: `python -m bench` adds its options and runs it, bench/report.py asks it for its targets and its section, and
bench/figures.py for its headline figures. This module imports nothing heavy: the report and the figures table
read the registry without the server libraries a stage's `run` needs (a stage imports those inside `run`).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from bench.tables import Row

if TYPE_CHECKING:
    from bench.context import Context
    from bench.stages.shared import ImageSet
    from common.config import Settings
    from common.model_facts import ClipFacts, YoloFacts

Results = dict[str, Any]  # one run's JSON: the facts of the machine and stack, then one key per stage that ran
Target = dict[str, Any]  # one row of the report's targets: target, measured, threshold, pass, note


def target(name: str, measured: float | None, threshold: float, higher_is_better: bool, note: str = "") -> Target:
    """A target row, judged: pass is None when nothing was measured."""
    ok = None if measured is None else (measured >= threshold if higher_is_better else measured <= threshold)
    return {"target": name, "measured": measured, "threshold": threshold, "pass": ok, "note": note}


@dataclass(frozen=True)
class Option:
    """A command-line option of a stage; the registry adds it to the parser and fills in its default.

    `quick` / `full` are the defaults under `--quick` and without it, filled in after parsing when the option was
    not given (or given as 0 or empty: the runner always used `or`); an option with one default for both modes
    passes argparse's own `default` in `keywords` instead.
    """

    flag: str
    keywords: dict[str, Any] = field(default_factory=dict)  # add_argument's: help, type, nargs, default, …
    quick: Any = None
    full: Any = None

    @property
    def dest(self) -> str:
        return self.flag.removeprefix("--").replace("-", "_")

    def add_to(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument(self.flag, **self.keywords)

    def fill_in(self, args: argparse.Namespace) -> None:
        if self.quick is not None or self.full is not None:
            setattr(args, self.dest, getattr(args, self.dest) or (self.quick if args.quick else self.full))


def option(flag: str, help: str, *, quick: Any = None, full: Any = None, **keywords: Any) -> Option:
    """`Option` written as `add_argument` is: `option("--images", "…", quick=8, full=24, type=int)`."""
    return Option(flag, {"help": help, **keywords}, quick, full)


class StageProgress(Protocol):
    """A stage's progress bar: advance `steps` (one by default), showing `label` when one is given."""

    def __call__(self, label: str | None = None, steps: int = 1) -> None: ...


def _no_progress(label: str | None = None, steps: int = 1) -> None:
    return None


@dataclass
class StageEnv:
    """What a stage's `run` gets from the runner.

    `context` is the running stack (None for a stage that needs none); `image_set` is the set and indices the
    stages with `shares_image_set` measure together (bench/stages/shared.py); `models` are the exported models'
    facts, made ready for the stages that need no stack (they read the models themselves).
    """

    args: argparse.Namespace
    settings: Settings
    tag: str  # this run's time stamp: names the bench indices so that runs never meet
    status: Callable[[str], AbstractContextManager[Any]]  # a spinner while something not measured happens
    progress: StageProgress = _no_progress
    context: Context | None = None
    image_set: ImageSet | None = None
    models: tuple[ClipFacts, YoloFacts] | None = None

    @property
    def ctx(self) -> Context:
        if self.context is None:
            raise RuntimeError("this stage needs the running stack (needs_stack=True)")
        return self.context

    @property
    def shared(self) -> ImageSet:
        if self.image_set is None:
            raise RuntimeError("this stage reads the shared image set (shares_image_set=True)")
        return self.image_set

    @property
    def exported(self) -> tuple[ClipFacts, YoloFacts]:
        if self.models is None:
            raise RuntimeError("the exported models are made ready for the stages that need no stack only")
        return self.models


def no_targets(result: Any, results: Results) -> list[Target]:
    return []


@dataclass(frozen=True, kw_only=True)
class Section:
    """A part of the results page, written from `results[name]` when the run holds it.

    `markdown` and `targets` get that value and the whole run (for what stages share: the image set, the args).
    Every stage is one; the memory figures, which the runner samples rather than a stage, are one too.
    """

    name: str
    markdown: Callable[[Any, Results], list[str]]
    targets: Callable[[Any, Results], list[Target]] = no_targets


@dataclass(frozen=True, kw_only=True)
class Stage(Section):
    """One bench stage: `--only <name>` runs it, `results[name]` is what its `run` returned.

    `needs_stack`: False when the stage needs no `make up` (it reads the exported models, or starts what it needs
    and stops it); such stages run after the others, or alone without connecting. `shares_image_set`: the stage
    measures the image set and bench indices it shares with others (bench/stages/shared.py). `steps` is the length
    of its progress bar, `title` the bar's label (the name when empty), `last_line` a line printed after the report
    for scripts.
    """

    run: Callable[[StageEnv], Any]
    steps: Callable[[argparse.Namespace], int]
    figures: Callable[[Any], list[Row]]  # its headline figures in docs/benchmarks.md (bench/figures.py)
    options: tuple[Option, ...] = ()
    needs_stack: bool = True
    shares_image_set: bool = False
    title: str = ""
    last_line: Callable[[Any], str] | None = None
