"""How figures are written into the markdown report and the figures table, shared by every stage's section.

Moved unchanged out of bench/report.py and bench/figures.py when each stage got its own module (bench/stages/):
the stages format their sections with these, and the results pages already written must come out the same.
"""

from __future__ import annotations

from typing import Any

Row = tuple[str, str]  # one row of the figures table in docs/benchmarks.md: (figure, measured)


def num(value: Any) -> str:
    """A figure as people read it: floats to at most three decimals (JSON keeps 0.9099999999999998)."""
    if isinstance(value, float):
        return f"{round(value, 3)}"
    return str(value)


def rate(mix: dict[str, Any]) -> str:
    """A mix's queries/s: the median round, and the range over rounds when there were several."""
    rates = mix.get("rounds_queries_per_s", [])
    return f"{mix['queries_per_s']} ({min(rates)}–{max(rates)})" if len(rates) > 1 else str(mix["queries_per_s"])


def yes(flag: bool | None) -> str:
    return "" if flag is None else ("yes" if flag else "no")


def stored_name(variant: dict[str, Any]) -> str:
    """How a cache-bench index keeps its hits: codec, and the global vector derived or in `_source`."""
    derived = "derived source" if variant.get("derived_source") else "vectors in _source"
    return f"{variant.get('codec')} codec, {derived}"


def stat(summary: dict[str, Any], key: str = "p50") -> str:
    """One statistic of a `bench.stats.summary`, or — when nothing was measured."""
    return "—" if not summary or not summary.get("n") else f"{summary[key]}"


def spread(summary: dict[str, Any]) -> str:
    """The median and the range of a summary: `p50 (min–max)`."""
    if not summary or not summary.get("n"):
        return "—"
    return f"{summary['p50']} ({summary['min']}–{summary['max']})"


def table(header: list[str], rows: list[list[Any]]) -> list[str]:
    """A markdown table and the blank line after it."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return [*lines, ""]
