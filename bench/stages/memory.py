"""The report's memory section: not a stage but what the runner samples while the image-set stages run.

`python -m bench` snapshots the stack's memory before any load and samples it while the stages sharing the image
set (bench/stages/shared.py) run; it writes `results["memory"]` on every run against the stack.
"""

from __future__ import annotations

from typing import Any

from bench.stage import Results, Section
from bench.tables import stat, table


def markdown(memory: dict[str, Any], results: Results) -> list[str]:
    lines = ["## Memory (MiB)", ""]
    idle, load = memory.get("idle", {}), memory.get("under_load", {})
    rows = [[name, stat(idle.get(name, {})), stat(load.get(name, {})), stat(load.get(name, {}), "max")]
            for name in sorted(load)]
    lines += table(["figure", "before load", "under load (median)", "under load (max)"], rows)
    return lines


SECTION = Section(name="memory", markdown=markdown)
