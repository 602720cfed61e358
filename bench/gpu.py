"""The gpu profile's figures: `analyze_image` single-image latency and throughput at batch 8, 16 and 64.

    python -m bench.gpu [--url HOST:GRPC_PORT] [--images 64] [--seconds 10] [--batches 8 16 64]

Targets (a recent data-centre GPU): < 20 ms single image end to end, ≥ 1000 images/s. Throughput "at batch B"
is measured two ways: B single-image requests in flight (Triton's dynamic batcher forms the batches, as under
real load) and, where B ≤ the ensemble's max_batch_size, requests that each carry B images.
Exits 3 when this machine has no NVIDIA GPU, 2 when no Triton answers, 4 when the Triton that answers serves
the cpu profile: the figures would not be the gpu profile's.
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
from common.config import load_config

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
    data = np.stack([np.frombuffer(b, dtype=np.uint8) for b in images])
    tensor = aio.InferInput("encoded_image", list(data.shape), "UINT8")
    tensor.set_data_from_numpy(data)
    return tensor


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
            await client.infer("analyze_image", [_input(batch)])
            done += per_request
            i += 1

    t0 = time.perf_counter()
    await asyncio.gather(*(worker(k) for k in range(in_flight)))
    return done / (time.perf_counter() - t0)


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
