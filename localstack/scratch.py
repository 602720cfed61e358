"""A whole stack of its own, for one measurement or one test: OpenSearch, Triton and the adapter on free ports in a
temporary run folder, bootstrapped, and stopped with everything it wrote when the `with` block ends.

It runs the same launchers `make up` runs, from a config of its own: the given settings are written to a YAML file in
the run folder and the adapter is started with `VS_CONFIG` pointing at it (and no other `VS_*` variable), so a
child process reads exactly the settings this stack was made with. The running `make up` stack, if any, is not
touched: nothing here uses its ports, folders, models or index.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
import yaml

from common.config import REPO_ROOT, Settings, load_config
from localstack.opensearch_node import OpenSearchNode
from localstack.processes import free_http_and_transport_ports, free_ports, stop_pid, wait_until
from localstack.services import adapter_command, start_cluster
from localstack.triton_server import TritonServer
from triton_repo.render import render_repository

CONFIG_FILE = "visual-search.yaml"


def scratch_settings(base: Settings, run: Path, **overrides: Any) -> Settings:
    """`base` with free ports for every server, `run` as its run folder, one Triton, security off, and `overrides`
    (section → keys) on top."""
    http, transport = free_http_and_transport_ports(1)
    triton_http, triton_grpc, triton_metrics, adapter = free_ports(4)
    sections: dict[str, dict[str, Any]] = {
        "opensearch": {"url": f"http://127.0.0.1:{http}", "transport_port": transport, "nodes": 1, "security": False,
                       "username": None, "password": None},
        "triton": {"host": "127.0.0.1", "http_port": triton_http, "grpc_port": triton_grpc,
                   "metrics_port": triton_metrics, "replicas": 1, "endpoints": []},
        "adapter": {"host": "127.0.0.1", "port": adapter, "public_url": None, "token": None},
        "index": {"shards": None, "replicas": None},
    }
    for section, keys in overrides.items():
        sections[section] = {**sections.get(section, {}), **keys}
    data = base.model_dump(mode="json")
    for section, keys in sections.items():
        data[section] = {**data[section], **keys}
    data["run_dir"] = str(run)
    return load_config(**data)


def write_config(settings: Settings, path: Path) -> Path:
    path.write_text(yaml.safe_dump(settings.model_dump(mode="json"), sort_keys=False))
    return path


def child_env(config: Path) -> dict[str, str]:
    """This process's environment without any `VS_*` override, reading `config`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("VS_")}
    return {**env, "VS_CONFIG": str(config)}


class ScratchStack:
    """OpenSearch (one node), one Triton serving the repository rendered from `settings`, and the adapter;
    bootstrapped with the real reconciler. `pids` names each server's main process (for CPU and memory figures)."""

    def __init__(self, base: Settings, **overrides: Any) -> None:
        self.run = Path(tempfile.mkdtemp(prefix="vs-scratch-"))
        self.settings = scratch_settings(base, self.run, **overrides)
        self.config = write_config(self.settings, self.run / CONFIG_FILE)
        self.nodes: list[OpenSearchNode] = []
        self.triton: TritonServer | None = None
        self.adapter: subprocess.Popen[bytes] | None = None

    @property
    def pids(self) -> dict[str, int]:
        found = {"opensearch": self.nodes[0].pid if self.nodes else None,
                 "triton": self.triton.proc.pid if self.triton and self.triton.proc else None,
                 "adapter": self.adapter.pid if self.adapter else None}
        return {name: pid for name, pid in found.items() if pid is not None}

    def _start_adapter(self) -> None:
        log = self.run / "adapter.log"
        with log.open("ab") as out:
            self.adapter = subprocess.Popen(adapter_command(), stdout=out, stderr=subprocess.STDOUT, cwd=REPO_ROOT,
                                            env=child_env(self.config), start_new_session=True)
        url = f"{self.settings.adapter.url}/health"
        wait_until(lambda: httpx.get(url, timeout=2).status_code == 200, self.adapter, 120, "adapter", log)

    def start(self) -> ScratchStack:
        from bootstrap.opensearch_api import Cluster, connect
        from bootstrap.reconcile import Reconciler
        from common.model_facts import ClipFacts

        s = self.settings
        try:
            self.nodes = start_cluster(s)
            repo = render_repository(s, self.run / "triton_repo")
            self.triton = TritonServer(repo, s.cache, s.triton.http_port, s.triton.grpc_port, s.triton.metrics_port,
                                       self.run / "triton.log").start()
            self._start_adapter()
            Reconciler(Cluster(connect(s.opensearch), s.opensearch.url), s).run(ClipFacts.load(s.clip_dir))
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self.adapter is not None:
            stop_pid(self.adapter.pid)
            self.adapter = None
        if self.triton is not None:
            self.triton.stop()
            self.triton = None
        for node in reversed(self.nodes):
            node.stop()
        self.nodes = []
        shutil.rmtree(self.run, ignore_errors=True)

    def __enter__(self) -> ScratchStack:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()
