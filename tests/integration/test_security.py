"""A secured single node, end to end: TLS from the project's CA, the three users and what each may do, the adapter's
token, and a bootstrap that is idempotent and notices a new token.

Its own node (the security plugin's distribution, a temporary run folder with freshly generated credentials and
certificates) and its own adapter (requiring the token), sharing the session's Triton; bootstrapped with the real
reconciler as admin. Every request verifies the server with the generated `ca.pem`: nothing here skips verification.
"""

from __future__ import annotations

import base64
import io
import json
import os
import secrets
import ssl
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from PIL import Image

from bootstrap.opensearch_api import Cluster, connect
from bootstrap.reconcile import Plan, Reconciler
from client.queries import filtered_query, hybrid_query, image_query, object_image_query, object_query, text_query
from common.config import Settings, load_config
from common.credentials import ADMIN_USER, INGEST_USER, MODEL_USERS_ROLE, SEARCH_USER, read_credentials
from common.model_facts import ClipFacts
from localstack.opensearch_dist import ensure_distribution
from localstack.opensearch_node import OpenSearchNode
from localstack.processes import free_ports
from localstack.security import prepare
from tests.conftest import AdapterProcess
from tests.ingest_corpus import bad_docs, good_docs

pytestmark = pytest.mark.integration

GOOD = 8  # documents vs_ingest sends (plus one bad one, which must be dead-lettered)


@dataclass
class SecureStack:
    settings: Settings
    overrides: dict[str, Any]  # what load_config was given (a test derives variants from it)
    node: OpenSearchNode
    adapter: AdapterProcess
    first_plan: Plan

    @property
    def ca(self) -> ssl.SSLContext:
        """Trusts the generated CA only."""
        verify = self.settings.opensearch.verify
        assert isinstance(verify, ssl.SSLContext)
        return verify

    def call(self, user: str | None, method: str, path: str, body: Any = None, **params: Any) -> httpx.Response:
        """One request to the node as `user` (None: anonymous), the server verified with the project's CA."""
        auth = self.settings.opensearch.auth(user) if user else None
        return httpx.request(method, f"{self.node.url}{path}", json=body, params=params or None, auth=auth,
                             verify=self.ca, timeout=300)


@pytest.fixture(scope="module")
def secure(triton_server, clip_facts: ClipFacts, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureStack]:
    run = tmp_path_factory.mktemp("secure-run")
    http_port, transport_port, adapter_port = free_ports(3)
    overrides: dict[str, Any] = {
        "run_dir": str(run),
        "opensearch": {"security": True, "url": f"http://127.0.0.1:{http_port}", "transport_port": transport_port},
        "triton": {"http_port": triton_server.http_port, "grpc_port": triton_server.grpc_port,
                   "metrics_port": triton_server.metrics_port},
        "adapter": {"port": adapter_port, "url_fetch_allow_private": True},
    }
    settings = load_config(**overrides)
    home = ensure_distribution(settings.cache, settings.opensearch.version, secure=True)
    node = OpenSearchNode(home, run / "opensearch", http_port=http_port, transport_port=transport_port,
                          heap=settings.opensearch.heap, security=prepare(settings))
    with node:
        adapter = AdapterProcess(settings, run / "adapter.log").start()
        try:
            cluster = Cluster(connect(settings.opensearch), settings.opensearch.url)
            yield SecureStack(settings, overrides, node, adapter, Reconciler(cluster, settings).run(clip_facts))
        finally:
            adapter.stop()


@pytest.fixture(scope="module")
def ingested(secure: SecureStack) -> dict:
    """GOOD documents and one bad one sent by vs_ingest in one `_bulk`."""
    index = secure.settings.index.name
    docs = good_docs(GOOD)[:GOOD] + [d for d in bad_docs(1, "http://127.0.0.1:9/x") if d.id == "bad-not-an-image"]
    lines = []
    for doc in docs:
        lines += [{"index": {"_index": index, "_id": doc.id}}, doc.body]
    payload = "".join(f"{json.dumps(line)}\n" for line in lines)
    response = httpx.post(f"{secure.node.url}/_bulk", content=payload, params={"refresh": "wait_for"},
                          headers={"Content-Type": "application/x-ndjson"}, verify=secure.ca, timeout=600,
                          auth=secure.settings.opensearch.auth(INGEST_USER))
    return {"docs": docs, "response": response}


def test_anonymous_requests_are_refused(secure: SecureStack) -> None:
    for path in ("/", "/_cluster/health", f"/{secure.settings.index.name}/_search"):
        response = secure.call(None, "GET", path)
        assert response.status_code == 401, (path, response.text)
    wrong = httpx.get(f"{secure.node.url}/_cluster/health", auth=(SEARCH_USER, "not-the-password"), verify=secure.ca)
    assert wrong.status_code == 401


def test_tls_is_verified_with_the_project_ca(secure: SecureStack) -> None:
    health = secure.call(ADMIN_USER, "GET", "/_cluster/health")
    assert health.status_code == 200 and health.json()["status"] in ("green", "yellow")
    assert secure.node.url.startswith("https://127.0.0.1:")  # the certificate names 127.0.0.1: hostname checked
    with pytest.raises(httpx.ConnectError):  # the system's CAs do not know the project's: nothing is trusted blindly
        httpx.get(f"{secure.node.url}/_cluster/health", auth=secure.settings.opensearch.auth(), verify=True)
    with pytest.raises(httpx.HTTPError):  # no plain HTTP beside TLS
        httpx.get(f"http://127.0.0.1:{secure.node.http_port}/_cluster/health", timeout=10)


def test_credentials_file_is_private(secure: SecureStack) -> None:
    path = secure.settings.opensearch.credentials_path
    assert path is not None
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert set(read_credentials(path).passwords) == {ADMIN_USER, INGEST_USER, SEARCH_USER}


def test_vs_ingest_indexes_through_the_pipeline_and_nothing_else(secure: SecureStack, ingested: dict) -> None:
    response = ingested["response"]
    assert response.status_code == 200, response.text
    items = [next(iter(item.values())) for item in response.json()["items"]]
    assert not response.json()["errors"], [i for i in items if i.get("error")]
    where = {item["_id"]: item["_index"] for item in items}
    index, dead = secure.settings.index.name, secure.settings.index.dead_letter
    # analyzed server side with vs_ingest's identity (ML predict through the model group), the bad one dead-lettered
    assert {where[d.id] for d in ingested["docs"] if not d.bad} == {index}
    assert where["bad-not-an-image"] == dead
    stored = secure.call(ADMIN_USER, "GET", f"/{index}/_doc/shape-0").json()["_source"]
    assert stored.get("global_image_embedding"), "the ingest pipeline did not analyze the image"
    for method, path, body in (("POST", f"/{index}/_search", {"query": {"match_all": {}}}),
                               ("GET", f"/{index}/_doc/shape-0", None),
                               ("POST", f"/{dead}/_search", {"query": {"match_all": {}}}),
                               ("GET", "/_cluster/settings", None),
                               ("POST", "/_plugins/_ml/connectors/_search", {"query": {"match_all": {}}})):
        got = secure.call(INGEST_USER, method, path, body)
        assert got.status_code == 403, (method, path, got.status_code, got.text[:300])


def _query_image(doc_image: bytes) -> bytes:
    """A crop of an indexed image, for the object-level image query."""
    image = Image.open(io.BytesIO(doc_image)).convert("RGB")
    crop = image.crop((0, 0, image.width // 2, image.height // 2))
    out = io.BytesIO()
    crop.save(out, format="JPEG")
    return out.getvalue()


def test_vs_search_runs_every_readme_mode(secure: SecureStack, ingested: dict) -> None:
    index = secure.settings.index.name
    image = next(d for d in ingested["docs"] if not d.bad).image
    assert image is not None
    modes = {
        "text": text_query("a red circle"),
        "image": image_query(image),
        "objects": object_query("a blue star"),
        "object image": object_image_query(_query_image(image)),
        "filtered": filtered_query("shapes", "circle", 0.0, "2020-01-01"),
        "hybrid": hybrid_query("a green triangle", "triangle"),
    }
    for mode, body in modes.items():
        as_search = secure.call(SEARCH_USER, "POST", f"/{index}/_search", body)
        assert as_search.status_code == 200, (mode, as_search.text[:500])
        as_admin = secure.call(ADMIN_USER, "POST", f"/{index}/_search", body)
        ids = [h["_id"] for h in as_search.json()["hits"]["hits"]]
        # the same answer admin gets: nothing silently hidden from the search user
        assert ids == [h["_id"] for h in as_admin.json()["hits"]["hits"]], mode
        if mode in ("text", "image", "hybrid", "objects"):
            assert ids, f"{mode}: no hits"
        if mode == "objects":
            assert all(h["inner_hits"]["detected_objects"]["hits"]["hits"] for h in as_search.json()["hits"]["hits"])


def test_vs_search_cannot_write_or_read_beyond_the_index(secure: SecureStack, ingested: dict) -> None:
    index, dead = secure.settings.index.name, secure.settings.index.dead_letter
    image = base64.b64encode(next(d for d in ingested["docs"] if not d.bad).image or b"").decode()
    refused = (("PUT", f"/{index}/_doc/by-search", {"image_id": "by-search", "image_b64": image}),
               ("POST", f"/{dead}/_search", {"query": {"match_all": {}}}),
               ("GET", f"/{dead}/_doc/bad-not-an-image", None),
               ("GET", "/_cluster/settings", None),
               ("PUT", "/_cluster/settings", {"persistent": {"plugins.ml_commons.only_run_on_ml_node": True}}),
               ("POST", "/_plugins/_ml/connectors/_search", {"query": {"match_all": {}}}),
               ("POST", "/_plugins/_ml/models/_search", {"query": {"match_all": {}}}),
               ("DELETE", f"/{index}", None))
    for method, path, body in refused:
        got = secure.call(SEARCH_USER, method, path, body)
        assert got.status_code == 403, (method, path, got.status_code, got.text[:300])
    bulk = httpx.post(f"{secure.node.url}/_bulk", verify=secure.ca, auth=secure.settings.opensearch.auth(SEARCH_USER),
                      headers={"Content-Type": "application/x-ndjson"},
                      content=json.dumps({"index": {"_index": index, "_id": "x"}}) + '\n{"image_id": "x"}\n')
    assert bulk.status_code == 403 or bulk.json().get("errors"), bulk.text[:300]
    assert secure.call(ADMIN_USER, "GET", f"/{index}/_doc/by-search").status_code == 404


def test_adapter_requires_the_token(secure: SecureStack) -> None:
    url = secure.adapter.url
    token = secure.settings.adapter_token
    assert token
    assert httpx.get(f"{url}/health", timeout=10).status_code == 200  # probes need no token
    body = {"text": "a red circle"}
    assert httpx.post(f"{url}/v1/embed", json=body, timeout=60).status_code == 401
    assert httpx.post(f"{url}/v1/embed", json=body, timeout=60,
                      headers={"Authorization": "Bearer not-the-token"}).status_code == 401
    assert httpx.get(f"{url}/metrics", timeout=10).status_code == 401
    good = {"Authorization": f"Bearer {token}"}
    answered = httpx.post(f"{url}/v1/embed", json=body, headers=good, timeout=60)
    assert answered.status_code == 200 and len(answered.json()["embedding"]) > 0
    assert httpx.get(f"{url}/metrics", headers=good, timeout=10).status_code == 200


def test_bootstrap_is_idempotent_and_follows_the_token(secure: SecureStack, clip_facts: ClipFacts) -> None:
    assert secure.first_plan.changes, "the first bootstrap created nothing"
    cluster = Cluster(connect(secure.settings.opensearch), secure.settings.opensearch.url)
    again = Reconciler(cluster, secure.settings, dry_run=True).run(clip_facts)
    assert not again.changes, again.lines()
    group = next(s for s in again.steps if s.kind == "model_group")
    found = secure.call(ADMIN_USER, "GET", f"/_plugins/_ml/model_groups/{group.id}").json()
    assert found.get("access") == "restricted" and found.get("backend_roles") == [MODEL_USERS_ROLE], found
    o = secure.overrides
    rotated = load_config(**{**o, "adapter": {**o["adapter"], "token": "a-new-token"}})
    plan = Reconciler(cluster, rotated, dry_run=True).run(clip_facts)
    assert {s.name for s in plan.changes if s.kind == "connector" and s.action == "update"} == {
        secure.settings.ml_commons.embed_model, secure.settings.ml_commons.analyze_model}, plan.lines()


def test_models_are_usable_only_through_the_model_group(secure: SecureStack, ingested: dict) -> None:
    """A user with vs_search's role but without the model-users backend role may search the index, but not with a
    model: ML Commons' access control (the restricted model group) is what lets the product users use them."""
    password = secrets.token_urlsafe(24)
    created = secure.call(ADMIN_USER, "PUT", "/_plugins/_security/api/internalusers/outsider",
                          {"password": password, "backend_roles": []})
    assert created.status_code in (200, 201), created.text
    mapped = secure.call(ADMIN_USER, "PUT", f"/_plugins/_security/api/rolesmapping/{SEARCH_USER}",
                         {"users": [SEARCH_USER, "outsider"]})
    assert mapped.status_code in (200, 201), mapped.text
    index = secure.settings.index.name
    url = f"{secure.node.url}/{index}/_search"
    plain = httpx.post(url, json={"query": {"match_all": {}}}, auth=("outsider", password), verify=secure.ca)
    assert plain.status_code == 200 and plain.json()["hits"]["hits"]
    neural = httpx.post(url, json=text_query("a red circle"), auth=("outsider", password), verify=secure.ca)
    # ML Commons: "User Doesn't have privilege to perform this operation on this model"
    assert neural.status_code == 403 and "on this model" in neural.text, neural.text[:300]
