"""The local stack as `make up` runs it: supervised, restart-safe, with its data kept across `down`/`up`.

A whole second stack is started here by the real CLI (`python -m cli up`), on free ports and in its
own run folder, so the faults below (servers killed with SIGKILL) touch nothing else of the test session.
"""

from __future__ import annotations

import base64
import io
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from PIL import Image

from bootstrap.deploy import is_deployed
from bootstrap.opensearch_api import Cluster, connect
from common.config import REPO_ROOT, Settings, load_config
from localstack import supervisor
from localstack.processes import free_ports

pytestmark = pytest.mark.integration


class Stack:
    def __init__(self, run: Path) -> None:
        names = ("os", "transport", "http", "grpc", "metrics", "adapter", "viewer")
        ports = dict(zip(names, free_ports(len(names)), strict=True))
        self.env = {**os.environ,
                    "VS_RUN_DIR": str(run),
                    "VS_OPENSEARCH__URL": f"http://127.0.0.1:{ports['os']}",
                    "VS_OPENSEARCH__TRANSPORT_PORT": str(ports["transport"]),
                    "VS_TRITON__HTTP_PORT": str(ports["http"]), "VS_TRITON__GRPC_PORT": str(ports["grpc"]),
                    "VS_TRITON__METRICS_PORT": str(ports["metrics"]), "VS_ADAPTER__PORT": str(ports["adapter"]),
                    "VS_VIEWER__PORT": str(ports["viewer"])}
        self.settings: Settings = load_config(
            run_dir=run, opensearch={"url": self.env["VS_OPENSEARCH__URL"], "transport_port": ports["transport"]},
            triton={"http_port": ports["http"], "grpc_port": ports["grpc"], "metrics_port": ports["metrics"]},
            adapter={"port": ports["adapter"]}, viewer={"port": ports["viewer"]})
        self.run = run

    def cli(self, *args: str, timeout_s: float = 900) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "cli", *args], env=self.env, cwd=REPO_ROOT,
                              capture_output=True, text=True, timeout=timeout_s)

    @property
    def client(self):
        return connect(self.settings.opensearch)

    def supervised(self, name: str) -> dict:
        state = supervisor.state(self.settings)
        assert state is not None, "no supervisor runs"
        return next(s for s in state["services"] if s["name"] == name)

    def kill(self, name: str) -> int:
        pid = self.supervised(name)["pid"]
        os.killpg(pid, signal.SIGKILL)
        return pid

    def index_one(self, doc_id: str) -> dict:
        out = io.BytesIO()
        Image.new("RGB", (80, 60), (220, 30, 30)).save(out, "JPEG")
        body = {"image_id": doc_id, "image_b64": base64.b64encode(out.getvalue()).decode()}
        response = self.client.index(index=self.settings.index.name, id=doc_id, body=body,
                                     params={"refresh": "true"}, request_timeout=600)
        assert response["_index"] == self.settings.index.name, self.client.get(
            index=self.settings.index.dead_letter, id=doc_id)["_source"]["failure"]
        return self.client.get(index=self.settings.index.name, id=doc_id)["_source"]


def wait_for(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if condition():
                return
        except Exception:
            pass
        time.sleep(1)
    raise AssertionError(f"{what}: not within {timeout_s:.0f}s")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, clip_facts, yolo_facts) -> Iterator[Stack]:
    stack = Stack(tmp_path_factory.mktemp("stack-run"))
    started = stack.cli("up")
    try:
        assert started.returncode == 0, started.stdout[-3000:] + started.stderr[-3000:]
        yield stack
    finally:
        stack.cli("down", timeout_s=300)


def models_deployed(stack: Stack) -> bool:
    cluster = Cluster(stack.client, stack.settings.opensearch.url)
    for name in (stack.settings.ml_commons.embed_model, stack.settings.ml_commons.analyze_model):
        model = cluster.find_model(name)
        if model is None or not is_deployed(cluster, model["id"]):
            return False
    return True


def neural_hits(stack: Stack, text: str) -> list[str]:
    body = {"size": 5, "_source": False,
            "query": {"neural": {"global_image_embedding": {"query_text": text, "k": 5}}}}
    return [h["_id"] for h in stack.client.search(index=stack.settings.index.name, body=body)["hits"]["hits"]]


def test_up_starts_a_supervised_stack_and_bootstraps_it(stack):
    assert {s["name"] for s in supervisor.state(stack.settings)["services"]} == {"opensearch", "triton", "adapter",
                                                                                 "viewer"}
    assert httpx.get(f"{stack.settings.viewer.url}/health", timeout=10).json()["opensearch"] == "up"
    assert models_deployed(stack)
    assert len(stack.index_one("first")["global_image_embedding"]) > 0


def test_a_killed_triton_is_restarted_and_ingest_works_again(stack):
    restarts = stack.supervised("triton")["restarts"]
    stack.kill("triton")
    wait_for(lambda: stack.supervised("triton")["restarts"] == restarts + 1, 30, "Triton restarted")
    t = stack.settings.triton
    wait_for(lambda: httpx.get(f"http://{t.http_url}/v2/health/ready", timeout=2).status_code == 200, 300,
             "Triton ready again")
    assert len(stack.index_one("after-triton-kill")["global_image_embedding"]) > 0
    status = stack.cli("status")
    assert "restarts 1" in status.stdout.replace("\n", " "), status.stdout


def test_a_killed_opensearch_comes_back_with_its_models_and_no_bootstrap(stack):
    stack.kill("opensearch")
    wait_for(lambda: stack.supervised("opensearch")["restarts"] >= 1, 30, "OpenSearch restarted")
    wait_for(lambda: models_deployed(stack), 300, "models deployed again after the OpenSearch restart")
    assert len(stack.index_one("after-opensearch-kill")["global_image_embedding"]) > 0
    assert neural_hits(stack, "a red square"), "a neural query answers after the restart"


def test_down_then_up_keeps_the_data_and_exits_zero(stack):
    count = stack.client.count(index=stack.settings.index.name)["count"]
    stopped = stack.cli("down", timeout_s=300)
    assert stopped.returncode == 0, stopped.stderr
    assert supervisor.state(stack.settings) is None
    t0 = time.monotonic()
    started = stack.cli("up")
    restart_s = time.monotonic() - t0
    assert started.returncode == 0, started.stdout[-3000:] + started.stderr[-3000:]
    print(f"make down && make up: up took {restart_s:.0f}s")
    assert models_deployed(stack)
    assert stack.client.count(index=stack.settings.index.name)["count"] == count
    assert len(stack.index_one("after-restart")["global_image_embedding"]) > 0
    again = stack.cli("bootstrap", "--dry-run")
    assert again.returncode == 0 and "0 change(s)" in again.stdout, again.stdout
