"""YOLO11 → ONNX with NMS inside the graph, plus its metadata (`YoloFacts`), idempotently.

Which weights (`models.yolo_weights` in the config):

* unset (default) — the bundled shapes detector, `export/shapes/shapes_yolo11n.pt` (trained offline by
  `python -m export.shapes.train`; it finds circles, squares, triangles, stars and crosses);
* a local `.pt` path (absolute, or relative to the working directory or the repository) — that checkpoint;
* a bare checkpoint name that is not a local file, e.g. `yolo11s.pt` — ultralytics downloads it from its
  GitHub release assets (the online path); if that fails the architecture is built with random weights;
* `random`, or an architecture yaml such as `yolo11s.yaml` — the real architecture (`models.yolo_variant`
  for `random`) with random weights, loudly logged: it detects nothing useful.

The ONNX model (ultralytics' own `export(format="onnx", nms=True)`):

* input  `images`  FP32 [batch, 3, 640, 640]: letterboxed (pad 114), RGB, ÷255, CHW;
* output `output0` FP32 [batch, max_det, 6]: x1, y1, x2, y2 in letterboxed-input pixels, score, class id
  (as a float); detections sorted by score, rows past the last detection are all zero.

ultralytics unrolls its NMS loop over the batch at trace time: the graph handles any batch from 1 up to the
batch it was exported with (`YoloFacts.max_batch`, = `triton.max_batch_size`); images past that are
silently *not* processed (their rows stay zero), so callers must never send more than `max_batch`.

    python -m export.yolo [--force] [--weights PATH|NAME|random] [--variant yolo11s]
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import logging
import shutil
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from common.config import REPO_ROOT, Settings, load_config
from common.model_facts import MissingArtifactError, YoloFacts

log = logging.getLogger(__name__)

VARIANTS = ("yolo11n", "yolo11s", "yolo11m", "yolo11l", "yolo11x")
OPSET = 17
INPUT_SIZE = 640
INPUT_NAME = "images"
OUTPUT_NAME = "output0"
RANDOM_SEED = 0  # random-init weights are reproducible
# Bump when _finish_onnx changes the graph ultralytics exports: existing exports are then redone.
GRAPH_REVISION = 1
_STEPS = 5


def _step(n: int, text: str) -> None:
    log.info("yolo [%d/%d] %s", n, _STEPS, text)


@dataclass(frozen=True)
class WeightsChoice:
    kind: Literal["bundled", "checkpoint", "hub", "random"]
    source: str  # a local path (bundled, checkpoint), a checkpoint name (hub) or an architecture yaml (random)
    requested: str | None  # the config value, as written

    @property
    def label(self) -> str:
        if self.kind == "random":
            return f"random-init (offline): {self.source}"
        if self.kind == "hub":
            return f"hub:{self.source}"
        return f"checkpoint:{self._display_path()}"

    def _display_path(self) -> str:
        path = Path(self.source)
        with contextlib.suppress(ValueError):
            return str(path.relative_to(REPO_ROOT))
        return str(path)


def _variant_yaml(name: str) -> str:
    stem = Path(name).stem.lower()
    if stem not in VARIANTS:
        raise ValueError(f"unknown YOLO11 architecture {name!r}; choose one of {', '.join(VARIANTS)}")
    return f"{stem}.yaml"


def resolve_weights(settings: Settings) -> WeightsChoice:
    """Decides where the weights come from (see the module docstring); reads no network."""
    from export.shapes import CHECKPOINT

    spec = settings.models.yolo_weights
    if spec is None or not str(spec).strip():
        if not CHECKPOINT.exists():
            raise MissingArtifactError(
                f"the bundled shapes detector {CHECKPOINT} is missing; train it with "
                "`python -m export.shapes.train`, or set models.yolo_weights"
            )
        return WeightsChoice("bundled", str(CHECKPOINT), None)
    spec = str(spec).strip()
    if spec.lower() == "random":
        return WeightsChoice("random", _variant_yaml(settings.models.yolo_variant), spec)
    if spec.lower().endswith((".yaml", ".yml")):
        arch = _variant_yaml(spec)
        if Path(arch).stem != settings.models.yolo_variant.lower():
            log.warning("models.yolo_weights builds %s but models.yolo_variant is %s (the model folder is named "
                        "after yolo_variant)", arch, settings.models.yolo_variant)
        return WeightsChoice("random", arch, spec)
    for candidate in (Path(spec).expanduser(), REPO_ROOT / spec):
        if candidate.is_file():
            return WeightsChoice("checkpoint", str(candidate.resolve()), spec)
    if "/" not in spec and "\\" not in spec and spec.endswith(".pt"):
        return WeightsChoice("hub", spec, spec)
    raise MissingArtifactError(f"models.yolo_weights: no such checkpoint file: {spec}")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _coco_names() -> list[str]:
    """COCO class names from the yaml that ships inside ultralytics (for random-init architectures)."""
    import ultralytics
    import yaml

    data = yaml.safe_load((Path(ultralytics.__file__).parent / "cfg/datasets/coco.yaml").read_text())
    names = data["names"]
    return [names[i] for i in sorted(names)]


def _is_current(facts: YoloFacts, settings: Settings, choice: WeightsChoice, sha: str | None,
                max_batch: int) -> bool:
    m = settings.models
    if choice.kind == "hub" and facts.weights.startswith("random-init"):
        return False  # the download failed last time: try again
    return (
        facts.requested_weights == choice.requested
        and (choice.kind in ("hub", "random") or facts.weights_sha256 == sha)
        and facts.conf_threshold == m.conf_threshold
        and facts.iou_threshold == m.iou_threshold
        and facts.max_det == m.max_det
        and facts.max_batch == max_batch
        and facts.opset == OPSET
        and facts.input_size == INPUT_SIZE
        and facts.ultralytics_version == _installed_ultralytics()
        and facts.graph_revision == GRAPH_REVISION
    )


def _installed_ultralytics() -> str | None:
    from importlib import metadata

    try:
        return metadata.version("ultralytics")
    except metadata.PackageNotFoundError:
        return None


def _load_model(choice: WeightsChoice, stage: Path):
    """Returns (ultralytics YOLO model loaded from a .pt inside `stage`, actual weights label, class names|None)."""
    from export.ultralytics_offline import load_yolo_class

    YOLO = load_yolo_class()
    if choice.kind in ("bundled", "checkpoint"):
        staged = stage / Path(choice.source).name
        shutil.copyfile(choice.source, staged)  # ultralytics writes the .onnx beside the .pt
        return YOLO(str(staged)), choice.label, None
    if choice.kind == "hub":
        log.info("downloading %s through ultralytics (needs network access)", choice.source)
        try:
            with contextlib.chdir(stage):  # ultralytics saves the download in the working directory
                return YOLO(choice.source), choice.label, None
        except (ConnectionError, OSError) as exc:
            log.warning("could not download %s (%s); falling back to random weights", choice.source, exc)
            choice = WeightsChoice("random", _variant_yaml(choice.source), choice.requested)
    return _random_init(choice.source, stage), choice.label, _coco_names()


def _random_init(arch_yaml: str, stage: Path):
    """The real YOLO11 architecture from ultralytics' yaml, with random (seeded) weights."""
    import torch

    from export.ultralytics_offline import load_yolo_class

    banner = "!" * 100
    log.warning(
        "%s\nYOLO: building %s with RANDOM weights (offline). This model has the real architecture, shapes "
        "and speed, but it detects nothing useful.\nConfigure models.yolo_weights with a checkpoint, or "
        "leave it unset for the bundled shapes detector.\n%s", banner, arch_yaml, banner,
    )
    YOLO = load_yolo_class()
    torch.manual_seed(RANDOM_SEED)
    model = YOLO(arch_yaml)
    staged = stage / f"{Path(arch_yaml).stem}-random.pt"
    model.save(str(staged))
    return YOLO(str(staged))


def softmax_on_last_axis(model) -> int:
    """Wraps every Softmax over an inner axis in two Transposes that make it the last; returns how many.

    The detect head's DFL takes a softmax over axis 1 of [batch, 16, 4, anchors], and ONNX Runtime's CPU kernel is
    slow off the last axis: 6 ms of a 46 ms yolo11n pass on 2 cores, its slowest node after the convolutions. On
    the last axis the same values (bit-identical here) come ~10 % sooner for the whole detector.
    """
    import onnx

    ranks = {v.name: len(v.type.tensor_type.shape.dim)
             for v in onnx.shape_inference.infer_shapes(model).graph.value_info}
    nodes, count = [], 0
    for node in model.graph.node:
        rank = ranks.get(node.input[0], 0) if node.op_type == "Softmax" else 0
        axis = next((a.i for a in node.attribute if a.name == "axis"), -1)
        axis = axis + rank if axis < 0 else axis
        if rank < 2 or axis == rank - 1:
            nodes.append(node)
            continue
        perm = [d for d in range(rank) if d != axis] + [axis]
        back = [perm.index(d) for d in range(rank)]
        inner, result = f"{node.input[0]}/last_axis", f"{node.output[0]}/last_axis"
        nodes += [onnx.helper.make_node("Transpose", [node.input[0]], [inner], perm=perm, name=f"{node.name}/to_last"),
                  onnx.helper.make_node("Softmax", [inner], [result], axis=rank - 1, name=f"{node.name}/last"),
                  onnx.helper.make_node("Transpose", [result], list(node.output), perm=back, name=f"{node.name}/back")]
        count += 1
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    return count


def _finish_onnx(onnx_path: Path, size: int, metadata: dict[str, str]) -> None:
    """Pins height and width (ultralytics' dynamic export makes them symbolic too) to the letterbox size, puts
    every softmax on its last axis (faster on CPU, same values) and adds our metadata (`visual_search.*`) beside
    ultralytics' own (names, stride, imgsz, args...)."""
    import onnx

    model = onnx.load(str(onnx_path))
    dims = model.graph.input[0].type.tensor_type.shape.dim
    for i in (2, 3):
        dims[i].Clear()
        dims[i].dim_value = size
    softmax_on_last_axis(model)
    for key, value in metadata.items():
        prop = model.metadata_props.add()
        prop.key, prop.value = f"visual_search.{key}", value
    onnx.checker.check_model(model)
    onnx.save(model, str(onnx_path))


def _describe_io(onnx_path: Path) -> dict[str, list[int | str]]:
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)

    def dims(value) -> list[int | str]:
        return [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]

    return {v.name: dims(v) for v in [*model.graph.input, *model.graph.output]}


def _smoke_test(onnx_path: Path, max_det: int, max_batch: int) -> None:
    import numpy as np
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    for batch in sorted({1, min(2, max_batch)}):
        x = np.full((batch, 3, INPUT_SIZE, INPUT_SIZE), 114 / 255, dtype=np.float32)
        (out,) = session.run([OUTPUT_NAME], {INPUT_NAME: x})
        if out.shape != (batch, max_det, 6) or out.dtype != np.float32:
            raise RuntimeError(f"unexpected ONNX output {out.shape} {out.dtype}, wanted ({batch}, {max_det}, 6)")


def ensure_yolo(settings: Settings | None = None, *, force: bool = False,
                out_dir: Path | None = None) -> YoloFacts:
    """Exports the configured YOLO11 detector to `<exported_yolo_dir>/model.onnx` + metadata unless already there.

    `out_dir` overrides `settings.exported_yolo_dir` (tests export into a temporary folder).
    """
    settings = settings or load_config()
    m = settings.models
    out_dir = Path(out_dir or settings.exported_yolo_dir)
    max_batch = settings.triton.max_batch_size
    choice = resolve_weights(settings)
    sha = _sha256(Path(choice.source)) if choice.kind in ("bundled", "checkpoint") else None

    _step(1, f"weights: {choice.label} → {out_dir}")
    with contextlib.suppress(MissingArtifactError, ValueError):
        facts = YoloFacts.load(out_dir)
        if (out_dir / facts.file).exists() and not force and _is_current(facts, settings, choice, sha, max_batch):
            _step(_STEPS, f"up to date, skipped ({facts.weights}; conf {facts.conf_threshold}, "
                          f"iou {facts.iou_threshold}, max_det {facts.max_det})")
            return facts

    t0 = time.perf_counter()
    out_dir.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=".stage-", dir=out_dir))  # per process: concurrent exports don't clash
    try:
        _step(2, "loading the model")
        model, weights_label, names = _load_model(choice, stage)
        if names is None:
            names = [model.names[i] for i in sorted(model.names)]
        else:
            model.model.names = dict(enumerate(names))

        _step(3, f"exporting ONNX (opset {OPSET}, NMS inside, conf {m.conf_threshold}, iou {m.iou_threshold}, "
                 f"max_det {m.max_det}, batch 1..{max_batch})")
        t1 = time.perf_counter()
        exported = Path(
            model.export(
                format="onnx", imgsz=INPUT_SIZE, opset=OPSET, nms=True, conf=m.conf_threshold,
                iou=m.iou_threshold, max_det=m.max_det, dynamic=True, batch=max_batch, simplify=True,
                device="cpu", verbose=False,
            )
        )
        export_s = time.perf_counter() - t1

        _step(4, "pinning the input size, checking the graph and running it once")
        _finish_onnx(exported, INPUT_SIZE, {
            "weights": weights_label, "conf_threshold": str(m.conf_threshold),
            "iou_threshold": str(m.iou_threshold), "max_det": str(m.max_det), "max_batch": str(max_batch),
        })
        _smoke_test(exported, m.max_det, max_batch)
        import ultralytics  # already imported (and configured) by _load_model

        facts = YoloFacts(
            weights=weights_label,
            exported_at=datetime.now(UTC).isoformat(timespec="seconds"),
            opset=OPSET,
            name=settings.exported_yolo_dir.name,
            input_size=INPUT_SIZE,
            class_names=names,
            conf_threshold=m.conf_threshold,
            iou_threshold=m.iou_threshold,
            max_det=m.max_det,
            max_batch=max_batch,
            requested_weights=choice.requested,
            weights_sha256=sha,
            ultralytics_version=ultralytics.__version__,
            export_seconds=round(export_s, 1),
            graph_revision=GRAPH_REVISION,
        )
        final = out_dir / facts.file
        exported.replace(final)  # same file system: an atomic rename
        facts.save(out_dir)
    finally:
        shutil.rmtree(stage, ignore_errors=True)

    io = _describe_io(final)
    _step(5, f"done in {time.perf_counter() - t0:.1f} s (ONNX export {export_s:.1f} s): {final} "
             f"({final.stat().st_size / 1e6:.1f} MB); I/O {io}; {len(names)} classes")
    return facts


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Export YOLO11 to ONNX with NMS inside (idempotent).")
    parser.add_argument("--force", action="store_true", help="export even if the model is up to date")
    parser.add_argument("--weights", help="override models.yolo_weights (path, checkpoint name, or 'random')")
    parser.add_argument("--variant", choices=VARIANTS, help="override models.yolo_variant")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    settings = load_config()
    updates = {}
    if args.weights is not None:
        updates["yolo_weights"] = args.weights
    if args.variant is not None:
        updates["yolo_variant"] = args.variant
    if updates:
        settings = settings.model_copy(update={"models": settings.models.model_copy(update=updates)})
    facts = ensure_yolo(settings, force=args.force)
    print(f"{settings.exported_yolo_dir}: {facts.weights}, classes {facts.class_names}")


if __name__ == "__main__":
    main()
