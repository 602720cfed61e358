"""TensorRT FP16 parity for the gpu profile's ONNX models: what is served, checked before it is served.

    python -m export.tensorrt [--backend auto|ort|tensorrt] [--save-plans DIR]

The gpu profile serves the ONNX files through ONNX Runtime's TensorRT execution provider (Triton's
onnxruntime backend) with the explicit shape profiles and options of `triton_repo.render.tensorrt_options`,
engines cached in the server's trt-cache volume. This script builds FP16 engines for the same profiles on this
machine and compares them with ONNX Runtime on the CPU (the reference), on seeded inputs at the max batch:

* ``--backend ort``: onnxruntime-gpu's TensorrtExecutionProvider with exactly the served options (engine cache
  under `.cache/trt_cache/`): the served path itself.
* ``--backend tensorrt``: the TensorRT Python API (``pip install tensorrt``; no ``trtexec``, which pip's
  tensorrt does not ship). FP16 as the installed TensorRT allows it: ``BuilderFlag.FP16`` up to TensorRT 10;
  from TensorRT 11, which removed it (and weakly typed networks), a strongly typed network parsed from an FP16
  copy of the ONNX (ONNX Runtime's float16 conversion, inputs/outputs kept FP32, reductions kept FP32).
* ``auto`` (default): ort when that provider is available, else tensorrt.

Nothing written here is served: an engine is tied to the TensorRT that built it, and the server builds its own.
``--save-plans DIR`` keeps the TensorRT plans for inspection. Needs an NVIDIA GPU; without one (or without
either backend) it stops with a message saying what is missing. Run `make models` first: it reads the metadata.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from common.config import Settings, load_config
from common.model_facts import ClipFacts, YoloFacts
from triton_repo.render import TrtProfile, tensorrt_options, trt_profiles

MIN_COSINE = 0.999  # FP16 embeddings vs FP32 ONNX
MAX_BOX_PX = 2.0  # FP16 boxes vs FP32 ONNX, in letterboxed input pixels
# numerically sensitive ops kept in FP32 in the strongly typed (TensorRT >= 11) FP16 copy: layer norms and the
# final L2 normalization, as TensorRT's own mixed precision keeps them
FP32_OPS = ("LayerNormalization", "ReduceMean", "ReduceL2", "ReduceSumSquare", "Pow", "Sqrt")


@dataclass(frozen=True)
class Target:
    name: str
    onnx: Path
    profile: TrtProfile
    kind: str  # "embedding" or "detections": how the parity is judged
    vocab_size: int = 0  # token ids are drawn below it (text encoder)


def targets(settings: Settings) -> list[Target]:
    """What to build, from the exported models' metadata and the served profiles (nothing typed here)."""
    clip, yolo = ClipFacts.load(settings.clip_dir), YoloFacts.load(settings.yolo_dir)
    profiles = trt_profiles(settings, clip, yolo)
    return [
        Target("clip_image", settings.clip_dir / clip.image_file, profiles["clip_image"], "embedding"),
        Target("clip_text", settings.clip_dir / clip.text_file, profiles["clip_text"], "embedding", clip.vocab_size),
        Target("yolo", settings.yolo_dir / yolo.file, profiles["yolo"], "detections"),
    ]


# ------------------------------------------------------------------------------------------ which backend


def ort_tensorrt_available() -> bool:
    try:
        import onnxruntime as ort
    except ImportError:
        return False
    return "TensorrtExecutionProvider" in ort.get_available_providers()


def tensorrt_module() -> Any | None:
    try:
        import tensorrt
    except ImportError:
        return None
    return tensorrt


def choose_backend(requested: str) -> str:
    """The backend to use, or exits saying what is missing (this cannot run on a CPU-only machine)."""
    missing = []
    if requested in ("auto", "ort"):
        if ort_tensorrt_available():
            return "ort"
        missing.append("onnxruntime-gpu with its TensorrtExecutionProvider (TensorRT libraries on the path)")
    if requested in ("auto", "tensorrt"):
        if tensorrt_module() is None:
            missing.append("the `tensorrt` Python package (pip install tensorrt)")
        else:
            try:
                import torch

                if torch.cuda.is_available():
                    return "tensorrt"
                missing.append("a CUDA GPU visible to torch")
            except ImportError:
                missing.append("torch with CUDA (holds the engine's device buffers)")
    sys.exit("export.tensorrt checks the gpu profile's FP16 engines and needs an NVIDIA GPU; missing: "
             + "; ".join(missing) + ".")


# ------------------------------------------------------------------------------------------ TensorRT API


def _major(trt: Any) -> int:
    return int(str(getattr(trt, "__version__", "0")).split(".")[0] or 0)


def fp16_mode(trt: Any) -> str:
    """How this TensorRT builds FP16: "builder_flag" (weakly typed, TensorRT <= 10) or "strongly_typed"
    (TensorRT >= 11 removed BuilderFlag.FP16: precision comes from the network's own types)."""
    if _major(trt) < 11 and hasattr(trt.BuilderFlag, "FP16"):
        return "builder_flag"
    return "strongly_typed"


def fp16_onnx(src: Path, dst: Path) -> Path:
    """An FP16 copy of an ONNX model for a strongly typed network: weights and activations FP16, the model's
    inputs and outputs FP32 (the served tensors do not change), `FP32_OPS` and NMS-like ops kept FP32."""
    import onnx
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16

    model = convert_float_to_float16(onnx.load(str(src)), keep_io_types=True,
                                     op_block_list=[*DEFAULT_OP_BLOCK_LIST, *FP32_OPS])
    onnx.save(model, str(dst))
    return dst


def build_tensorrt(target: Target, trt: Any) -> bytes:
    """A serialized FP16 engine for the target's ONNX with its served shape profile."""
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    mode = fp16_mode(trt)
    with tempfile.TemporaryDirectory() as tmp:
        source = target.onnx
        flags = 0
        if _major(trt) < 10 and hasattr(trt.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH"):
            flags = 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)  # the ONNX parser needs it before 10
        if mode == "strongly_typed":
            source = fp16_onnx(target.onnx, Path(tmp) / "fp16.onnx")
            flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
        network = builder.create_network(flags)
        parser = trt.OnnxParser(network, logger)
        if not parser.parse_from_file(str(source)):
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise RuntimeError(f"TensorRT could not parse {source}: {errors}")
        config = builder.create_builder_config()
        if mode == "builder_flag":
            config.set_flag(trt.BuilderFlag.FP16)
        profile = builder.create_optimization_profile()
        p = target.profile
        profile.set_shape(p.input_name, (p.min_batch, *p.dims), (p.opt_batch, *p.dims), (p.max_batch, *p.dims))
        config.add_optimization_profile(profile)
        engine = builder.build_serialized_network(network, config)
    if engine is None:
        raise RuntimeError(f"TensorRT could not build {target.name} ({mode})")
    return bytes(engine)


def run_tensorrt(engine_bytes: bytes, feeds: dict[str, np.ndarray], trt: Any) -> np.ndarray:
    """Runs a serialized engine once on the GPU (torch holds the device buffers); the first output."""
    import torch

    engine = trt.Runtime(trt.Logger(trt.Logger.WARNING)).deserialize_cuda_engine(engine_bytes)
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
        raise RuntimeError("TensorRT could not run the engine")
    stream.synchronize()
    return buffers[outputs[0]].cpu().numpy()


# ------------------------------------------------------------------------------------------ ONNX Runtime


def ort_provider_options(served: dict[str, str], cache_dir: Path) -> dict[str, str]:
    """Triton's onnxruntime-backend parameters → ONNX Runtime TensorRT-provider options, caches made local."""
    options = {key: value for key, value in served.items() if key.startswith("trt_")}
    if served.get("precision_mode") == "FP16":
        options["trt_fp16_enable"] = "True"
    options["trt_engine_cache_path"] = options["trt_timing_cache_path"] = str(cache_dir)
    return options


def run_ort_tensorrt(target: Target, feed: np.ndarray, cache_root: Path) -> np.ndarray:
    import onnxruntime as ort

    cache = cache_root / target.name
    cache.mkdir(parents=True, exist_ok=True)
    options = ort_provider_options(tensorrt_options(target.name, target.profile), cache)
    session = ort.InferenceSession(str(target.onnx), providers=[("TensorrtExecutionProvider", options),
                                                                "CUDAExecutionProvider"])
    return session.run(None, {target.profile.input_name: feed})[0]


# ------------------------------------------------------------------------------------------ parity


def seeded_input(target: Target) -> np.ndarray:
    """The input at the profile's max batch: token ids for the text encoder, images otherwise."""
    shape = (target.profile.max_batch, *target.profile.dims)
    rng = np.random.default_rng(0)
    if target.vocab_size:
        return rng.integers(0, target.vocab_size, size=shape, dtype=np.int64)
    if target.kind == "detections":  # ÷255 pixels
        return rng.random(shape, dtype=np.float32)
    return rng.standard_normal(shape, dtype=np.float32)  # normalized-ish CLIP input


def judge(target: Target, got: np.ndarray, want: np.ndarray) -> str:
    """The figures of engine vs reference; raises when they are off."""
    got, want = got.astype(np.float32), want.astype(np.float32)
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


def check(target: Target, backend: str, cache_root: Path, save_plans: Path | None) -> str:
    import onnxruntime as ort

    feed = seeded_input(target)
    want = ort.InferenceSession(str(target.onnx), providers=["CPUExecutionProvider"]).run(
        None, {target.profile.input_name: feed})[0]
    if backend == "ort":
        got = run_ort_tensorrt(target, feed, cache_root)
    else:
        trt = tensorrt_module()
        engine = build_tensorrt(target, trt)
        if save_plans is not None:
            save_plans.mkdir(parents=True, exist_ok=True)
            (save_plans / f"{target.name}.plan").write_bytes(engine)
        got = run_tensorrt(engine, {target.profile.input_name: feed}, trt)
    return judge(target, got, want)


def main(argv: list[str] | None = None) -> int:
    from export.mobileclip import console, step

    parser = argparse.ArgumentParser(description="TensorRT FP16 engines of the gpu profile vs ONNX Runtime (CPU)")
    parser.add_argument("--backend", choices=["auto", "ort", "tensorrt"], default="auto")
    parser.add_argument("--save-plans", type=Path, help="tensorrt backend: keep the plans here (not served)")
    args = parser.parse_args(argv)
    settings = load_config()
    backend = choose_backend(args.backend)
    cache_root = settings.cache / "trt_cache"
    for target in targets(settings):
        p = target.profile
        with step(f"{target.name}: FP16 via {backend}, batch {p.min_batch}..{p.max_batch} (opt {p.opt_batch}) "
                  "vs ONNX Runtime CPU"):
            figures = check(target, backend, cache_root, args.save_plans)
        console.print(f"    {target.name}: {figures}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
