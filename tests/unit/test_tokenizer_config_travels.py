"""The bundled CLIP tokenizes by a config file of its own. Its export and the rendered Triton repository carry that
file, so neither names a folder of the checkout they came from: a moved or renamed checkout, or the repository
mounted at /workspace in the GPU profile's container, still loads the tokenizer."""

from __future__ import annotations

import shutil
from pathlib import Path

import open_clip
import pytest

from common.config import BUNDLED_CLIP, load_config
from common.model_facts import OPEN_CLIP_CONFIG, OWN_CONFIG, ClipFacts, YoloFacts
from export.shapes import CLIP_DIR
from triton_repo.render import render_repository
from triton_repo.runtime.params import in_version_folder

TEXTS = ["a red circle", "two blue squares and a star", ""]


def _facts(open_clip_name: str) -> ClipFacts:
    return ClipFacts(weights="test", exported_at="test", variant=BUNDLED_CLIP, embedding_dim=256, image_size=80,
                     mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), interpolation="bilinear", context_length=32,
                     vocab_size=49408, open_clip_name=open_clip_name)


def test_own_config_is_read_from_the_folder_given():
    facts = _facts(OWN_CONFIG)
    assert facts.carried_files == (OPEN_CLIP_CONFIG,)
    assert facts.open_clip_ref(Path("/somewhere/export")) == "local-dir:/somewhere/export"
    named = _facts("MobileCLIP2-S2")
    assert named.carried_files == () and named.open_clip_ref(Path("/x")) == "MobileCLIP2-S2"


def test_relative_local_dir_resolves_in_the_version_folder_and_nothing_else_changes():
    args = {"model_repository": "/models/tokenizer", "model_version": "1"}
    assert in_version_folder("local-dir:.", args) == "local-dir:/models/tokenizer/1"
    assert in_version_folder("local-dir:/abs/folder", args) == "local-dir:/abs/folder"
    assert in_version_folder("MobileCLIP2-S2", args) == "MobileCLIP2-S2"


@pytest.fixture
def rendered(tmp_path: Path) -> Path:
    """A cpu-profile repository rendered from an export that holds the config, in a cache folder that is then
    moved: what the repository reads must be inside it."""
    settings = load_config(cache_dir=tmp_path / "cache")
    clip = _facts(OWN_CONFIG)
    yolo = YoloFacts(weights="test", exported_at="test", name="yolo11n", class_names=["a", "b"],
                     conf_threshold=0.25, iou_threshold=0.45, max_det=100, max_batch=settings.triton.max_batch_size)
    clip.save(settings.clip_dir)
    yolo.save(settings.yolo_dir)
    shutil.copy2(CLIP_DIR / OPEN_CLIP_CONFIG, settings.clip_dir / OPEN_CLIP_CONFIG)
    for path in (settings.clip_dir / clip.image_file, settings.clip_dir / clip.text_file,
                 settings.yolo_dir / yolo.file):
        path.write_bytes(b"stand-in")
    repo = render_repository(settings, tmp_path / "repo", profile="cpu")
    shutil.rmtree(tmp_path / "cache")  # the export is gone: the repository stands alone
    return repo


def test_rendered_tokenizer_tokenizes_as_the_bundled_config_does(rendered: Path):
    version = rendered / "tokenizer" / "1"
    config = (rendered / "tokenizer" / "config.pbtxt").read_text()
    assert OWN_CONFIG in config and str(CLIP_DIR) not in config
    name = in_version_folder(OWN_CONFIG, {"model_repository": str(rendered / "tokenizer"), "model_version": "1"})
    assert name == f"local-dir:{version}"
    got = open_clip.get_tokenizer(name)(TEXTS, context_length=32)
    want = open_clip.get_tokenizer(f"local-dir:{CLIP_DIR}")(TEXTS, context_length=32)
    assert got.tolist() == want.tolist()
