"""Run one OpenSearch node from a distribution built by `opensearch_dist`, as a child process.

Each node gets its own config directory under its data directory (OPENSEARCH_PATH_CONF), so the
shared distribution is never written to and several nodes (the `make up` one on 9200, a test's on
free ports) can run side by side. Everything a node writes, logs included, stays under `data_dir`.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import signal
import ssl
import subprocess
import time
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

from localstack.opensearch_dist import find_java_home
from localstack.processes import LocalStackError, log_tail, port_open

if TYPE_CHECKING:
    from localstack.security import NodeSecurity

# OpenSearch refuses to start as root, and it learns the uid through JNA only: with JNA's native
# library made unloadable, the check is skipped (with a warning). CI and these dev machines run
# everything as root. What is lost is mlockall and the seccomp filter, which a dev/test node on
# loopback does without; the plugins used here (k-NN's lucene engine, remote ML models) need no JNA.
_NO_JNA = "-Djna.nosys=true\n-Djna.noclasspath=true\n-Djna.boot.library.path=/nonexistent\n"


CLUSTER_NAME = "visual-search"


def wait_green(client: Any, nodes: int, timeout_s: float = 300) -> dict[str, Any]:
    """The cluster's health once it is green with `nodes` nodes, or as it is after `timeout_s` (an opensearch-py
    client: the server waits up to 30 s a call, so the call is repeated)."""
    from opensearchpy.exceptions import TransportError

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            health = dict(client.cluster.health(params={"wait_for_status": "green", "wait_for_nodes": str(nodes)},
                                                request_timeout=60))
        except TransportError as exc:  # 408: not there yet; the body is the health as it is
            if exc.status_code != 408 or not isinstance(exc.info, dict):
                raise
            health = exc.info
        if (health["status"] == "green" and health["number_of_nodes"] == nodes) or time.monotonic() > deadline:
            return health


class NodeError(LocalStackError):
    """The node did not come up (or not in time); the message carries the tail of its logs."""


class OpenSearchNode:
    """An OpenSearch node bound to 127.0.0.1: a cluster of its own, or (with `peers`, the transport ports of every
    node of the cluster, and their names) one of several local nodes that form one cluster.

    `settings` are added to `opensearch.yml` (e.g. the ML Commons trusted-endpoint regex). With `security` (a
    distribution that has the security plugin) the node serves HTTPS only, with the project's certificates and
    users, and its own health checks log in as admin and verify it against the project's CA.
    """

    def __init__(
        self,
        home: Path,
        data_dir: Path,
        http_port: int = 9200,
        transport_port: int = 9300,
        heap: str = "1g",
        cluster_name: str = CLUSTER_NAME,
        settings: Mapping[str, Any] | None = None,
        security: NodeSecurity | None = None,
        peers: Mapping[str, int] | None = None,
    ) -> None:
        self.home = Path(home).resolve()
        self.data_dir = Path(data_dir).resolve()
        self.http_port = http_port
        self.transport_port = transport_port
        self.heap = heap
        self.cluster_name = cluster_name
        self.settings = dict(settings or {})
        self.security = security
        self.node_name = self.name_for(cluster_name, http_port)
        self.peers = dict(peers or {})
        self.conf_dir = self.data_dir / "config"
        self.logs_dir = self.data_dir / "logs"
        self.console_log = self.logs_dir / "console.log"
        self._proc: subprocess.Popen[bytes] | None = None

    @staticmethod
    def name_for(cluster_name: str, http_port: int) -> str:
        """A local node's name: unique on this machine, since its HTTP port is."""
        return f"{cluster_name}-{http_port}"

    @property
    def url(self) -> str:
        return f"{'https' if self.security else 'http'}://127.0.0.1:{self.http_port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    # --- config -------------------------------------------------------------------------------------

    def _opensearch_yml(self) -> str:
        base: dict[str, Any] = {
            "cluster.name": self.cluster_name,
            "node.name": self.node_name,
            **self._discovery(),
            "network.host": "127.0.0.1",
            "http.port": self.http_port,
            "transport.port": self.transport_port,
            "path.data": str(self.data_dir / "data"),
            "path.logs": str(self.logs_dir),
            # A dev box's disk may be fuller than the watermarks; replicas would never be assigned.
            "cluster.routing.allocation.disk.threshold_enabled": False,
            # No dedicated ML nodes here: ML Commons must run the models on the data nodes.
            "plugins.ml_commons.only_run_on_ml_node": False,
        }
        if self.security is not None:
            base.update(self.security.settings)
        base.update(self.settings)
        # JSON scalars and lists are valid YAML, so no YAML library is needed.
        return "".join(f"{key}: {json.dumps(value)}\n" for key, value in base.items())

    def _discovery(self) -> dict[str, Any]:
        """Alone: single-node discovery. With peers: find them on their transport ports; the first start of the
        cluster elects a manager among all of them (each node is manager-eligible and holds data)."""
        if len(self.peers) <= 1:
            return {"discovery.type": "single-node"}
        return {"discovery.seed_hosts": [f"127.0.0.1:{port}" for port in self.peers.values()],
                "cluster.initial_cluster_manager_nodes": list(self.peers)}

    def _jvm_options(self) -> str:
        """The distribution's options with our heap, and its relative paths (cwd-dependent) made absolute."""
        lines = []
        for line in (self.home / "config" / "jvm.options").read_text().splitlines():
            if line.startswith(("-Xms", "-Xmx")):
                continue
            line = line.replace("HeapDumpPath=data", f"HeapDumpPath={self.heap_dump_dir}")
            lines.append(line.replace("logs/", f"{self.logs_dir}/"))
        lines += [f"-Xms{self.heap}", f"-Xmx{self.heap}"]
        return "\n".join(lines) + "\n"

    def write_config(self) -> None:
        """A fresh per-node copy of `config/` (plugins keep their config there too)."""
        shutil.rmtree(self.conf_dir, ignore_errors=True)
        shutil.copytree(self.home / "config", self.conf_dir)
        (self.conf_dir / "opensearch.yml").write_text(self._opensearch_yml())
        (self.conf_dir / "jvm.options").write_text(self._jvm_options())
        if os.geteuid() == 0:
            (self.conf_dir / "jvm.options.d" / "run-as-root.options").write_text(_NO_JNA)
        if self.security is not None:
            self.security.install(self.conf_dir)

    # --- lifecycle ----------------------------------------------------------------------------------

    def health(self) -> dict[str, Any] | None:
        request = urllib.request.Request(f"{self.url}/_cluster/health")
        context = None
        if self.security is not None:
            context = ssl.create_default_context(cafile=str(self.security.certs.ca))
            user, password = self.security.admin
            request.add_header("Authorization", "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode())
        try:
            with urllib.request.urlopen(request, timeout=5, context=context) as resp:
                return dict(json.load(resp))
        except (OSError, ValueError):
            return None

    def _fail(self, why: str) -> NodeError:
        server_log = self.logs_dir / f"{self.cluster_name}.log"
        return NodeError(
            f"OpenSearch on port {self.http_port} {why}.\n--- {self.console_log} ---\n"
            f"{log_tail(self.console_log)}\n--- {server_log} ---\n{log_tail(server_log, 20)}"
        )

    def start(self, timeout_s: float = 180) -> Self:
        """Start the node and wait until the cluster is yellow or green."""
        if self.running():
            return self
        self.launch()
        self.wait_ready(timeout_s)
        return self

    def launch(self) -> subprocess.Popen[bytes]:
        """Start the JVM without waiting for it (a supervisor watches it instead)."""
        for port in (self.http_port, self.transport_port):
            if port_open(port):
                raise NodeError(f"port {port} is already in use (another OpenSearch running?)")
        if not (self.home / "bin" / "opensearch").is_file():
            raise NodeError(f"{self.home} is not an OpenSearch distribution (run ensure_distribution)")
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        self._bound_heap_dumps()
        self.write_config()
        tmp_dir = self.data_dir / "tmp"  # else the launcher leaves a fresh /tmp/opensearch-* per start
        tmp_dir.mkdir(exist_ok=True)
        env = {
            **os.environ,
            "JAVA_HOME": str(find_java_home()),
            "OPENSEARCH_PATH_CONF": str(self.conf_dir),
            "OPENSEARCH_TMPDIR": str(tmp_dir),
        }
        env.pop("OPENSEARCH_JAVA_HOME", None)
        pid_file = self.data_dir / "opensearch.pid"
        with self.console_log.open("ab") as log:
            # bin/opensearch execs java in the foreground, so our child is the JVM itself. Its own
            # session keeps Ctrl-C in a terminal from reaching it before stop() can do it cleanly.
            self._proc = subprocess.Popen(
                [str(self.home / "bin" / "opensearch"), "-p", str(pid_file)],
                cwd=self.data_dir, env=env, stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        return self._proc

    def wait_ready(self, timeout_s: float = 180) -> None:
        """Until the cluster is yellow or green; a node that exits or never gets there is an error."""
        assert self._proc is not None, "launch() first"
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                code = self._proc.returncode
                self._proc = None
                raise self._fail(f"exited with code {code} while starting")
            status = (self.health() or {}).get("status")
            if status in ("yellow", "green"):
                return
            time.sleep(1)
        error = self._fail(f"was not yellow/green after {timeout_s:.0f}s")
        self.stop()
        raise error

    @property
    def heap_dump_dir(self) -> Path:
        return self.logs_dir / "heapdumps"

    def _bound_heap_dumps(self, keep: int = 1) -> None:
        """A heap dump is as large as the heap and is written on every out-of-memory: keep only the newest."""
        self.heap_dump_dir.mkdir(parents=True, exist_ok=True)
        dumps = sorted(self.heap_dump_dir.glob("*.hprof"), key=lambda p: p.stat().st_mtime)
        for old in dumps[:-keep] if keep else dumps:
            old.unlink(missing_ok=True)

    def stop(self, timeout_s: float = 60) -> None:
        """SIGTERM (OpenSearch flushes and closes cleanly), SIGKILL after `timeout_s`; wait for the port."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(30)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and port_open(self.http_port):
            time.sleep(0.2)
        with contextlib.suppress(OSError):
            (self.data_dir / "opensearch.pid").unlink()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
