"""The OpenSearch assembled from Maven (localstack/opensearch_dist.py) loads and works.

Plugins and hand-built modules can each load yet be unusable (a missing dependency jar surfaces
only when a script compiles or a processor runs), so each module is exercised, not just listed.
The node runs on free ports with its own data dir, so it can coexist with a `make up` node.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from localstack.opensearch_node import OpenSearchNode

pytestmark = pytest.mark.integration



@pytest.fixture(scope="session")
def client(opensearch_node: OpenSearchNode) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=opensearch_node.url, timeout=60) as http:
        yield http


def _ok(response: httpx.Response) -> dict:
    assert response.status_code < 300, f"{response.request.method} {response.request.url}: {response.text}"
    return response.json()


def test_plugins_and_modules_are_loaded(client: httpx.Client, settings) -> None:
    nodes = _ok(client.get("/_nodes/plugins"))["nodes"]
    (node,) = nodes.values()
    plugins = {p["name"] for p in node["plugins"]}
    modules = {m["name"] for m in node["modules"]}
    assert {
        "opensearch-job-scheduler",
        "opensearch-ml",
        "opensearch-knn",
        "opensearch-neural-search",
    } <= plugins
    assert {"lang-painless", "lang-mustache", "reindex", "ingest-common"} <= modules
    # Versions must line up, or the plugin loader would have refused them; checked for a clear message.
    assert {p["opensearch_version"] for p in node["plugins"]} == {settings.opensearch.version}


def test_painless_script_runs(client: httpx.Client) -> None:
    body = {"script": {"source": "params.a * 2 + doc_count()", "params": {"a": 20}}}
    # doc_count() is not painless: this must fail to compile, proving the compiler is really there.
    assert client.post("/_scripts/painless/_execute", json=body).status_code == 400
    body = {"script": {"source": "params.a * 2 + 2", "params": {"a": 20}}}
    assert _ok(client.post("/_scripts/painless/_execute", json=body))["result"] == "42"


def test_lucene_knn_index_is_searchable(client: httpx.Client) -> None:
    index = "knn-smoke"
    mapping = {
        "settings": {"index": {"knn": True, "number_of_shards": 1, "number_of_replicas": 0}},
        "mappings": {
            "properties": {
                "vec": {
                    "type": "knn_vector",
                    "dimension": 3,
                    "method": {"name": "hnsw", "engine": "lucene", "space_type": "l2"},
                }
            }
        },
    }
    _ok(client.put(f"/{index}", json=mapping))
    for doc_id, vec in {"a": [1, 0, 0], "b": [0, 1, 0], "c": [0, 0, 1]}.items():
        _ok(client.put(f"/{index}/_doc/{doc_id}", params={"refresh": "true"}, json={"vec": vec}))
    query = {"size": 2, "query": {"knn": {"vec": {"vector": [0.1, 0.9, 0.0], "k": 2}}}}
    hits = _ok(client.post(f"/{index}/_search", json=query))["hits"]["hits"]
    assert len(hits) == 2 and hits[0]["_id"] == "b"
    _ok(client.delete(f"/{index}"))


def test_ingest_set_processor(client: httpx.Client) -> None:
    pipeline = {
        "processors": [{"set": {"field": "status", "value": "failed"}}, {"remove": {"field": "junk"}}]
    }
    _ok(client.put("/_ingest/pipeline/set-smoke", json=pipeline))
    _ok(client.put("/ingest-smoke/_doc/1", params={"pipeline": "set-smoke", "refresh": "true"},
                   json={"junk": 1, "name": "x"}))  # fmt: skip
    source = _ok(client.get("/ingest-smoke/_doc/1"))["_source"]
    assert source == {"name": "x", "status": "failed"}
    _ok(client.delete("/ingest-smoke"))
    _ok(client.delete("/_ingest/pipeline/set-smoke"))


def test_ml_commons_answers(client: httpx.Client) -> None:
    # The ML plugin's REST layer is up, and this single node may run models (it has no ml role).
    (node,) = _ok(client.get("/_nodes/settings", params={"flat_settings": "true"}))["nodes"].values()
    assert node["settings"]["plugins.ml_commons.only_run_on_ml_node"] == "false"
    _ok(client.get("/_plugins/_ml/stats"))
