"""Every way the admin CLI can fail ends in one clear line on stderr and exit code 2, never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from localstack.processes import free_port

ROOT = Path(__file__).resolve().parents[2]


def run_cli(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cli", *args], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=120)


def assert_clear_failure(result: subprocess.CompletedProcess, *needles: str) -> None:
    """Exit code 2, one `error:` line on stderr naming what and where, nothing of it on stdout."""
    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    assert "Traceback" not in output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.stderr
    assert "error" not in result.stdout.lower(), result.stdout
    for needle in needles:
        assert needle in errors[0], errors[0]


def test_unreachable_opensearch(tmp_path):
    port = free_port()
    result = run_cli("bootstrap", "--skip-preflight", VS_OPENSEARCH__URL=f"http://127.0.0.1:{port}")
    assert_clear_failure(result, "unreachable", f"127.0.0.1:{port}")


def test_adapter_not_running():
    port = free_port()
    result = run_cli("bootstrap", VS_ADAPTER__PORT=str(port))
    assert_clear_failure(result, "adapter", f"127.0.0.1:{port}")


def test_bad_config_key(tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text("triton:\n  http_prot: 8000\n")
    assert_clear_failure(run_cli("bootstrap", VS_CONFIG=str(config)), "invalid config", "triton.http_prot")


def test_missing_artifact(tmp_path):
    assert_clear_failure(run_cli("bootstrap", VS_CACHE_DIR=str(tmp_path)), "metadata missing", "make models")
