"""MobileCLIP2 facts come from open_clip's registry (no model built) and agree with docs/design.md#facts; the bundled
shapes CLIP's come from its own folder and name its weights by content."""

from __future__ import annotations

from pathlib import Path

import open_clip
import pytest

from common.config import BUNDLED_CLIP
from common.model_facts import OWN_CONFIG, ClipFacts
from export import mobileclip

ZERO, ONE = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)

# docs/design.md#facts, typed here on purpose: this is the independent reference the registry is checked against.
DESIGN = {  # variant: (embedding dim, image size, mean, std)
    "MobileCLIP2-S0": (512, 256, ZERO, ONE),
    "MobileCLIP2-S2": (512, 256, ZERO, ONE),
    "MobileCLIP2-B": (512, 224, ZERO, ONE),
    "MobileCLIP2-S3": (768, 256, OPENAI_MEAN, OPENAI_STD),
    "MobileCLIP2-S4": (768, 256, OPENAI_MEAN, OPENAI_STD),
    "MobileCLIP2-L-14": (768, 224, OPENAI_MEAN, OPENAI_STD),
}


def test_open_clip_knows_exactly_the_six_variants_and_the_bundled_one() -> None:
    assert sorted(mobileclip.clip_variants()) == sorted([*DESIGN, BUNDLED_CLIP])


def test_bundled_clip_facts_come_from_its_folder() -> None:
    import json

    from export.shapes import CLIP_DIR

    written = json.loads((CLIP_DIR / "open_clip_config.json").read_text())
    facts = mobileclip.variant_facts(BUNDLED_CLIP)
    assert facts["embedding_dim"] == written["model_cfg"]["embed_dim"]
    assert facts["image_size"] == written["model_cfg"]["vision_cfg"]["image_size"]
    assert facts["mean"] == pytest.approx(written["preprocess_cfg"]["mean"])
    assert mobileclip.open_clip_name(BUNDLED_CLIP) == f"local-dir:{CLIP_DIR}"
    # the export names no path of this checkout: its tokenizer config travels with it
    assert mobileclip.recorded_open_clip_name(BUNDLED_CLIP) == OWN_CONFIG
    source = mobileclip.weights_source(None, BUNDLED_CLIP)
    assert source.startswith("bundled:shapes_clip@") and source != mobileclip.RANDOM_SOURCE


@pytest.mark.parametrize("variant", sorted(DESIGN))
def test_facts_from_registry_match_design(variant: str, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_building(*args: object, **kwargs: object) -> None:
        raise AssertionError("variant_facts must not build the model")

    monkeypatch.setattr(open_clip, "create_model", no_building)
    facts = mobileclip.variant_facts(variant)
    dim, size, mean, std = DESIGN[variant]
    assert (facts["embedding_dim"], facts["image_size"]) == (dim, size)
    assert facts["mean"] == pytest.approx(mean) and facts["std"] == pytest.approx(std)
    assert facts["resize_mode"] == "shortest"
    assert facts["context_length"] == 77 and facts["vocab_size"] == 49408
    if mean == ZERO:  # §7: the pretrained S0/S2/B use bilinear
        assert facts["interpolation"] == "bilinear"
    # every variant's facts fit the metadata schema (L-14 is the bicubic one)
    ClipFacts(weights=mobileclip.RANDOM_SOURCE, exported_at="2026-01-01T00:00:00+00:00", **facts)
    print(f"{variant}: {facts}")


def test_model_facts_agree_with_registry_and_ignore_the_fallback_transform() -> None:
    """S0 only (the cheapest): facts read off the built model equal the registry's, and mean/std are the
    variant's, not the OpenAI fallback that open_clip attaches when pretrained=None (docs/design.md#facts)."""
    model, source = mobileclip.load_clip("MobileCLIP2-S0", None)
    assert source == mobileclip.RANDOM_SOURCE
    assert model.visual.preprocess_cfg["mean"] == pytest.approx(OPENAI_MEAN)  # the trap
    facts = mobileclip.clip_facts(model, "MobileCLIP2-S0", source)
    assert facts == mobileclip.variant_facts("MobileCLIP2-S0")
    assert facts["mean"] == ZERO


def test_weights_source_names(tmp_path: Path) -> None:
    checkpoint = tmp_path / "open_clip_model.safetensors"
    checkpoint.write_bytes(b"")
    assert mobileclip.weights_source(None) == mobileclip.RANDOM_SOURCE
    assert mobileclip.weights_source(str(checkpoint)) == f"checkpoint:{checkpoint.resolve()}"
    assert mobileclip.weights_source("hf-hub:timm/MobileCLIP2-S2-OpenCLIP") == "hub:timm/MobileCLIP2-S2-OpenCLIP"
    assert mobileclip.weights_source("dfndr2b") == "hub:dfndr2b"


def _fake_export(directory: Path, variant: str, weights: str) -> ClipFacts:
    facts = ClipFacts(weights=weights, exported_at="2026-01-01T00:00:00+00:00",
                      open_clip_version=open_clip.__version__, **mobileclip.variant_facts(variant))
    facts.save(directory)
    for name in (facts.image_file, facts.text_file):
        (directory / name).write_bytes(b"")
    return facts


def test_ensure_export_reuses_a_matching_export(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    existing = _fake_export(tmp_path, "MobileCLIP2-S0", mobileclip.RANDOM_SOURCE)

    def no_export(*args: object) -> ClipFacts:
        raise AssertionError("must not re-export")

    monkeypatch.setattr(mobileclip, "export_clip", no_export)
    assert mobileclip.ensure_export("MobileCLIP2-S0", None, tmp_path) == existing


@pytest.mark.parametrize("change", ["variant", "weights", "open_clip", "file"])
def test_ensure_export_redoes_a_stale_export(change: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    existing = _fake_export(tmp_path, "MobileCLIP2-S0", mobileclip.RANDOM_SOURCE)
    variant, weights = "MobileCLIP2-S0", None
    if change == "variant":
        variant = "MobileCLIP2-S2"
    elif change == "weights":
        weights = "hf-hub:timm/MobileCLIP2-S0-OpenCLIP"
    elif change == "open_clip":
        existing.model_copy(update={"open_clip_version": "0.0"}).save(tmp_path)
    else:
        (tmp_path / existing.text_file).unlink()
    calls: list[tuple[object, ...]] = []
    monkeypatch.setattr(mobileclip, "export_clip", lambda *args: calls.append(args) or existing)
    mobileclip.ensure_export(variant, weights, tmp_path)
    assert calls == [(variant, weights, tmp_path)]


@pytest.mark.parametrize("recorded, config, reused", [
    ("local-dir:/an/old/checkout/export/shapes/shapes_clip", True, False),  # exported before the config travelled
    (OWN_CONFIG, False, False),  # the config it tokenizes by is missing
    (OWN_CONFIG, True, True),
])
def test_bundled_export_is_reused_only_with_its_own_tokenizer_config(
        recorded: str, config: bool, reused: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from common.model_facts import OPEN_CLIP_CONFIG
    from export.shapes import CLIP_DIR

    weights = mobileclip.weights_source(None, BUNDLED_CLIP)
    existing = _fake_export(tmp_path, BUNDLED_CLIP, weights).model_copy(update={"open_clip_name": recorded})
    existing.save(tmp_path)
    if config:
        (tmp_path / OPEN_CLIP_CONFIG).write_bytes((CLIP_DIR / OPEN_CLIP_CONFIG).read_bytes())
    calls: list[tuple[object, ...]] = []
    monkeypatch.setattr(mobileclip, "export_clip", lambda *args: calls.append(args) or existing)
    mobileclip.ensure_export(BUNDLED_CLIP, None, tmp_path)
    assert calls == ([] if reused else [(BUNDLED_CLIP, None, tmp_path)])
