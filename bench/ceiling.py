"""The ingest ceiling: what the path around the models costs per image, measured with networks that cost nothing.

ML Commons' `ml_inference` makes one HTTP call per document, through the connector, the adapter, Triton's ensemble
and its python-backend steps, the crops and the thumbnail, then OpenSearch indexes three or more vectors. On a GPU
the networks take a few milliseconds per image; whatever the rest costs is the product's ceiling there. This stage
starts a stack of its own (localstack.scratch: OpenSearch, Triton, the adapter on free ports, bootstrapped) that
serves the free networks (export/free_networks.py, same tensors and facts), and measures side by side:

* pipeline: images/s through `_bulk` with the project's client settings (client/bulk.py: bulks of 16, 2 in flight,
  retries), on small JPEGs (64×64: the decode and crops cost little, so the plumbing shows) and on the bench's
  640×480 JPEGs (preprocessing's share);
* raw write: the documents the pipeline wrote, vectors and all, sent again the same way with `pipeline=_none` into
  an index of the same mapping: what OpenSearch's own write of the result costs;
* CPU ms per image of each component (OpenSearch with ML Commons, the adapter, Triton's server and each of its
  python-backend models, this client), from process CPU times over each run; the machine's total beside it.

Every run ends with an account: sent, indexed, dead-lettered with the image, lost.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
from opensearchpy import OpenSearch, helpers
from PIL import Image

from bench.context import template_body, without_lookup
from bench.memory import _stub_model
from client.bulk import BulkSender, Doc, bulk_index
from common import contract
from common.config import Settings
from export.shapes.dataset import render
from localstack.scratch import ScratchStack

SEED = 6464  # not the training seed
SMALL, LARGE = (64, 64), (640, 480)
TARGET_RATIO = 0.5
SETTLED_JIT_SHARE = 0.05  # warm-up ends when the JIT compiler takes at most this share of a round's CPU


def jpegs(count: int, size: tuple[int, int], prefix: str) -> list[tuple[str, str]]:
    """(id, base64) of generated scenes resized to `size`, JPEG quality 85."""
    out = []
    for i in range(count):
        scene, _ = render(SEED, i)
        buf = io.BytesIO()
        scene.convert("RGB").resize(size, Image.Resampling.BILINEAR).save(buf, "JPEG", quality=85)
        out.append((f"{prefix}-{i}", base64.b64encode(buf.getvalue()).decode()))
    return out


def image_docs(images: list[tuple[str, str]]) -> list[Doc]:
    return [Doc(i, {"image_id": i, contract.IMAGE_FIELD: b64}) for i, b64 in images]


# --- CPU accounting -------------------------------------------------------------------------------------------------

JIT_THREADS = ("C1 CompilerThre", "C2 CompilerThre")  # HotSpot's compiler threads, as /proc names them (15 chars)


def _cpu_s(procs: list[psutil.Process]) -> float:
    total = 0.0
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            t = proc.cpu_times()
            total += t.user + t.system
    return total


def _jit_s(procs: list[psutil.Process]) -> float:
    """CPU seconds of the JVM's JIT compiler threads (Linux /proc; 0 where it cannot be read)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for proc in procs:
        for task in Path(f"/proc/{proc.pid}/task").glob("*"):
            with contextlib.suppress(OSError, ValueError, IndexError):
                stat = (task / "stat").read_text()
                if stat[stat.index("(") + 1:stat.rindex(")")].startswith(JIT_THREADS):
                    fields = stat[stat.rindex(")") + 2:].split()
                    total += int(fields[11]) + int(fields[12])
    return total / tick


def components(pids: dict[str, int]) -> dict[str, list[psutil.Process]]:
    """Processes by component: OpenSearch and the adapter with their children, Triton's server apart from each
    python-backend stub (one per model instance, named by the model it serves), and this bench client."""
    out: dict[str, list[psutil.Process]] = {}
    for name in ("opensearch", "adapter"):
        if name in pids:
            root = psutil.Process(pids[name])
            out[name] = [root, *root.children(recursive=True)]
    if "triton" in pids:
        server = psutil.Process(pids["triton"])
        out["triton_server"] = [server]
        for stub in server.children(recursive=True):
            model = _stub_model(stub)
            out.setdefault(f"triton_{model}" if model else "triton_server", []).append(stub)
    out["bench_client"] = [psutil.Process()]
    return out


@dataclass
class CpuMeter:
    """CPU seconds each component spent between `start` and `stop`, and the whole machine's (all cores).

    OpenSearch's JIT compiler is counted apart (`opensearch_jit`, and not in `opensearch`): a JVM compiles for
    minutes after it starts, and on two cores that compiling was most of OpenSearch's CPU in the first thousands of
    documents; the warm-up runs until it has settled, and what is left of it shows in the table.
    """

    procs: dict[str, list[psutil.Process]]
    before: dict[str, float] | None = None
    machine_before: float = 0.0

    @staticmethod
    def _machine() -> float:
        t = psutil.cpu_times()
        return t.user + t.system + getattr(t, "irq", 0.0) + getattr(t, "softirq", 0.0) + t.nice

    def _read(self) -> dict[str, float]:
        spent = {name: _cpu_s(procs) for name, procs in self.procs.items()}
        if "opensearch" in self.procs:
            spent["opensearch_jit"] = _jit_s(self.procs["opensearch"])
            spent["opensearch"] -= spent["opensearch_jit"]
        return spent

    def start(self) -> None:
        self.before = self._read()
        self.machine_before = self._machine()

    def stop(self, images: int) -> dict[str, float]:
        assert self.before is not None
        spent = {name: s - self.before[name] for name, s in self._read().items()}
        ms = {name: round(1000 * s / images, 2) for name, s in sorted(spent.items())}
        ms["all_components"] = round(1000 * sum(spent.values()) / images, 2)
        ms["machine"] = round(1000 * (self._machine() - self.machine_before) / images, 2)
        return ms


# --- runs -----------------------------------------------------------------------------------------------------------

def create_like(client: OpenSearch, template: str, name: str, ingest: bool, pipeline: str | None = None) -> None:
    """An index of the images template's settings and mapping, with or without its default (ingest) pipeline, or
    with `pipeline` as its default one."""
    found = client.indices.get_index_template(name=template)["index_templates"][0]["index_template"]["template"]
    with contextlib.suppress(Exception):
        client.indices.delete(index=name)
    body = template_body(found, with_ingest_pipeline=ingest)
    if pipeline is not None:
        body["settings"]["index"]["default_pipeline"] = pipeline
    client.indices.create(index=name, body=body)


def account(client: OpenSearch, settings: Settings, index: str, sent: int) -> dict[str, int]:
    dead = settings.index.dead_letter
    client.indices.refresh(index=index)
    indexed = client.count(index=index)["count"]
    dead_lettered = with_image = 0
    if client.indices.exists(index=dead):
        client.indices.refresh(index=dead)
        mine = {"term": {f"{contract.FAILURE_FIELD}.index": index}}
        dead_lettered = client.count(index=dead, body={"query": mine})["count"]
        with_image = client.count(index=dead, body={"query": {"bool": {"filter": [
            mine, {"exists": {"field": contract.IMAGE_FIELD}}]}}})["count"] if dead_lettered else 0
    return {"sent": sent, "indexed": indexed, "dead_lettered": dead_lettered,
            "dead_lettered_with_image": with_image, "lost": sent - indexed - with_image}


def timed_bulk(client: OpenSearch, settings: Settings, index: str, docs: list[Doc], meter: CpuMeter, label: str,
               pipeline: str | None = None) -> dict[str, Any]:
    """One run: the documents through the project's bulk client, timed, with CPU per image and the account."""
    sender = BulkSender(client, index, pipeline=pipeline)
    meter.start()
    t0 = time.perf_counter()
    outcome = bulk_index(client, index, docs, sender=sender, label=label)
    seconds = time.perf_counter() - t0
    cpu = meter.stop(len(docs))
    return {"images": len(docs), "seconds": round(seconds, 2), "images_per_s": round(len(docs) / seconds, 1),
            "item_retries": outcome.retries, "rejected": len(outcome.rejected), "cpu_ms_per_image": cpu,
            **account(client, settings, index, len(docs))}


def analyzed_docs(client: OpenSearch, index: str) -> Iterator[Doc]:
    """The documents the pipeline wrote, as stored (derived source puts the vectors back)."""
    for hit in helpers.scan(client, index=index, query={"query": {"match_all": {}}}, size=200):
        yield Doc(hit["_id"], hit["_source"])


def document_shape(client: OpenSearch, index: str) -> dict[str, Any]:
    """What a pipeline document holds: fields, vector sizes, objects per document (for the report)."""
    hits = client.search(index=index, body={"size": 50, "query": {"match_all": {}}})["hits"]["hits"]
    objects = [len(h["_source"].get("detected_objects", [])) for h in hits]
    first = hits[0]["_source"] if hits else {}
    return {"fields": sorted(first), "objects_per_document": round(sum(objects) / max(len(objects), 1), 2),
            "source_bytes": round(sum(len(json.dumps(h["_source"])) for h in hits) / max(len(hits), 1)),
            "model": first.get("model", {})}


def warm_up(client: OpenSearch, settings: Settings, meter: CpuMeter, docs: list[Doc], max_rounds: int,
            progress: Callable[[str], None]) -> list[dict[str, Any]]:
    """Rounds of `docs` through the pipeline and then raw, until the JVM's JIT compiler takes at most
    `SETTLED_JIT_SHARE` of the round's CPU (or `max_rounds` ran): the measured runs then see a steady state."""
    rounds: list[dict[str, Any]] = []
    for i in range(max_rounds):
        progress(f"warm-up round {i + 1} (up to {max_rounds}): {len(docs)} images, pipeline and raw")
        pipeline, raw = f"ceiling-warm-{i}", f"ceiling-warm-raw-{i}"
        create_like(client, settings.index.name, pipeline, True)
        create_like(client, settings.index.name, raw, False)
        run = timed_bulk(client, settings, pipeline, docs, meter, f"ceiling: warm-up {i + 1}")
        timed_bulk(client, settings, raw, list(analyzed_docs(client, pipeline)), meter,
                   f"ceiling: warm-up {i + 1} raw", pipeline="_none")
        for name in (pipeline, raw):
            client.indices.delete(index=name)
        cpu = run["cpu_ms_per_image"]
        rounds.append({"images_per_s": run["images_per_s"], "opensearch_ms": cpu["opensearch"],
                       "opensearch_jit_ms": cpu["opensearch_jit"], "all_ms": cpu["all_components"],
                       "lost": run["lost"]})
        if jit_settled(cpu):
            break
    return rounds


def jit_settled(cpu_ms: dict[str, float]) -> bool:
    """Whether the JVM's JIT compiler took at most `SETTLED_JIT_SHARE` of a round's CPU (a CpuMeter reading)."""
    return cpu_ms["opensearch_jit"] <= SETTLED_JIT_SHARE * cpu_ms["all_components"]


def run(settings: Settings, small: int, large: int, warmup: int, warmup_rounds: int,
        progress: Callable[[str], None]) -> dict[str, Any]:
    progress("starting a stack with free networks")
    base = settings.model_copy(update={"models": settings.models.model_copy(
        update={"free_networks": True, "precision": "fp32"})})
    from export.__main__ import ensure_models

    ensure_models(base)
    small_docs = image_docs(jpegs(small, SMALL, "small"))
    large_docs = image_docs(jpegs(large, LARGE, "large"))
    warm_docs = image_docs(jpegs(warmup, SMALL, "warm"))
    with ScratchStack(base) as stack:
        s = stack.settings
        from bootstrap.opensearch_api import connect

        client = connect(s.opensearch)
        meter = CpuMeter(components(stack.pids))
        out: dict[str, Any] = {"stack": {"opensearch": s.opensearch.version, "heap": s.opensearch.heap,
                                         "adapter_analyze_concurrency": s.adapter.analyze_concurrency,
                                         "triton_max_batch_size": s.triton.max_batch_size,
                                         "client": "client/bulk.py: bulks of 16, 2 in flight"}}
        out["warm_up"] = warm_up(client, s, meter, warm_docs, warmup_rounds, progress)
        no_lookup = f"{s.index.ingest_pipeline}-no-lookup"
        without_lookup(client, s.index.ingest_pipeline, no_lookup)
        for name, ingest in (("ceiling-small", True), ("ceiling-raw", False), ("ceiling-large", True)):
            create_like(client, s.index.name, name, ingest)
        create_like(client, s.index.name, "ceiling-no-lookup", True, pipeline=no_lookup)
        progress(f"pipeline: {small} images {SMALL[0]}×{SMALL[1]}")
        out["pipeline_small"] = timed_bulk(client, s, "ceiling-small", small_docs, meter,
                                           f"ceiling: pipeline {SMALL[0]}×{SMALL[1]}")
        progress(f"pipeline without the duplicate lookup: {small} images")
        out["pipeline_no_lookup"] = timed_bulk(client, s, "ceiling-no-lookup",
                                               [Doc(f"n-{d.id}", d.source) for d in small_docs], meter,
                                               "ceiling: pipeline without the duplicate lookup")
        out["document"] = document_shape(client, "ceiling-small")
        progress(f"raw write: the same {small} documents, pipeline=_none")
        raw_docs = list(analyzed_docs(client, "ceiling-small"))
        out["raw_small"] = timed_bulk(client, s, "ceiling-raw", raw_docs, meter, "ceiling: raw write",
                                      pipeline="_none")
        progress(f"pipeline: {large} images {LARGE[0]}×{LARGE[1]}")
        out["pipeline_large"] = timed_bulk(client, s, "ceiling-large", large_docs, meter,
                                           f"ceiling: pipeline {LARGE[0]}×{LARGE[1]}")
        progress("done")
    out["ratio"] = round(out["pipeline_small"]["images_per_s"] / out["raw_small"]["images_per_s"], 3)
    out["summary"] = summary(out)
    return out


def summary(out: dict[str, Any]) -> dict[str, Any]:
    """The stage's one-line JSON: the issue's figures, measured runs only (not the warm-up)."""
    runs = [out["pipeline_small"], out["raw_small"], out["pipeline_large"]]
    runs += [out["pipeline_no_lookup"]] if "pipeline_no_lookup" in out else []
    return {"sent": sum(r["sent"] for r in runs), "indexed": sum(r["indexed"] for r in runs),
            "lost": sum(r["lost"] for r in runs),
            "pipeline_images_per_s": out["pipeline_small"]["images_per_s"],
            "raw_bulk_images_per_s": out["raw_small"]["images_per_s"], "ratio": out["ratio"],
            "pipeline_640x480_images_per_s": out["pipeline_large"]["images_per_s"],
            "warm_up_rounds": len(out["warm_up"]), "warm_up_lost": sum(w["lost"] for w in out["warm_up"]),
            "opensearch_bound_ratio": opensearch_bound_ratio(out),
            **({"pipeline_no_lookup_images_per_s": out["pipeline_no_lookup"]["images_per_s"],
                "no_lookup_cpu_ms_per_image": out["pipeline_no_lookup"]["cpu_ms_per_image"]}
               if "pipeline_no_lookup" in out else {}),
            "cpu_ms_per_image": out["pipeline_small"]["cpu_ms_per_image"],
            "raw_cpu_ms_per_image": out["raw_small"]["cpu_ms_per_image"]}


def opensearch_bound_ratio(out: dict[str, Any]) -> float:
    """Raw write ÷ pipeline in OpenSearch's own CPU per image (its JIT compiler apart): the ratio where the models run
    on machines of their own, as in a GPU deployment, and OpenSearch's cores are the limit. On the test machine every
    component shares the same two cores, so the measured ratio also pays for the adapter and Triton."""
    pipeline, raw = out["pipeline_small"]["cpu_ms_per_image"], out["raw_small"]["cpu_ms_per_image"]
    return round(raw["opensearch"] / pipeline["opensearch"], 3) if pipeline["opensearch"] else float("nan")


def markdown(out: dict[str, Any]) -> list[str]:
    """The stage's section of the results page."""
    runs = [("pipeline, 64×64 JPEGs", out["pipeline_small"]), ("raw write (pipeline=_none), same documents",
                                                                out["raw_small"]),
            ("pipeline, 640×480 JPEGs", out["pipeline_large"])]
    if "pipeline_no_lookup" in out:  # runs made before the duplicate lookup existed have no such row
        runs.insert(1, ("pipeline without the duplicate lookup, 64×64", out["pipeline_no_lookup"]))
    names = sorted({k for _, r in runs for k in r["cpu_ms_per_image"]} - {"all_components", "machine"})
    warm = out["warm_up"]
    doc = out["document"]
    lines = ["## Ingest ceiling: the path around the models, with free networks (bench/ceiling.py)", "",
             "A stack started for the stage serves networks that cost next to nothing (export/free_networks.py: same "
             f"tensors and facts; {doc['objects_per_document']} objects per document); everything else runs as "
             f"shipped ({out['stack']['client']}). Ratio pipeline ÷ raw write on 64×64 JPEGs: "
             f"**{out['ratio']}** (target ≥ {TARGET_RATIO}); in OpenSearch's own CPU per image (raw ÷ pipeline, what "
             f"bounds ingest where the models run elsewhere): **{opensearch_bound_ratio(out)}**. Warm-up: "
             f"{len(warm)} round(s) of pipeline and raw "
             f"until the JVM's JIT compiler took ≤ {round(100 * SETTLED_JIT_SHARE)} % of a round's CPU (its "
             f"compiler ms per image by round: {', '.join(str(w['opensearch_jit_ms']) for w in warm)}).", ""]
    header = ["run", "images", "images/s", "indexed", "lost", *[f"{n} ms" for n in names], "all ms", "machine ms"]
    rows = [[label, r["images"], r["images_per_s"], r["indexed"], r["lost"],
             *[r["cpu_ms_per_image"].get(n, "—") for n in names], r["cpu_ms_per_image"]["all_components"],
             r["cpu_ms_per_image"]["machine"]] for label, r in runs]
    lines += ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    lines += ["", "CPU ms per image = CPU time of each component's processes over the run ÷ images (all cores); "
              "`machine` is every process on the machine (the difference is what else ran).", ""]
    return lines


def main_line(out: dict[str, Any]) -> str:
    return json.dumps(out["summary"], separators=(",", ":"))
