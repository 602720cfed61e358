"""Renders the Triton model repository for a profile from the templates and the exported models' facts.

Same model names and tensors in both profiles; the profile only decides what sits in each version folder:
a python-backend `model.py` (cpu), the ONNX file itself (gpu, onnxruntime backend with TensorRT), or the
DALI pipeline definition the server's DALI serializes (gpu preprocess). The gpu profile adds one model the
cpu profile does not need, `validate_image`: the per-item checks the cpu preprocess makes itself, done before
the batched nvJPEG decoder (where one bad image would otherwise fail every request of its batch).

gpu ONNX models are served by ONNX Runtime's TensorRT execution provider with explicit shape profiles
(batch 1..max, built once at load, not on the first request) and an engine cache on a persistent path
(`--trt-cache`, a volume in docker-compose.gpu.yml), so a restart reuses the engines.
"""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import jinja2

from common.config import Settings
from common.model_facts import ClipFacts, YoloFacts

log = logging.getLogger(__name__)
HERE = Path(__file__).resolve().parent
TEMPLATES = HERE / "templates"
PYTHON_MODELS = HERE / "models"

ENSEMBLES = ("analyze_image", "embed_image", "embed_text")
# Where the TensorRT engine and timing caches live *inside the Triton container* (a named volume in
# docker-compose.gpu.yml): engines survive restarts and are rebuilt only when the model or TensorRT changes.
DEFAULT_TRT_CACHE = "/trt_cache"


@dataclass(frozen=True)
class Payload:
    """What one model's version folder holds in a profile."""

    python_model: str | None = None  # file in triton_repo/models/
    onnx: str | None = None  # "clip_image" | "clip_text" | "yolo"
    dali: bool = False


def payloads(profile: str) -> dict[str, Payload]:
    """The profile decides only the models that have a native backend on a GPU server."""
    shared = {"tokenizer": Payload(python_model="tokenizer.py"),
              "box_embedding": Payload(python_model="box_embedding.py")}
    if profile == "cpu":
        onnx_runner = Payload(python_model="onnx_runner.py")
        native = {"preprocess": Payload(python_model="preprocess.py"), "yolo": onnx_runner,
                  "clip_image": onnx_runner, "clip_text": onnx_runner}
    else:
        # the dali backend decodes a whole dynamic batch at once: the per-item checks run before it
        native = {"validate_image": Payload(python_model="validate_image.py"), "preprocess": Payload(dali=True),
                  "yolo": Payload(onnx="yolo"), "clip_image": Payload(onnx="clip_image"),
                  "clip_text": Payload(onnx="clip_text")}
    return {**native, **shared}


def model_names(profile: str = "cpu") -> list[str]:
    return [*payloads(profile), *ENSEMBLES]


@dataclass(frozen=True)
class TrtProfile:
    """One TensorRT optimization profile: the model's input over batch sizes min..max (opt is tuned for)."""

    input_name: str
    dims: tuple[int, ...]  # without the batch axis
    min_batch: int
    opt_batch: int
    max_batch: int

    def shape(self, batch: int) -> str:
        """ONNX Runtime's `name:BxDxD` notation for one batch size."""
        return f"{self.input_name}:" + "x".join(str(d) for d in (batch, *self.dims))


def trt_profiles(settings: Settings, clip: ClipFacts, yolo: YoloFacts) -> dict[str, TrtProfile]:
    """The shape profile of every gpu ONNX model, from the exported facts and the batching config.

    Shared by the Triton configs (ONNX Runtime's TensorRT provider) and `export.tensorrt` (the parity check),
    so what is checked is what is served. opt = the largest preferred batch size the model can take.
    """
    batch = settings.triton.max_batch_size
    opt = max([b for b in settings.triton.preferred_batch_sizes if b <= batch] or [1])
    return {
        "clip_image": TrtProfile("clip_input", (3, clip.image_size, clip.image_size), 1, opt, batch),
        "clip_text": TrtProfile("tokens", (clip.context_length,), 1, opt, batch),
        "yolo": TrtProfile(yolo.input_name, (3, yolo.input_size, yolo.input_size), 1, opt, batch),
    }


def tensorrt_options(model: str, profile: TrtProfile, cache_dir: str = DEFAULT_TRT_CACHE) -> dict[str, str]:
    """ONNX Runtime TensorRT-provider options, as Triton's onnxruntime backend takes them (all strings).

    Explicit profiles make the engine cover every batch the dynamic batcher forms (without them the provider
    builds an engine on the first request and rebuilds it whenever a larger batch arrives); the engine and
    timing caches make a restart cheap. FP16 is `precision_mode` (the backend maps it to `trt_fp16_enable`).
    """
    cache = f"{cache_dir.rstrip('/')}/{model}"
    return {
        "precision_mode": "FP16",
        "trt_engine_cache_enable": "1",
        "trt_engine_cache_path": cache,
        "trt_timing_cache_enable": "1",
        "trt_timing_cache_path": cache,
        "trt_profile_min_shapes": profile.shape(profile.min_batch),
        "trt_profile_opt_shapes": profile.shape(profile.opt_batch),
        "trt_profile_max_shapes": profile.shape(profile.max_batch),
    }


def _environment() -> jinja2.Environment:
    return jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), undefined=jinja2.StrictUndefined,
                              trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)


def render_configs(settings: Settings, clip: ClipFacts, yolo: YoloFacts, profile: str,
                   trt_cache: str = DEFAULT_TRT_CACHE) -> dict[str, str]:
    """config.pbtxt text of every model, keyed by model name."""
    if profile == "gpu" and yolo.max_batch < settings.triton.max_batch_size:
        # the onnxruntime backend hands the graph whole batches; ultralytics' NMS graph leaves the images past
        # its export batch undetected (zero rows), silently
        raise ValueError(f"the YOLO export takes batches of up to {yolo.max_batch} images but "
                         f"triton.max_batch_size is {settings.triton.max_batch_size}: re-export (`make models`)")
    env = _environment()
    profiles = trt_profiles(settings, clip, yolo)
    # the cpu profile runs the precision the config asks for (int8: the quantized copies, which must exist); the gpu
    # profile hands the fp32 files to TensorRT, which builds its FP16 engines from them
    precision = settings.models.precision if profile == "cpu" else "fp32"
    context = {
        "profile": profile, "triton": settings.triton, "models": settings.models, "clip": clip, "yolo": yolo,
        "clip_dir": settings.clip_dir, "yolo_dir": settings.yolo_dir, "precision": precision,
        "onnx_files": {"clip_image": clip.image_file_for(precision), "clip_text": clip.text_file_for(precision),
                       "yolo": yolo.file_for(precision)},
        # the NMS graph exported by ultralytics takes at most the batch it was exported with
        "yolo_session_batch": yolo.max_batch,
        "trt": {name: tensorrt_options(name, p, trt_cache) for name, p in profiles.items()},
        "warmup_batches": sorted({1, settings.triton.max_batch_size}),
    }
    return {name: env.get_template(f"{name}/config.pbtxt.j2").render(**context) for name in model_names(profile)}


def _place(src: Path, dst: Path) -> None:
    """Puts an exported file into the repository as a real file (hard link, else copy), never a symlink.

    An absolute symlink dangles as soon as the repository is mounted elsewhere (inside the Triton container
    the repository is /workspace, not the host path), and a relative one breaks when the repository is
    rendered outside the cache folder. A hard link costs nothing where both sit on one filesystem.
    """
    if not src.exists():
        raise FileNotFoundError(f"exported model missing: {src} (run `make models`)")
    dst.unlink(missing_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _write_dali(version: Path, clip: ClipFacts, yolo: YoloFacts, batch_size: int, serialize: bool) -> None:
    """By default the definition (`dali.py`) the dali backend serializes at load, with the server's own DALI:
    a `model.dali` serialized by this venv's DALI may not load in the DALI of the Triton image. `serialize`
    writes model.dali here (where CUDA and the same DALI version are at hand), falling back to the definition.
    """
    from export.dali_serialize import GpuSerializationError, serialize_gpu, write_autoserialize_model

    if serialize:
        try:
            serialize_gpu(version / "model.dali", clip=clip, yolo=yolo, batch_size=batch_size)
            return
        except GpuSerializationError as exc:
            log.warning("%s; writing the autoserialize definition instead", exc)
    write_autoserialize_model(version, clip=clip, yolo=yolo, batch_size=batch_size)


def render_repository(settings: Settings, out_dir: Path, profile: str | None = None,
                      artifacts: bool = True, trt_cache: str = DEFAULT_TRT_CACHE, serialize_dali: bool = False) -> Path:
    """Writes the repository; `artifacts=False` writes configs only (what the static check needs).

    gpu only: `trt_cache` is the TensorRT engine cache folder as the server sees it; `serialize_dali` writes
    model.dali with this machine's DALI instead of the definition the server's DALI serializes.
    """
    profile = profile or settings.profile
    clip = ClipFacts.load(settings.clip_dir)
    yolo = YoloFacts.load(settings.yolo_dir)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    plan = payloads(profile)
    onnx_files = {"clip_image": settings.clip_dir / clip.image_file, "clip_text": settings.clip_dir / clip.text_file,
                  "yolo": settings.yolo_dir / yolo.file}
    for name, text in render_configs(settings, clip, yolo, profile, trt_cache).items():
        version = out_dir / name / "1"
        version.mkdir(parents=True)
        (out_dir / name / "config.pbtxt").write_text(text)
        payload = plan.get(name)
        if payload is None or not artifacts:
            continue
        if payload.python_model:
            shutil.copy2(PYTHON_MODELS / payload.python_model, version / "model.py")
            if name == "tokenizer":  # the config a model of its own tokenizes by (OWN_CONFIG), read from here
                for carried in clip.carried_files:
                    _place(settings.clip_dir / carried, version / carried)
        elif payload.onnx:
            _place(onnx_files[payload.onnx], version / "model.onnx")
        elif payload.dali:
            _write_dali(version, clip, yolo, settings.triton.max_batch_size, serialize_dali)
    return out_dir


def main(argv: list[str] | None = None) -> int:
    """`python -m triton_repo.render [--profile P] [--out DIR]`: render, then run the static check."""
    import argparse

    from common.config import load_config
    from triton_repo.check import report

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--profile", choices=["cpu", "gpu"])
    parser.add_argument("--out", type=Path)
    parser.add_argument("--configs-only", action="store_true")
    parser.add_argument("--trt-cache", default=DEFAULT_TRT_CACHE,
                        help="gpu: TensorRT engine cache folder as the server sees it (default %(default)s)")
    parser.add_argument("--serialize-dali", action="store_true",
                        help="gpu: write model.dali with this DALI (needs CUDA and the server's DALI version)")
    args = parser.parse_args(argv)
    settings = load_config()
    profile = args.profile or settings.profile
    out = args.out or settings.cache / f"triton_repo_{profile}"
    render_repository(settings, out, profile, artifacts=not args.configs_only, trt_cache=args.trt_cache,
                      serialize_dali=args.serialize_dali)
    return report(out)


if __name__ == "__main__":
    raise SystemExit(main())
