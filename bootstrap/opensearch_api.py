"""Talks to OpenSearch and ML Commons: finding, creating, updating and deploying by name.

Only this module knows REST paths. Errors become `ClusterError` with the method, path and the cluster's
own reason, and an unreachable cluster becomes one sentence naming the URL.
"""

from __future__ import annotations

import time
from typing import Any

from opensearchpy import OpenSearch
from opensearchpy.exceptions import ConnectionError as OSConnectionError
from opensearchpy.exceptions import NotFoundError, TransportError

from common.config import OpenSearchSettings


class ClusterError(RuntimeError):
    """OpenSearch refused a request or could not be reached."""


def connect(settings: OpenSearchSettings) -> OpenSearch:
    auth = (settings.username, settings.password) if settings.username else None
    return OpenSearch(hosts=[settings.url], http_auth=auth, verify_certs=settings.verify_certs,
                      ssl_show_warn=False, timeout=120)


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
            raise ClusterError(f"{method} {path} failed ({exc.status_code}): {exc.info or exc.error}") from exc

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
        query = {"bool": {"must": [{"term": {"name.keyword": name}}], "must_not": extra_must_not or []}}
        try:
            found = self.request("POST", f"/_plugins/_ml/{kind}/_search", {"query": query, "size": 10})
        except ClusterError as exc:
            if "index_not_found" in str(exc) or "404" in str(exc):
                return []  # ML Commons creates its system indices lazily
            raise
        return [{"id": h["_id"], **h["_source"]} for h in found.get("hits", {}).get("hits", [])]

    def find_model_group(self, name: str) -> dict | None:
        return next(iter(self._search_ml("model_groups", name)), None)

    def create_model_group(self, name: str, description: str) -> str:
        return self.request("POST", "/_plugins/_ml/model_groups/_register",
                            {"name": name, "description": description})["model_group_id"]

    def find_connector(self, name: str) -> dict | None:
        """Found by name with search, then read by id: a GET is real time, a search may lag a fresh update."""
        found = next(iter(self._search_ml("connectors", name)), None)
        if found is None:
            return None
        return {"id": found["id"], **self.request("GET", f"/_plugins/_ml/connectors/{found['id']}")}

    def create_connector(self, body: dict) -> str:
        return self.request("POST", "/_plugins/_ml/connectors/_create", body)["connector_id"]

    def update_connector(self, connector_id: str, body: dict) -> None:
        self.request("PUT", f"/_plugins/_ml/connectors/{connector_id}", body)

    def find_model(self, name: str) -> dict | None:
        found = next(iter(self._search_ml("models", name, [{"exists": {"field": "chunk_number"}}])), None)
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
        return self.request("GET", f"/_plugins/_ml/models/{model_id}").get("model_state", "")

    def deploy_model(self, model_id: str, timeout_s: float = 120) -> None:
        response = self.request("POST", f"/_plugins/_ml/models/{model_id}/_deploy")
        if "task_id" in response:
            self.wait_task(response["task_id"], timeout_s)
        self._wait_state(model_id, "DEPLOYED", timeout_s)

    def undeploy_model(self, model_id: str) -> None:
        self.request("POST", f"/_plugins/_ml/models/{model_id}/_undeploy")
        self._wait_state(model_id, "UNDEPLOYED", 60)

    def _wait_state(self, model_id: str, wanted: str, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        state = ""
        while time.monotonic() < deadline:
            state = self.model_state(model_id)
            if state == wanted or (wanted == "UNDEPLOYED" and state in ("REGISTERED", "CREATED")):
                return
            time.sleep(0.5)
        raise ClusterError(f"model {model_id} is {state or 'unknown'}, not {wanted}, after {timeout_s:.0f}s")

    def wait_task(self, task_id: str, timeout_s: float = 120) -> dict:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            task = self.request("GET", f"/_plugins/_ml/tasks/{task_id}")
            if task.get("state") == "COMPLETED":
                return task
            if task.get("state") in ("FAILED", "COMPLETED_WITH_ERROR"):
                raise ClusterError(f"ML task {task_id} failed: {task.get('error', task)}")
            time.sleep(0.5)
        raise ClusterError(f"ML task {task_id} did not finish in {timeout_s:.0f}s")

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

    def create_index(self, name: str) -> None:
        self.request("PUT", f"/{name}")

    def index_settings(self, name: str) -> dict:
        return self.request("GET", f"/{name}/_settings", params={"flat_settings": "true"})[name]["settings"]

    def put_index_settings(self, name: str, values: dict) -> None:
        self.request("PUT", f"/{name}/_settings", values)
