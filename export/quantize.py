"""int8 copies of the exported ONNX models for the cpu profile (`models.precision: int8`), with ONNX Runtime
quantization, written beside the fp32 files and recorded in their facts (`Int8Files`).

How each model is quantized, and why (measured on the 2-core dev machine, AVX-512 VNNI; `bench --only int8`; a CPU
without VNNI gets other activation types or 7-bit weights, `static_types`):

* **detector** (YOLO11): static QDQ of the backbone's Conv/MatMul (ultralytics layers 0–10: per-channel int8
  weights, uint8 activations calibrated min/max on letterboxed shapes scenes); the neck (11–22) and the detect head
  (23, with its DFL) stay fp32. Box edges are regressed as the expectation of a 16-bin distribution, so any int8
  rounding in the layers that feed the head moves boxes: quantizing everything but the head's last convolutions
  moved edges by up to 7 px (original pixels), the whole head fp32 still 2.8–3.9 px, percentile/entropy calibration
  or 3× the calibration scenes did not close the gap; backbone-only measured 1.67 px (test: ±2 px). Each SiLU
  (Sigmoid, Mul) is first written as the one fp32 node ONNX Runtime fuses it into in the fp32 model (QuickGelu,
  alpha 1): left as two nodes, the quantized graph dequantizes the SiLU's input once per consumer and runs both in
  fp32 (int8 detector 0.88× fp32; as one node ~0.98×). Speed: the backbone's QLinearConvs take 7.9 ms where its fp32
  convolutions took 13 ms, and the QuantizeLinear/DequantizeLinear around every SiLU add 6.9 ms back (ONNX Runtime
  profile, 2 threads): no net gain on a model this small. Every convolution int8 (boxes off by several px) gives
  1.08× on the bundled YOLO11n and 1.45× on a YOLO11s; backbone-only on the YOLO11s 1.02×. Quantizing the SiLUs
  too (QLinearSigmoid/QLinearMul) gains ~15 % but moves boxes by 4.6 px. Another runtime does not change the
  picture enough: OpenVINO 2026.4 (PyPI) runs these same two files with the same detections (boxes within 0.06 px
  of ONNX Runtime's), but by default in bf16 on this CPU (AVX-512 BF16, no AMX), which is slower here (56 ms fp32,
  52 ms int8, YOLO11n, 2 threads, vs ONNX Runtime's 40.5 and 42.2); with an f32 precision hint and the batch axis
  fixed at 1 it takes 36.0 and 30.9 ms: int8 1.17× its own fp32, 1.31× ONNX Runtime's (an earlier run of the same
  comparison gave 32.7 and 28.4 ms against 38.9 and 40.5).
* **image encoder**: static QDQ of the convolutions but depthwise ones (group > 1), calibrated on scenes and
  object crops as the server preprocesses them; MatMul/Gemm (attention, projection) stay fp32. Depthwise
  convolutions stay fp32: they are memory bound, gain nothing from int8 and quantizing them cost most of the
  fidelity (cosine to fp32 0.94 → 0.97 at min). Quantizing MobileCLIP2-S2's attention MatMuls too cost cosine
  0.975 → 0.959 at min (mean 0.991 → 0.982) for no measurable speed. The bundled shapes CLIP (plain ResNet convs)
  keeps ≥ 0.999; random-init MobileCLIP2-S2 stays below 0.99 (min ≈ 0.975): random weights without training give
  activations with outlier channels a single per-tensor uint8 scale cannot resolve. Dynamic
  quantization (ConvInteger) is ~8× *slower* than fp32 here.
* **text encoder**: dynamic quantization of MatMul/Gemm (weights int8, activations quantized per call): a
  transformer's time is its MatMuls; ~2× faster, cosine to fp32 ≥ 0.999.

Calibration data comes from the shapes generator (export/shapes/dataset.py) with its own seed, run through the
serving preprocessing (preprocess.runtime, triton_repo.runtime.crops), so the ranges are the served ranges.

    python -m export.quantize [--force]
"""

from __future__ import annotations

import argparse
import io
import logging
import re
import shutil
import tempfile
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from common.config import Settings, load_config
from common.model_facts import ClipFacts, Int8Files, YoloFacts

log = logging.getLogger(__name__)

# Bump when anything below changes what the int8 files hold: existing copies are then re-quantized.
RECIPE = 5
CALIBRATION_SEED = 777  # not the detector's training (0) or test (2025) seed, nor the bench images' (4242)
CALIBRATION_SCENES = 32
CALIBRATION_CROPS = 48
INT8_SUFFIX = ".int8.onnx"
# the YOLO11 neck (layers 11-22) and detect head (23, DFL included), in ultralytics' node names: they stay fp32
_YOLO_FP32 = re.compile(r"/model\.(1[1-9]|2\d)/")


def int8_name(fp32_file: str) -> str:
    return fp32_file.removesuffix(".onnx") + INT8_SUFFIX


def _jpeg(image) -> bytes:
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=90)
    return out.getvalue()


def calibration_inputs(clip: ClipFacts, yolo: YoloFacts, scenes: int = CALIBRATION_SCENES,
                       crops: int = CALIBRATION_CROPS) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """(detector inputs [1,3,S,S], image-encoder inputs [1,3,R,R]): generated scenes as JPEG through the serving
    preprocessing, and crops of their shapes (ground-truth boxes) as the box_embedding model makes them."""
    from export.shapes.dataset import render
    from preprocess.runtime import DaliPreprocessor, PreprocessResult
    from triton_repo.runtime.crops import crops_batch

    pre = DaliPreprocessor.from_facts(clip, yolo, max_pixels=50_000_000, batch_size=8)
    samples = [render(CALIBRATION_SEED, i) for i in range(scenes)]
    results = pre.run([_jpeg(image) for image, _ in samples])
    yolo_inputs: list[np.ndarray] = []
    clip_inputs: list[np.ndarray] = []
    crop_inputs: list[np.ndarray] = []
    for (_, boxes), result in zip(samples, results, strict=True):
        if not isinstance(result, PreprocessResult):
            raise RuntimeError(f"calibration scene failed preprocessing: {result}")
        yolo_inputs.append(result.yolo_input[None])
        clip_inputs.append(result.clip_input[None])
        if boxes and len(crop_inputs) < crops:
            array = np.array([[b.x1, b.y1, b.x2, b.y2] for b in boxes], dtype=np.float32)
            batch = crops_batch(result.decoded_image, array, clip.image_size, clip.mean, clip.std, clip.interpolation)
            crop_inputs.extend(np.ascontiguousarray(row[None]) for row in batch.numpy())
    return yolo_inputs, clip_inputs + crop_inputs[:crops]


class _Reader:
    """ONNX Runtime's CalibrationDataReader protocol over a list of single-image batches."""

    def __init__(self, input_name: str, arrays: Sequence[np.ndarray]) -> None:
        self._items: Iterator[dict[str, np.ndarray]] = iter([{input_name: a} for a in arrays])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._items, None)


def _preprocessed(source: Path, work: Path) -> Path:
    """ONNX Runtime's recommended step before static quantization (shape inference, constant folding)."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    out = work / f"{source.stem}.pre.onnx"
    quant_pre_process(str(source), str(out), skip_symbolic_shape=True)
    return out


def _conv_nodes(path: Path, *, depthwise: bool) -> list[str]:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    names = []
    for node in model.graph.node:
        if node.op_type != "Conv":
            continue
        group = next((onnx.helper.get_attribute_value(a) for a in node.attribute if a.name == "group"), 1)
        if (group > 1) == depthwise:
            names.append(node.name)
    return names


def has_vnni(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """Whether the CPU has VNNI (int8 dot products); False where cpuinfo cannot be read (the safe choice)."""
    try:
        return bool(re.search(r"\b(avx512_vnni|avx_vnni)\b", cpuinfo.read_text()))
    except OSError:
        return False


def static_types(model: str, vnni: bool) -> tuple[str, bool]:
    """(activation type, reduce_range) for a static quantization of `model` ("detector" or "image"); weights are
    int8. With VNNI: uint8 activations, full-range weights (the recipe measured in this module's docstring). Without
    it ONNX Runtime's uint8 × int8 kernels sum pairs in 16 bits and saturate: measured on an AMD EPYC with AVX2 only,
    the detector's boxes moved 7.3 px and the image encoder's cosine fell to 0.979. There the detector keeps 1.67 px
    with int8 activations (0.979 cosine for the image encoder that way), and the image encoder keeps ≥ 0.996 with
    7-bit weights (2.9 px for the detector that way)."""
    if vnni:
        return "uint8", False
    return ("int8", False) if model == "detector" else ("uint8", True)


def _types(model: str) -> str:
    activation, reduce = static_types(model, has_vnni())
    return f"{'7-bit' if reduce else 'int8'} weights, {activation} activations"


def _static(pre: Path, out: Path, input_name: str, data: Sequence[np.ndarray], exclude: list[str], model: str,
            op_types: Sequence[str] = ("Conv", "MatMul", "Gemm")) -> None:
    """Static QDQ of `pre` (a model `_preprocessed` made) with every node of `op_types` but `exclude`."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    activation, reduce = static_types(model, has_vnni())
    quantize_static(str(pre), str(out), _Reader(input_name, data), quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QInt8 if activation == "int8" else QuantType.QUInt8,
                    weight_type=QuantType.QInt8, per_channel=True, reduce_range=reduce,
                    op_types_to_quantize=list(op_types), nodes_to_exclude=exclude,
                    calibrate_method=CalibrationMethod.MinMax)


def silu_as_one_node(source: Path, out: Path) -> int:
    """Rewrites every SiLU written as Sigmoid(x) → Mul(x, ·) as one QuickGelu(x, alpha=1) (ONNX Runtime's contrib
    op, x·sigmoid(alpha·x): the same function); returns how many. Quantization then puts one DequantizeLinear before
    each SiLU instead of one per consumer."""
    import onnx

    model = onnx.load(str(source))
    consumers: dict[str, list] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    silu: dict[str, Any] = {}  # Sigmoid name → its Mul
    for node in model.graph.node:
        users = consumers.get(node.output[0], []) if node.op_type == "Sigmoid" else []
        if len(users) == 1 and users[0].op_type == "Mul" and set(users[0].input) == {node.input[0], node.output[0]}:
            silu[node.name] = users[0]
    muls = {id(mul) for mul in silu.values()}
    nodes = []
    for node in model.graph.node:
        if node.name in silu:
            nodes.append(onnx.helper.make_node("QuickGelu", [node.input[0]], [silu[node.name].output[0]],
                                               name=f"{node.name}/silu", domain="com.microsoft", alpha=1.0))
        elif id(node) not in muls:
            nodes.append(node)
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    if not any(o.domain == "com.microsoft" for o in model.opset_import):
        model.opset_import.append(onnx.helper.make_opsetid("com.microsoft", 1))
    onnx.save(model, str(out))
    return len(silu)


def quantize_yolo(source: Path, out: Path, data: Sequence[np.ndarray], input_name: str, work: Path) -> str:
    import onnx

    pre = _preprocessed(source, work)
    fused = work / f"{source.stem}.silu.onnx"
    silus = silu_as_one_node(pre, fused)
    fp32 = [n.name for n in onnx.load(str(fused), load_external_data=False).graph.node if _YOLO_FP32.search(n.name)]
    _static(fused, out, input_name, data, fp32, "detector")
    return (f"static QDQ, per-channel {_types('detector')} (min/max over {len(data)} scenes); backbone "
            f"Conv and MatMul (layers 0-10); neck and detect head fp32 ({len(fp32)} nodes); {silus} SiLUs as one "
            "fp32 QuickGelu node each")


def quantize_clip_image(source: Path, out: Path, data: Sequence[np.ndarray], work: Path) -> str:
    pre = _preprocessed(source, work)
    depthwise = _conv_nodes(pre, depthwise=True)
    _static(pre, out, "clip_input", data, depthwise, "image", op_types=("Conv",))
    return (f"static QDQ, per-channel {_types('image')} (min/max over {len(data)} scenes and crops); "
            f"Conv only, MatMul/Gemm fp32 ({len(depthwise)} depthwise convolutions stay fp32)")


def quantize_clip_text(source: Path, out: Path) -> str:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(source), str(out), weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul", "Gemm"],
                     reduce_range=not has_vnni())  # without VNNI (see static_types): cosine 0.9993 on the AVX2 EPYC
    return "dynamic, int8 MatMul/Gemm weights, activations quantized per call"


def _is_current(facts: ClipFacts | YoloFacts, directory: Path) -> bool:
    import onnxruntime

    q = facts.int8
    return (q is not None and q.recipe == RECIPE and q.vnni == has_vnni()
            and q.source_exported_at == facts.exported_at
            and q.onnxruntime_version == onnxruntime.__version__
            and all((directory / f).is_file() for f in q.files.values()))


def _record(files: dict[str, str], methods: dict[str, str], source_exported_at: str, seconds: float) -> Int8Files:
    import onnxruntime

    return Int8Files(files=files, methods=methods, recipe=RECIPE, vnni=has_vnni(),
                     onnxruntime_version=onnxruntime.__version__,
                     quantized_at=datetime.now(UTC).isoformat(timespec="seconds"),
                     source_exported_at=source_exported_at, quantize_seconds=round(seconds, 1))


def ensure_int8(settings: Settings, clip: ClipFacts, yolo: YoloFacts, *, force: bool = False,
                clip_dir: Path | None = None, yolo_dir: Path | None = None) -> tuple[ClipFacts, YoloFacts]:
    """Quantizes whichever of the two exports has no current int8 copy; returns the facts as saved."""
    from rich.console import Console

    console = Console(stderr=True)
    clip_dir, yolo_dir = Path(clip_dir or settings.clip_dir), Path(yolo_dir or settings.yolo_dir)
    todo_clip, todo_yolo = force or not _is_current(clip, clip_dir), force or not _is_current(yolo, yolo_dir)
    if not (todo_clip or todo_yolo):
        return clip, yolo
    work = Path(tempfile.mkdtemp(prefix=".int8-", dir=clip_dir))
    try:
        with console.status("int8: generating calibration scenes and crops (serving preprocessing) …"):
            yolo_data, clip_data = calibration_inputs(clip, yolo)
        if todo_yolo:
            t0 = time.perf_counter()
            name = int8_name(yolo.file)
            with console.status(f"int8: detector → {name} (static, {len(yolo_data)} calibration scenes) …"):
                method = quantize_yolo(yolo_dir / yolo.file, work / name, yolo_data, yolo.input_name, work)
                shutil.move(work / name, yolo_dir / name)
            yolo = yolo.model_copy(update={"int8": _record({"model": name}, {"model": method}, yolo.exported_at,
                                                           time.perf_counter() - t0)})
            yolo.save(yolo_dir)
            console.print(f"  [green]✓[/] int8 detector {yolo_dir / name} ({time.perf_counter() - t0:.0f} s)")
        if todo_clip:
            t0 = time.perf_counter()
            names = {"image": int8_name(clip.image_file), "text": int8_name(clip.text_file)}
            methods = {}
            with console.status(f"int8: image encoder → {names['image']} ({len(clip_data)} calibration inputs) …"):
                methods["image"] = quantize_clip_image(clip_dir / clip.image_file, work / names["image"], clip_data,
                                                       work)
            with console.status(f"int8: text encoder → {names['text']} (dynamic) …"):
                methods["text"] = quantize_clip_text(clip_dir / clip.text_file, work / names["text"])
            for name in names.values():
                shutil.move(work / name, clip_dir / name)
            clip = clip.model_copy(update={"int8": _record(names, methods, clip.exported_at,
                                                           time.perf_counter() - t0)})
            clip.save(clip_dir)
            console.print(f"  [green]✓[/] int8 encoders {', '.join(names.values())} in {clip_dir} "
                          f"({time.perf_counter() - t0:.0f} s)")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return clip, yolo


def main(argv: list[str] | None = None) -> int:
    from export.mobileclip import ensure_clip
    from export.yolo import ensure_yolo

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--force", action="store_true", help="quantize even when current int8 copies exist")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    settings = load_config()
    clip, yolo = ensure_int8(settings, ensure_clip(settings), ensure_yolo(settings), force=args.force)
    for facts in (clip, yolo):
        assert facts.int8 is not None
        for role, method in facts.int8.methods.items():
            print(f"{facts.kind} {role}: {facts.int8.files[role]}: {method}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
