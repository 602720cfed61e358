"""The one OpenSearch client of the product, the bench and the tests: REST paths, errors, waits on the cluster.

Only this module knows REST paths. Errors become `ClusterError` with the method, path and the cluster's own
reason, and an unreachable cluster becomes one sentence naming the URL. `cluster_for(settings)` is how every
part opens one; code written against opensearch-py (the `client` package's bulk and replay) takes its
`client`, the same connection.

Deploying a model so that it is really served is not here but in `bootstrap.deploy`, over the ML Commons
calls this module makes. What waits here (a connector create while ML Commons starts, an ML task, a
`_reindex` task) waits on the `clock` and `sleep` given to `Cluster`, so it can be tested without waiting.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from opensearchpy import OpenSearch
from opensearchpy.exceptions import ConnectionError as OSConnectionError
from opensearchpy.exceptions import NotFoundError, TransportError

from common.config import OpenSearchSettings
from common.errors import VisualSearchError


class ClusterError(VisualSearchError):
    """OpenSearch refused a request or could not be reached; `status` is the HTTP status when there was one."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


T = TypeVar("T")

# Model states as ML Commons writes them in its model index and its node profiles.
DEPLOYED, DEPLOYING = "DEPLOYED", "DEPLOYING"
# States in which no node should hold the model: nothing to clear before deploying.
IDLE_STATES = frozenset({"REGISTERED", "UNDEPLOYED", "CREATED", ""})

# What ML Commons says when a node already holds the model in its cache (deployed, deploying, or stuck
# deploying after a failed automatic redeploy).
DUPLICATE_DEPLOY = "duplicate deploy model task"
# Refusals that go away by themselves: the master key or a system index not ready yet after a start, a node
# not (re)joined, the per-node limit of concurrent deploy tasks.
_TRANSIENT_MARKERS = (
    "fetching master key timed out", "master key has not been initialized", "please retry", "is not ready",
    "not ready yet", "node not ready", "no response to create ml config index", "exceed max running task limit",
    "timed out", "node_not_connected", "node_disconnected", "no_shard_available",
    "unavailable_shards", "cluster_block_exception", "cluster_manager_not_discovered",
    "master_not_discovered", "too many requests", "rejected execution",
)
_TRANSIENT_STATUS = frozenset({429, 500, 502, 503, 504})
# The states in which an ML task has ended, whatever its outcome.
_TASK_ENDED = frozenset({"COMPLETED", "FAILED", "COMPLETED_WITH_ERROR", "CANCELLED"})


def is_transient(error: BaseException | str, status: int | None = None) -> bool:
    """True for a refusal worth retrying after a pause (HTTP 429/5xx, or a reason ML Commons gives while
    it is still starting); false for one that will fail the same way again (a bad request, a missing object)."""
    if isinstance(error, ClusterError) and status is None:
        status = error.status
    text = str(error).lower()
    if DUPLICATE_DEPLOY in text:
        return False  # not a failure to retry blindly: someone else is deploying (see `bootstrap.deploy`)
    return status in _TRANSIENT_STATUS or any(marker in text for marker in _TRANSIENT_MARKERS)


def retrying(call: Callable[[], T], deadline: float, clock: Callable[[], float],
             sleep: Callable[[float], None]) -> T:
    """`call()`, retried while it fails transiently and `clock` is short of `deadline` (a node still starting);
    pauses double from 1 s up to 10 s."""
    pause = 1.0
    while True:
        try:
            return call()
        except ClusterError as exc:
            if not is_transient(exc) or clock() + pause >= deadline:
                raise
        sleep(pause)
        pause = min(pause * 2, 10.0)


def age_order(created_time: Any, object_id: str) -> tuple[float, str]:
    """The order in which duplicates of one name are ranked: oldest `created_time` first (none: last), then the
    smallest id. Two runners that each find duplicates (left by an interrupted run, or by concurrent runs before
    the bootstrap lock existed) must pick the same one, whatever order the search returns them in."""
    return (float(created_time) if isinstance(created_time, int | float) else float("inf"), object_id)


def oldest(hits: Iterable[dict]) -> dict | None:
    """The one object to use when several share a name (`age_order`)."""
    return min(hits, key=lambda hit: age_order(hit.get("created_time"), str(hit.get("id", ""))), default=None)


POOL_CONNECTIONS = 8  # room for the threads any caller here runs at once (bulk_index: 2 bulks, the bench: up to 4)


def connect(settings: OpenSearchSettings, user: str | None = None, timeout_s: float = 120) -> OpenSearch:
    """The opensearch-py client under a `Cluster`. Secured: over TLS verified with the configured (or generated) CA,
    as the configured user, else as `user` (default admin) from the generated credentials. `timeout_s`: of a
    request that does not name its own. Keeps `POOL_CONNECTIONS` connections open: urllib3 keeps one by default, so
    with two bulks in flight from threads (client/bulk.py) one connection was opened, used once and dropped per bulk
    (with TLS, a handshake each time)."""
    ca = settings.ca_path
    return OpenSearch(hosts=[settings.url], http_auth=settings.auth(user), ssl_show_warn=False, timeout=timeout_s,
                      verify_certs=ca is not None or settings.verify_certs, ca_certs=str(ca) if ca else None,
                      pool_maxsize=POOL_CONNECTIONS)


def cluster_for(settings: OpenSearchSettings, user: str | None = None, timeout_s: float = 120) -> Cluster:
    """A `Cluster` for the configured OpenSearch, as `connect` opens it."""
    return Cluster(connect(settings, user, timeout_s), settings.url)


def _profile_states(profile: dict, model_id: str) -> dict[str, str | None]:
    """Node id → the state a node's memory holds the model in (None: not held), from an ML Commons profile."""
    return {node_id: ((node.get("models") or {}).get(model_id) or {}).get("model_state")
            for node_id, node in (profile.get("nodes") or {}).items()}


class Cluster:
    """One OpenSearch cluster over an opensearch-py client; `clock` and `sleep` pace what waits on it."""

    def __init__(self, client: OpenSearch, url: str, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.client = client
        self.url = url
        self.clock = clock
        self.sleep = sleep

    def request(self, method: str, path: str, body: Any = None, params: dict | None = None, *,
                headers: dict[str, str] | None = None, timeout_s: float | None = None) -> Any:
        """One call; `body` a JSON value, or NDJSON text or bytes (with its Content-Type in `headers`)."""
        try:
            return self.client.transport.perform_request(method, path, body=body, params=params, headers=headers,
                                                         timeout=timeout_s)
        except OSConnectionError as exc:
            raise ClusterError(f"OpenSearch is unreachable at {self.url} ({exc.__class__.__name__})") from exc
        except TransportError as exc:
            status = exc.status_code if isinstance(exc.status_code, int) else None
            raise ClusterError(f"{method} {path} failed ({exc.status_code}): {exc.info or exc.error}",
                               status=status) from exc

    def get_or_none(self, path: str) -> Any:
        try:
            return self.client.transport.perform_request("GET", path)
        except NotFoundError:
            return None
        except OSConnectionError as exc:
            raise ClusterError(f"OpenSearch is unreachable at {self.url}") from exc

    def bulk(self, ndjson: str | bytes, index: str | None = None, params: dict | None = None,
             timeout_s: float | None = None) -> dict:
        """One `_bulk` of NDJSON lines (into `index` when the lines name none); its response, item errors included."""
        path = f"/{index}/_bulk" if index else "/_bulk"
        return self.request("POST", path, ndjson, params, headers={"Content-Type": "application/x-ndjson"},
                            timeout_s=timeout_s)

    # --- cluster settings -------------------------------------------------------------------------
    def persistent_settings(self) -> dict[str, Any]:
        return self.request("GET", "/_cluster/settings", params={"flat_settings": "true"}).get("persistent", {})

    def put_persistent_settings(self, values: dict[str, Any]) -> None:
        self.request("PUT", "/_cluster/settings", {"persistent": values})

    # --- ML Commons objects, found by exact name --------------------------------------------------
    def search_ml(self, kind: str, name: str | None = None, size: int = 1000) -> list[dict]:
        """Every object of `kind` (`model_groups`, `connectors`, `models`), oldest first; only those named `name`
        when given, duplicates included (the caller picks with `oldest`). Model chunks are left out."""
        must = [{"term": {"name.keyword": name}}] if name is not None else []
        must_not = [{"exists": {"field": "chunk_number"}}] if kind == "models" else []
        body = {"query": {"bool": {"must": must, "must_not": must_not}}, "size": size,
                "sort": [{"created_time": {"order": "asc", "unmapped_type": "long"}}]}
        try:
            found = self.request("POST", f"/_plugins/_ml/{kind}/_search", body)
        except ClusterError as exc:
            if "index_not_found" in str(exc) or exc.status == 404:
                return []  # ML Commons creates its system indices lazily
            raise
        return [{"id": h["_id"], **h["_source"]} for h in found.get("hits", {}).get("hits", [])]

    def find_model_group(self, name: str) -> dict | None:
        return oldest(self.search_ml("model_groups", name))

    def create_model_group(self, name: str, description: str, access: dict | None = None) -> str:
        """`access`: `access_mode` and `backend_roles` (only with the security plugin)."""
        return self.request("POST", "/_plugins/_ml/model_groups/_register",
                            {"name": name, "description": description, **(access or {})})["model_group_id"]

    def update_model_group(self, group_id: str, access: dict) -> None:
        self.request("PUT", f"/_plugins/_ml/model_groups/{group_id}", access)

    def find_connector(self, name: str) -> dict | None:
        """Found by name with search, then read by id: a GET is real time, a search may lag a fresh update."""
        found = oldest(self.search_ml("connectors", name))
        return None if found is None else self.get_connector(found["id"])

    def get_connector(self, connector_id: str) -> dict:
        """Read by id: real time, where a search may lag an update made a moment ago."""
        return {"id": connector_id, **self.request("GET", f"/_plugins/_ml/connectors/{connector_id}")}

    def create_connector(self, body: dict, timeout_s: float = 180) -> str:
        """Retried while ML Commons is not ready for it: a new cluster creates its credential master key at the first
        connector, and until its config index is on the nodes the create fails ("Fetching master key timed out";
        seen on a fresh three-node cluster) without creating anything."""
        def create() -> Any:
            return self.request("POST", "/_plugins/_ml/connectors/_create", body)
        return retrying(create, self.clock() + timeout_s, self.clock, self.sleep)["connector_id"]

    def update_connector(self, connector_id: str, body: dict) -> None:
        self.request("PUT", f"/_plugins/_ml/connectors/{connector_id}", body)

    def find_model(self, name: str) -> dict | None:
        """The model of that name (the oldest of duplicates), read by id as `get_model`; None when there is none."""
        found = oldest(self.search_ml("models", name))
        return None if found is None else self.get_model(found["id"])

    def get_model(self, model_id: str) -> dict:
        """The model's record: `model_state` as the model index has it (stale after a restart: see
        `bootstrap.deploy.is_deployed`), `last_updated_time` in milliseconds, its connector and group."""
        return {"id": model_id, **self.request("GET", f"/_plugins/_ml/models/{model_id}")}

    def register_model(self, body: dict) -> str:
        response = self.request("POST", "/_plugins/_ml/models/_register", body)
        if "model_id" in response:
            return response["model_id"]
        task = self.wait_ml_task(response["task_id"], 120)
        if task.get("state") != "COMPLETED":
            raise ClusterError(f"ML task {response['task_id']} failed: {task.get('error', task)}")
        return task["model_id"]

    def update_model(self, model_id: str, body: dict) -> None:
        self.request("PUT", f"/_plugins/_ml/models/{model_id}", body)

    def delete_model(self, model_id: str) -> None:
        self.request("DELETE", f"/_plugins/_ml/models/{model_id}")

    def delete_connector(self, connector_id: str) -> None:
        self.request("DELETE", f"/_plugins/_ml/connectors/{connector_id}")

    def delete_model_group(self, group_id: str) -> None:
        self.request("DELETE", f"/_plugins/_ml/model_groups/{group_id}")

    # --- where a model runs: the calls `bootstrap.deploy` makes ----------------------------------------
    def nodes_holding(self, model_id: str) -> list[str]:
        """Ids of the nodes whose memory holds the model deployed: the truth the model index may lag."""
        states = _profile_states(self.request("GET", f"/_plugins/_ml/profile/models/{model_id}"), model_id)
        return sorted(node_id for node_id, state in states.items() if state == DEPLOYED)

    def nodes_stuck(self, model_id: str) -> list[str]:
        """Ids of the nodes whose memory holds the model in another state than DEPLOYED: a node that came back
        into a cluster whose other nodes serve the model can keep it DEPLOYING for good, refusing every deploy
        after as a duplicate."""
        states = _profile_states(self.request("GET", f"/_plugins/_ml/profile/models/{model_id}"), model_id)
        return sorted(node_id for node_id, state in states.items() if state not in (None, DEPLOYED))

    def model_nodes(self) -> list[str]:
        """Ids of the nodes ML Commons runs models on: the ML nodes if the cluster has any, else the data nodes
        (the local stack runs with `only_run_on_ml_node: false`)."""
        nodes = self.request("GET", "/_nodes", params={"filter_path": "nodes.*.roles"}).get("nodes") or {}
        ml = sorted(node_id for node_id, node in nodes.items() if "ml" in node.get("roles", []))
        return ml or sorted(node_id for node_id, node in nodes.items() if "data" in node.get("roles", []))

    def deploy_task_running(self, model_id: str, since_ms: int) -> bool:
        """Whether a deploy task for the model created at or after `since_ms` (epoch milliseconds, the cluster's
        clock) has not ended. The caller bounds it: a task whose node stopped mid-deploy stays RUNNING forever."""
        query = {"bool": {"filter": [{"term": {"model_id": model_id}}, {"term": {"task_type": "DEPLOY_MODEL"}},
                                     {"terms": {"state": ["CREATED", "RUNNING"]}},
                                     {"range": {"create_time": {"gte": since_ms}}}]}}
        try:
            found = self.request("POST", "/_plugins/_ml/tasks/_search", {"query": query, "size": 1})
        except ClusterError as exc:
            if "index_not_found" in str(exc):
                return False
            raise
        return bool(found.get("hits", {}).get("hits"))

    def start_deploy(self, model_id: str) -> str | None:
        """Ask for a deploy: the id of its ML task, or None when the answer says it is done without one."""
        return self.request("POST", f"/_plugins/_ml/models/{model_id}/_deploy").get("task_id")

    def request_undeploy(self, model_id: str, node_ids: list[str] | None = None) -> None:
        """Ask for an undeploy from every node, or from `node_ids` only; returns before the model index follows."""
        body = {"node_ids": node_ids} if node_ids else None
        self.request("POST", f"/_plugins/_ml/models/{model_id}/_undeploy", body)

    def wait_ml_task(self, task_id: str, timeout_s: float) -> dict:
        """The ML task once it has ended (COMPLETED, FAILED, ...); a ClusterError if it has not in `timeout_s`."""
        deadline = self.clock() + timeout_s
        while self.clock() < deadline:
            task = self.request("GET", f"/_plugins/_ml/tasks/{task_id}")
            if task.get("state") in _TASK_ENDED:
                return task
            self.sleep(0.5)
        raise ClusterError(f"ML task {task_id} did not finish in {timeout_s:.0f}s")

    # --- single documents with optimistic concurrency (the bootstrap lock) -----------------------------
    def ensure_index(self, name: str, settings: dict) -> None:
        """Create the index unless it exists; losing a creation race to another client is fine."""
        try:
            self.request("PUT", f"/{name}", {"settings": settings})
        except ClusterError as exc:
            if "resource_already_exists_exception" not in str(exc):
                raise

    def create_document(self, index: str, doc_id: str, body: dict) -> tuple[int, int] | None:
        """Index the document only if none has that id (`op_type=create`): its (seq_no, primary_term), or None
        if one already exists. The cluster decides atomically, so exactly one of concurrent creators wins."""
        try:
            response = self.request("PUT", f"/{index}/_doc/{doc_id}", body,
                                    params={"op_type": "create", "refresh": "true"})
        except ClusterError as exc:
            if exc.status == 409:
                return None
            raise
        return response["_seq_no"], response["_primary_term"]

    def get_document(self, index: str, doc_id: str) -> tuple[dict, tuple[int, int]] | None:
        try:
            found = self.request("GET", f"/{index}/_doc/{doc_id}")
        except ClusterError as exc:
            if exc.status == 404:  # no such document, or no index yet
                return None
            raise
        if not found.get("found"):
            return None
        return found["_source"], (found["_seq_no"], found["_primary_term"])

    def replace_document(self, index: str, doc_id: str, body: dict, version: tuple[int, int]) -> tuple[int, int] | None:
        """Overwrite the document only if it is still at `version`: the new version, or None if it moved on."""
        seq_no, primary_term = version
        try:
            response = self.request("PUT", f"/{index}/_doc/{doc_id}", body, params={
                "if_seq_no": seq_no, "if_primary_term": primary_term, "refresh": "true"})
        except ClusterError as exc:
            if exc.status in (404, 409):
                return None
            raise
        return response["_seq_no"], response["_primary_term"]

    def delete_document(self, index: str, doc_id: str, version: tuple[int, int]) -> bool:
        """Delete the document only if it is still at `version`; False if it was changed or is gone."""
        seq_no, primary_term = version
        try:
            self.request("DELETE", f"/{index}/_doc/{doc_id}", params={
                "if_seq_no": seq_no, "if_primary_term": primary_term, "refresh": "true"})
        except ClusterError as exc:
            if exc.status in (404, 409):
                return False
            raise
        return True

    # --- pipelines, templates, indices ------------------------------------------------------------
    def put_search_pipeline(self, name: str, body: dict) -> None:
        self.request("PUT", f"/_search/pipeline/{name}", body)

    def put_ingest_pipeline(self, name: str, body: dict) -> None:
        self.request("PUT", f"/_ingest/pipeline/{name}", body)

    def get_index_template(self, name: str) -> dict | None:
        found = self.get_or_none(f"/_index_template/{name}")
        templates = (found or {}).get("index_templates", [])
        return templates[0]["index_template"] if templates else None

    def put_index_template(self, name: str, body: dict) -> None:
        self.request("PUT", f"/_index_template/{name}", body)

    def index_exists(self, name: str) -> bool:
        return bool(self.client.indices.exists(index=name))

    def create_index(self, name: str, body: dict | None = None) -> None:
        self.request("PUT", f"/{name}", body)

    def index_settings(self, name: str) -> dict:
        """Flat settings of a concrete index (`index.knn`, `index.default_pipeline`, ...), values as strings."""
        return self.request("GET", f"/{name}/_settings", params={"flat_settings": "true"})[name]["settings"]

    def put_index_settings(self, name: str, values: dict) -> None:
        self.request("PUT", f"/{name}/_settings", values)

    def put_closed_index_settings(self, name: str, values: dict) -> None:
        """Static settings (the codec) on a closed index; it is reopened whatever happens, and serves again before
        this returns (its primaries active)."""
        self.close_index(name)
        try:
            self.put_index_settings(name, values)
        finally:
            self.open_index(name)

    def close_index(self, name: str) -> None:
        self.request("POST", f"/{name}/_close", params={"wait_for_active_shards": "1"})

    def open_index(self, name: str) -> None:
        """Returns once its primaries are active: it serves again."""
        self.request("POST", f"/{name}/_open", params={"wait_for_active_shards": "1"})

    # --- reading everything at once (the reconciler's `observe`) -----------------------------------------
    def ingest_pipelines(self) -> dict[str, dict]:
        return self.get_or_none("/_ingest/pipeline") or {}  # 404 when there is none at all

    def search_pipelines(self) -> dict[str, dict]:
        return self.get_or_none("/_search/pipeline") or {}

    def index_templates(self) -> dict[str, dict]:
        found = self.get_or_none("/_index_template") or {}
        return {t["name"]: t["index_template"] for t in found.get("index_templates", [])}

    def resolve_index(self, name: str) -> tuple[str, bool] | None:
        """(the concrete index, whether `name` is an alias of it), or None when nothing has that name.

        An alias that points at several indices is refused: writes through it would fail, and which one holds the
        mapping to compare would be a guess.
        """
        rows = self.request("GET", f"/_cat/aliases/{name}", params={"format": "json", "h": "alias,index"})
        aliased = sorted({row["index"] for row in rows if row.get("alias") == name})
        if aliased:
            if len(aliased) != 1:
                raise ClusterError(f"alias {name} points at {len(aliased)} indices ({', '.join(aliased)}); "
                                   "the bootstrap manages an alias of exactly one index")
            return aliased[0], True
        return (name, False) if self.index_exists(name) else None

    def index_mapping(self, index: str) -> dict:
        return self.request("GET", f"/{index}/_mapping")[index]["mappings"]

    def index_names(self, pattern: str) -> list[str]:
        """Names of the open indices matching a wildcard pattern ([] when none)."""
        found = self.request("GET", f"/_cat/indices/{pattern}", params={"format": "json", "h": "index"})
        return sorted(row["index"] for row in found)

    def wait_primaries_active(self, patterns: list[str], timeout_s: float) -> None:
        """Returns once every index matching `patterns` has its primary shards started (health yellow or green);
        raises ClusterError naming the health if not within `timeout_s`. After a restart a node recovers its shards
        for a while, and until then a count or search of them answers 503 "all shards failed"; patterns matching
        no index are ready at once."""
        health = self.request("GET", f"/_cluster/health/{','.join(patterns)}",
                              params={"wait_for_status": "yellow", "timeout": f"{max(1, int(timeout_s))}s"},
                              timeout_s=timeout_s + 30)
        if health.get("timed_out") or health.get("status") not in ("yellow", "green"):
            raise ClusterError(f"the shards of {', '.join(patterns)} are not active after {timeout_s:.0f} s "
                               f"(status {health.get('status')}, {health.get('initializing_shards')} initializing, "
                               f"{health.get('unassigned_shards')} unassigned)", status=503)

    def count(self, index: str, query: dict | None = None) -> int:
        return int(self.request("POST", f"/{index}/_count", {"query": query} if query else None)["count"])

    # --- deleting (the reconciler's prune steps) ---------------------------------------------------------
    def delete_ingest_pipeline(self, name: str) -> None:
        self.request("DELETE", f"/_ingest/pipeline/{name}")

    def delete_search_pipeline(self, name: str) -> None:
        self.request("DELETE", f"/_search/pipeline/{name}")

    def delete_index_template(self, name: str) -> None:
        self.request("DELETE", f"/_index_template/{name}")

    def delete_index(self, name: str, missing_ok: bool = False) -> None:
        try:
            self.request("DELETE", f"/{name}")
        except ClusterError as exc:
            if not (missing_ok and exc.status == 404):
                raise

    # --- index versions (the reconciler's replace steps) -------------------------------------------------
    def put_mapping(self, index: str, body: dict) -> None:
        self.request("PUT", f"/{index}/_mapping", body)

    def block_writes(self, index: str, blocked: bool = True) -> None:
        """A write block: writes are refused with an error (never silently lost) while an index is copied."""
        self.put_index_settings(index, {"index.blocks.write": True if blocked else None})

    def clone_index(self, source: str, target: str) -> None:
        """A copy under another name, sharing the segment files (OpenSearch has no rename); the source must be
        write-blocked, and the copy is write-blocked too (a retired version is read-only)."""
        self.request("PUT", f"/{source}/_clone/{target}", {"settings": {"index.blocks.write": True}},
                     params={"wait_for_active_shards": "1"})

    def update_aliases(self, actions: list[dict]) -> None:
        """All the actions at once: searches by the alias see the old index or the new one, never neither."""
        self.request("POST", "/_aliases", {"actions": actions})

    def refresh(self, index: str) -> None:
        self.request("POST", f"/{index}/_refresh")

    def force_merge(self, index: str, timeout_s: float = 3600) -> None:
        """Down to one segment (minutes for a large index), then refreshed."""
        self.request("POST", f"/{index}/_forcemerge", params={"max_num_segments": "1"}, timeout_s=timeout_s)
        self.refresh(index)

    def delete_by_query(self, index: str, query: dict) -> None:
        self.request("POST", f"/{index}/_delete_by_query", {"query": query},
                     params={"refresh": "true", "conflicts": "proceed"})

    def simulate_pipeline(self, name: str, docs: list[dict]) -> list[dict]:
        """Each document as the pipeline leaves it (`doc`), or the `error` it raised; nothing is indexed."""
        return self.request("POST", f"/_ingest/pipeline/{name}/_simulate", {"docs": docs})["docs"]

    def reindex(self, body: dict, timeout_s: float = 86_400, poll_s: float = 2,
                on_progress: Callable[[dict], None] | None = None) -> dict:
        """Run a `_reindex` as a task and wait for it: its response (`created`, `failures`, ...).

        As a task, because re-analyzing an index takes as long as ingesting it did: an HTTP request would time out
        long before. `on_progress` receives the task's status (`total`, `created`, ...) at each poll.
        """
        task_id = self.request("POST", "/_reindex", body, params={"wait_for_completion": "false",
                                                                  "refresh": "true"})["task"]
        deadline = self.clock() + timeout_s
        try:
            while True:
                task = self.request("GET", f"/_tasks/{task_id}")
                if task.get("completed"):
                    if task.get("error"):
                        raise ClusterError(f"reindex task {task_id} failed: {task['error']}")
                    return task.get("response", {})
                if on_progress is not None:
                    on_progress(task.get("task", {}).get("status", {}))
                if self.clock() >= deadline:
                    raise ClusterError(f"reindex task {task_id} did not finish in {timeout_s:.0f}s (cancelled)")
                self.sleep(poll_s)
        except BaseException:
            # a task left running would go on writing into an index the caller is about to delete
            with contextlib.suppress(ClusterError):
                self.request("POST", f"/_tasks/{task_id}/_cancel")
            raise
