"""CLIP image and text encoders → ONNX, with the facts everything downstream reads (docs/design.md#model-facts-as-data).

Two kinds of model go through here: MobileCLIP2 (open_clip's registry; real weights from a checkpoint or the hub,
random init offline) and the bundled shapes CLIP trained here (`export/shapes/shapes_clip`, an open_clip local
folder holding its own config), the offline default.

The towers are open_clip's own: we only wrap `encode_image` / `encode_text(normalize=True)` so the graph
computes exactly what open_clip computes (S0/S2 text towers have no causal mask; re-implementing them is
how that gets lost). Facts come from open_clip's registry, never from a hand-typed table, and never from
the transform `pretrained=None` returns (it falls back to OpenAI mean/std, which is wrong for S0/S2/B).

    python -m export.mobileclip [--variant V] [--weights PATH|TAG|hf-hub:ID|none] [--out DIR] [--force]
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import logging
import shutil
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import numpy as np
import open_clip
import torch
from open_clip.transform import PreprocessCfg, merge_preprocess_dict
from rich.console import Console
from timm.utils.model import reparameterize_model
from torch import nn

from common.config import BUNDLED_CLIP, Settings, load_config
from common.model_facts import METADATA_FILE, OWN_CONFIG, ClipFacts, MissingArtifactError
from export.shapes import CLIP_DIR

log = logging.getLogger(__name__)
console = Console(stderr=True)

OPSET = 17
RANDOM_SEED = 0  # offline random init is seeded so an export can be re-checked against a rebuilt model
RANDOM_SOURCE = f"random-init (offline, seed {RANDOM_SEED}, BatchNorm calibrated)"
SELF_CHECK_TOLERANCE = 1e-3  # export refuses to finish above this; the parity tests hold it to 1e-4


def clip_variants() -> list[str]:
    """The bundled CLIP and every MobileCLIP2 architecture the installed open_clip knows (the CLI's choices)."""
    return [BUNDLED_CLIP, *(name for name in open_clip.list_models() if name.startswith("MobileCLIP2-"))]


def open_clip_name(variant: str) -> str:
    """What open_clip builds the variant by here: the bundled CLIP is a folder of the checkout with its own config."""
    return f"local-dir:{CLIP_DIR}" if variant == BUNDLED_CLIP else variant


def recorded_open_clip_name(variant: str) -> str:
    """What the export's facts say the variant is tokenized by: the bundled CLIP by the config copied next to the
    export (OWN_CONFIG), never by a path of this checkout."""
    return OWN_CONFIG if variant == BUNDLED_CLIP else variant


def _bundled_config() -> dict[str, Any]:
    return dict(json.loads((CLIP_DIR / "open_clip_config.json").read_text()))


def _model_config(variant: str) -> dict[str, Any] | None:
    return _bundled_config()["model_cfg"] if variant == BUNDLED_CLIP else open_clip.get_model_config(variant)


def canonical_preprocess(variant: str) -> dict[str, Any]:
    """The preprocessing the variant was trained with: the bundled CLIP's own, or a MobileCLIP2's first registered
    pretrained tag's.

    Readable offline: open_clip keeps pretrained configs in its package. Merged over open_clip's own
    defaults exactly as `create_model` merges them when a tag (or a local folder) is loaded.
    """
    if variant == BUNDLED_CLIP:
        return merge_preprocess_dict(PreprocessCfg(), _bundled_config()["preprocess_cfg"])
    tags = open_clip.list_pretrained_tags_by_model(variant)
    if not tags:
        raise ValueError(f"{variant}: open_clip has no pretrained tag, so its preprocessing is unknown")
    return merge_preprocess_dict(PreprocessCfg(), open_clip.get_pretrained_cfg(variant, tags[0]))


def variant_facts(variant: str) -> dict[str, Any]:
    """Facts about a variant from open_clip's model config JSON + pretrained config, without building it."""
    cfg = _model_config(variant)
    if cfg is None:
        raise ValueError(f"unknown open_clip model {variant!r}; MobileCLIP2 variants: {clip_variants()}")
    pre = canonical_preprocess(variant)
    return {
        "variant": variant,
        "embedding_dim": int(cfg["embed_dim"]),
        "image_size": _square(cfg["vision_cfg"]["image_size"], variant),
        "context_length": int(cfg["text_cfg"]["context_length"]),
        "vocab_size": int(cfg["text_cfg"]["vocab_size"]),
        "mean": tuple(float(v) for v in pre["mean"]),
        "std": tuple(float(v) for v in pre["std"]),
        "interpolation": pre["interpolation"],
        "resize_mode": pre["resize_mode"],
    }


def _square(size: int | Sequence[int], what: str) -> int:
    if isinstance(size, int):
        return size
    if len(size) != 2 or size[0] != size[1]:
        raise ValueError(f"{what}: non-square image size {size} is not supported")
    return int(size[0])


def bundled_source() -> str:
    """The bundled weights, named by their content: retraining them makes every export stale."""
    weights = CLIP_DIR / "open_clip_model.safetensors"
    if not weights.is_file():
        raise MissingArtifactError(f"the bundled CLIP's weights are missing: {weights} "
                                   "(python -m export.shapes.train_clip trains them)")
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()[:12]
    return f"bundled:{CLIP_DIR.name}@{digest} (trained here from random init by export/shapes/train_clip.py)"


def weights_source(weights: str | None, variant: str = "") -> str:
    """How the metadata names the weights; computed without loading so `ensure_clip` can compare."""
    if weights is None:
        return bundled_source() if variant == BUNDLED_CLIP else RANDOM_SOURCE
    path = Path(weights).expanduser()
    if path.exists():
        return f"checkpoint:{path.resolve()}"
    return f"hub:{weights.removeprefix('hf-hub:')}"  # a pretrained tag or an hf-hub: id


def load_clip(variant: str, weights: str | None, reparameterize: bool = True) -> tuple[nn.Module, str]:
    """Builds the variant in eval mode, reparameterized, with its weights; returns (model, weights source).

    weights: None → random init (offline; seeded, BatchNorm stats calibrated); a local file → that
    checkpoint; a local folder → an open_clip `local-dir:` (config + weights, as downloaded from the hub);
    anything else → a pretrained tag or `hf-hub:` id, the path users run when online.
    `reparameterize=False` exists for the parity test.
    """
    source = weights_source(weights, variant)
    if variant == BUNDLED_CLIP and weights is None:
        log.info("%s: the bundled CLIP trained here on shapes scenes (%s)", variant, source)
        model = open_clip.create_model(open_clip_name(variant))
    elif variant == BUNDLED_CLIP and not Path(weights or "").expanduser().is_dir():
        raise ValueError(f"{variant} loads from an open_clip folder (config + weights), not {weights!r}")
    elif weights is None:
        log.warning(
            "NO WEIGHTS for %s: building the real architecture with RANDOM weights (seed %d). "
            "Its embeddings are MEANINGLESS; set models.clip_weights (checkpoint or hub id) for real search.",
            variant, RANDOM_SEED,
        )
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(RANDOM_SEED)
            model = open_clip.create_model(variant, pretrained=None)
        _calibrate_batchnorm(model, variant)
    elif source.startswith("checkpoint:") and Path(weights).expanduser().is_dir():
        model = open_clip.create_model(f"local-dir:{Path(weights).expanduser()}")
    elif source.startswith("checkpoint:"):
        model = open_clip.create_model(variant, pretrained=str(Path(weights).expanduser()))
    elif weights.startswith("hf-hub:"):
        model = open_clip.create_model(weights)
    else:
        model = open_clip.create_model(variant, pretrained=weights, require_pretrained=True)
    model.eval()
    if reparameterize:
        model = reparameterize_model(model, inplace=True)
    return model, source


# open_clip ships no type information, and nn.Module types whatever it does not declare (submodules, methods and
# plain attributes of open_clip's CLIP / CustomTextCLIP alike) as `Tensor | Module`: these say what they are.


def clip_visual(model: nn.Module) -> nn.Module:
    """The image tower, `model.visual`."""
    return cast(nn.Module, model.visual)


def _visual_image_size(model: nn.Module) -> tuple[int, ...]:
    """`model.visual.image_size` as a tuple (open_clip's towers keep it as (height, width))."""
    return tuple(cast(Iterable[int], clip_visual(model).image_size))


def encode_image(model: nn.Module, pixels: torch.Tensor, normalize: bool = False) -> torch.Tensor:
    """`model.encode_image(pixels, normalize=normalize)`."""
    return cast(Callable[..., torch.Tensor], model.encode_image)(pixels, normalize=normalize)


def encode_text(model: nn.Module, tokens: torch.Tensor, normalize: bool = False) -> torch.Tensor:
    """`model.encode_text(tokens, normalize=normalize)`."""
    return cast(Callable[..., torch.Tensor], model.encode_text)(tokens, normalize=normalize)


def _calibrate_batchnorm(model: nn.Module, variant: str) -> None:
    """Sets the image tower's BatchNorm running stats from one seeded batch; the weights stay random.

    With random weights and BatchNorm's default stats (mean 0, var 1) the signal shrinks stage by stage:
    measured on S2, every image embedded to nearly the same vector (pairwise cosine > 0.99999), which
    makes parity, per-object and ranking checks downstream vacuous. Statistics of what each layer really
    sees (momentum None = plain average over the batch) keep the output input-dependent. ViT towers
    without BatchNorm are left alone.
    """
    visual = clip_visual(model)
    norms = [m for m in visual.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    pre, size = canonical_preprocess(variant), _square(_visual_image_size(model), variant)
    mean, std = (torch.tensor(pre[k], dtype=torch.float32).view(1, 3, 1, 1) for k in ("mean", "std"))
    pixels = torch.rand(4, 3, size, size, generator=torch.Generator().manual_seed(RANDOM_SEED))
    momenta = [bn.momentum for bn in norms]
    model.eval()
    for bn in norms:
        bn.reset_running_stats()
        bn.momentum = None
        bn.train()  # only the norms: dropout / drop-path stay in eval mode
    with torch.no_grad():
        visual((pixels - mean) / std)
    for bn, momentum in zip(norms, momenta, strict=True):
        bn.momentum = momentum
    model.eval()


def clip_facts(model: nn.Module, variant: str, source: str) -> dict[str, Any]:
    """Facts read from the built model, checked against the variant's config so a misfit checkpoint fails.

    Preprocessing: weights that came with their own config (hub, tag, local folder) carry it on
    `model.visual.preprocess_cfg`; random init and bare checkpoint files use the variant's canonical one.
    """
    expected = variant_facts(variant)
    context_length = cast(int, model.context_length)
    with torch.no_grad():
        dim = encode_text(model, torch.zeros(1, context_length, dtype=torch.long)).shape[-1]
    facts = {
        "variant": variant,
        "embedding_dim": int(dim),
        "image_size": _square(_visual_image_size(model), variant),
        "context_length": int(context_length),
        "vocab_size": int(cast(int, model.vocab_size)),
    }
    misfit = {k: (v, expected[k]) for k, v in facts.items() if v != expected[k]}
    if misfit:
        raise ValueError(f"weights {source} do not fit {variant} (model, config): {misfit}")
    own_cfg = source.startswith(("hub:", "bundled:")) or (
        source.startswith("checkpoint:") and Path(source.removeprefix("checkpoint:")).is_dir())
    pre = cast(dict[str, Any], clip_visual(model).preprocess_cfg) if own_cfg else expected
    facts.update(
        mean=tuple(float(v) for v in pre["mean"]), std=tuple(float(v) for v in pre["std"]),
        interpolation=pre["interpolation"], resize_mode=pre["resize_mode"],
    )
    return facts


class ImageEncoder(nn.Module):
    """`encode_image(normalize=True)` as a whole graph: input `clip_input`, output `embedding`."""

    def __init__(self, clip: nn.Module) -> None:
        super().__init__()
        self.clip = clip

    def forward(self, clip_input: torch.Tensor) -> torch.Tensor:
        return encode_image(self.clip, clip_input, normalize=True)


class TextEncoder(nn.Module):
    """`encode_text(normalize=True)` as a whole graph: input `tokens`, output `embedding`."""

    def __init__(self, clip: nn.Module) -> None:
        super().__init__()
        self.clip = clip

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return encode_text(self.clip, tokens, normalize=True)


@contextmanager
def step(name: str) -> Iterator[None]:
    """One visible status line per export step, with its duration (a spinner while it runs on a tty)."""
    start = time.perf_counter()
    with console.status(f"{name} …"):
        yield
    console.print(f"  [green]✓[/] {name} ({time.perf_counter() - start:.1f} s)")


def _onnx_export(module: nn.Module, example: torch.Tensor, input_name: str, path: Path) -> None:
    """Legacy (TorchScript) exporter, as measured (docs/design.md#facts).

    Under no_grad, eval-mode nn.MultiheadAttention (the text towers) takes PyTorch's fused fast path,
    `aten::_native_multi_head_attention`, which has no ONNX symbolic: it is switched off meanwhile.
    """
    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    # the exporter works on a copy: measured on the bundled CLIP (a timm ResNet), exporting changed the module's own
    # outputs by 0.16 afterwards (the ONNX graph was right), which the self-check would then blame on the graph
    module = copy.deepcopy(module)
    try:
        with warnings.catch_warnings(), torch.no_grad():
            # known and harmless: the legacy exporter's deprecation notice, and aten::index's note about
            # negative indices (the text pooling gathers at argmax positions, never negative)
            warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export")
            warnings.filterwarnings("ignore", message=".*aten::index operator of advanced indexing")
            # and the tracer's notes on nn.MultiheadAttention's shape asserts (static per model, not per batch;
            # batch 1 and 8 parity proves the dynamic axis)
            warnings.filterwarnings("ignore", category=torch.jit.TracerWarning, module="torch.nn.functional")
            warnings.filterwarnings("ignore", category=DeprecationWarning, module="torch.onnx")
            torch.onnx.export(
                module, (example,), str(path), dynamo=False, opset_version=OPSET, do_constant_folding=True,
                input_names=[input_name], output_names=["embedding"],
                dynamic_axes={input_name: {0: "batch"}, "embedding": {0: "batch"}},
            )
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)


def _self_check(module: nn.Module, example: torch.Tensor, path: Path) -> float:
    """Max abs diff ONNX Runtime vs PyTorch on the example: a broken export must not get metadata."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: example.numpy()})[0]
    with torch.no_grad():
        want = module(example).numpy()
    diff = float(np.abs(got - want).max())
    if not diff <= SELF_CHECK_TOLERANCE:
        raise RuntimeError(f"{path.name}: ONNX Runtime differs from PyTorch by {diff:.2e}")
    return diff


def export_clip(variant: str, weights: str | None, out_dir: Path) -> ClipFacts:
    """Exports both encoders of `variant` to `out_dir` (image.onnx, text.onnx, metadata.json).

    The old metadata goes first and the new one is written last, so a half-finished export never looks done.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / METADATA_FILE).unlink(missing_ok=True)
    console.print(f"[bold]Exporting {variant}[/] → {out_dir}")
    start = time.perf_counter()
    with step(f"build {variant} (open_clip {open_clip.__version__}) and reparameterize"):
        model, source = load_clip(variant, weights)
    with step("read model facts"):
        facts = clip_facts(model, variant, source)
    size, ctx = facts["image_size"], facts["context_length"]
    gen = torch.Generator().manual_seed(0)
    image_example = torch.randn(2, 3, size, size, generator=gen)
    text_example = torch.randint(0, facts["vocab_size"], (2, ctx), generator=gen)
    diffs = {}
    for name, module, example, input_name in (
        ("image", ImageEncoder(model), image_example, "clip_input"),
        ("text", TextEncoder(model), text_example, "tokens"),
    ):
        path = out_dir / f"{name}.onnx"
        with step(f"export {name} encoder → {path.name} (opset {OPSET})"):
            _onnx_export(module, example, input_name, path)
        with step(f"check {path.name} against PyTorch"):
            diffs[name] = _self_check(module, example, path)
    seconds = time.perf_counter() - start
    result = ClipFacts(
        weights=source, exported_at=datetime.now(UTC).isoformat(timespec="seconds"), opset=OPSET,
        open_clip_version=open_clip.__version__, export_seconds=round(seconds, 1),
        open_clip_name=recorded_open_clip_name(variant), **facts,
    )
    for name in result.carried_files:
        shutil.copy2(CLIP_DIR / name, out_dir / name)
    result.save(out_dir)
    log.info("exported %s in %.1f s (ONNX vs PyTorch max |diff|: image %.1e, text %.1e)",
             variant, seconds, diffs["image"], diffs["text"])
    console.print(f"[bold green]done[/] {variant}: D={result.embedding_dim}, R={result.image_size}, "
                  f"{seconds:.1f} s, max |ONNX−PyTorch| image {diffs['image']:.1e} text {diffs['text']:.1e}")
    return result


def ensure_export(variant: str, weights: str | None, out_dir: Path, force: bool = False) -> ClipFacts:
    """Returns the existing export when it is for the same variant, weights and open_clip; else exports."""
    out_dir = Path(out_dir)
    if not force:
        try:
            facts = ClipFacts.load(out_dir)
        except (MissingArtifactError, ValueError) as exc:  # absent, or written by an older ClipFacts
            log.info("no usable CLIP export in %s (%s)", out_dir, exc)
        else:
            recorded = (facts.variant, facts.weights, facts.open_clip_version, facts.open_clip_name or facts.variant)
            same = recorded == (variant, weights_source(weights, variant), open_clip.__version__,
                                recorded_open_clip_name(variant))
            files = all((out_dir / f).is_file() for f in (facts.image_file, facts.text_file, *facts.carried_files))
            if same and files:
                log.info("CLIP export up to date: %s (%s)", out_dir, facts.weights)
                return facts
            log.info("CLIP export in %s is stale (%s, %s, open_clip %s%s): exporting again", out_dir,
                     facts.variant, facts.weights, facts.open_clip_version, "" if files else ", files missing")
    return export_clip(variant, weights, out_dir)


def ensure_clip(settings: Settings) -> ClipFacts:
    """The configured variant's export in `settings.exported_clip_dir`, exported only when missing or stale."""
    return ensure_export(settings.models.clip_variant, settings.models.clip_weights, settings.exported_clip_dir)


def main(argv: list[str] | None = None) -> int:
    from rich.logging import RichHandler

    settings = load_config()
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--variant", default=settings.models.clip_variant, choices=clip_variants())
    parser.add_argument("--weights", default=settings.models.clip_weights,
                        help="checkpoint path, pretrained tag or hf-hub:ID (default: config; none = random)")
    parser.add_argument("--out", type=Path, help="default: <cache>/models/<variant>")
    parser.add_argument("--force", action="store_true", help="export even when an up-to-date one exists")
    args = parser.parse_args(argv)
    # open_clip logs its INFO chatter on the root logger: keep root at WARNING, this module at INFO
    logging.basicConfig(level=logging.WARNING, format="%(message)s", handlers=[RichHandler(console=console)])
    log.setLevel(logging.INFO)
    weights = None if args.weights in (None, "", "none", "random") else args.weights
    out = args.out or settings.models_dir / args.variant.lower()
    facts = ensure_export(args.variant, weights, out, force=args.force)
    console.print_json(facts.model_dump_json())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
