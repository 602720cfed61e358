"""Talks to OpenSearch and ML Commons: finding, creating, updating and deploying by name.

Only this module knows REST paths. Errors become `ClusterError` with the method, path and the cluster's
own reason, and an unreachable cluster becomes one sentence naming the URL.

Deploying is restart-safe (`Cluster.deploy_model`): ML Commons 2.19 redeploys models by itself after a
restart, and that redeploy can fail ("Fetching master key timed out": the first decryption after the JVM
starts may outlast its 3 s latch) and leave the model's node cache stuck in DEPLOYING, so that every later
deploy answers "Duplicate deploy model task" until an undeploy clears it. The model index is not the
truth either: after a restart it still says DEPLOYED for a model no node serves. So "deployed" here means
the index says DEPLOYED *and* a node's profile serves it; a deploy that someone else runs is waited for,
never doubled; transient refusals are retried with backoff, a bounded number of times.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable
from functools import partial
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

# Model states as ML Commons writes them in its model index.
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


def is_transient(error: BaseException | str, status: int | None = None) -> bool:
    """True for a refusal worth retrying after a pause (HTTP 429/5xx, or a reason ML Commons gives while
    it is still starting); false for one that will fail the same way again (a bad request, a missing object)."""
    if isinstance(error, ClusterError) and status is None:
        status = error.status
    text = str(error).lower()
    if DUPLICATE_DEPLOY in text:
        return False  # not a failure to retry blindly: someone else is deploying (see `deploy_model`)
    return status in _TRANSIENT_STATUS or any(marker in text for marker in _TRANSIENT_MARKERS)


def oldest(hits: Iterable[dict]) -> dict | None:
    """The one object to use when several share a name: the oldest by `created_time`, then the smallest id.

    Two runners that each find duplicates (left by an interrupted run, or by concurrent runs before the
    bootstrap lock existed) must pick the same one, whatever order the search returns them in.
    """
    def key(hit: dict) -> tuple[float, str]:
        created = hit.get("created_time")
        return (float(created) if isinstance(created, int | float) else float("inf"), str(hit.get("id", "")))

    return min(hits, key=key, default=None)


def connect(settings: OpenSearchSettings, user: str | None = None) -> OpenSearch:
    """A client for the configured cluster. Secured: over TLS verified with the configured (or generated) CA, as the
    configured user, else as `user` (default admin) from the generated credentials."""
    ca = settings.ca_path
    return OpenSearch(hosts=[settings.url], http_auth=settings.auth(user), ssl_show_warn=False, timeout=120,
                      verify_certs=ca is not None or settings.verify_certs, ca_certs=str(ca) if ca else None)


class Cluster:
    def __init__(self, client: OpenSearch, url: str) -> None:
        self.client = client
        self.url = url

    def request(self, method: str, path: str, body: Any = None, params: dict | None = None) -> Any:
        try:
            return self.client.transport.perform_request(method, path, body=body, params=params)
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

    # --- cluster settings -------------------------------------------------------------------------
    def persistent_settings(self) -> dict[str, Any]:
        return self.request("GET", "/_cluster/settings", params={"flat_settings": "true"}).get("persistent", {})

    def put_persistent_settings(self, values: dict[str, Any]) -> None:
        self.request("PUT", "/_cluster/settings", {"persistent": values})

    # --- ML Commons objects, found by exact name --------------------------------------------------
    def _search_ml(self, kind: str, name: str, extra_must_not: list | None = None) -> list[dict]:
        """Every object of `kind` with exactly this name (duplicates included: the caller picks with `oldest`)."""
        query = {"bool": {"must": [{"term": {"name.keyword": name}}], "must_not": extra_must_not or []}}
        body = {"query": query, "size": 100, "sort": [{"created_time": {"order": "asc", "unmapped_type": "long"}}]}
        try:
            found = self.request("POST", f"/_plugins/_ml/{kind}/_search", body)
        except ClusterError as exc:
            if "index_not_found" in str(exc) or "404" in str(exc):
                return []  # ML Commons creates its system indices lazily
            raise
        return [{"id": h["_id"], **h["_source"]} for h in found.get("hits", {}).get("hits", [])]

    def find_model_group(self, name: str) -> dict | None:
        return oldest(self._search_ml("model_groups", name))

    def create_model_group(self, name: str, description: str, access: dict | None = None) -> str:
        """`access`: `access_mode` and `backend_roles` (only with the security plugin)."""
        return self.request("POST", "/_plugins/_ml/model_groups/_register",
                            {"name": name, "description": description, **(access or {})})["model_group_id"]

    def update_model_group(self, group_id: str, access: dict) -> None:
        self.request("PUT", f"/_plugins/_ml/model_groups/{group_id}", access)

    def find_connector(self, name: str) -> dict | None:
        """Found by name with search, then read by id: a GET is real time, a search may lag a fresh update."""
        found = oldest(self._search_ml("connectors", name))
        if found is None:
            return None
        return {"id": found["id"], **self.request("GET", f"/_plugins/_ml/connectors/{found['id']}")}

    def create_connector(self, body: dict, timeout_s: float = 180) -> str:
        """Retried while ML Commons is not ready for it: a new cluster creates its credential master key at the first
        connector, and until its config index is on the nodes the create fails ("Fetching master key timed out";
        seen on a fresh three-node cluster) without creating anything."""
        deadline = time.monotonic() + timeout_s
        create = partial(self.request, "POST", "/_plugins/_ml/connectors/_create", body)
        return self._retrying(create, deadline, time.sleep)["connector_id"]

    def update_connector(self, connector_id: str, body: dict) -> None:
        self.request("PUT", f"/_plugins/_ml/connectors/{connector_id}", body)

    def find_model(self, name: str) -> dict | None:
        found = oldest(self._search_ml("models", name, [{"exists": {"field": "chunk_number"}}]))
        if found is None:
            return None
        return {"id": found["id"], **self.request("GET", f"/_plugins/_ml/models/{found['id']}")}

    def register_model(self, body: dict) -> str:
        response = self.request("POST", "/_plugins/_ml/models/_register", body)
        if "model_id" in response:
            return response["model_id"]
        return self.wait_task(response["task_id"])["model_id"]

    def update_model(self, model_id: str, body: dict) -> None:
        self.request("PUT", f"/_plugins/_ml/models/{model_id}", body)

    def model_state(self, model_id: str) -> str:
        """The state the model index records (may be stale right after a restart: see `served_on`)."""
        return self.request("GET", f"/_plugins/_ml/models/{model_id}").get("model_state", "")

    def served_on(self, model_id: str) -> list[str]:
        """Ids of the nodes whose memory holds the model deployed: the truth the model index may lag."""
        profile = self.request("GET", f"/_plugins/_ml/profile/models/{model_id}")
        return sorted(node_id for node_id, node in (profile.get("nodes") or {}).items()
                      if ((node.get("models") or {}).get(model_id) or {}).get("model_state") == DEPLOYED)

    def stuck_on(self, model_id: str) -> list[str]:
        """Ids of the nodes whose memory holds the model in another state than DEPLOYED: a node that came back
        into a cluster whose other nodes serve the model can keep it DEPLOYING for good, refusing every deploy
        after as a duplicate."""
        profile = self.request("GET", f"/_plugins/_ml/profile/models/{model_id}")
        return sorted(node_id for node_id, node in (profile.get("nodes") or {}).items()
                      if ((node.get("models") or {}).get(model_id) or {}).get("model_state") not in (None, DEPLOYED))

    def model_nodes(self) -> list[str]:
        """Ids of the nodes ML Commons runs models on: the ML nodes if the cluster has any, else the data nodes
        (the local stack runs with `only_run_on_ml_node: false`)."""
        nodes = self.request("GET", "/_nodes", params={"filter_path": "nodes.*.roles"}).get("nodes") or {}
        ml = sorted(node_id for node_id, node in nodes.items() if "ml" in node.get("roles", []))
        return ml or sorted(node_id for node_id, node in nodes.items() if "data" in node.get("roles", []))

    def serves_everywhere(self, served: list[str]) -> bool:
        """Held by every node that runs models: a node that joined (or came back) after the deploy serves nothing
        until the model is deployed again, and a request routed to it fails."""
        return bool(served) and set(served) >= set(self.model_nodes())

    def model_deployed(self, model_id: str) -> bool:
        """Deployed for real: recorded DEPLOYED and held by every node that runs models."""
        return self.model_state(model_id) == DEPLOYED and self.serves_everywhere(self.served_on(model_id))

    def deploy_running(self, model_id: str, recent_s: float = 120) -> bool:
        """Whether a deploy task for the model was started in the last `recent_s` seconds and has not ended.

        Only recent ones count: a task whose node stopped mid-deploy stays RUNNING in the task index forever.
        """
        since = int((time.time() - recent_s) * 1000)
        query = {"bool": {"filter": [{"term": {"model_id": model_id}}, {"term": {"task_type": "DEPLOY_MODEL"}},
                                     {"terms": {"state": ["CREATED", "RUNNING"]}},
                                     {"range": {"create_time": {"gte": since}}}]}}
        try:
            found = self.request("POST", "/_plugins/_ml/tasks/_search", {"query": query, "size": 1})
        except ClusterError as exc:
            if "index_not_found" in str(exc):
                return False
            raise
        return bool(found.get("hits", {}).get("hits"))

    def deploy_model(self, model_id: str, timeout_s: float = 300, attempts: int = 4, backoff_s: float = 2,
                     backoff_max_s: float = 20, sleep: Callable[[float], None] = time.sleep,
                     name: str | None = None) -> None:
        """Leave the model deployed, whoever does the deploying; raise a `ClusterError` that says why if not.

        Each round reads the model: deployed for real → done; DEPLOYING, or a deploy task running (ML Commons'
        own automatic redeploy after a restart, or another client) → wait for it instead of starting another;
        otherwise start a deploy (at most `attempts` of our own). Before deploying a model nobody serves that
        is not idle, it is undeployed first: that clears a node cache left stuck by a failed deploy, which
        would otherwise refuse every deploy as a duplicate (when other nodes serve it, only the stuck nodes are
        cleared, after a duplicate refusal: a node that rejoined a cluster can hold it DEPLOYING for good).
        "Duplicate deploy model task" means someone else is deploying: wait for DEPLOYED. Transient refusals
        ("Fetching master key timed out", 429/5xx, "not ready") are retried after a backoff that doubles up to
        `backoff_max_s`; anything else is final.
        """
        label = f"{name} ({model_id})" if name else model_id
        deadline = time.monotonic() + timeout_s
        started = 0
        errors: list[str] = []
        clear_first = False
        while True:
            model = self._retrying(lambda: self.request("GET", f"/_plugins/_ml/models/{model_id}"), deadline, sleep)
            state = model.get("model_state", "")
            served = self._retrying(lambda: self.served_on(model_id), deadline, sleep)
            if state == DEPLOYED and self._retrying(partial(self.serves_everywhere, served), deadline, sleep):
                return
            if self._someone_deploying(model_id, model, deadline, sleep):
                if time.monotonic() >= deadline:
                    raise ClusterError(f"model {label} is still {state or 'deploying'} after {timeout_s:.0f}s "
                                       "(a deploy started by ML Commons or another client did not finish)")
                sleep(1)
                continue
            if started >= attempts or time.monotonic() >= deadline:
                why = "; ".join(errors[-3:]) or "no error reported"
                raise ClusterError(f"model {label} is {state or 'unknown'}, not DEPLOYED, after {started} deploy "
                                   f"attempt(s) in {timeout_s - max(0.0, deadline - time.monotonic()):.0f}s: {why}")
            if not served and (clear_first or state not in IDLE_STATES):
                self._retrying(lambda: self.request("POST", f"/_plugins/_ml/models/{model_id}/_undeploy"),
                               deadline, sleep)
            elif served and clear_first:  # served elsewhere: clear only the nodes stuck with it, then deploy
                stuck = self._retrying(lambda: self.stuck_on(model_id), deadline, sleep)
                if stuck:
                    undeploy = partial(self.request, "POST", f"/_plugins/_ml/models/{model_id}/_undeploy",
                                       {"node_ids": stuck})
                    self._retrying(undeploy, deadline, sleep)
            started += 1
            error = self._start_deploy(model_id, deadline)
            if error is None:
                # the task is done; the model index follows a moment later
                self._wait_for(lambda: self.model_deployed(model_id), min(15.0, self._left(deadline)), sleep)
                clear_first = False
                continue
            errors.append(error)
            if DUPLICATE_DEPLOY in error.lower():
                # a node already holds the model: deployed or deploying by someone else, or stuck; give the
                # other deploy time to finish, and clear the cache before our next try if it did not
                self._wait_for(lambda: self.model_deployed(model_id), min(30.0, self._left(deadline)), sleep)
                clear_first = True
                continue
            if not is_transient(error):
                raise ClusterError(f"deploying model {label} failed: {error}")
            clear_first = True
            sleep(min(backoff_max_s, backoff_s * 2 ** (started - 1), self._left(deadline)))

    def _someone_deploying(self, model_id: str, model: dict, deadline: float, sleep: Callable[[float], None],
                           recent_s: float = 60) -> bool:
        """A deploy in flight: the index says DEPLOYING and was written lately, or a recent task is running.

        A DEPLOYING older than `recent_s` with no task is stale (a node stopped mid-deploy; ML Commons' own
        correction of it, the sync-up job, does not even start after a failed automatic redeploy).
        """
        updated = model.get("last_updated_time")
        if model.get("model_state") == DEPLOYING and (
                not isinstance(updated, int | float) or updated / 1000 > time.time() - recent_s):
            return True
        return self._retrying(lambda: self.deploy_running(model_id, recent_s), deadline, sleep)

    def _start_deploy(self, model_id: str, deadline: float) -> str | None:
        """One deploy request and its task; the error text if it failed, None if it completed."""
        try:
            response = self.request("POST", f"/_plugins/_ml/models/{model_id}/_deploy")
            if "task_id" not in response:
                return None
            task = self._task_outcome(response["task_id"], max(1.0, self._left(deadline)))
        except ClusterError as exc:
            return str(exc)
        if task.get("state") == "COMPLETED":
            return None
        return f"task {response['task_id']} {task.get('state', '').lower()}: {task.get('error', task)}"

    def _task_outcome(self, task_id: str, timeout_s: float) -> dict:
        """The task once it has ended (COMPLETED, FAILED, ...); a ClusterError if it has not in `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            task = self.request("GET", f"/_plugins/_ml/tasks/{task_id}")
            if task.get("state") in ("COMPLETED", "FAILED", "COMPLETED_WITH_ERROR", "CANCELLED"):
                return task
            time.sleep(0.5)
        raise ClusterError(f"ML task {task_id} did not finish in {timeout_s:.0f}s")

    def _retrying(self, call: Callable[[], T], deadline: float, sleep: Callable[[float], None]) -> T:
        """`call()`, retried while it fails transiently and time is left (a node still starting)."""
        pause = 1.0
        while True:
            try:
                return call()
            except ClusterError as exc:
                if not is_transient(exc) or time.monotonic() + pause >= deadline:
                    raise
            sleep(pause)
            pause = min(pause * 2, 10.0)

    @staticmethod
    def _wait_for(condition: Callable[[], bool], timeout_s: float, sleep: Callable[[float], None]) -> bool:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                if condition():
                    return True
            except ClusterError as exc:
                if not is_transient(exc):
                    raise
            if time.monotonic() >= deadline:
                return False
            sleep(0.5)

    @staticmethod
    def _left(deadline: float) -> float:
        return max(0.0, deadline - time.monotonic())

    def undeploy_model(self, model_id: str) -> None:
        self.request("POST", f"/_plugins/_ml/models/{model_id}/_undeploy")
        self._wait_state(model_id, "UNDEPLOYED", 60)

    def _wait_state(self, model_id: str, wanted: str, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        state = ""
        while time.monotonic() < deadline:
            state = self.model_state(model_id)
            # a model whose deploy failed serves nothing and ML Commons leaves it DEPLOY_FAILED after an undeploy:
            # as good as undeployed (seen in CI when a test removed a deployment whose model had failed to deploy)
            if state == wanted or (wanted == "UNDEPLOYED" and state in ("REGISTERED", "CREATED", "DEPLOY_FAILED")):
                return
            time.sleep(0.5)
        raise ClusterError(f"model {model_id} is {state or 'unknown'}, not {wanted}, after {timeout_s:.0f}s")

    def wait_task(self, task_id: str, timeout_s: float = 120) -> dict:
        task = self._task_outcome(task_id, timeout_s)
        if task.get("state") != "COMPLETED":
            raise ClusterError(f"ML task {task_id} failed: {task.get('error', task)}")
        return task

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
    def get_search_pipeline(self, name: str) -> dict | None:
        found = self.get_or_none(f"/_search/pipeline/{name}")
        return found.get(name) if found else None

    def put_search_pipeline(self, name: str, body: dict) -> None:
        self.request("PUT", f"/_search/pipeline/{name}", body)

    def get_ingest_pipeline(self, name: str) -> dict | None:
        found = self.get_or_none(f"/_ingest/pipeline/{name}")
        return found.get(name) if found else None

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
    def search_ml_all(self, kind: str, size: int = 1000) -> list[dict]:
        """Every object of `kind` (`model_groups`, `connectors`, `models`), oldest first: the reconciler finds its
        own by name and the managed ones no longer desired by their description. Model chunks are left out."""
        must_not = [{"exists": {"field": "chunk_number"}}] if kind == "models" else []
        body = {"query": {"bool": {"must_not": must_not}}, "size": size,
                "sort": [{"created_time": {"order": "asc", "unmapped_type": "long"}}]}
        try:
            found = self.request("POST", f"/_plugins/_ml/{kind}/_search", body)
        except ClusterError as exc:
            if "index_not_found" in str(exc) or exc.status == 404:
                return []  # ML Commons creates its system indices lazily
            raise
        return [{"id": h["_id"], **h["_source"]} for h in found.get("hits", {}).get("hits", [])]

    def get_connector(self, connector_id: str) -> dict:
        """Read by id: real time, where a search may lag an update made a moment ago."""
        return {"id": connector_id, **self.request("GET", f"/_plugins/_ml/connectors/{connector_id}")}

    def get_model(self, model_id: str) -> dict:
        return {"id": model_id, **self.request("GET", f"/_plugins/_ml/models/{model_id}")}

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

    def count(self, index: str, query: dict | None = None) -> int:
        return int(self.request("POST", f"/{index}/_count", {"query": query} if query else None)["count"])

    # --- deleting (the reconciler's prune steps) ---------------------------------------------------------
    def delete_model(self, model_id: str) -> None:
        self.request("DELETE", f"/_plugins/_ml/models/{model_id}")

    def delete_connector(self, connector_id: str) -> None:
        self.request("DELETE", f"/_plugins/_ml/connectors/{connector_id}")

    def delete_model_group(self, group_id: str) -> None:
        self.request("DELETE", f"/_plugins/_ml/model_groups/{group_id}")

    def delete_ingest_pipeline(self, name: str) -> None:
        self.request("DELETE", f"/_ingest/pipeline/{name}")

    def delete_search_pipeline(self, name: str) -> None:
        self.request("DELETE", f"/_search/pipeline/{name}")

    def delete_index_template(self, name: str) -> None:
        self.request("DELETE", f"/_index_template/{name}")

    def delete_index(self, name: str) -> None:
        self.request("DELETE", f"/{name}")

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
        deadline = time.monotonic() + timeout_s
        try:
            while True:
                task = self.request("GET", f"/_tasks/{task_id}")
                if task.get("completed"):
                    if task.get("error"):
                        raise ClusterError(f"reindex task {task_id} failed: {task['error']}")
                    return task.get("response", {})
                if on_progress is not None:
                    on_progress(task.get("task", {}).get("status", {}))
                if time.monotonic() >= deadline:
                    raise ClusterError(f"reindex task {task_id} did not finish in {timeout_s:.0f}s (cancelled)")
                time.sleep(poll_s)
        except BaseException:
            # a task left running would go on writing into an index the caller is about to delete
            with contextlib.suppress(ClusterError):
                self.request("POST", f"/_tasks/{task_id}/_cancel")
            raise
