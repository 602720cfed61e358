"""Static check of a rendered model repository: the ensembles can only wire up what really exists.

Parses every config.pbtxt with Triton's own protobuf schema, then checks that each ensemble step names an
existing model, that every tensor it consumes is produced (by the ensemble input or an earlier step) with
the same dtype and a compatible shape, and that the ensemble's outputs are produced likewise.

Two rules come from the gpu profile, where they fail only at request time on a GPU server:

* a step that runs a DALI model must ask for every output of that model: the dali backend refuses a request
  whose requested outputs are not all of the pipeline's ("Number of outputs expected by the requests ... does
  not match the number of outputs from DALI pipeline");
* an onnxruntime model with the TensorRT accelerator and a batch axis must declare explicit shape profiles
  that cover batch 1..max_batch_size for each input, and an engine cache on a path; without them the engine
  is built on the first request (seconds to minutes) and again for every larger batch.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc


@dataclass(frozen=True)
class TensorSpec:
    dtype: int
    dims: tuple[int, ...]

    def compatible(self, other: TensorSpec) -> bool:
        if self.dtype != other.dtype or len(self.dims) != len(other.dims):
            return False
        return all(a == b or -1 in (a, b) for a, b in zip(self.dims, other.dims, strict=True))

    def describe(self) -> str:
        return f"{mc.DataType.Name(self.dtype)}{list(self.dims)}"


def load_repository(repo: Path) -> dict[str, mc.ModelConfig]:
    configs = {}
    for path in sorted(repo.glob("*/config.pbtxt")):
        config = text_format.Parse(path.read_text(), mc.ModelConfig())
        configs[config.name or path.parent.name] = config
    return configs


def _specs(tensors) -> dict[str, TensorSpec]:
    return {t.name: TensorSpec(t.data_type, tuple(t.dims)) for t in tensors}


def check_ensemble(name: str, config: mc.ModelConfig, configs: dict[str, mc.ModelConfig]) -> list[str]:
    problems: list[str] = []
    available = dict(_specs(config.input))
    steps = list(config.ensemble_scheduling.step)
    pending = list(steps)
    # steps may be listed in any order: resolve them as their inputs become available
    while pending:
        progressed = False
        for step in list(pending):
            model = configs.get(step.model_name)
            if model is None:
                problems.append(f"{name}: step model {step.model_name!r} is not in the repository")
                pending.remove(step)
                progressed = True
                continue
            if not all(src in available for src in step.input_map.values()):
                continue
            inputs, outputs = _specs(model.input), _specs(model.output)
            for key, src in step.input_map.items():
                if key not in inputs:
                    problems.append(f"{name}: {step.model_name} has no input {key!r}")
                elif not available[src].compatible(inputs[key]):
                    problems.append(f"{name}: {src} is {available[src].describe()} but {step.model_name}.{key} "
                                    f"expects {inputs[key].describe()}")
            if model.max_batch_size < config.max_batch_size:
                problems.append(f"{name}: {step.model_name} max_batch_size {model.max_batch_size} < "
                                f"ensemble's {config.max_batch_size}")
            for key, dst in step.output_map.items():
                if key not in outputs:
                    problems.append(f"{name}: {step.model_name} has no output {key!r}")
                else:
                    available[dst] = outputs[key]
            if model.backend == "dali":
                unmapped = sorted(set(outputs) - set(step.output_map))
                if unmapped:
                    problems.append(f"{name}: {step.model_name} is a DALI model and the dali backend answers only "
                                    f"requests for all of its outputs; map {unmapped} too")
            pending.remove(step)
            progressed = True
        if not progressed:
            missing = sorted({src for s in pending for src in s.input_map.values() if src not in available})
            problems.append(f"{name}: tensors never produced: {missing}")
            break
    for out_name, spec in _specs(config.output).items():
        if out_name not in available:
            problems.append(f"{name}: output {out_name!r} is produced by no step")
        elif not available[out_name].compatible(spec):
            problems.append(f"{name}: output {out_name} declared {spec.describe()} but produced as "
                            f"{available[out_name].describe()}")
    return problems


def _profile_batches(text: str) -> dict[str, tuple[int, tuple[int, ...]]]:
    """ONNX Runtime's "name:BxDxD,name2:..." → {name: (batch, other dims)}; unreadable parts are skipped."""
    shapes = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        tensor, _, dims = part.rpartition(":")
        try:
            values = tuple(int(d) for d in dims.split("x"))
        except ValueError:
            continue
        if tensor and values:
            shapes[tensor] = (values[0], values[1:])
    return shapes


def check_tensorrt(name: str, config: mc.ModelConfig) -> list[str]:
    """An onnxruntime model served through the TensorRT provider: profiles cover 1..max batch, cache is on."""
    problems: list[str] = []
    accelerators = [a for a in config.optimization.execution_accelerators.gpu_execution_accelerator
                    if a.name == "tensorrt"]
    if config.platform != "onnxruntime_onnx" or not accelerators or config.max_batch_size <= 0:
        return problems
    params = dict(accelerators[0].parameters)
    if params.get("trt_engine_cache_enable") not in ("1", "true", "True") or not params.get("trt_engine_cache_path"):
        problems.append(f"{name}: TensorRT engine cache not enabled with a path (engines rebuilt at every load)")
    expected = {"min": 1, "max": config.max_batch_size}
    profiles = {kind: _profile_batches(params.get(f"trt_profile_{kind}_shapes", "")) for kind in ("min", "opt", "max")}
    for tensor in config.input:
        dims = tuple(tensor.dims)
        for kind in ("min", "opt", "max"):
            shape = profiles[kind].get(tensor.name)
            if shape is None:
                problems.append(f"{name}: no TensorRT {kind} shape profile for input {tensor.name!r} (the engine "
                                "would be built on the first request)")
                continue
            batch, rest = shape
            if rest != dims:
                problems.append(f"{name}: TensorRT {kind} profile of {tensor.name} has dims {list(rest)}, "
                                f"the config {list(dims)}")
            if kind in expected and batch != expected[kind]:
                problems.append(f"{name}: TensorRT {kind} profile batch of {tensor.name} is {batch}, "
                                f"must be {expected[kind]} (max_batch_size {config.max_batch_size})")
            if kind == "opt" and not 1 <= batch <= config.max_batch_size:
                problems.append(f"{name}: TensorRT opt profile batch {batch} outside 1..{config.max_batch_size}")
    return problems


def check_repository(repo: Path) -> list[str]:
    """All problems found (an empty list means the repository is consistent)."""
    configs = load_repository(repo)
    problems = []
    for name, config in configs.items():
        if config.platform == "ensemble":
            problems += check_ensemble(name, config, configs)
        elif not (config.backend or config.platform):
            problems.append(f"{name}: neither backend nor platform set")
        problems += check_tensorrt(name, config)
    return problems


def report(repo: Path) -> int:
    """Prints the problems of a repository; the exit code a CLI should return."""
    problems = check_repository(repo)
    for problem in problems:
        print(problem)
    print(f"{repo}: {len(problems)} problem(s)")
    return 1 if problems else 0


def main() -> int:
    return report(Path(sys.argv[1]))


if __name__ == "__main__":
    sys.exit(main())
