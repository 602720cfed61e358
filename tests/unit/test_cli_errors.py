"""Every way the admin CLI can fail ends in one clear line on stderr and exit code 2, never a traceback.

No exported models are needed: the CLI checks its servers before it reads the models' metadata, and the one test
that reaches the metadata answers for the servers with a double.
"""

from __future__ import annotations

import http.server
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

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
    """An empty cache (no exports): a server that is down is named before the missing models."""
    port = free_port()
    result = run_cli("bootstrap", "--skip-preflight", VS_OPENSEARCH__URL=f"http://127.0.0.1:{port}",
                     VS_CACHE_DIR=str(tmp_path))
    assert_clear_failure(result, "unreachable", f"127.0.0.1:{port}")


def test_adapter_not_running(tmp_path):
    port = free_port()
    result = run_cli("bootstrap", VS_ADAPTER__PORT=str(port), VS_CACHE_DIR=str(tmp_path))
    assert_clear_failure(result, "adapter", f"127.0.0.1:{port}")


def test_bad_config_key(tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text("triton:\n  http_prot: 8000\n")
    assert_clear_failure(run_cli("bootstrap", VS_CONFIG=str(config)), "invalid config", "triton.http_prot")


class _Healthy(http.server.BaseHTTPRequestHandler):
    """Answers every GET with 200 and an empty JSON object: an adapter's /health and a cluster's root alike."""

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, format: str, *args: object) -> None:  # quiet: the test reads the CLI's output only
        pass


@pytest.fixture
def healthy_server() -> Iterator[int]:
    """The port of a server that stands in for both the adapter and OpenSearch, so the CLI gets past its servers."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Healthy)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()


def test_missing_artifact(tmp_path, healthy_server):
    result = run_cli("bootstrap", VS_CACHE_DIR=str(tmp_path), VS_ADAPTER__PORT=str(healthy_server),
                     VS_OPENSEARCH__URL=f"http://127.0.0.1:{healthy_server}")
    assert_clear_failure(result, "metadata missing", str(tmp_path), "make models")

