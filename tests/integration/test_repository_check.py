"""The rendered model repository is consistent in both profiles, and the check catches wiring mistakes."""

from __future__ import annotations

import pytest

from triton_repo.check import check_repository, load_repository
from triton_repo.render import ENSEMBLES, render_repository

# no server, but the session's exported models (clip_facts, yolo_facts export them when missing)
pytestmark = pytest.mark.integration


@pytest.mark.parametrize("profile", ["cpu", "gpu"])
def test_rendered_repository_is_consistent(profile, settings, clip_facts, yolo_facts, tmp_path):
    repo = render_repository(settings, tmp_path / profile, profile=profile, artifacts=False)
    configs = load_repository(repo)
    assert set(ENSEMBLES) <= set(configs)
    assert check_repository(repo) == []
    for name, config in configs.items():
        if config.platform != "ensemble":
            assert config.dynamic_batching.max_queue_delay_microseconds == settings.triton.max_queue_delay_us, name
    backends = {name: config.backend or config.platform for name, config in configs.items()}
    if profile == "gpu":
        assert backends["preprocess"] == "dali" and backends["clip_image"] == "onnxruntime_onnx"
    else:
        assert backends["preprocess"] == "python" and backends["clip_image"] == "python"


def test_check_reports_a_broken_wire(settings, clip_facts, yolo_facts, tmp_path):
    repo = render_repository(settings, tmp_path / "cpu", profile="cpu", artifacts=False)
    config = repo / "clip_image" / "config.pbtxt"
    config.write_text(config.read_text().replace(f"dims: [ {clip_facts.embedding_dim} ]", "dims: [ 7 ]"))
    (repo / "tokenizer" / "config.pbtxt").unlink()
    problems = check_repository(repo)
    assert any("embedding" in p and "FP32[7]" in p for p in problems), problems
    assert any("'tokenizer' is not in the repository" in p for p in problems), problems
