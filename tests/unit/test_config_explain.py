"""Each config key is described once, in common/config.py, and `python -m cli config` says where its value came from.

The descriptions feed `python -m cli config` and docs/operations.md's table; a key without one, or a page whose
table is stale, fails here.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml

import cli
from common import config_doc
from common.config import (
    DEFAULT_CONFIG,
    MASK,
    Settings,
    config_fields,
    default_value,
    explain,
    load_config,
    section_description,
    sections,
)


@pytest.fixture(autouse=True)
def no_vs_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only the variables a test sets: a `make SECURE=1 test` shell must not change what is reported."""
    for name in list(os.environ):
        if name.upper().startswith("VS_"):
            monkeypatch.delenv(name)


def write_config(tmp_path: Path, text: str, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "visual-search.yaml"
    path.write_text(text)
    monkeypatch.setenv("VS_CONFIG", str(path))
    return path


def by_key() -> dict[str, tuple[object, str]]:
    return {entry.key: (entry.value, entry.source) for entry in explain(load_config())}


def test_each_value_names_its_source(tmp_path, monkeypatch):
    path = write_config(tmp_path, "triton:\n  http_port: 18000\n  grpc_port: 18001\nmodels:\n  conf_threshold: 0.5\n",
                        monkeypatch)
    monkeypatch.setenv("VS_ADAPTER__PORT", "9999")
    monkeypatch.setenv("vs_triton__grpc_port", "28001")  # pydantic-settings matches names case-insensitively
    entries = by_key()
    assert entries["triton.http_port"] == (18000, f"file {path}")
    assert entries["models.conf_threshold"] == (0.5, f"file {path}")
    assert entries["adapter.port"] == (9999, "env VS_ADAPTER__PORT")
    assert entries["triton.grpc_port"] == (28001, "env vs_triton__grpc_port")  # the environment wins over the file
    assert entries["viewer.port"] == (8300, "default")
    assert entries["profile"] == ("cpu", "default")


def test_a_whole_section_as_json_is_an_env_source(tmp_path, monkeypatch):
    write_config(tmp_path, "", monkeypatch)
    monkeypatch.setenv("VS_TRITON", '{"metrics_port": 9002}')
    entries = by_key()
    assert entries["triton.metrics_port"] == (9002, "env VS_TRITON")
    assert entries["triton.http_port"] == (8000, "default")


def test_values_a_validator_fills_in_are_derived(tmp_path, monkeypatch):
    write_config(tmp_path, "index:\n  shards: null\n", monkeypatch)
    monkeypatch.setenv("VS_OPENSEARCH__SECURITY", "true")
    monkeypatch.setenv("VS_OPENSEARCH__NODES", "3")
    entries = by_key()
    assert entries["opensearch.url"] == ("https://127.0.0.1:9200", "derived")
    assert entries["index.shards"] == (3, "derived")  # null in the file: "from the nodes"
    assert entries["index.replicas"] == (1, "derived")


def test_secrets_are_masked(tmp_path, monkeypatch, capsys):
    write_config(tmp_path, "adapter:\n  token: file-token-42\n", monkeypatch)
    monkeypatch.setenv("VS_OPENSEARCH__USERNAME", "admin")
    monkeypatch.setenv("VS_OPENSEARCH__PASSWORD", "hunter2")
    entries = by_key()
    assert entries["opensearch.password"] == (MASK, "env VS_OPENSEARCH__PASSWORD")
    assert entries["adapter.token"][0] == MASK
    assert entries["opensearch.username"][0] == "admin"
    for argv in (["config"], ["config", "--json"]):
        assert cli.main(argv) == 0
        out = capsys.readouterr().out
        assert "hunter2" not in out and "file-token-42" not in out


def test_an_unset_secret_shows_as_unset(tmp_path, monkeypatch):
    write_config(tmp_path, "", monkeypatch)
    assert by_key()["opensearch.password"] == (None, "default")


@pytest.mark.parametrize("text", ["", "{}\n", "# only comments\n"])
def test_an_empty_file_is_every_default(tmp_path, monkeypatch, text):
    write_config(tmp_path, text, monkeypatch)
    derived = {key for key, (_, source) in by_key().items() if source != "default"}
    assert derived == {"index.shards", "index.replicas"}  # the layout the validator derives for one node


def test_the_shipped_file_repeats_no_default():
    """visual-search.yaml holds only what differs from the defaults; the descriptions say the rest."""
    data = yaml.safe_load(DEFAULT_CONFIG.read_text()) or {}
    repeated = []
    for key, field in config_fields():
        section, _, name = key.rpartition(".")
        holder = data.get(section, {}) if section else data
        if name in holder and holder[name] == default_value(field):
            repeated.append(key)
    assert not repeated, f"visual-search.yaml repeats the defaults of {repeated}"


def test_every_key_and_section_is_described():
    missing = [key for key, field in config_fields() if not (field.description or "").strip()]
    assert not missing, f"give these fields a Field(description=...) in common/config.py: {missing}"
    undocumented = [name for name, model in sections().items() if not section_description(model)]
    assert not undocumented, f"give these sections a docstring in common/config.py: {undocumented}"


def test_every_key_is_listed():
    keys = [key for key, _ in config_fields()]
    assert len(keys) == len(set(keys))
    assert {"profile", "opensearch.url", "index.shards", "duplicates.max_distance"} <= set(keys)
    assert set(sections()) == set(Settings.model_fields) - {"profile", "cache_dir", "run_dir"}


def test_the_config_command_prints_json(tmp_path, monkeypatch, capsys):
    write_config(tmp_path, "opensearch:\n  url: http://10.9.8.7:9201\n", monkeypatch)
    assert cli.main(["config", "--json"]) == 0
    entries = {entry["key"]: entry for entry in json.loads(capsys.readouterr().out)}
    assert entries["opensearch.url"]["value"] == "http://10.9.8.7:9201"
    assert entries["opensearch.url"]["source"].startswith("file ")
    assert entries["opensearch.url"]["description"]
    assert set(entries["viewer.port"]) == {"key", "value", "source", "description"}


def test_the_config_command_prints_text(capsys):
    assert cli.main(["config"]) == 0
    out = capsys.readouterr().out
    assert "opensearch.url = http://127.0.0.1:9200  (default)" in out
    assert "index.shards = 1  (derived)" in out


def test_the_page_holds_the_generated_table():
    text = config_doc.DOC.read_text()
    assert config_doc.rewrite(text, config_doc.block()) == text, (
        "docs/operations.md's config table is not what common/config.py gives: run python -m common.config_doc")


def test_the_table_escapes_what_markdown_would_eat():
    assert config_doc.cell("a | b, <run_dir>/x, `<run_dir>/y`") == "a \\| b, &lt;run_dir>/x, `<run_dir>/y`"
    assert config_doc.cell("see docs/design.md#the-connection-pool") == \
        "see [design.md#the-connection-pool](design.md#the-connection-pool)"
    with pytest.raises(ValueError, match="markers"):
        config_doc.rewrite("no markers", "x")
