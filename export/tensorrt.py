"""TensorRT FP16 engines for the gpu profile, each checked against its ONNX model (issue 3, item 4).

    python -m export.tensorrt [--skip-build]

Builds `image.plan` / `text.plan` beside the CLIP ONNX files and `model.plan` beside the YOLO ONNX with
`trtexec --fp16`, batch shapes from the config (`triton.max_batch_size`, `triton.preferred_batch_sizes`),
then runs each engine and ONNX Runtime (CPU, the reference) on the same seeded inputs. Needs an NVIDIA
GPU, `trtexec` (in NVIDIA's TensorRT and Triton containers) and the `tensorrt` Python package; without
them it stops with a message saying what is missing. Run `make models` first: it reads the metadata.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from common.config import Settings, load_config
from common.model_facts import ClipFacts, YoloFacts
from export.mobileclip import console, step

MIN_COSINE = 0.999  # FP16 embeddings vs FP32 ONNX
MAX_BOX_PX = 2.0  # FP16 boxes vs FP32 ONNX, in letterboxed input pixels
TRTEXEC_PLACES = ("/usr/src/tensorrt/bin/trtexec", "/opt/tensorrt/bin/trtexec")


@dataclass(frozen=True)
class Target:
    name: str
    onnx: Path
    engine: Path
    max_batch: int
    kind: str  # "embedding" or "detections": how the parity is judged
    vocab_size: int = 0  # token ids are drawn below it (text encoder)


def targets(settings: Settings) -> list[Target]:
    """What to build, from the exported models' metadata (nothing about a model is typed here)."""
    clip, yolo = ClipFacts.load(settings.clip_dir), YoloFacts.load(settings.yolo_dir)
    batch = settings.triton.max_batch_size
    return [
        Target("clip_image", settings.clip_dir / clip.image_file, settings.clip_dir / "image.plan", batch, "embedding"),
        Target("clip_text", settings.clip_dir / clip.text_file, settings.clip_dir / "text.plan", batch, "embedding",
               clip.vocab_size),
        # ultralytics unrolls its NMS per image at export: larger batches than its export batch are not computed
        Target("yolo", settings.yolo_dir / yolo.file, settings.yolo_dir / "model.plan", min(batch, yolo.max_batch),
               "detections"),
    ]


def require_gpu_tools() -> str:
    """Returns trtexec's path, or exits with what is missing (this cannot run on a CPU-only machine)."""
    trtexec = os.environ.get("TRTEXEC") or shutil.which("trtexec")
    trtexec = trtexec or next((p for p in TRTEXEC_PLACES if Path(p).is_file()), None)
    missing = [] if trtexec else ["trtexec (TensorRT's command-line builder; set TRTEXEC=/path if elsewhere)"]
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        missing.append("the `tensorrt` Python package (pip install tensorrt)")
    try:
        import torch

        if not torch.cuda.is_available():
            missing.append("a CUDA GPU visible to torch")
    except ImportError:
        missing.append("torch with CUDA (runs the engines for the parity check)")
    if missing:
        sys.exit("export.tensorrt builds FP16 engines for the gpu profile and needs an NVIDIA GPU; missing: "
                 + "; ".join(missing) + ". Run it inside NVIDIA's TensorRT or Triton container.")
    return str(trtexec)


def _input(onnx_path: Path) -> tuple[str, list[int | str], int]:
    """(name, shape, ONNX element type) of the model's single input, read from the graph itself."""
    import onnx

    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    initializers = {i.name for i in graph.initializer}
    (value,) = [i for i in graph.input if i.name not in initializers]
    dims = [d.dim_value if d.HasField("dim_value") else d.dim_param for d in value.type.tensor_type.shape.dim]
    return value.name, dims, value.type.tensor_type.elem_type


def build(target: Target, trtexec: str, opt_batch: int) -> None:
    name, dims, _ = _input(target.onnx)
    command = [trtexec, f"--onnx={target.onnx}", f"--saveEngine={target.engine}", "--fp16", "--skipInference"]
    if isinstance(dims[0], str):  # dynamic batch axis: one profile from 1 to the max batch
        rest = "x".join(str(d) for d in dims[1:])
        opt = min(opt_batch, target.max_batch)
        command += [f"--{k}Shapes={name}:{b}x{rest}" for k, b in (("min", 1), ("opt", opt), ("max", target.max_batch))]
    log_path = target.engine.with_suffix(".trtexec.log")
    with log_path.open("w") as log_file:
        done = subprocess.run(command, stdout=log_file, stderr=subprocess.STDOUT, check=False)
    if done.returncode != 0:
        tail = "".join(log_path.read_text().splitlines(keepends=True)[-30:])
        raise RuntimeError(f"trtexec failed for {target.name} (exit {done.returncode}); log {log_path}:\n{tail}")


def run_engine(engine_path: Path, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Runs a serialized engine once on the GPU (torch holds the device buffers)."""
    import tensorrt as trt
    import torch

    engine = trt.Runtime(trt.Logger(trt.Logger.WARNING)).deserialize_cuda_engine(engine_path.read_bytes())
    context = engine.create_execution_context()
    buffers = {name: torch.from_numpy(np.ascontiguousarray(array)).cuda() for name, array in feeds.items()}
    for name, array in feeds.items():
        context.set_input_shape(name, tuple(array.shape))
    outputs = [n for n in map(engine.get_tensor_name, range(engine.num_io_tensors))
               if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
    for name in outputs:
        dtype = torch.from_numpy(np.empty(0, dtype=trt.nptype(engine.get_tensor_dtype(name)))).dtype
        buffers[name] = torch.empty(tuple(context.get_tensor_shape(name)), dtype=dtype, device="cuda")
    for name, tensor in buffers.items():
        context.set_tensor_address(name, tensor.data_ptr())
    stream = torch.cuda.current_stream()
    if not context.execute_async_v3(stream.cuda_stream):
        raise RuntimeError(f"TensorRT could not run {engine_path}")
    stream.synchronize()
    return {name: buffers[name].cpu().numpy() for name in outputs}


def parity(target: Target) -> str:
    """Engine vs ONNX Runtime on seeded inputs at the max batch; returns the figures, raises if off."""
    import onnxruntime as ort

    name, dims, elem_type = _input(target.onnx)
    shape = [target.max_batch, *dims[1:]]
    rng = np.random.default_rng(0)
    if elem_type == 7:  # INT64: token ids (the text encoder)
        feed = rng.integers(0, target.vocab_size, size=shape, dtype=np.int64)
    else:  # images: ÷255 pixels for YOLO, normalized-ish values for CLIP
        feed = rng.random(shape, dtype=np.float32) if target.kind == "detections" else \
            rng.standard_normal(shape, dtype=np.float32)
    want = ort.InferenceSession(str(target.onnx), providers=["CPUExecutionProvider"]).run(None, {name: feed})[0]
    got = next(iter(run_engine(target.engine, {name: feed}).values())).astype(np.float32)
    if target.kind == "embedding":
        cos = (got * want).sum(-1) / (np.linalg.norm(got, axis=-1) * np.linalg.norm(want, axis=-1))
        figures = f"min cosine {cos.min():.6f}, max |Δ| {np.abs(got - want).max():.2e}"
        if cos.min() < MIN_COSINE:
            raise RuntimeError(f"{target.name}: FP16 engine differs from ONNX: {figures}")
        return figures
    counts_got, counts_want = (got[..., 4] > 0).sum(-1), (want[..., 4] > 0).sum(-1)
    n = int(min(counts_got.min(), counts_want.min()))
    box = float(np.abs(got[:, :n, :4] - want[:, :n, :4]).max()) if n else 0.0
    figures = f"detections per image {counts_got.tolist()} vs ONNX {counts_want.tolist()}, max box |Δ| {box:.2f} px"
    if not np.array_equal(counts_got, counts_want) or box > MAX_BOX_PX:
        raise RuntimeError(f"{target.name}: FP16 engine differs from ONNX: {figures}")
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="TensorRT FP16 engines + parity vs ONNX (gpu profile)")
    parser.add_argument("--skip-build", action="store_true", help="only run the parity check on existing engines")
    args = parser.parse_args(argv)
    settings = load_config()
    trtexec = require_gpu_tools()
    opt_batch = max([b for b in settings.triton.preferred_batch_sizes if b <= settings.triton.max_batch_size] or [1])
    for target in targets(settings):
        if not args.skip_build:
            with step(f"trtexec --fp16 {target.onnx.name} → {target.engine} (batch 1..{target.max_batch})"):
                build(target, trtexec, opt_batch)
        with step(f"parity {target.name}: TensorRT FP16 vs ONNX Runtime"):
            figures = parity(target)
        console.print(f"    {target.name}: {figures}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
