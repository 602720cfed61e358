from __future__ import annotations

import pytest

from common.config import ConfigError, load_config


def test_defaults_come_from_the_file():
    settings = load_config()
    assert settings.opensearch.url == "http://127.0.0.1:9200"
    assert (settings.triton.http_port, settings.triton.grpc_port, settings.triton.metrics_port) == (8000, 8001, 8002)
    assert settings.adapter.port == 8200
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
