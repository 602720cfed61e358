"""Replacing an index by a new version of it, when a change cannot be made to the existing one.

Some changes cannot be made to an existing index: a vector's dimension (a new CLIP variant), its k-NN method,
engine, space or HNSW parameters, a field's type, the `_source` excludes, a static setting. The diff makes them a
`replace` step, and the apply refuses the whole plan (nothing is touched) unless `allow_reindex` is given, because a
replacement re-indexes documents and refuses writes while it runs. With it, `replace_index`:

1. *Canary*: one generated image goes through the ingest pipeline (`_simulate`, nothing indexed); if the vectors do
   not have the new dimension (the adapter's Triton still serves the old model) nothing is replaced.
2. Writes to the current index are blocked: a document sent meanwhile is refused with an error, never silently
   left behind in the old index.
3. A new version `<name>-v<N>` is created with the desired template's settings and mappings (the index template
   also matches `<name>-v*`).
4. Documents are re-analyzed, not copied: their vectors come from the model that changed. A `_reindex` sends them
   through the ingest pipeline again (with their old analysis fields removed), which needs the image. Only the
   *URL* survives indexing: `image_url` is kept in `_source`, while base64 images are never kept (by design, see
   the images index template). So documents carrying `image_url` are re-analyzed (the adapter fetches each URL
   again; one that fails is dead-lettered with its URL and the reason, and `make replay` re-drives it, with --all
   when the adapter judged the failure permanent, a 404 say), and documents sent as base64 cannot be: they are not
   carried over, their count is reported, and they stay, read-only and listable, in the retired version until they
   are sent again (same ids) and the retired version is deleted by hand. No dead letter or other store holds their
   images, so sending them again is the only honest way to give them new vectors.
5. The alias `<name>` is switched to the new version in one `_aliases` call, so searches and writes by the name go
   on working. The first replacement of an index created before versions existed (a concrete index named
   `<name>`) first clones it to `<name>-v<N>` (OpenSearch cannot rename; a clone shares segment files and is
   cheap), and the same `_aliases` call removes the concrete index and adds the alias.

After the first replacement the name is an alias: searches, counts, gets and writes by it work unchanged, but a
bulk response names the concrete version (`<name>-v2`) in `_index`, so a client that compares `_index` with the
configured name must resolve the alias first.

A replacement that fails at any point is rolled back: the new version, a clone and the dead letters the failed
re-analysis wrote are deleted, and the write block is lifted, so the old index serves as before. Steps before the
replace in the same plan (a connector update, say) stay applied; the next plan shows what is left.
"""

from __future__ import annotations

import base64
import contextlib
import io
from collections.abc import Callable

from bootstrap.opensearch_api import Cluster, ClusterError
from bootstrap.plan import Replacement, ReplaceResult, Step
from common import contract

# Re-analysis sends documents through the ingest pipeline in bulks of this many: ML Commons starts every model
# call of a bulk at once, so a reindex's default of 1000 would be one burst of 1000 analyses.
REINDEX_BATCH = 50
_STRIP_ANALYSIS = "for (String f : params.fields) { ctx._source.remove(f); }"
_WITH_URL = {"exists": {"field": contract.IMAGE_URL_FIELD}}


def canary_image() -> str:
    """A small generated JPEG, base64: enough for the analysis to produce a global embedding."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (160, 120), (235, 235, 225))
    draw = ImageDraw.Draw(image)
    draw.ellipse((20, 20, 80, 80), fill=(200, 30, 30))
    draw.rectangle((90, 40, 150, 100), fill=(30, 60, 200))
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=90)
    return base64.b64encode(out.getvalue()).decode()


def check_analysis(cluster: Cluster, pipeline: str, dimension: int | None, index: str) -> None:
    """Before a replacement blocks any write: one image through the ingest pipeline must give vectors of the new
    dimension. Catches the model that did not change with the config (Triton still serving the old variant)."""
    doc = {"_index": index, "_id": "bootstrap-canary",
           "_source": {"image_id": "bootstrap-canary", contract.IMAGE_FIELD: canary_image()}}
    result = cluster.simulate_pipeline(pipeline, [doc])[0]
    source = (result.get("doc") or {}).get("_source", {})
    failure = source.get(contract.FAILURE_FIELD) or result.get("error")
    if failure:
        raise ClusterError(f"a test image sent through {pipeline} was not analyzed ({failure}); nothing was "
                           f"replaced: make the analysis work first (is the adapter up?)")
    got = len(source.get("global_image_embedding") or [])
    if dimension is not None and got != dimension:
        raise ClusterError(f"the ingest pipeline {pipeline} produces {got}-d vectors but the new version of {index} "
                           f"needs {dimension}-d: the adapter's Triton does not serve the configured model yet "
                           "(export it with `make models`, restart the stack), then bootstrap again. Nothing was "
                           "replaced.")


def replace_index(cluster: Cluster, step: Step, say: Callable[[str], None]) -> None:
    """Apply a `replace` step; its data's `result` and its detail say what became of the documents."""
    name, d = step.name, step.payload(Replacement)
    if d.pipeline is not None:
        check_analysis(cluster, d.pipeline, d.dimension, name)
    say(f"replacing {name}: writes to {d.source} are refused until {d.target} serves")
    cluster.block_writes(d.source)
    made: list[str] = []
    try:
        d.result, carried = _build_and_switch(cluster, name, d, made, say)
    except BaseException as exc:
        _roll_back(cluster, d, made)
        if isinstance(exc, ClusterError):
            raise ClusterError(f"replacing {name} failed and was rolled back ({name} serves {d.source} as before): "
                               f"{exc}", status=exc.status) from exc
        raise
    step.detail = (f"{'; '.join(d.reasons)} → {name} is now an alias of {d.target}; "
                   f"{_outcome(d, d.result, carried)}; {d.retired} kept read-only")


def _build_and_switch(cluster: Cluster, name: str, d: Replacement, made: list[str],
                      say: Callable[[str], None]) -> tuple[ReplaceResult, int]:
    """Steps 3 to 5 on a write-blocked source; every index created is named in `made` for a roll-back. The result,
    and how many documents were sent to the new version."""
    if d.retire_as:
        cluster.clone_index(d.source, d.retire_as)
        made.append(d.retire_as)
    cluster.create_index(d.target, d.body)
    made.append(d.target)
    total = cluster.count(d.source)
    carried = cluster.count(d.source, _WITH_URL) if d.pipeline is not None else total
    response = cluster.reindex(_reindex_body(d, carried, say), on_progress=_progress(say))
    if response.get("failures"):
        raise ClusterError(f"{len(response['failures'])} document(s) failed, e.g. {response['failures'][:2]}")
    cluster.refresh(d.target)
    indexed = cluster.count(d.target)
    dead = 0
    if d.pipeline is not None and d.dead_letter:
        cluster.refresh(d.dead_letter)
        dead = cluster.count(d.dead_letter, _letters_of(d.target))
    if d.retire_as:
        actions = [{"remove_index": {"index": d.source}}, {"add": {"index": d.target, "alias": name}}]
    else:
        actions = [{"remove": {"index": d.source, "alias": name}}, {"add": {"index": d.target, "alias": name}}]
    cluster.update_aliases(actions)
    return ReplaceResult(target=d.target, retired=d.retired, indexed=indexed, dead_lettered=dead,
                         not_carried=total - carried), carried


def _reindex_body(d: Replacement, carried: int, say: Callable[[str], None]) -> dict:
    """Through the pipeline without the old analysis fields (documents that carry their image's URL), or a copy."""
    if d.pipeline is None:
        say(f"copying {carried} document(s) of {d.source} into {d.target}")
        return {"source": {"index": d.source, "size": 500}, "dest": {"index": d.target}}
    say(f"re-analyzing the {carried} document(s) of {d.source} that carry {contract.IMAGE_URL_FIELD} into {d.target}")
    return {"source": {"index": d.source, "size": REINDEX_BATCH, "query": _WITH_URL},
            "dest": {"index": d.target, "pipeline": d.pipeline},
            "script": {"lang": "painless", "source": _STRIP_ANALYSIS,
                       "params": {"fields": list(contract.ANALYSIS_FIELDS)}}}


def _letters_of(index: str) -> dict:
    """The dead letters of documents bound for `index`."""
    return {"term": {f"{contract.FAILURE_FIELD}.index": index}}


def _outcome(d: Replacement, result: ReplaceResult, carried: int) -> str:
    if d.pipeline is None:
        return f"{result.indexed} indexed in {d.target}"
    return (f"{carried} re-analyzed from {contract.IMAGE_URL_FIELD}: {result.indexed} indexed in {d.target}, "
            f"{result.dead_lettered} dead-lettered with their {contract.IMAGE_URL_FIELD} and reason (`make replay`); "
            f"{result.not_carried} sent as base64 must be re-sent (they stay in {d.retired})")


def _progress(say: Callable[[str], None]) -> Callable[[dict], None]:
    """Reports a reindex task's progress when it moves (the task polls every few seconds for hours, maybe)."""
    last: list[int] = [-1]

    def report(status: dict) -> None:
        done, total = status.get("created", 0) + status.get("updated", 0), status.get("total", 0)
        if total and done != last[0]:
            last[0] = done
            say(f"  {done}/{total} document(s) done")
    return report


def _roll_back(cluster: Cluster, d: Replacement, made: list[str]) -> None:
    """Undo a replacement that did not finish: the old index takes writes again, nothing new is left behind."""
    for index in reversed(made):
        with contextlib.suppress(ClusterError):  # gone already, or never fully created
            cluster.delete_index(index)
    if d.pipeline is not None and d.dead_letter:
        # dead letters of the failed re-analysis name the deleted version; their documents are still served
        with contextlib.suppress(ClusterError):
            cluster.delete_by_query(d.dead_letter, _letters_of(d.target))
    cluster.block_writes(d.source, False)
