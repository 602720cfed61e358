"""The gpu profile's figures: `analyze_image` single-image latency and throughput at batch 8, 16 and 64.

    python -m bench.gpu [--url HOST:GRPC_PORT] [--images 64] [--seconds 10] [--batches 8 16 64] [--smoke-only]

Targets (a recent data-centre GPU): < 20 ms single image end to end, ≥ 1000 images/s. Throughput "at batch B"
is measured two ways: B single-image requests in flight (Triton's dynamic batcher forms the batches, as under
real load) and, where B ≤ the ensemble's max_batch_size, requests that each carry B images (box_embedding
answers every image of such a request, its outputs padded to [B, N_max, ...]; the B images of one request are
one image repeated: a request's tensor is rectangular, and images of different sizes cannot share one).
Before measuring, a smoke check asks the served ensembles for what the adapter relies on (every image of a
multi-image request answered, a bad image refused alone with its error code); `--smoke-only` stops there.
Exits 3 when this machine has no NVIDIA GPU, 2 when no Triton answers, 4 when the Triton that answers serves
the cpu profile (the figures would not be the gpu profile's), 5 when the smoke check fails.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime
from typing import Any

import httpx
import numpy as np
import tritonclient.grpc.aio as aio

from bench.images import image_set
from bench.report import RESULTS
from bench.stats import summary
from common import triton_io
from common.config import load_config
from common.contract import ENCODED_IMAGE

LATENCY_TARGET_MS, THROUGHPUT_TARGET = 20.0, 1000.0
GPU_MODELS = ("yolo", "clip_image", "preprocess")


def gpus() -> list[str]:
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [line for line in out.stdout.splitlines() if line.startswith("GPU ")] if out.returncode == 0 else []


def served_kinds(http_url: str) -> dict[str, str]:
    """instance_group kind of each model that decides the device (KIND_GPU in the gpu profile)."""
    kinds = {}
    for model in GPU_MODELS:
        config = httpx.get(f"{http_url}/v2/models/{model}/config", timeout=10).json()
        groups = config.get("instance_group") or [{}]
        kinds[model] = groups[0].get("kind", "KIND_AUTO")
    return kinds


def _input(images: list[bytes]) -> aio.InferInput:
    """One request carrying these images (equal byte lengths: a request's tensor is rectangular)."""
    return triton_io.tensor(aio, ENCODED_IMAGE, np.stack([np.frombuffer(b, dtype=np.uint8) for b in images]))


async def smoke(client: aio.InferenceServerClient, images: list[bytes]) -> list[str]:
    """What must hold before figures mean anything; returns the problems found (empty: all good)."""
    problems = []
    single = await client.infer("analyze_image", [_input(images[:1])])
    one = single.as_numpy("object_embeddings")
    if one is None or one.ndim != 3 or one.shape[0] != 1:
        problems.append(f"analyze_image: object_embeddings shape {None if one is None else one.shape}, want [1, N, D]")
    multi = await client.infer("analyze_image", [_input([images[0]] * 3)])
    boxes, embeddings = multi.as_numpy("boxes"), multi.as_numpy("object_embeddings")
    if boxes.shape[0] != 3 or embeddings.shape[0] != 3:
        problems.append(f"analyze_image with 3 images answered boxes {boxes.shape}, embeddings {embeddings.shape}")
    elif one is not None and one.shape[1]:
        a, b = embeddings[2, : one.shape[1]], one[0]
        cosine = (a * b).sum(-1) / np.maximum(np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1), 1e-12)
        if cosine.min() < 0.999:  # FP16 engines may pick other kernels for another batch size: not bit-equal
            problems.append(f"analyze_image: the third image of a request is embedded unlike the same image alone "
                            f"(min cosine {cosine.min():.4f})")
    embedded = (await client.infer("embed_image", [_input(images[:1])])).as_numpy("embedding")
    if embedded is None or embedded.shape[0] != 1:
        problems.append("embed_image: no embedding (the DALI step must be asked for all of its outputs)")
    bad = images[0][: len(images[0]) // 2]
    results = await asyncio.gather(client.infer("analyze_image", [_input([bad])]),
                                   *(client.infer("analyze_image", [_input([im])]) for im in images[1:4]),
                                   return_exceptions=True)
    if not isinstance(results[0], Exception) or "truncated" not in str(results[0]):
        problems.append(f"a truncated JPEG was not refused as truncated: {results[0]!r}")
    problems += [f"a good image failed next to a bad one: {r!r}" for r in results[1:] if isinstance(r, Exception)]
    return problems


async def _latency(client: aio.InferenceServerClient, images: list[bytes], n: int) -> list[float]:
    out = []
    for i in range(n):
        t0 = time.perf_counter()
        await client.infer("analyze_image", [_input([images[i % len(images)]])])
        out.append((time.perf_counter() - t0) * 1000)
    return out


async def _throughput(client: aio.InferenceServerClient, images: list[bytes], in_flight: int, per_request: int,
                      seconds: float) -> float:
    """Images/s with `in_flight` requests of `per_request` images each, kept busy for `seconds`."""
    done = 0
    deadline = time.perf_counter() + seconds

    async def worker(offset: int) -> None:
        nonlocal done
        i = offset
        while time.perf_counter() < deadline:
            batch = [images[i % len(images)]] * per_request  # one request carries equal-length images
            result = await client.infer("analyze_image", [_input(batch)])
            if result.as_numpy("object_embeddings").shape[0] != per_request:
                raise RuntimeError(f"analyze_image answered {result.as_numpy('object_embeddings').shape[0]} of "
                                   f"the {per_request} images of a request")
            done += per_request
            i += 1

    t0 = time.perf_counter()
    await asyncio.gather(*(worker(k) for k in range(in_flight)))
    return done / (time.perf_counter() - t0)


async def run_smoke(url: str, images: list[bytes]) -> list[str]:
    client = aio.InferenceServerClient(url)
    try:
        return await smoke(client, images)
    finally:
        await client.close()


async def measure(url: str, images: list[bytes], batches: list[int], seconds: float, max_batch: int) -> dict[str, Any]:
    client = aio.InferenceServerClient(url)
    try:
        await _latency(client, images, 10)  # warm-up (engines, CUDA graphs, allocators)
        latency = summary(await _latency(client, images, 100))
        concurrent = {b: round(await _throughput(client, images, b, 1, seconds), 1) for b in batches}
        batched = {b: round(await _throughput(client, images, 2, b, seconds), 1) for b in batches if b <= max_batch}
    finally:
        await client.close()
    return {"single_image_latency_ms": latency, "images_per_s_in_flight": concurrent,
            "images_per_s_batched_requests": batched}


def main(argv: list[str] | None = None) -> int:
    settings = load_config()
    p = argparse.ArgumentParser(prog="python -m bench.gpu", description=__doc__.splitlines()[0])
    p.add_argument("--url", default=settings.triton.grpc_url, help="Triton gRPC host:port")
    p.add_argument("--http", default=f"http://{settings.triton.http_url}", help="Triton HTTP base URL")
    p.add_argument("--images", type=int, default=64)
    p.add_argument("--seconds", type=float, default=10.0, help="per throughput figure")
    p.add_argument("--batches", type=int, nargs="+", default=[8, 16, 64])
    p.add_argument("--smoke-only", action="store_true", help="only the smoke check (what gpu_check.sh runs first)")
    args = p.parse_args(argv)

    found = gpus()
    if not found:
        print("bench.gpu: NO NVIDIA GPU on this machine (nvidia-smi missing or lists none). The gpu-profile "
              "benchmark cannot run here; run it on a GPU host with the gpu profile up "
              "(docker-compose.gpu.yml).", file=sys.stderr)
        return 3
    try:
        kinds = served_kinds(args.http)
        config = httpx.get(f"{args.http}/v2/models/analyze_image/config", timeout=10).json()
    except (httpx.HTTPError, ValueError) as exc:
        print(f"bench.gpu: no Triton answers at {args.http} ({exc.__class__.__name__}); start the gpu profile "
              "(docker compose -f docker-compose.gpu.yml up).", file=sys.stderr)
        return 2
    if any(kind == "KIND_CPU" for kind in kinds.values()):
        print(f"bench.gpu: the Triton at {args.http} serves the cpu profile ({kinds}); these would not be "
              "gpu-profile figures.", file=sys.stderr)
        return 4

    images = [im.jpeg for im in image_set(args.images)]
    problems = asyncio.run(run_smoke(args.url, images))
    for problem in problems:
        print(f"bench.gpu smoke: {problem}", file=sys.stderr)
    if problems:
        return 5
    print("bench.gpu smoke: analyze_image (1 and 3 images a request), embed_image, bad-image isolation: ok",
          file=sys.stderr)
    if args.smoke_only:
        return 0
    max_batch = int(config.get("max_batch_size", 1))
    figures = asyncio.run(measure(args.url, images, args.batches, args.seconds, max_batch))
    best = max([*figures["images_per_s_in_flight"].values(), *figures["images_per_s_batched_requests"].values()])
    p50 = figures["single_image_latency_ms"]["p50"]
    results = {"timestamp": datetime.now(UTC).isoformat(timespec="seconds"), "gpus": found, "served_kinds": kinds,
               "analyze_max_batch_size": max_batch, **figures,
               "targets": {"single_image_p50_ms": {"measured": p50, "threshold": LATENCY_TARGET_MS,
                                                   "pass": p50 < LATENCY_TARGET_MS},
                           "images_per_s": {"measured": best, "threshold": THROUGHPUT_TARGET,
                                            "pass": best >= THROUGHPUT_TARGET}}}
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"gpu-{results['timestamp'].replace(':', '').replace('-', '')}.json"
    path.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))
    print(f"written: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
