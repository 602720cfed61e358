"""The bench stages, registered once: `python -m bench`, bench/report.py and bench/figures.py iterate these.

A stage is a `bench.stage.Stage` in a module of this package (`STAGE`); registering it is one entry in `STAGES`
and one in `REPORT`. Two orders because two published outputs keep theirs: `STAGES` is the order of `--only`, of
the runs (the image-set stages first, those needing no stack last) and of the figures table in docs/benchmarks.md;
`REPORT` is the order of the sections (and targets) of the results page, which bench/results/*.md have always had.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass

from bench.stage import Section, Stage
from bench.stages.bulk import STAGE as BULK
from bench.stages.bytes import STAGE as BYTES
from bench.stages.cache import STAGE as CACHE
from bench.stages.ceiling import STAGE as CEILING
from bench.stages.cluster import STAGE as CLUSTER
from bench.stages.ingest import STAGE as INGEST
from bench.stages.int8 import STAGE as INT8
from bench.stages.memory import SECTION as MEMORY
from bench.stages.query import STAGE as QUERY
from bench.stages.recall import STAGE as RECALL
from bench.stages.relevance import STAGE as RELEVANCE
from bench.stages.thumbnails import STAGE as THUMBNAILS

STAGES: tuple[Stage, ...] = (INGEST, QUERY, RECALL, BULK, CACHE, THUMBNAILS, INT8, BYTES, RELEVANCE, CLUSTER, CEILING)
REPORT: tuple[Section, ...] = (INGEST, QUERY, RECALL, CACHE, BYTES, INT8, BULK, THUMBNAILS, MEMORY, RELEVANCE,
                               CLUSTER, CEILING)


def names(stages: Sequence[Stage] = STAGES) -> list[str]:
    return [stage.name for stage in stages]


def add_options(parser: argparse.ArgumentParser, stages: Sequence[Stage] = STAGES) -> None:
    for stage in stages:
        for option in stage.options:
            option.add_to(parser)


def fill_in_defaults(args: argparse.Namespace, stages: Sequence[Stage] = STAGES) -> None:
    """Each option's quick or full default where the command line did not give one (`args.quick` says which)."""
    for stage in stages:
        for option in stage.options:
            option.fill_in(args)


@dataclass(frozen=True)
class Plan:
    """The chosen stages in the order they run, split by what they need (from their definitions)."""

    image_set: list[Stage]  # need the stack and share the image set: first, together, while memory is sampled
    online: list[Stage]  # the others that need the stack (`make up`)
    offline: list[Stage]  # need no stack: after the others, or alone without connecting to it

    @property
    def needs_stack(self) -> bool:
        return bool(self.image_set or self.online)


def plan(only: Sequence[str], stages: Sequence[Stage] = STAGES) -> Plan:
    chosen = [stage for stage in stages if stage.name in only]
    return Plan(image_set=[s for s in chosen if s.needs_stack and s.shares_image_set],
                online=[s for s in chosen if s.needs_stack and not s.shares_image_set],
                offline=[s for s in chosen if not s.needs_stack])
