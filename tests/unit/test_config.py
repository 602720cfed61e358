from __future__ import annotations

from pathlib import Path

import pytest

from common.config import ConfigError, Settings, load_config


def write_config(tmp_path: Path, text: str, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "visual-search.yaml"
    path.write_text(text)
    monkeypatch.setenv("VS_CONFIG", str(path))
    return path


NOT_DEFAULTS = """\
opensearch:
  url: http://10.9.8.7:9201
triton:
  http_port: 18000
  preferred_batch_sizes: [2, 4]
models:
  conf_threshold: 0.5
"""


def test_the_file_is_read(tmp_path, monkeypatch):
    """Values that differ from every default: they can only have come from the file."""
    write_config(tmp_path, NOT_DEFAULTS, monkeypatch)
    settings = load_config()
    assert settings.opensearch.url == "http://10.9.8.7:9201"
    assert settings.opensearch.http_port == 9201
    assert settings.triton.http_port == 18000
    assert settings.triton.preferred_batch_sizes == [2, 4]
    assert settings.models.conf_threshold == 0.5
    assert settings.triton.grpc_port == Settings.model_fields["triton"].default.grpc_port  # a key it leaves alone


def test_environment_wins_over_the_file(tmp_path, monkeypatch):
    write_config(tmp_path, NOT_DEFAULTS, monkeypatch)
    monkeypatch.setenv("VS_TRITON__HTTP_PORT", "28000")
    settings = load_config()
    assert settings.triton.http_port == 28000
    assert settings.opensearch.url == "http://10.9.8.7:9201"  # the rest of the file still holds


def test_the_shipped_file_loads():
    settings = load_config()
    assert settings.clip_dir.name == settings.models.clip_variant.lower()


def test_environment_overrides_any_key(monkeypatch):
    monkeypatch.setenv("VS_OPENSEARCH__URL", "http://10.1.2.3:9201")
    monkeypatch.setenv("VS_MODELS__CLIP_VARIANT", "MobileCLIP2-S0")
    monkeypatch.setenv("VS_TRITON__PREFERRED_BATCH_SIZES", "[2, 4]")
    settings = load_config()
    assert settings.opensearch.url == "http://10.1.2.3:9201"
    assert settings.opensearch.http_port == 9201
    assert settings.models.clip_variant == "MobileCLIP2-S0"
    assert settings.triton.preferred_batch_sizes == [2, 4]


def test_unknown_key_is_a_clear_error(tmp_path, monkeypatch):
    bad = tmp_path / "bad.yaml"
    bad.write_text("opensearch:\n  urll: http://x\n")
    monkeypatch.setenv("VS_CONFIG", str(bad))
    with pytest.raises(ConfigError, match=r"opensearch\.urll"):
        load_config()


def test_bad_value_names_the_key(monkeypatch):
    monkeypatch.setenv("VS_MODELS__CLIP_VARIANT", "MobileCLIP2-XXL")
    with pytest.raises(ConfigError, match="clip_variant"):
        load_config()


def test_missing_file_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("VS_CONFIG", str(tmp_path / "nope.yaml"))
    with pytest.raises(ConfigError, match="not found"):
        load_config()
