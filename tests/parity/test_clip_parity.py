"""Parity: the exported ONNX encoders compute what open_clip's PyTorch computes (docs/design.md#how-we-test).

Runs for the default S2 (through `ensure_clip`, so the repo cache is filled and reused) and for S3, the
cheapest 768-d variant (exported into a temporary folder). Offline both carry seeded random weights, so
the PyTorch reference is rebuilt bit-identically in this process. `pytest -s` prints the figures.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
import open_clip
import pytest
import torch
from PIL import Image, ImageDraw
from torch import nn

from common.config import load_config
from common.model_facts import ClipFacts
from export.mobileclip import ensure_clip, export_clip, load_clip

MAX_ABS = 1e-4
MIN_COS = 0.9999
NORM_TOL = 1e-3
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
DESIGN = {  # docs/design.md#facts: variant → (embedding dim, image size, mean, std)
    "MobileCLIP2-S2": (512, 256, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)),
    "MobileCLIP2-S3": (768, 256, OPENAI_MEAN, OPENAI_STD),
}
CAPTIONS = [
    "a photo of a dog", "a red circle on a blue background", "two green triangles", "a yellow square",
    "", "an extremely long caption " * 12, "ÉTÉ à Paris: café & croissants!", "12345 67890",
]
FIGURES: list[str] = []


@dataclass
class Exported:
    facts: ClipFacts
    directory: Path
    model: nn.Module  # reparameterized, as load_clip gives it to the exporter
    weights: str | None
    image: ort.InferenceSession
    text: ort.InferenceSession


@pytest.fixture(scope="session", autouse=True)
def _print_figures() -> Iterator[None]:
    yield
    if FIGURES:
        print("\n=== CLIP parity figures ===\n" + "\n".join(FIGURES))


def _session(path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


@pytest.fixture(scope="session", params=list(DESIGN))
def exported(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Exported]:
    variant: str = request.param
    start = time.perf_counter()
    if variant == "MobileCLIP2-S2":
        settings = load_config()
        if settings.models.clip_variant != variant:
            models = settings.models.model_copy(update={"clip_variant": variant, "clip_weights": None})
            settings = settings.model_copy(update={"models": models})
        weights, directory = settings.models.clip_weights, settings.clip_dir
        facts = ensure_clip(settings)
    else:
        weights, directory = None, tmp_path_factory.mktemp(variant.lower())
        facts = export_clip(variant, weights, directory)
    FIGURES.append(f"{variant}: export {facts.export_seconds} s (as recorded in metadata; this session's "
                   f"ensure/export call {time.perf_counter() - start:.1f} s), weights {facts.weights}")
    model, _ = load_clip(variant, weights)
    yield Exported(facts, directory, model, weights,
                   _session(directory / facts.image_file), _session(directory / facts.text_file))


def _images(n: int, facts: ClipFacts) -> torch.Tensor:
    """Programmatic photos of shapes on gradients, of varied sizes and aspect ratios, preprocessed the
    variant's way (facts' mean/std, not the transform open_clip returns for random weights)."""
    preprocess = open_clip.image_transform(
        facts.image_size, is_train=False, mean=facts.mean, std=facts.std,
        interpolation=facts.interpolation, resize_mode=facts.resize_mode)
    rng = np.random.default_rng(7)
    sizes = [(640, 480), (480, 640), (300, 300), (1024, 256), (257, 513), (64, 48), (800, 600), (256, 256)]
    tensors = []
    for i in range(n):
        w, h = sizes[i % len(sizes)]
        ramp = np.linspace(0, 255, w, dtype=np.float32)[None, :, None] * rng.uniform(0.2, 1, 3)
        base = np.broadcast_to(ramp, (h, w, 3)) + rng.normal(0, 12, (h, w, 3))
        image = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8))
        draw = ImageDraw.Draw(image)
        for _ in range(4):
            x0, y0 = int(rng.integers(0, w - 1)), int(rng.integers(0, h - 1))
            box = (x0, y0, x0 + int(rng.integers(1, w)), y0 + int(rng.integers(1, h)))
            colour = tuple(int(c) for c in rng.integers(0, 256, 3))
            (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=colour)
        tensors.append(preprocess(image))
    return torch.stack(tensors)


def _compare(got: np.ndarray, want: np.ndarray, label: str) -> None:
    cos = (got * want).sum(-1) / (np.linalg.norm(got, axis=-1) * np.linalg.norm(want, axis=-1))
    diff, norms = float(np.abs(got - want).max()), np.linalg.norm(got, axis=-1)
    FIGURES.append(f"  {label}: max|Δ| {diff:.2e}, min cos {cos.min():.8f}, "
                   f"ONNX norms {norms.min():.6f}..{norms.max():.6f}")
    print(FIGURES[-1])
    assert diff <= MAX_ABS, f"{label}: max abs diff {diff:.2e}"
    assert cos.min() >= MIN_COS, f"{label}: min cosine {cos.min():.8f}"
    assert np.all(np.abs(norms - 1) <= NORM_TOL), f"{label}: not L2-normalized: {norms}"


def _input_sensitive(embeddings: np.ndarray, label: str) -> None:
    """Different inputs must embed differently, or the parity above proves nothing (a collapsed random
    network maps every image to one vector; see export.mobileclip._calibrate_batchnorm)."""
    cos = embeddings @ embeddings.T
    off = cos[~np.eye(len(cos), dtype=bool)]
    FIGURES.append(f"  {label}: pairwise cos between different inputs {off.min():.4f}..{off.max():.4f}")
    print(FIGURES[-1])
    assert off.max() < 0.999, f"{label}: embeddings barely depend on the input"


def test_facts_match_design(exported: Exported) -> None:
    facts = exported.facts
    dim, size, mean, std = DESIGN[facts.variant]
    assert (facts.embedding_dim, facts.image_size) == (dim, size)
    assert facts.mean == pytest.approx(mean) and facts.std == pytest.approx(std)
    assert facts.opset >= 17 and facts.context_length == 77
    inputs = {exported.image.get_inputs()[0].name: exported.image.get_inputs()[0].shape,
              exported.text.get_inputs()[0].name: exported.text.get_inputs()[0].shape}
    assert inputs == {"clip_input": ["batch", 3, size, size], "tokens": ["batch", 77]}
    assert [o.name for o in exported.image.get_outputs() + exported.text.get_outputs()] == ["embedding"] * 2


@pytest.mark.parametrize("batch", [1, 8])
@pytest.mark.parametrize("kind", ["random", "images"])
def test_image_encoder_parity(exported: Exported, kind: str, batch: int) -> None:
    size = exported.facts.image_size
    if kind == "random":
        x = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(batch))
    else:
        x = _images(batch, exported.facts)
    got = exported.image.run(None, {"clip_input": x.numpy()})[0]
    with torch.no_grad():
        want = exported.model.encode_image(x, normalize=True).numpy()
    assert got.shape == (batch, exported.facts.embedding_dim)
    _compare(got, want, f"{exported.facts.variant} image {kind} b={batch}")
    if batch > 1:
        _input_sensitive(got, f"{exported.facts.variant} image {kind} b={batch}")


@pytest.mark.parametrize("batch", [1, 8])
@pytest.mark.parametrize("kind", ["random", "captions"])
def test_text_encoder_parity(exported: Exported, kind: str, batch: int) -> None:
    facts = exported.facts
    if kind == "random":
        gen = torch.Generator().manual_seed(batch)
        tokens = torch.randint(0, facts.vocab_size, (batch, facts.context_length), generator=gen)
    else:
        tokens = open_clip.get_tokenizer(facts.variant)(CAPTIONS[:batch])
    got = exported.text.run(None, {"tokens": tokens.numpy().astype(np.int64)})[0]
    with torch.no_grad():
        want = exported.model.encode_text(tokens, normalize=True).numpy()
    assert got.shape == (batch, facts.embedding_dim)
    _compare(got, want, f"{facts.variant} text {kind} b={batch}")
    if batch > 1:
        _input_sensitive(got, f"{facts.variant} text {kind} b={batch}")


def test_reparameterization_is_exact(exported: Exported) -> None:
    """Reparameterized (what is exported) vs the plain eval-mode model, same weights. With random init the
    BatchNorm running stats are the defaults; the fusion is still exact in eval mode."""
    raw, _ = load_clip(exported.facts.variant, exported.weights, reparameterize=False)
    size = exported.facts.image_size
    x = torch.cat([_images(4, exported.facts), torch.randn(4, 3, size, size)])
    tokens = open_clip.get_tokenizer(exported.facts.variant)(CAPTIONS)
    with torch.no_grad():
        for label, a, b in (
            ("image", exported.model.encode_image(x, normalize=True), raw.encode_image(x, normalize=True)),
            ("text", exported.model.encode_text(tokens, normalize=True), raw.encode_text(tokens, normalize=True)),
        ):
            diff = float((a - b).abs().max())
            FIGURES.append(f"  {exported.facts.variant} reparameterized vs plain {label} b=8: max|Δ| {diff:.2e}")
            print(FIGURES[-1])
            assert diff <= MAX_ABS

