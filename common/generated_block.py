"""A block of a docs page that a command generates: found between two marker lines, replaced, or checked.

docs/benchmarks.md's figures (`python -m bench.figures`) and docs/operations.md's settings (`python -m
common.config_doc`) are written this way, so a page never carries a figure or a default typed by hand; their unit
tests compare the page with what the generator gives.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path


def rewrite(text: str, generated: str, begin: str, end: str) -> str:
    """`text` with everything from `begin` to `end` replaced by `generated` (which carries both markers)."""
    start, stop = text.find(begin), text.find(end)
    if start < 0 or stop < start:
        raise ValueError(f"the markers are missing from the page: {begin!r} … {end!r}")
    return text[:start] + generated + text[stop + len(end):]


def main(argv: list[str] | None, *, prog: str, description: str, page: Path, generate: Callable[[], str],
         begin: str, end: str) -> int:
    """The generator's command line: rewrite the page, or with --check say whether it is up to date (exit 1)."""
    parser = argparse.ArgumentParser(prog=f"python -m {prog}", description=description)
    parser.add_argument("--check", action="store_true", help="only say whether the page is up to date (exit 1 if not)")
    parser.add_argument("--page", type=Path, default=page, help=f"the page holding the markers (default {page.name})")
    args = parser.parse_args(argv)
    text = args.page.read_text()
    updated = rewrite(text, generate(), begin, end)
    if args.check:
        if updated != text:
            print(f"{args.page} is out of date: run python -m {prog}", file=sys.stderr)
            return 1
        return 0
    if updated != text:
        args.page.write_text(updated)
        print(f"rewritten: {args.page}")
    return 0
