"""The gpu profile, checked without a GPU: each failure a first GPU run would have hit has a test here.

The gpu repository is rendered into a temporary folder from synthetic model facts (no export needed), the
compose file is parsed and its shell command run with a stand-in `tritonserver`, the python-backend models run
against a stand-in `triton_python_backend_utils` (GPU-resident tensors simulated), and export/tensorrt.py's
TensorRT path runs against a stand-in `tensorrt` module. What needs the real GPU is in triton_repo/gpu_check.sh
and bench/gpu_device_check.py.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import yaml
from google.protobuf import json_format
from packaging.specifiers import SpecifierSet

from common.config import load_config
from common.model_facts import ClipFacts, YoloFacts
from triton_repo.check import check_repository, load_repository
from triton_repo.render import DEFAULT_TRT_CACHE, render_repository, tensorrt_options, trt_profiles

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.gpu.yml"
DALI_WHEEL = "/opt/tritonserver/backends/dali/wheel/dali"  # the NGC image's PYTHONPATH (server build.py)
# Python of NVIDIA's tritonserver images (release notes): Ubuntu 22.04 / 3.10 up to 24.11, 24.04 / 3.12 from 24.12
FIRST_PY312_TAG = (24, 12)
FIRST_PATCHED_TAG = (25, 7)  # NVIDIA security bulletin of August 2025: fixed in 25.07


# ------------------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def gpu_setup(tmp_path_factory):
    """Settings over a temporary cache holding synthetic facts and stand-in ONNX files; both repositories."""
    base = tmp_path_factory.mktemp("gpu_profile")
    settings = load_config(cache_dir=base / "cache")
    clip = ClipFacts(weights="random-init (offline)", exported_at="test", variant="MobileCLIP2-S2", embedding_dim=512,
                     image_size=256, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), interpolation="bilinear",
                     context_length=77, vocab_size=49408)
    yolo = YoloFacts(weights="random-init (offline)", exported_at="test", name="yolo11n", class_names=["a", "b"],
                     conf_threshold=0.25, iou_threshold=0.45, max_det=100, max_batch=settings.triton.max_batch_size)
    clip.save(settings.clip_dir)
    yolo.save(settings.yolo_dir)
    for path in (settings.clip_dir / clip.image_file, settings.clip_dir / clip.text_file,
                 settings.yolo_dir / yolo.file):
        path.write_bytes(b"stand-in for " + path.name.encode())
    gpu = render_repository(settings, base / "gpu", profile="gpu")
    cpu = render_repository(settings, base / "cpu", profile="cpu")
    return {"settings": settings, "clip": clip, "yolo": yolo, "gpu": gpu, "cpu": cpu, "base": base}


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def interpolate(text: str, env: dict[str, str] | None = None) -> str:
    """docker compose's interpolation of a compose-file string: $$ is a literal $, ${VAR:-default}."""
    env = env or {}
    out, i = [], 0
    pattern = re.compile(r"\$\$|\$\{(\w+)(?::?-([^}]*))?\}|\$(\w+)")
    for match in pattern.finditer(text):
        out.append(text[i : match.start()])
        if match.group(0) == "$$":
            out.append("$")
        else:
            name = match.group(1) or match.group(3)
            out.append(env.get(name) or (match.group(2) or ""))
        i = match.end()
    out.append(text[i:])
    return "".join(out)


def image_tag(compose: dict) -> tuple[int, int]:
    dockerfile = interpolate(compose["services"]["triton"]["build"]["dockerfile_inline"])
    (line,) = [x for x in dockerfile.splitlines() if x.startswith("FROM ")]
    match = re.fullmatch(r"FROM nvcr\.io/nvidia/tritonserver:(\d+)\.(\d+)-py3", line.strip())
    assert match, line
    return int(match.group(1)), int(match.group(2))


def pip_installed_modules(compose: dict) -> set[str]:
    """Import names of what the compose build pip-installs into NVIDIA's image."""
    dockerfile = compose["services"]["triton"]["build"]["dockerfile_inline"]
    names = {re.split(r"[<>=!~\[ ]", spec.strip('"'))[0].lower() for spec in re.findall(r'"([^"]+)"', dockerfile)}
    module_of = {"pillow": "PIL", "open_clip_torch": "open_clip"}
    return {module_of.get(name, name) for name in names}


# ------------------------------------------------------------------------------------------ 1. Python versions


def test_1_python_of_the_image_and_no_pip_install_of_the_repository(compose):
    """pyproject admits 3.11 and 3.12 (the NGC images from 24.12 run 3.12); the Triton container no longer
    pip-installs this repository (its pins, nvidia-dali-cuda120 among them, would replace the image's own)."""
    pyproject = (ROOT / "pyproject.toml").read_text()
    spec = SpecifierSet(re.search(r'^requires-python = "([^"]+)"', pyproject, re.M).group(1))
    assert "3.11.9" in spec and "3.12.3" in spec
    assert image_tag(compose) >= FIRST_PY312_TAG  # so the server's Python is 3.12, which the code now supports
    triton = compose["services"]["triton"]
    command = " ".join(triton["command"]) if isinstance(triton["command"], list) else triton["command"]
    assert "pip install" not in command
    assert "pip install -e" not in triton["build"]["dockerfile_inline"]
    adapter_python = re.search(r"python:(\d+\.\d+)", compose["services"]["adapter"]["image"]).group(1)
    assert f"{adapter_python}.0" in spec  # the adapter does pip install -e: its Python must be admitted


def test_every_compose_service_restarts_and_reports_its_health(compose):
    for name, service in compose["services"].items():
        assert service.get("restart") == "unless-stopped", name
        if name != "opensearch":
            assert service["healthcheck"]["test"], name
    assert compose["services"]["opensearch"]["healthcheck"]["test"]
    assert compose["services"]["adapter"]["depends_on"]["triton"]["condition"] == "service_healthy"


def test_triton_image_has_the_august_2025_security_fixes(compose):
    assert image_tag(compose) >= FIRST_PATCHED_TAG
    overridden = interpolate(compose["services"]["triton"]["build"]["dockerfile_inline"],
                             {"TRITON_IMAGE": "nvcr.io/nvidia/tritonserver:26.01-py3"})
    assert "FROM nvcr.io/nvidia/tritonserver:26.01-py3" in overridden


# ------------------------------------------------------------------------------------------ 2. imports


IMPORT_GUARD = r'''
import builtins, json, sys
from pathlib import Path
GUARDED = [str(Path(p).resolve()) for p in json.loads(sys.argv[1])]
ALLOWED = set(json.loads(sys.argv[2]))
_real_import = builtins.__import__


def guarded_import(name, globals=None, locals=None, fromlist=(), level=0):
    # every import statement passes here, cached module or not; the importer is known from its globals
    importer = str(Path((globals or {}).get("__file__") or "").resolve()) if (globals or {}).get("__file__") else ""
    if level == 0 and any(importer.startswith(root) for root in GUARDED) and name.split(".")[0] not in ALLOWED:
        raise ImportError(f"{importer} imports {name!r}, which the gpu image does not provide")
    return _real_import(name, globals, locals, fromlist, level)
'''


def test_2_every_import_of_the_gpu_python_models_is_in_the_image(gpu_setup, compose, tmp_path):
    """Loads and runs every python model of the rendered gpu repository (and the DALI autoserialize file) with
    an import guard: each import made by this repository's code, at load or at request time, must be the
    standard library, what NVIDIA's image has (numpy, the python backend, DALI via PYTHONPATH), what the compose
    build installs, or this repository's serving packages (on PYTHONPATH; never the offline `export/`). torch and
    open_clip were missing before."""
    allowed = set(sys.stdlib_module_names) | {"triton_python_backend_utils", "numpy", "nvidia", "common",
                                               "preprocess", "triton_repo"} | pip_installed_modules(compose)
    assert {"torch", "open_clip", "PIL"} <= allowed
    repo = gpu_setup["gpu"]
    script = tmp_path / "run_models.py"
    script.write_text(IMPORT_GUARD + RUN_MODELS)
    guarded = [ROOT / "triton_repo", ROOT / "preprocess", ROOT / "common", repo]  # not tests/: the stand-ins live there
    done = subprocess.run([sys.executable, str(script), json.dumps([str(p) for p in guarded]),
                           json.dumps(sorted(allowed)), str(repo), str(Path(__file__).resolve())], cwd=ROOT,
                          capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stdout + done.stderr
    ran = json.loads(done.stdout.strip().splitlines()[-1])
    assert set(ran["models"]) == {"box_embedding", "tokenizer", "validate_image"}
    assert ran["dali"] == "loaded"


RUN_MODELS = r'''
import importlib.util, json, sys
import numpy as np
from google.protobuf import json_format, text_format
from tritonclient.grpc import model_config_pb2 as mc
repo, test_file = Path(sys.argv[3]), sys.argv[4]
spec = importlib.util.spec_from_file_location("gpu_profile_test", test_file)
helpers = importlib.util.module_from_spec(spec)
spec.loader.exec_module(helpers)
sys.modules["triton_python_backend_utils"] = helpers.fake_backend(lambda x: np.ones((len(x), 512), np.float32))
builtins.__import__ = guarded_import  # from here on, what the repository's code imports is checked
ran = {}
for model_py in sorted(repo.glob("*/1/model.py")):
    name = model_py.parent.parent.name
    config = text_format.Parse((repo / name / "config.pbtxt").read_text(), mc.ModelConfig())
    args = {"model_config": json.dumps(json_format.MessageToDict(config, preserving_proto_field_name=True)),
            "model_instance_kind": "CPU"}
    mspec = importlib.util.spec_from_file_location(f"model_{name}", model_py)
    module = importlib.util.module_from_spec(mspec)
    mspec.loader.exec_module(module)
    model = module.TritonPythonModel()
    model.initialize(args)
    requests = helpers.sample_requests(name)
    responses = model.execute(requests)
    assert len(responses) == len(requests)
    ran[name] = [r.has_error() for r in responses]
dspec = importlib.util.spec_from_file_location("dali_model", repo / "preprocess" / "1" / "dali.py")
dali = importlib.util.module_from_spec(dspec)
dspec.loader.exec_module(dali)
print(json.dumps({"models": ran, "dali": "loaded" if callable(dali.pipeline) else "?"}))
'''
RUN_MODELS = "from pathlib import Path\n" + RUN_MODELS


# ------------------------------------------------------------------------------------------ 3. ONNX files


def test_3_onnx_models_are_real_files_that_survive_a_move(gpu_setup, tmp_path):
    """No symlink (an absolute one dangles in the container, where the checkout is /workspace): hard links or
    copies, so the repository can be moved or mounted anywhere."""
    settings, clip, yolo = gpu_setup["settings"], gpu_setup["clip"], gpu_setup["yolo"]
    sources = {"clip_image": settings.clip_dir / clip.image_file, "clip_text": settings.clip_dir / clip.text_file,
               "yolo": settings.yolo_dir / yolo.file}
    for name, source in sources.items():
        placed = gpu_setup["gpu"] / name / "1" / "model.onnx"
        assert placed.is_file() and not placed.is_symlink(), placed
        assert placed.read_bytes() == source.read_bytes()
    assert not [p for p in gpu_setup["gpu"].rglob("*") if p.is_symlink()]
    moved = shutil.copytree(gpu_setup["gpu"], tmp_path / "elsewhere", symlinks=True)
    assert (moved / "yolo" / "1" / "model.onnx").read_bytes() == sources["yolo"].read_bytes()


# ------------------------------------------------------------------------------------------ 4. PYTHONPATH


def test_4_pythonpath_keeps_the_dali_wheel(compose, gpu_setup, tmp_path):
    """The compose command, interpolated as compose does and run by bash with a stand-in tritonserver, appends
    /workspace to the image's PYTHONPATH (which holds DALI's wheel) instead of replacing it: the rendered
    preprocess is the definition the server's DALI autoserializes, which imports both."""
    version = gpu_setup["gpu"] / "preprocess" / "1"
    assert (version / "dali.py").is_file() and not (version / "model.dali").exists()
    definition = (version / "dali.py").read_text()
    assert "from nvidia.dali.plugin.triton import autoserialize" in definition  # the image's DALI wheel
    assert "from preprocess.graph import" in definition  # this checkout, at /workspace
    assert f"batch_size={gpu_setup['settings'].triton.max_batch_size}" in definition
    triton = compose["services"]["triton"]
    assert "PYTHONPATH" not in (triton.get("environment") or {})
    command = [interpolate(part) for part in triton["command"]]
    assert command[:2] == ["bash", "-c"]
    fake = tmp_path / "bin" / "tritonserver"
    fake.parent.mkdir()
    fake.write_text('#!/bin/sh\necho "PYTHONPATH=$PYTHONPATH"\necho "ARGS=$*"\n')
    fake.chmod(0o755)
    for image_path, expected in ((DALI_WHEEL, f"{DALI_WHEEL}:/workspace"), (None, "/workspace")):
        env = {"PATH": f"{fake.parent}:{os.environ['PATH']}"}
        if image_path:
            env["PYTHONPATH"] = image_path
        out = subprocess.run(command, env=env, capture_output=True, text=True, timeout=30, check=True).stdout
        assert f"PYTHONPATH={expected}\n" in out, out
        assert "--model-repository=/workspace/.cache/triton_repo_gpu" in out


# ------------------------------------------------------------------------------------------ 5. DALI outputs


def test_5_every_dali_consumer_requests_all_outputs(gpu_setup):
    repo = gpu_setup["gpu"]
    assert check_repository(repo) == []
    configs = load_repository(repo)
    assert configs["preprocess"].backend == "dali"
    outputs = {o.name for o in configs["preprocess"].output}
    consumers = [(name, step) for name, config in configs.items() if config.platform == "ensemble"
                 for step in config.ensemble_scheduling.step if step.model_name == "preprocess"]
    assert {name for name, _ in consumers} == {"analyze_image", "embed_image"}
    for name, step in consumers:
        assert set(step.output_map) == outputs, name


def test_5_check_catches_a_dali_step_asking_for_some_outputs(gpu_setup, tmp_path):
    repo = shutil.copytree(gpu_setup["gpu"], tmp_path / "broken")
    config = repo / "embed_image" / "config.pbtxt"
    config.write_text(re.sub(r'\s*output_map \{ key: "decoded_image" value: "unused_decoded_image" \}', "",
                             config.read_text()))
    problems = check_repository(repo)
    assert any("DALI" in p and "decoded_image" in p and p.startswith("embed_image") for p in problems), problems
    assert check_repository(gpu_setup["cpu"]) == []  # the cpu preprocess is a python model: no such rule


# ------------------------------------------------------------------------------------------ 6. BLS memory


class FakeTensor:
    """A python-backend tensor; `on_gpu` makes as_numpy() fail the way a GPU-resident tensor does."""

    def __init__(self, name: str, array, on_gpu: bool = False) -> None:
        self._name, self._array, self.on_gpu = name, np.asarray(array), on_gpu

    def name(self) -> str:
        return self._name

    def as_numpy(self):
        if self.on_gpu:
            raise RuntimeError("Tensor is stored in GPU and cannot be converted to NumPy")
        return self._array

    def is_cpu(self) -> bool:
        return not self.on_gpu

    def to_dlpack(self):
        import torch

        return torch.utils.dlpack.to_dlpack(torch.from_numpy(np.ascontiguousarray(self._array)))

    @staticmethod
    def from_dlpack(name, capsule):
        import torch

        return FakeTensor(name, torch.utils.dlpack.from_dlpack(capsule).numpy())


class FakeResponse:
    def __init__(self, output_tensors=None, error=None) -> None:
        self.output_tensors, self._error = output_tensors or [], error

    def has_error(self) -> bool:
        return self._error is not None

    def error(self):
        return self._error

    def outputs(self) -> dict:
        return {t.name(): t._array for t in self.output_tensors}


def fake_backend(embed, gpu_answers: str = "unless_cpu_asked") -> types.ModuleType:
    """A stand-in `triton_python_backend_utils`; `embed` plays clip_image. gpu_answers: where its BLS answers
    live: "unless_cpu_asked" (a GPU model honouring preferred_memory), "always" (one that does not), "never"."""
    module = types.ModuleType("triton_python_backend_utils")
    module.calls = []

    class TritonError(Exception):
        def message(self) -> str:
            return str(self)

    class PreferredMemory:
        def __init__(self, kind, device=0) -> None:
            self.kind, self.device = kind, device

    class InferenceRequest:
        def __init__(self, model_name, requested_output_names, inputs, **options) -> None:
            self.inputs, self.options = inputs, options

        def exec(self):
            module.calls.append({"rows": len(self.inputs[0]._array), **self.options})
            asked_cpu = getattr(self.options.get("preferred_memory"), "kind", None) == module.TRITONSERVER_MEMORY_CPU
            on_gpu = gpu_answers == "always" or (gpu_answers == "unless_cpu_asked" and not asked_cpu)
            return FakeResponse([FakeTensor("embedding", embed(self.inputs[0]._array), on_gpu=on_gpu)])

    module.Tensor, module.InferenceResponse, module.InferenceRequest = FakeTensor, FakeResponse, InferenceRequest
    module.TritonError, module.PreferredMemory, module.TritonModelException = TritonError, PreferredMemory, RuntimeError
    module.TRITONSERVER_MEMORY_CPU = 1
    module.get_input_tensor_by_name = lambda request, name: request[name]
    module.get_output_tensor_by_name = lambda response, name: {t.name(): t for t in response.output_tensors}[name]
    return module


def fake_embed(crops: np.ndarray) -> np.ndarray:
    """A deterministic function of each crop (so every object gets its own, comparable vector)."""
    flat = crops.reshape(len(crops), -1).astype(np.float32)
    return np.concatenate([flat[:, :8], flat.mean(1, keepdims=True).repeat(504, 1)], axis=1)


def box_request(seed: int, images: int = 1, objects: int = 5, on_gpu: bool = False, hw=(120, 160)) -> dict:
    rng = np.random.default_rng(seed)
    detections = np.zeros((images, 100, 6), dtype=np.float32)
    for b in range(images):
        for i in range(objects + b):  # images of one request differ in their object counts
            x1, y1 = rng.uniform(0, 500), rng.uniform(80, 400)
            detections[b, i] = [x1, y1, x1 + rng.uniform(5, 100), y1 + rng.uniform(5, 100), rng.uniform(0.3, 1), i % 3]
    h, w = hw
    tensors = {"detections": detections, "image_size": np.array([[h, w]] * images, dtype=np.int32),
               "letterbox": np.array([[4.0, 0.0, 80.0]] * images, dtype=np.float32),
               "decoded_image": rng.integers(0, 255, (images, h, w, 3), dtype=np.uint8)}
    return {name: FakeTensor(name, array, on_gpu=on_gpu) for name, array in tensors.items()}


def sample_requests(model: str) -> list:
    """Requests the import test sends each python model of the gpu repository."""
    if model == "box_embedding":
        return [box_request(0)]
    if model == "tokenizer":
        return [{"text": FakeTensor("text", np.array([[b"a photo of a cat"]], dtype=object))}]
    if model == "validate_image":
        from tests import image_kinds

        return [{"encoded_image": FakeTensor("encoded_image", np.frombuffer(make(), np.uint8)[None])}
                for make in (image_kinds.jpeg_rgb, image_kinds.gif_palette)]
    raise KeyError(model)


def load_python_model(repo: Path, name: str, backend: types.ModuleType, monkeypatch, kind: str = "CPU"):
    from tritonclient.grpc import model_config_pb2 as mc

    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", backend)
    spec = importlib.util.spec_from_file_location(f"test_model_{name}", repo / name / "1" / "model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = load_repository(repo)[name]
    assert isinstance(config, mc.ModelConfig)
    model = module.TritonPythonModel()
    model.initialize({"model_config": json.dumps(json_format.MessageToDict(config, preserving_proto_field_name=True)),
                      "model_instance_kind": kind})
    return model


@pytest.mark.parametrize("gpu_answers", ["unless_cpu_asked", "always"])
def test_6_box_embedding_reads_bls_results_and_inputs_held_in_gpu_memory(gpu_setup, monkeypatch, gpu_answers):
    """gpu config: clip_image's embeddings are asked for in CPU memory; if they (or the inputs, which the gpu
    config leaves on the GPU) still live in GPU memory, they are read through DLPack, not as_numpy()."""
    backend = fake_backend(fake_embed, gpu_answers)
    model = load_python_model(gpu_setup["gpu"], "box_embedding", backend, monkeypatch)
    cpu_model = load_python_model(gpu_setup["cpu"], "box_embedding", fake_backend(fake_embed, "never"), monkeypatch)
    got = model.execute([box_request(1, on_gpu=True)])[0]
    want = cpu_model.execute([box_request(1)])[0]
    assert not got.has_error(), got.error()
    assert all(call["preferred_memory"].kind == backend.TRITONSERVER_MEMORY_CPU for call in backend.calls)
    for name, array in want.outputs().items():
        np.testing.assert_array_equal(got.outputs()[name], array, err_msg=name)
    params = {k: v.string_value for k, v in load_repository(gpu_setup["gpu"])["box_embedding"].parameters.items()}
    assert params["FORCE_CPU_ONLY_INPUT_TENSORS"] == "no" and params["bls_output_memory"] == "cpu"


def test_box_embedding_answers_every_image_of_a_request(gpu_setup, monkeypatch):
    """A request carrying 3 images (what bench.gpu sends) gets [3, N_max, ...]; each image's rows equal that
    image sent alone, the rest is padding (class_id -1, score 0). The cpu config (same model file) likewise."""
    for profile in ("gpu", "cpu"):
        model = load_python_model(gpu_setup[profile], "box_embedding", fake_backend(fake_embed, "never"), monkeypatch)
        multi = model.execute([box_request(2, images=3)])[0].outputs()
        assert multi["object_embeddings"].shape == (3, 7, 512) and multi["class_ids"].shape == (3, 7)
        full = box_request(2, images=3)
        for b in range(3):
            alone = {name: FakeTensor(name, t._array[b : b + 1]) for name, t in full.items()}
            single = model.execute([alone])[0].outputs()
            n = single["boxes"].shape[1]
            assert n == 5 + b
            for name, array in single.items():
                np.testing.assert_array_equal(multi[name][b, :n], array[0], err_msg=f"{profile} {name} image {b}")
            assert (multi["class_ids"][b, n:] == -1).all() and (multi["scores"][b, n:] == 0).all()


def test_box_embedding_gpu_config_embeds_all_requests_of_a_batch_together(gpu_setup, monkeypatch):
    backend = fake_backend(fake_embed, "never")
    model = load_python_model(gpu_setup["gpu"], "box_embedding", backend, monkeypatch)
    requests = [box_request(10 + i, objects=3) for i in range(4)]
    merged = model.execute(requests)
    assert [call["rows"] for call in backend.calls] == [12]  # 4 x 3 crops, one clip_image call (max batch 16)
    cpu_model = load_python_model(gpu_setup["cpu"], "box_embedding", fake_backend(fake_embed, "never"), monkeypatch)
    for got, want in zip(merged, cpu_model.execute(requests), strict=True):
        for name, array in want.outputs().items():
            np.testing.assert_array_equal(got.outputs()[name], array, err_msg=name)
    broken = box_request(20)
    del broken["letterbox"]
    answers = model.execute([box_request(21), broken, box_request(22)])
    assert [a.has_error() for a in answers] == [False, True, False]


# ------------------------------------------------------------------------------------------ 7. TensorRT


class FakeTrt(types.SimpleNamespace):
    """Records what export.tensorrt asks of TensorRT (a stand-in for the `tensorrt` module)."""


def fake_trt(version: str, has_fp16_flag: bool) -> FakeTrt:
    log: dict = {"flags": [], "shapes": []}
    builder_flags = types.SimpleNamespace(**({"FP16": "FP16"} if has_fp16_flag else {}))

    class Network:
        pass

    class Parser:
        def __init__(self, network, logger) -> None:
            self.num_errors = 0

        def parse_from_file(self, path) -> bool:
            import onnx

            log["parsed"] = onnx.load(path)
            return True

    class Config:
        def set_flag(self, flag) -> None:
            log["flags"].append(flag)

        def add_optimization_profile(self, profile) -> None:
            pass

    class Profile:
        def set_shape(self, name, lo, opt, hi) -> None:
            log["shapes"].append((name, lo, opt, hi))

    class Builder:
        def __init__(self, logger) -> None:
            pass

        def create_network(self, flags) -> Network:
            log["network_flags"] = flags
            return Network()

        def create_builder_config(self) -> Config:
            return Config()

        def create_optimization_profile(self) -> Profile:
            return Profile()

        def build_serialized_network(self, network, config) -> bytes:
            return b"plan"

    class Logger:
        WARNING = 2

        def __init__(self, level) -> None:
            pass

    return FakeTrt(__version__=version, BuilderFlag=builder_flags, Builder=Builder, Logger=Logger,
                   OnnxParser=Parser, NetworkDefinitionCreationFlag=types.SimpleNamespace(STRONGLY_TYPED=1), log=log)


def tiny_onnx(path: Path) -> Path:
    """[B, 3, 8, 8] → conv → relu → global mean → L2 normalize: an embedding model in miniature."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    weight = numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w")
    nodes = [helper.make_node("Conv", ["clip_input", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("ReduceMean", ["r"], ["m"], axes=[2, 3], keepdims=0),
             helper.make_node("LpNormalization", ["m"], ["embedding"], axis=1, p=2)]
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("clip_input", TensorProto.FLOAT,
                                                                            ["batch", 3, 8, 8])],
                              [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", 4])],
                              [weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def test_7_no_trtexec_anywhere_in_the_gpu_check():
    source = (ROOT / "export" / "tensorrt.py").read_text()
    tree = ast.parse(source)
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    assert "subprocess" not in imported  # nothing is shelled out: the TensorRT Python API or ONNX Runtime
    strings = [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)]
    assert not [s for s in strings if "--fp16" in s or s.startswith("trtexec")]
    script = (ROOT / "triton_repo" / "gpu_check.sh").read_text().splitlines()
    assert not [line for line in script if "trtexec" in line and not line.lstrip().startswith("#")]


@pytest.mark.parametrize(("version", "has_flag", "mode"), [("10.13.3", True, "builder_flag"),
                                                            ("11.0.0", False, "strongly_typed"),
                                                            ("11.1.0", True, "strongly_typed")])
def test_7_fp16_follows_the_tensorrt_version(version, has_flag, mode, gpu_setup, tmp_path):
    """TensorRT <= 10: BuilderFlag.FP16. TensorRT >= 11 (no FP16 flag, no weak typing): a strongly typed network
    parsed from an FP16 copy of the ONNX whose inputs/outputs stay FP32. Either way, the served profile."""
    import onnx

    from export.tensorrt import Target, build_tensorrt, fp16_mode

    trt = fake_trt(version, has_flag)
    assert fp16_mode(trt) == mode
    profile = trt_profiles(gpu_setup["settings"], gpu_setup["clip"], gpu_setup["yolo"])["clip_image"]
    target = Target("clip_image", tiny_onnx(tmp_path / "tiny.onnx"), profile, "embedding")
    assert build_tensorrt(target, trt) == b"plan"
    assert trt.log["shapes"] == [("clip_input", (1, 3, 256, 256), (profile.opt_batch, 3, 256, 256),
                                  (profile.max_batch, 3, 256, 256))]
    parsed = trt.log["parsed"].graph
    io_types = {v.type.tensor_type.elem_type for v in [*parsed.input, *parsed.output]}
    assert io_types == {onnx.TensorProto.FLOAT}
    if mode == "builder_flag":
        assert trt.log["flags"] == ["FP16"] and trt.log["network_flags"] == 0
        assert {i.data_type for i in parsed.initializer} == {onnx.TensorProto.FLOAT}
    else:
        assert trt.log["flags"] == [] and trt.log["network_flags"] == 1 << 1
        assert {i.data_type for i in parsed.initializer} == {onnx.TensorProto.FLOAT16}


def test_7_fp16_copy_still_computes_the_model(tmp_path):
    import onnxruntime as ort

    from export.tensorrt import fp16_onnx

    source = tiny_onnx(tmp_path / "tiny.onnx")
    half = fp16_onnx(source, tmp_path / "half.onnx")
    x = np.random.default_rng(1).standard_normal((2, 3, 8, 8)).astype(np.float32)
    want = ort.InferenceSession(str(source), providers=["CPUExecutionProvider"]).run(None, {"clip_input": x})[0]
    got = ort.InferenceSession(str(half), providers=["CPUExecutionProvider"]).run(None, {"clip_input": x})[0]
    assert got.dtype == np.float32
    assert (got * want).sum(-1).min() > 0.999  # unit vectors: cosine


def test_7_ort_check_uses_the_served_options(gpu_setup, tmp_path):
    from export.tensorrt import ort_provider_options

    profile = trt_profiles(gpu_setup["settings"], gpu_setup["clip"], gpu_setup["yolo"])["yolo"]
    served = tensorrt_options("yolo", profile)
    options = ort_provider_options(served, tmp_path)
    assert options["trt_fp16_enable"] == "True" and options["trt_engine_cache_path"] == str(tmp_path)
    for kind in ("min", "opt", "max"):
        assert options[f"trt_profile_{kind}_shapes"] == served[f"trt_profile_{kind}_shapes"]


# ------------------------------------------------------------------------------------------ 8. parity test


def test_8_gpu_parity_test_prefetches_one_batch():
    """The GPU DALI parity test feeds one batch per run(): every pipeline it builds has prefetch depth 1."""
    tree = ast.parse((ROOT / "tests" / "parity" / "test_dali_parity.py").read_text())
    (function,) = [n for n in ast.walk(tree)
                   if isinstance(n, ast.FunctionDef) and n.name == "test_gpu_pipeline_matches_cpu"]
    calls = [n for n in ast.walk(function) if isinstance(n, ast.Call)]

    def called(call: ast.Call) -> str:
        return ast.unparse(call.func)

    builders = [c for c in calls if called(c) == "Pipeline.deserialize" or called(c).startswith("pipeline_definition(")
                or called(c) in ("build_pipeline", "serialize_gpu")]
    assert not [c for c in builders if called(c) == "build_pipeline"]  # takes no prefetch depth
    pipelines = [c for c in builders if called(c) != "serialize_gpu"]
    assert len(pipelines) == 2
    for call in pipelines:
        depth = {k.arg: ast.unparse(k.value) for k in call.keywords}.get("prefetch_queue_depth")
        assert depth == "1", ast.unparse(call)


# ------------------------------------------------------------------------------------------ the risks


def test_tensorrt_engines_have_profiles_a_cache_and_a_warmup(gpu_setup, compose, tmp_path):
    """Built at load for batch 1..max (not on the first request), cached in a volume; the check rule holds it."""
    configs = load_repository(gpu_setup["gpu"])
    max_batch = gpu_setup["settings"].triton.max_batch_size
    for name in ("clip_image", "clip_text", "yolo"):
        config = configs[name]
        assert config.platform == "onnxruntime_onnx"
        (accelerator,) = config.optimization.execution_accelerators.gpu_execution_accelerator
        params = dict(accelerator.parameters)
        assert params["precision_mode"] == "FP16"
        assert params["trt_engine_cache_path"] == f"{DEFAULT_TRT_CACHE}/{name}"
        assert params["trt_profile_min_shapes"].split(":")[1].startswith("1x")
        assert params["trt_profile_max_shapes"].split(":")[1].startswith(f"{max_batch}x")
        assert sorted(w.batch_size for w in config.model_warmup) == [1, max_batch]
    volumes = compose["services"]["triton"]["volumes"]
    assert any(v.split(":")[1] == DEFAULT_TRT_CACHE for v in volumes if isinstance(v, str) and ":" in v)
    repo = shutil.copytree(gpu_setup["gpu"], tmp_path / "no_profile")
    config = repo / "clip_text" / "config.pbtxt"
    config.write_text(re.sub(r'\s*parameters \{ key: "trt_profile_max_shapes"[^}]*\}', "", config.read_text()))
    assert any("clip_text" in p and "max shape profile" in p for p in check_repository(repo))


def test_gpu_ensembles_validate_each_image_before_the_dali_decoder(gpu_setup):
    configs = load_repository(gpu_setup["gpu"])
    assert configs["validate_image"].backend == "python"
    assert configs["validate_image"].instance_group[0].kind == configs["validate_image"].instance_group[0].KIND_CPU
    for name in ("analyze_image", "embed_image"):
        steps = {s.model_name: s for s in configs[name].ensemble_scheduling.step}
        assert steps["validate_image"].input_map["encoded_image"] == "encoded_image"
        assert steps["preprocess"].input_map["encoded_image"] == steps["validate_image"].output_map["validated_image"]


def test_validate_image_gives_the_cpu_verdicts_and_the_same_pixels():
    """Every bad kind is refused with the code the cpu preprocess gives it; every good kind is admitted as bytes
    that the (same-definition) DALI pipeline turns into exactly what the original bytes give on the cpu profile."""
    from preprocess.graph import OUTPUT_NAMES
    from preprocess.runtime import DaliPreprocessor
    from preprocess.validate import ImageGate, PreprocessError
    from tests import image_kinds

    gate = ImageGate(max_pixels=40_000_000)
    for name, (make, code) in image_kinds.BAD_KINDS.items():
        verdict = gate.admit(make())
        assert isinstance(verdict, PreprocessError) and verdict.code == code, (name, verdict)
    pre = DaliPreprocessor(256, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), "bilinear", max_pixels=40_000_000, batch_size=8,
                           num_threads=1)
    originals = [make() for make in image_kinds.GOOD_KINDS.values()]
    admitted = [gate.admit(data) for data in originals]
    assert all(isinstance(a, bytes) for a in admitted)
    for name, data, gated in zip(image_kinds.GOOD_KINDS, originals, admitted, strict=True):
        if data[:3] == b"\xff\xd8\xff":
            assert gated == data, name  # JPEG goes to nvJPEG untouched
    for name, want, got in zip(image_kinds.GOOD_KINDS, pre.run(originals), pre.run(admitted), strict=True):
        for output in OUTPUT_NAMES:
            np.testing.assert_array_equal(getattr(got, output), getattr(want, output), err_msg=f"{name} {output}")


def test_validate_image_model_fails_only_the_bad_request(gpu_setup, monkeypatch):
    from common.contract import IMAGE_ERROR_CODES
    from tests import image_kinds

    model = load_python_model(gpu_setup["gpu"], "validate_image", fake_backend(fake_embed), monkeypatch)
    good, bad = image_kinds.jpeg_rgb(), image_kinds.truncated_jpeg()
    requests = [{"encoded_image": FakeTensor("encoded_image", np.frombuffer(data, np.uint8)[None])}
                for data in (good, bad, good)]
    answers = model.execute(requests)
    assert [a.has_error() for a in answers] == [False, True, False]
    assert str(answers[1].error()).split(":")[0] in IMAGE_ERROR_CODES
    np.testing.assert_array_equal(answers[0].outputs()["validated_image"], np.frombuffer(good, np.uint8)[None])
    two = np.zeros((2, len(good) + 10), dtype=np.uint8)  # one request, two images, zero-padded rows
    two[0, : len(good)] = np.frombuffer(good, np.uint8)
    two[1, : len(good)] = np.frombuffer(good, np.uint8)
    (answer,) = model.execute([{"encoded_image": FakeTensor("encoded_image", two)}])
    assert answer.outputs()["validated_image"].shape[0] == 2


def test_cpu_repository_has_no_gpu_parts(gpu_setup):
    configs = load_repository(gpu_setup["cpu"])
    assert "validate_image" not in configs
    for name, config in configs.items():
        assert not config.model_warmup and not config.optimization.execution_accelerators.gpu_execution_accelerator
        assert "FORCE_CPU_ONLY_INPUT_TENSORS" not in config.parameters, name
    steps = {s.model_name: s for s in configs["embed_image"].ensemble_scheduling.step}
    assert dict(steps["preprocess"].output_map) == {"clip_input": "clip_input"}


def test_gpu_render_refuses_a_yolo_export_smaller_than_the_batch(gpu_setup, tmp_path):
    settings = gpu_setup["settings"]
    small = gpu_setup["yolo"].model_copy(update={"max_batch": settings.triton.max_batch_size - 1})
    from triton_repo.render import render_configs

    with pytest.raises(ValueError, match="re-export"):
        render_configs(settings, gpu_setup["clip"], small, "gpu")
    assert render_configs(settings, gpu_setup["clip"], small, "cpu")  # the cpu runner splits batches itself


# ------------------------------------------------------------------------------------------ device check


def test_gpu_device_check_dry_run_prints_one_json_line():
    """The device script runs end to end on the CPU at tiny sizes (its YOLO11 fallback included) and prints
    exactly one JSON line on stdout."""
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu_device_check.py"), "--dry-run", "--yolo", "reimpl",
                           "--budget-s", "300"], capture_output=True, text=True, timeout=400, cwd=ROOT)
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 1, done.stdout + done.stderr[-2000:]
    result = json.loads(lines[0])
    assert done.returncode == 0 and result["ok"], result.get("errors") or done.stderr[-2000:]
    assert "re-implementation of the yolo11n graph" in result["used"]["detector"]
    for stage in ("decode", "image_encoder", "detector_with_nms", "crops_objects_per_s", "end_to_end"):
        assert set(result["throughput_images_per_s"][stage]) == {"1", "2"}, stage
    assert set(result["parity"]) == {"decode_vs_cpu_libjpeg", "image_encoder_vs_cpu_fp32", "detector_vs_cpu_fp32",
                                     "crops_vs_cpu"}
    assert result["latency_ms"]["end_to_end_single_image"]["n"] >= 1


def test_gpu_device_check_without_cuda_says_so_in_json():
    pytest.importorskip("torch")
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    done = subprocess.run([sys.executable, "-m", "bench.gpu_device_check"], capture_output=True, text=True,
                          timeout=300, cwd=ROOT)
    (line,) = done.stdout.strip().splitlines()
    result = json.loads(line)
    assert done.returncode == 2 and "no CUDA device" in result["error"] and result["ok"] is False


def test_yolo11_reimplementation_is_ultralytics_graph():
    """The device check's fallback detector is ultralytics' YOLO11 layer for layer: with ultralytics' weights
    copied in, the outputs are equal."""
    torch = pytest.importorskip("torch")
    try:
        from export.ultralytics_offline import load_yolo_class

        YOLO = load_yolo_class()
    except Exception as exc:  # pragma: no cover - ultralytics is an export extra
        pytest.skip(f"ultralytics not usable here: {exc}")
    from bench.gpu_device_check import build_yolo11

    reference = YOLO("yolo11n.yaml").model.eval()
    mine = build_yolo11("n", torch).eval()
    theirs = [(k, v) for k, v in reference.state_dict().items() if ".dfl." not in k]
    ours = list(mine.state_dict().items())
    assert [v.shape for _, v in theirs] == [v.shape for _, v in ours]
    mine.load_state_dict({k: v for (k, _), (_, v) in zip(ours, theirs, strict=True)})
    x = torch.rand(1, 3, 320, 320, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(mine(x), reference(x)[0], rtol=1e-4, atol=1e-3)
