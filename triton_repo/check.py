"""Static check of a rendered model repository: the ensembles can only wire up what really exists.

Parses every config.pbtxt with Triton's own protobuf schema, then checks that each ensemble step names an
existing model, that every tensor it consumes is produced (by the ensemble input or an earlier step) with
the same dtype and a compatible shape, and that the ensemble's outputs are produced likewise.
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


def check_repository(repo: Path) -> list[str]:
    """All problems found (an empty list means the repository is consistent)."""
    configs = load_repository(repo)
    problems = []
    for name, config in configs.items():
        if config.platform == "ensemble":
            problems += check_ensemble(name, config, configs)
        elif not (config.backend or config.platform):
            problems.append(f"{name}: neither backend nor platform set")
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
