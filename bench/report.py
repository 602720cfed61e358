"""Results as JSON (everything) and a markdown table (the figures people read), under bench/results/.

The targets and the sections come from the stages themselves (bench/stages/, in `REPORT`'s order); this module
writes the run's facts, the targets table and the files.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path

from bench import stages
from bench.stage import Results, Section, Target
from bench.tables import table

RESULTS = Path(__file__).resolve().parent / "results"


def targets(results: Results, sections: Sequence[Section] = stages.REPORT) -> list[Target]:
    """Each target: name, measured value, threshold, pass/fail (None when the stage did not run)."""
    out: list[Target] = []
    for section in sections:
        if results.get(section.name):
            out += section.targets(results[section.name], results)
    return out


def markdown(results: Results, sections: Sequence[Section] = stages.REPORT) -> str:
    """The results page: the run's facts, the targets, then each section the run holds (bench/stages/)."""
    m, sv, md = results["machine"], results["servers"], results["models"]
    lines = [f"# Benchmark {results['timestamp']} ({results['mode']})", "",
             f"{m['cpu_model']}, {m['logical_cores']} logical cores, {m['memory_gb']} GiB; load average at start "
             f"{m['load_average']}, at end {results.get('load_average_end')} (shared machine: expect noise). "
             f"OpenSearch {sv['opensearch']} (Lucene {sv['lucene']}), Triton {sv['triton']} ({sv['profile']} "
             f"profile). CLIP {md['clip']['variant']} ({md['clip']['weights']}), detector {md['yolo']['name']} "
             f"({md['yolo']['weights']}).", ""]

    lines += ["## Targets", ""]
    rows = []
    for t in results["targets"]:
        verdict = {True: "**pass**", False: "**FAIL**", None: "—"}[t["pass"]]
        threshold = "—" if t["threshold"] is None else t["threshold"]
        rows.append([t["target"], t["measured"], threshold, verdict, t["note"]])
    lines += table(["target", "measured", "threshold", "result", "note"], rows)

    for section in sections:
        if results.get(section.name):
            lines += section.markdown(results[section.name], results)
    lines += [f"Raw figures: `{results['json_file']}`.", ""]
    return "\n".join(lines)


def write(results: Results, out_dir: Path = RESULTS) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = results["timestamp"].replace(":", "").replace("-", "")
    json_path, md_path = out_dir / f"{stamp}.json", out_dir / f"{stamp}.md"
    results["json_file"] = json_path.name
    results["targets"] = targets(results)
    json_path.write_text(json.dumps(results, indent=2, default=str) + "\n")
    md_path.write_text(markdown(results))
    shutil.copyfile(md_path, out_dir / "latest.md")
    return json_path, md_path
