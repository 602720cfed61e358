"""Ingestion throughput, three ways, on the same images: through OpenSearch (`_bulk` + the ingest pipeline),
straight to Triton's `analyze_image` over gRPC, and the naive PyTorch loop followed by one `_bulk`.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import Any

import httpx
import numpy as np
import tritonclient.grpc as grpcclient

from bench.context import Context
from bench.images import BenchImage
from bench.naive import NaivePipeline
from bench.stats import summary
from common import triton_io
from common.contract import ANALYZE_MODEL, ANALYZE_OUTPUTS


@dataclass
class PassResult:
    path: str
    concurrency: int
    images: int
    seconds: float
    errors: int = 0
    objects: int = 0

    @property
    def images_per_s(self) -> float:
        return self.images / self.seconds if self.seconds else 0.0


def _run_workers(items: Sequence[Any], concurrency: int, work: Callable[[int, Any], tuple[int, int]]) -> tuple[
        float, int, int]:
    """Runs `work(worker, item)` over `items` with `concurrency` workers pulling from one queue.

    Returns (wall seconds, errors, objects); `work` returns (errors, objects) for its item.
    """
    lock = threading.Lock()
    pending = list(reversed(items))
    totals = [0, 0]

    def worker(index: int) -> None:
        while True:
            with lock:
                if not pending:
                    return
                item = pending.pop()
            errors, objects = work(index, item)
            with lock:
                totals[0] += errors
                totals[1] += objects

    t0 = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        for future in [pool.submit(worker, i) for i in range(concurrency)]:
            future.result()
    return time.perf_counter() - t0, totals[0], totals[1]


class TritonDirect:
    """`analyze_image` over gRPC, one sync client per worker (created before the clock starts)."""

    def __init__(self, url: str, max_workers: int, name: str = "triton") -> None:
        self.name = name
        self.clients = [grpcclient.InferenceServerClient(url) for _ in range(max_workers)]
        self.outputs = triton_io.outputs(grpcclient, ANALYZE_OUTPUTS)

    def analyze(self, worker: int, image: BenchImage) -> dict[str, np.ndarray]:
        result = self.clients[worker].infer(ANALYZE_MODEL, [triton_io.image_input(grpcclient, image.jpeg)],
                                            outputs=self.outputs)
        return {n: result.as_numpy(n)[0] for n in ANALYZE_OUTPUTS}

    def run(self, images: Sequence[BenchImage], concurrency: int) -> PassResult:
        def work(worker: int, image: BenchImage) -> tuple[int, int]:
            try:
                return 0, len(self.analyze(worker, image)["boxes"])
            except Exception:
                return 1, 0

        seconds, errors, objects = _run_workers(images, concurrency, work)
        return PassResult(self.name, concurrency, len(images), seconds, errors, objects)

    def close(self) -> None:
        for client in self.clients:
            client.close()


def bulk_body(actions: Sequence[tuple[str, dict[str, Any]]]) -> bytes:
    lines = []
    for doc_id, doc in actions:
        lines.append(json.dumps({"index": {"_id": doc_id}}))
        lines.append(json.dumps(doc, separators=(",", ":")))
    return ("\n".join(lines) + "\n").encode()


def bulk_failures(response: dict[str, Any], index: str) -> int:
    """Items that failed or that the ingest pipeline re-routed to the dead-letter index."""
    failed = 0
    for item in response.get("items", []):
        result = next(iter(item.values()))
        if result.get("status", 500) >= 300 or result.get("_index") != index:
            failed += 1
    return failed


class OpenSearchIngest:
    """`_bulk` of base64 images into a bench index whose default pipeline analyzes them server side."""

    def __init__(self, ctx: Context, index: str, bulk_size: int, max_workers: int) -> None:
        self.index, self.bulk_size = index, bulk_size
        o = ctx.settings.opensearch
        self.clients = [httpx.Client(base_url=o.url, auth=o.auth(), verify=o.verify, timeout=600)
                        for _ in range(max_workers)]
        for client in self.clients:  # open the connections before the clock starts
            client.get("/")

    def run(self, images: Sequence[BenchImage], concurrency: int, tag: str) -> PassResult:
        bulks = [images[i:i + self.bulk_size] for i in range(0, len(images), self.bulk_size)]

        def work(worker: int, bulk: Sequence[BenchImage]) -> tuple[int, int]:
            body = bulk_body([(f"{im.id}-{tag}", {"image_id": im.id, "filename": f"{im.id}.jpg",
                                                  "image_b64": im.b64}) for im in bulk])
            response = self.clients[worker].post(f"/{self.index}/_bulk", content=body,
                                                 headers={"Content-Type": "application/x-ndjson"})
            if response.status_code != 200:
                return len(bulk), 0
            return bulk_failures(response.json(), self.index), 0

        seconds, errors, _ = _run_workers(bulks, concurrency, work)
        return PassResult("opensearch", concurrency, len(images), seconds, errors)

    def close(self) -> None:
        for client in self.clients:
            client.close()


class NaiveIngest:
    """The PyTorch loop, one image at a time, then one `_bulk` of the vectors into an index without pipeline."""

    def __init__(self, ctx: Context, pipeline: NaivePipeline, index: str) -> None:
        self.ctx, self.pipeline, self.index = ctx, pipeline, index

    def run(self, images: Sequence[BenchImage], tag: str) -> PassResult:
        t0 = time.perf_counter()
        actions = []
        objects = 0
        for im in images:
            analysis = self.pipeline.analyze(im.jpeg)
            objects += len(analysis.objects)
            actions.append((f"{im.id}-{tag}", {"image_id": im.id, "filename": f"{im.id}.jpg",
                                               "width": im.width, "height": im.height,
                                               "global_image_embedding": analysis.embedding,
                                               "detected_objects": analysis.objects}))
        response = self.ctx.cluster.bulk(bulk_body(actions), self.index)
        seconds = time.perf_counter() - t0
        return PassResult("naive", 1, len(images), seconds, bulk_failures(response, self.index), objects)


def _aggregate(passes: list[PassResult], rounds: int, concurrencies: Sequence[int]) -> dict[str, Any]:
    """Per path and concurrency: images/s over rounds; ratios computed within each round, then summarized."""
    rate: dict[tuple[str, int], list[float]] = {}
    for p in passes:
        rate.setdefault((p.path, p.concurrency), []).append(p.images_per_s)

    def per_round(f: Callable[[int], float]) -> list[float]:
        return [f(r) for r in range(rounds)]

    def peak(path: str, r: int) -> float:
        return max(rate[(path, c)][r] for c in concurrencies)

    def over(values: list[float], path: str, c: int, r: int) -> float:
        """values[r] as a multiple of (path, c)'s images/s in round r."""
        return values[r] / rate[(path, c)][r]

    rows = []
    for (path, c), values in sorted(rate.items()):
        row: dict[str, Any] = {"path": path, "concurrency": c, "images_per_s": summary(values)}
        if path != "naive":
            row["x_naive"] = summary(per_round(partial(over, values, "naive", 1)), 3)
        if path in ("opensearch", "triton_alt"):
            row["x_triton_same_concurrency"] = summary(per_round(partial(over, values, "triton", c)), 3)
        totals = [p for p in passes if p.path == path and p.concurrency == c]
        row["errors"] = sum(p.errors for p in totals)
        row["objects_per_image"] = round(sum(p.objects for p in totals) / max(sum(p.images for p in totals), 1), 2)
        rows.append(row)
    paths = sorted({p.path for p in passes} - {"naive"})
    out = {
        "rows": rows,
        "opensearch_peak_x_triton_peak": summary(per_round(lambda r: peak("opensearch", r) / peak("triton", r)), 3),
        "triton_peak_x_naive": summary(per_round(lambda r: peak("triton", r) / rate[("naive", 1)][r]), 3),
        "triton_c1_x_naive": summary(per_round(lambda r: rate[("triton", 1)][r] / rate[("naive", 1)][r]), 3),
        "peak_images_per_s": {path: summary(per_round(partial(peak, path))) for path in paths},
    }
    if "triton_alt" in paths:
        out["triton_alt_peak_x_triton_peak"] = summary(per_round(lambda r: peak("triton_alt", r)
                                                                 / peak("triton", r)), 3)
    return out


def run_stage(ctx: Context, images: Sequence[BenchImage], *, rounds: int, concurrencies: Sequence[int],
              bulk_size: int, os_index: str, naive_index: str, naive: NaivePipeline,
              progress: Callable[[str], None], alt_triton: str | None = None) -> dict[str, Any]:
    """Warm-up, then `rounds` rounds of every path at every concurrency on the same images; the order of the
    paths flips every round so slow drifts in machine load fall on all of them alike.

    `alt_triton` (gRPC host:port of a second server, e.g. a prototype fix) adds a `triton_alt` direct path
    measured in the same rounds: a before/after ratio free of the drift between two separate runs."""
    from bench import breakdown

    top = max(concurrencies)
    triton = TritonDirect(ctx.triton_grpc, top)
    alt = TritonDirect(alt_triton, top, "triton_alt") if alt_triton else None
    direct = {"triton": triton, **({"triton_alt": alt} if alt else {})}
    opensearch = OpenSearchIngest(ctx, os_index, bulk_size, top)
    plain = NaiveIngest(ctx, naive, naive_index)
    warm = images[: max(2, top)]
    progress("warm-up")
    for client in direct.values():
        client.run(warm, top)
    opensearch.run(warm, top, "warmup")
    plain.run(warm[:1], "warmup")
    naive.reset()

    passes: list[PassResult] = []
    spent: dict[str, breakdown.Snapshot | None] = {"triton": None, "opensearch": None}
    try:
        for r in range(rounds):
            steps: list[tuple[str, int]] = [(p, c) for c in concurrencies for p in (*direct, "opensearch")]
            steps.append(("naive", 1))
            if r % 2:
                steps.reverse()
            for path, c in steps:
                progress(f"round {r + 1}/{rounds}: {path} ×{c}")
                before = breakdown.snapshot(ctx)
                if path in direct:
                    result = direct[path].run(images, c)
                elif path == "opensearch":
                    result = opensearch.run(images, c, f"r{r}c{c}")
                else:
                    result = plain.run(images, f"r{r}")
                if path in spent:
                    spent[path] = breakdown.add(spent[path], breakdown.delta(before, breakdown.snapshot(ctx)))
                passes.append(result)
    finally:
        for client in direct.values():
            client.close()
        opensearch.close()

    out = _aggregate(passes, rounds, concurrencies)
    out["passes"] = [vars(p) | {"images_per_s": round(p.images_per_s, 3)} for p in passes]
    out["breakdown"] = {path: breakdown.summarize(snap) for path, snap in spent.items() if snap is not None}
    out["bulk_size"] = bulk_size
    out["concurrencies"] = list(concurrencies)
    out["rounds"] = rounds
    return out
