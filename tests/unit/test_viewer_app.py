"""The viewer's backend without servers: what it asks OpenSearch, what it answers the page, and what it never
hands the browser (the OpenSearch credentials)."""

from __future__ import annotations

import base64

import pytest
from fastapi.testclient import TestClient
from opensearchpy.exceptions import ConnectionError as OSConnectionError
from opensearchpy.exceptions import RequestError, TransportError

from client.queries import Count, Filters, one_per_picture, search_body, with_class_facets
from common.config import load_config
from viewer.app import MIN_CANDIDATES, create_app

SECRET = "s3cret-pass-Word"
HIT = {"_id": "doc-1", "_score": 0.7,
       "_source": {"width": 100, "height": 50, "thumbnail": "QUJD", "detected_objects": [
           {"class_name": "star", "class_id": 3, "confidence": 0.8, "bbox": {"x1": 1, "y1": 2, "x2": 3, "y2": 4}}]},
       "inner_hits": {"detected_objects": {"hits": {"hits": [{"_nested": {"offset": 0}, "_source": {}}]}}}}


class FakeOpenSearch:
    def __init__(self) -> None:
        self.bodies: list[dict] = []
        self.fail: Exception | None = None

    def search(self, index: str, body: dict) -> dict:
        self.bodies.append(body)
        if self.fail is not None:
            raise self.fail
        if body.get("size") == 0:  # the class suggestions
            return {"aggregations": {"objects": {"classes": {"buckets": [{"key": "star"}, {"key": "circle"}]}}}}
        facets = {"classes": {"names": {"buckets": [{"key": "star", "doc_count": 1, "images": {"doc_count": 1}}]}}}
        return {"took": 3, "hits": {"total": {"value": 40, "relation": "eq"}, "hits": [HIT]}, "aggregations": facets}

    def ping(self) -> bool:
        return self.fail is None


@pytest.fixture
def viewer():
    settings = load_config(opensearch={"username": "vs_search", "password": SECRET})
    fake = FakeOpenSearch()
    with TestClient(create_app(settings, client=fake)) as client:  # type: ignore[arg-type]
        yield client, fake


def test_the_page_and_its_files_are_served(viewer):
    client, _ = viewer
    page = client.get("/")
    assert page.status_code == 200 and 'id="results"' in page.text
    for name, kind in (("app.js", "javascript"), ("style.css", "css")):
        response = client.get(f"/static/{name}")
        assert response.status_code == 200 and kind in response.headers["content-type"]
    assert "http://" not in client.get("/static/app.js").text  # no CDN, no hard-coded server


def test_a_search_is_built_by_the_shared_builders(viewer):
    client, fake = viewer
    answer = client.post("/api/search", json={"q": "a star", "objects": True, "classes": ["star", " "],
                                              "tags": ["t"], "since": "2026-01-01", "page": 3, "size": 5})
    assert answer.status_code == 200
    built = search_body(text="a star", objects=True, filters=Filters(classes=("star",), tags=("t",),
                                                                      since="2026-01-01"),
                        k=5, offset=10, candidates=MIN_CANDIDATES)
    assert fake.bodies[-1] == one_per_picture(with_class_facets(built))
    body = answer.json()
    assert (body["total"], body["page"], body["mode"]) == (40, 3, "object-by-text")
    assert body["facets"] == {"star": 1}
    assert body["hits"][0]["matched"] == 0 and body["hits"][0]["thumbnail"] == "QUJD"


def test_every_copy_and_counts_when_asked(viewer):
    client, fake = viewer
    answer = client.post("/api/search", json={"q": "a star", "all_copies": True, "counts": ["star>=2", "circle=0"]})
    assert answer.status_code == 200 and "collapse" not in fake.bodies[-1]
    assert fake.bodies[-1] == with_class_facets(search_body(text="a star", filters=Filters(counts=(
        Count.parse("star>=2"), Count.parse("circle=0"))), k=12, candidates=MIN_CANDIDATES))
    refused = client.post("/api/search", json={"q": "a star", "counts": ["star>=two"]})
    assert refused.status_code == 400 and "not a count" in refused.json()["error"]


def test_an_uploaded_image_is_the_query(viewer):
    client, fake = viewer
    data_url = "data:image/jpeg;base64," + base64.b64encode(b"\xff\xd8image").decode()
    assert client.post("/api/search", json={"q": "ignored", "image": data_url}).json()["mode"] == "image-by-image"
    neural = fake.bodies[-1]["query"]["neural"]["global_image_embedding"]
    assert base64.b64decode(neural["query_image"]) == b"\xff\xd8image" and "query_text" not in neural


@pytest.mark.parametrize("request_body", [{"q": ""}, {"q": "x", "min_confidence": 2}, {"q": "x", "size": 0},
                                          {"image": "***"}, {"q": "x", "unknown": 1}])
def test_bad_searches_are_refused_with_a_message(viewer, request_body):
    client, fake = viewer
    answer = client.post("/api/search", json=request_body)
    assert answer.status_code == 400 and answer.json()["error"]
    assert not fake.bodies  # never sent


def test_opensearch_refusing_a_query_is_a_400_with_its_reason(viewer):
    client, fake = viewer
    fake.fail = RequestError(400, "search_phase_execution_exception", {"error": {
        "root_cause": [{"type": "parse_exception", "reason": "failed to parse date field [x]"}],
        "type": "search_phase_execution_exception", "reason": "all shards failed"}})
    answer = client.post("/api/search", json={"q": "x", "since": "x"})
    assert answer.status_code == 400
    assert answer.json()["error"] == ("OpenSearch refused the search (400): parse_exception: failed to parse date "
                                      "field [x]")


@pytest.mark.parametrize("failure", [OSConnectionError("N/A", "refused", Exception("refused")),
                                     TransportError(503, "unavailable", {})])
def test_opensearch_down_is_a_502_that_names_no_credential(viewer, failure):
    client, fake = viewer
    fake.fail = failure
    answer = client.post("/api/search", json={"q": "x"})
    assert answer.status_code == 502 and "OpenSearch" in answer.json()["error"]
    assert client.get("/health").json()["opensearch"] == "unreachable"
    for response in (answer, client.get("/api/classes"), client.get("/health"), client.get("/")):
        assert SECRET not in response.text and "vs_search" not in response.text


def test_class_suggestions_come_from_the_index(viewer):
    client, fake = viewer
    assert client.get("/api/classes").json() == {"classes": ["star", "circle"]}
    assert fake.bodies[-1]["aggs"]["objects"]["nested"] == {"path": "detected_objects"}
