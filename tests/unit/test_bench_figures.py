"""docs/benchmarks.md's figures are generated from bench/results/*.json, and the committed page says what they give."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import figures


def test_the_page_holds_what_the_results_give():
    text = figures.DOC.read_text()
    assert figures.rewrite(text, figures.block(figures.load_runs())) == text, (
        "docs/benchmarks.md is not what bench/results/*.json give: run python -m bench.figures")


def test_every_bench_stage_has_its_figures():
    from bench.stages import STAGES

    assert list(figures.FIGURES) == [stage.name for stage in STAGES]


def write_run(folder: Path, stamp: str, mode: str, **stages: object) -> None:
    run = {"mode": mode, "machine": {"cpu_model": "cpu", "logical_cores": 2},
           "models": {"clip": {"variant": "clip"}, "yolo": {"name": "yolo"}}, **stages}
    (folder / f"{stamp}.json").write_text(json.dumps(run))


RELEVANCE = {"scenes": 10, "text": {"mean": 0.9099999999999998}, "objects_query": {"rate": 1.0},
             "hybrid": {"mean": 0.9}, "image": {"rate": 1.0}}
THUMBNAILS = {"base64_chars_per_document": {"mean": 100.0}, "store_bytes_per_document": 80}


def test_the_newest_full_run_of_each_stage_wins(tmp_path: Path):
    write_run(tmp_path, "20260101T000000+0000", "full", relevance=RELEVANCE)
    write_run(tmp_path, "20260102T000000+0000", "quick", relevance={**RELEVANCE, "scenes": 2},
              thumbnails=THUMBNAILS)
    chosen = figures.latest_runs(figures.load_runs(tmp_path))
    assert chosen["relevance"][0] == "20260101T000000+0000"  # a newer quick run does not replace a full one
    assert chosen["thumbnails"][0] == "20260102T000000+0000"  # a quick run where there is no full one
    block = figures.block(figures.load_runs(tmp_path))
    assert "| `relevance` | text → image precision@10, 10 held-out scenes | 0.91 |" in block
    assert "No run yet: `ingest`" in block


def test_a_stage_whose_json_changed_shape_is_named(tmp_path: Path):
    write_run(tmp_path, "20260101T000000+0000", "full", bulk={"images": 3})
    with pytest.raises(ValueError, match="'bulk' of run 20260101T000000"):
        figures.block(figures.load_runs(tmp_path))


def test_rewrite_replaces_the_block_only():
    page = f"before\n{figures.BEGIN}\nold\n{figures.END}\nafter\n"
    assert figures.rewrite(page, f"{figures.BEGIN}\nnew\n{figures.END}") == \
        f"before\n{figures.BEGIN}\nnew\n{figures.END}\nafter\n"
    with pytest.raises(ValueError, match="markers"):
        figures.rewrite("no markers", "x")
