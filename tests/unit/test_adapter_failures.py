"""The adapter's failure contract with ML Commons, through its real routes and a small Triton double.

ML Commons retries only answers carrying the throttling header; the dead-letter route reads `retryable`
from the body it copies into the failure message. So each kind of failure must come back with exactly the
status, header and verdict below.
"""

from __future__ import annotations

import base64
import io

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from common.config import load_config
from common.contract import PERMANENT_MARK, RETRYABLE_FIELD, THROTTLING_HEADER, THROTTLING_VALUE
from connectors.adapter.app import create_app
from connectors.adapter.triton import InferenceFailed, TritonUnavailable
from tests.triton_double import FakeTriton


def jpeg_b64() -> str:
    out = io.BytesIO()
    Image.new("RGB", (32, 32), (200, 20, 20)).save(out, "JPEG")
    return base64.b64encode(out.getvalue()).decode()


@pytest.fixture
def adapter():
    settings = load_config(adapter={"unavailable_retry_s": 60, "max_image_bytes": 10_000})
    app = create_app(settings)
    with TestClient(app, raise_server_exceptions=False) as client:  # a 500 is an answer here, not a crash
        fake = FakeTriton()
        app.state.triton = fake
        yield client, fake, app


def body_of(response) -> dict:
    body = response.json()
    assert set(body) == {"error", "detail", RETRYABLE_FIELD}, body
    return body


def test_a_good_image_is_analyzed(adapter):
    client, fake, _ = adapter
    response = client.post("/v1/analyze", json={"image": jpeg_b64()})
    assert response.status_code == 200 and response.json()["width"] == 32 and fake.calls == 1


def test_a_bad_image_is_permanent_and_says_so(adapter):
    client, fake, _ = adapter
    fake.fail = InferenceFailed("truncated: the JPEG file ends before its image data does")
    response = client.post("/v1/analyze", json={"image": jpeg_b64()})
    assert response.status_code == 422 and THROTTLING_HEADER not in response.headers
    assert body_of(response)[RETRYABLE_FIELD] is False
    assert PERMANENT_MARK in response.text  # what the dead-letter route searches for


@pytest.mark.parametrize(("payload", "status"), [
    ({"image": "!!!not base64!!!"}, 400),
    ({"image": base64.b64encode(b"x" * 20_000).decode()}, 413),
    ({}, 400),
    ({"image_url": "ftp://example.com/a.jpg"}, 422),
])
def test_bad_input_never_reaches_triton_and_is_permanent(adapter, payload, status):
    client, fake, _ = adapter
    response = client.post("/v1/analyze", json=payload)
    assert response.status_code == status and body_of(response)[RETRYABLE_FIELD] is False
    assert fake.calls == 0


def test_triton_down_is_busy_with_the_throttling_header_then_unavailable(adapter):
    client, fake, app = adapter
    fake.fail = TritonUnavailable("Triton at x: failed to connect to all addresses")
    response = client.post("/v1/analyze", json={"image": jpeg_b64()})
    assert response.status_code == 429
    assert response.headers[THROTTLING_HEADER] == THROTTLING_VALUE and int(response.headers["Retry-After"]) >= 1
    assert body_of(response)[RETRYABLE_FIELD] is True
    app.state.outage.since -= 3600  # the outage has outlasted its retry window
    response = client.post("/v1/analyze", json={"image": jpeg_b64()})
    assert response.status_code == 503 and THROTTLING_HEADER not in response.headers
    assert body_of(response)[RETRYABLE_FIELD] is True
    fake.fail = None
    assert client.post("/v1/analyze", json={"image": jpeg_b64()}).status_code == 200
    assert app.state.outage.since is None


def test_an_unexpected_error_keeps_the_document_retryable(adapter):
    client, fake, _ = adapter
    fake.fail = KeyError("boom")
    response = client.post("/v1/analyze", json={"image": jpeg_b64()})
    assert response.status_code == 500 and body_of(response)[RETRYABLE_FIELD] is True


def test_a_full_queue_answers_busy(adapter):
    client, _, app = adapter
    queue = app.state.analyze_queue
    queue.service_s, queue.waiting, queue.running = 10.0, 1000, queue.concurrency  # ~2500 s of work ahead
    response = client.post("/v1/analyze", json={"image": jpeg_b64()})
    queue.waiting, queue.running = 0, 0
    assert response.status_code == 429 and response.headers[THROTTLING_HEADER] == THROTTLING_VALUE
    assert "requests ahead" in body_of(response)["detail"]


class Neighbours:
    """The duplicate lookup's index search: a fixed answer, or a failure."""

    def __init__(self, found: list[tuple[str, str]], fail: bool = False) -> None:
        self.found, self.fail, self.asked = found, fail, []

    async def near(self, index, embedding, k):
        self.asked.append(index)
        if self.fail:
            raise ConnectionError("OpenSearch refused the connection")
        return self.found


def with_lookup(app, neighbours: Neighbours) -> None:
    from connectors.adapter.duplicates import DuplicateGroups, RecentGroups

    app.state.duplicates = DuplicateGroups(neighbours, 36, 10, RecentGroups(0))


def test_an_image_joins_the_group_of_a_copy_found_in_its_index(adapter):
    client, _, app = adapter
    first = client.post("/v1/analyze", json={"image": jpeg_b64()}).json()
    assert first["duplicate_group"] == first["content_hash"]  # no index named: nothing looked up
    neighbours = Neighbours([("group-of-the-original", first["perceptual_hash"])])
    with_lookup(app, neighbours)
    copy = client.post("/v1/analyze", json={"image": jpeg_b64(), "duplicates_index": "images"}).json()
    assert copy["duplicate_group"] == "group-of-the-original" and neighbours.asked == ["images"]


def test_a_document_that_carries_its_group_keeps_it_without_a_lookup(adapter):
    client, _, app = adapter
    neighbours = Neighbours([], fail=True)
    with_lookup(app, neighbours)
    answer = client.post("/v1/analyze", json={"image": jpeg_b64(), "duplicates_index": "images",
                                              "duplicate_group": "kept"}).json()
    assert answer["duplicate_group"] == "kept" and neighbours.asked == []


def test_a_failed_lookup_is_transient(adapter):
    client, _, app = adapter
    with_lookup(app, Neighbours([], fail=True))
    response = client.post("/v1/analyze", json={"image": jpeg_b64(), "duplicates_index": "images"})
    assert response.status_code == 503 and THROTTLING_HEADER not in response.headers
    assert body_of(response)[RETRYABLE_FIELD] is True and "refused" in body_of(response)["detail"]
