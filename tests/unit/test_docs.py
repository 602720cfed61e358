"""The README and docs/ say what the code does, and point only at what exists.

* every `GET images/_search` body on a page is one that `client/queries.py` builds (so what people copy is what
  the CLI, the viewer and the tests send);
* every relative link names an existing file, every `#anchor` an existing heading (GitHub's anchor rules);
* every `docs/<page>.md#anchor` that code cites exists, and no code cites a design document outside the repository.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from client import queries
from client.queries import Filters

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```.*?^```[ \t]*$", flags=re.S | re.M)
QUERY_BLOCK = re.compile(r"```\nGET images/_search\n(.*?)```", flags=re.S)
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
HEADING = re.compile(r"^(#{1,6})[ \t]+(.+?)[ \t]*#*[ \t]*$", flags=re.M)
CODE_SUFFIXES = {".py", ".toml", ".j2", ".yaml", ".yml", ".sh", ".pbtxt", ".js", ".html", ".css"}
CODE_NAMES = {"Makefile"}
CITATION = re.compile(r"docs/([\w.-]+\.md)(?:#([\w-]+))?")


def built_bodies() -> dict[str, dict]:
    """Every body the pages may show, by what it is: the builders' output for the pages' examples."""
    return {
        "text": queries.text_query("a red circle"),
        "object": queries.object_query("a blue star"),
        "filtered": queries.text_query("shapes on grass", filters=Filters(
            classes=("circle",), min_confidence=0.5, since="2026-01-01", tags=("holiday",))),
        "hybrid": queries.hybrid_query("a green triangle", "triangle"),
        "object, class and confidence": queries.object_query(
            "a blue star", filters=Filters(classes=("star",), min_confidence=0.5)),
        "object, class and a tag": queries.object_query(
            "a blue star", filters=Filters(classes=("star",), tags=("holiday",))),
        "hybrid, a tag": queries.hybrid_query("a green triangle", "triangle", filters=Filters(tags=("holiday",))),
        "page 3 of 10": queries.text_query("a red circle", 10, offset=20),
        "counted, one per picture": queries.one_per_picture(queries.text_query("shapes", filters=Filters(counts=(
            queries.Count.parse("circle>=2"), queries.Count.parse("star=0"))))),
        "like a stored object": queries.like_object_query([0.12, -0.03, 0.5], exclude_id="photo-1"),
    }


def page_bodies() -> list[tuple[str, int, dict]]:
    """(page, position, body) of every `GET images/_search` example of every page."""
    found = []
    for page in PAGES:
        for i, block in enumerate(QUERY_BLOCK.findall(page.read_text())):
            found.append((page.relative_to(ROOT).as_posix(), i, json.loads(block)))
    return found


def as_shown(body: dict, built: dict) -> dict:
    """A page may leave `size` out (OpenSearch's default then applies); the rest must be exactly the builder's."""
    return built if "size" in body else {k: v for k, v in built.items() if k != "size"}


@pytest.mark.parametrize(("page", "position", "body"), page_bodies(), ids=lambda v: str(v)[:40])
def test_every_query_body_on_a_page_is_one_the_builders_build(page: str, position: int, body: dict):
    matches = [name for name, built in built_bodies().items() if body == as_shown(body, built)]
    assert matches, f"{page}: query body #{position + 1} is not what client/queries.py builds: {json.dumps(body)}"


def test_every_body_the_builders_give_the_pages_is_shown_somewhere():
    """The list above is the pages' own: an example removed from the pages leaves it too."""
    bodies = [body for _, _, body in page_bodies()]
    unused = [name for name, built in built_bodies().items() if not any(b == as_shown(b, built) for b in bodies)]
    assert not unused


def test_the_search_page_shows_every_mode_of_the_readme():
    readme = [body for page, _, body in page_bodies() if page == "README.md"]
    search = [body for page, _, body in page_bodies() if page == "docs/search.md"]
    assert len(readme) == 5 and all(body in search for body in readme)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: the text as rendered (no backticks, emphasis or link targets), lower-case,
    punctuation dropped (letters, digits, `_`, `-` and spaces kept), each space a '-'."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)
    text = text.replace("`", "").replace("*", "").lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """Every heading's anchor, repeated ones numbered the way GitHub numbers them (-1, -2, …)."""
    seen: dict[str, int] = {}
    out = set()
    for _, text in HEADING.findall(FENCE.sub("", page.read_text())):
        base = slug(text)
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.add(base if n == 0 else f"{base}-{n}")
    return out


@pytest.mark.parametrize(("heading", "anchor"), [
    ("What ML Commons 2.19 retries", "what-ml-commons-219-retries"),
    ("One `output_map` entry and a script", "one-output_map-entry-and-a-script"),
    ("Free networks (benchmark only)", "free-networks-benchmark-only"),
    ("Ingest: what to send, what a client must do", "ingest-what-to-send-what-a-client-must-do"),
    ("k and ef_search", "k-and-ef_search"),
])
def test_anchors_follow_githubs_rules(heading: str, anchor: str):
    assert slug(heading) == anchor


def page_links() -> list[tuple[str, str]]:
    """(page, target) of every link outside code blocks and code spans."""
    found = []
    for page in PAGES:
        text = re.sub(r"`[^`\n]*`", "", FENCE.sub("", page.read_text()))
        found += [(page.relative_to(ROOT).as_posix(), target) for target in LINK.findall(text)]
    return found


@pytest.mark.parametrize(("page", "target"), page_links())
def test_every_link_points_at_something_that_exists(page: str, target: str):
    if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto: — not checked offline
        return
    path, _, anchor = target.partition("#")
    file = (ROOT / page).parent / path if path else ROOT / page
    assert file.exists(), f"{page}: link to {target}: no such file"
    if anchor:
        assert file.suffix == ".md", f"{page}: {target}: an anchor into a file that is not a page"
        assert anchor in anchors(file), f"{page}: {target}: no heading with that anchor in {path or page}"


def code_files() -> list[Path]:
    out = []
    for folder, dirs, files in os.walk(ROOT):
        dirs[:] = [d for d in dirs if not d.startswith(".") and d not in {"__pycache__", "node_modules"}
                   and not d.endswith(".egg-info")]
        out += [Path(folder) / f for f in files if Path(f).suffix in CODE_SUFFIXES or f in CODE_NAMES]
    return sorted(out)


def test_every_docs_citation_in_code_names_a_page_and_heading_that_exist():
    broken = []
    for file in code_files():
        for match in CITATION.finditer(file.read_text(errors="replace")):
            page, anchor = ROOT / "docs" / match.group(1), match.group(2)
            if not page.exists() or (anchor and anchor not in anchors(page)):
                broken.append(f"{file.relative_to(ROOT)}: {match.group(0)}")
    assert not broken


def test_no_code_cites_a_design_document_outside_the_repository():
    outside = "DESIGN" + ".md"  # spelled apart so this file does not cite it
    citing = [str(f.relative_to(ROOT)) for f in code_files() if outside in f.read_text(errors="replace")]
    assert not citing, f"cite docs/design.md#<anchor> instead: {citing}"
