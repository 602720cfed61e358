"""Renders the Triton model repository for a profile from the templates and the exported models' facts.

Same model names and tensors in both profiles; the profile only decides what sits in each version folder:
a python-backend `model.py` (cpu), the ONNX file itself (gpu, onnxruntime backend with TensorRT), or the
serialized DALI pipeline (gpu preprocess).
"""

from __future__ import annotations

import logging
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
        native = {"preprocess": Payload(dali=True), "yolo": Payload(onnx="yolo"),
                  "clip_image": Payload(onnx="clip_image"), "clip_text": Payload(onnx="clip_text")}
    return {**native, **shared}


def model_names() -> list[str]:
    return [*payloads("cpu"), *ENSEMBLES]


def _environment() -> jinja2.Environment:
    return jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), undefined=jinja2.StrictUndefined,
                              trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)


def render_configs(settings: Settings, clip: ClipFacts, yolo: YoloFacts, profile: str) -> dict[str, str]:
    """config.pbtxt text of every model, keyed by model name."""
    env = _environment()
    context = {
        "profile": profile, "triton": settings.triton, "models": settings.models, "clip": clip, "yolo": yolo,
        "clip_dir": settings.clip_dir, "yolo_dir": settings.yolo_dir,
        # the NMS graph exported by ultralytics takes at most the batch it was exported with
        "yolo_session_batch": yolo.max_batch,
    }
    return {name: env.get_template(f"{name}/config.pbtxt.j2").render(**context) for name in model_names()}


def _link(src: Path, dst: Path) -> None:
    if not src.exists():
        raise FileNotFoundError(f"exported model missing: {src} (run `make models`)")
    dst.unlink(missing_ok=True)
    dst.symlink_to(src)


def _write_dali(version: Path, clip: ClipFacts, yolo: YoloFacts, batch_size: int) -> None:
    """model.dali where CUDA can serialize it; elsewhere the definition the dali backend serializes at load."""
    from export.dali_preprocess import GpuSerializationError, serialize_gpu, write_autoserialize_model

    try:
        serialize_gpu(version / "model.dali", clip=clip, yolo=yolo, batch_size=batch_size)
    except GpuSerializationError as exc:
        log.warning("%s; writing the autoserialize definition instead", exc)
        write_autoserialize_model(version, clip=clip, yolo=yolo, batch_size=batch_size)


def render_repository(settings: Settings, out_dir: Path, profile: str | None = None,
                      artifacts: bool = True) -> Path:
    """Writes the repository; `artifacts=False` writes configs only (what the static check needs)."""
    profile = profile or settings.profile
    clip = ClipFacts.load(settings.clip_dir)
    yolo = YoloFacts.load(settings.yolo_dir)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    plan = payloads(profile)
    onnx_files = {"clip_image": settings.clip_dir / clip.image_file, "clip_text": settings.clip_dir / clip.text_file,
                  "yolo": settings.yolo_dir / yolo.file}
    for name, text in render_configs(settings, clip, yolo, profile).items():
        version = out_dir / name / "1"
        version.mkdir(parents=True)
        (out_dir / name / "config.pbtxt").write_text(text)
        payload = plan.get(name)
        if payload is None or not artifacts:
            continue
        if payload.python_model:
            shutil.copy2(PYTHON_MODELS / payload.python_model, version / "model.py")
        elif payload.onnx:
            _link(onnx_files[payload.onnx], version / "model.onnx")
        elif payload.dali:
            _write_dali(version, clip, yolo, settings.triton.max_batch_size)
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
    args = parser.parse_args(argv)
    settings = load_config()
    profile = args.profile or settings.profile
    out = args.out or settings.cache / f"triton_repo_{profile}"
    render_repository(settings, out, profile, artifacts=not args.configs_only)
    return report(out)


if __name__ == "__main__":
    raise SystemExit(main())
