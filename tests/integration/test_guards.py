"""OpenSearch-side guards: oversized images, raw images outside `image_b64`, huge keyword values.

Each case is sent as a user would (plain REST), and checked on what OpenSearch then holds.
"""

from __future__ import annotations

import base64
import contextlib
import io
import os
import threading
import time

import httpx
import pytest
from PIL import Image

from tests.adapter_metrics import requests_total

pytestmark = pytest.mark.integration


def jpeg_b64(size: int = 96) -> str:
    out = io.BytesIO()
    Image.new("RGB", (size, size), (30, 160, 90)).save(out, "JPEG")
    return base64.b64encode(out.getvalue()).decode()


def heap_percent(url: str) -> int:
    stats = httpx.get(f"{url}/_nodes/stats/jvm", timeout=10).json()["nodes"]
    return max(node["jvm"]["mem"]["heap_used_percent"] for node in stats.values())


class HeapSampler:
    """The highest heap use seen while a request runs (sampled every 50 ms)."""

    def __init__(self, url: str) -> None:
        self.url, self.peak, self._stop = url, 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(httpx.HTTPError):
                self.peak = max(self.peak, heap_percent(self.url))
            time.sleep(0.05)

    def __enter__(self) -> HeapSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)


@pytest.mark.parametrize("megabytes", [30, 90])
def test_an_oversized_image_is_dead_lettered_before_any_model_call_and_the_node_stays_up(
        megabytes, bootstrapped, stack_settings, os_client, adapter):
    url, index, dead = stack_settings.opensearch.url, stack_settings.index.name, stack_settings.index.dead_letter
    raw = b"\xff\xd8\xff" + os.urandom(megabytes * 1_000_000 * 3 // 4)
    body = f'{{"image_id": "big-{megabytes}", "image_b64": "{base64.b64encode(raw).decode()}"}}'
    analyses_before = requests_total(adapter, "/v1/analyze")
    with HeapSampler(url) as heap:
        response = httpx.put(f"{url}/{index}/_doc/big-{megabytes}?refresh=true", content=body,
                             headers={"Content-Type": "application/json"}, timeout=300)
    assert response.status_code == 201, response.text[:300]
    assert response.json()["_index"] == dead
    letter = os_client.get(index=dead, id=f"big-{megabytes}")["_source"]
    assert "larger than" in letter["failure"]["reason"] and letter["failure"]["retryable"] is False
    assert "image_b64" not in letter and letter["failure"]["image_dropped"]  # over the dead letter's keep limit
    assert httpx.get(f"{url}/_cluster/health", timeout=10).json()["status"] == "green"
    print(f"\n{megabytes} MB of base64: {response.elapsed.total_seconds():.1f}s, heap peak {heap.peak} %")
    assert heap.peak < 90, f"heap peaked at {heap.peak} %"
    # the guard ran before the model: the adapter saw no new analyze request
    assert requests_total(adapter, "/v1/analyze") == analyses_before


def test_pipeline_none_leaves_no_raw_image_in_the_index(bootstrapped, stack_settings, os_client):
    index, image = stack_settings.index.name, jpeg_b64()
    body = {"image_id": "raw-none", "image_b64": image, "imageB64": image, "metadata": {"thumb_base64": image,
                                                                                       "note": "kept"}}
    os_client.index(index=index, id="raw-none", params={"pipeline": "_none", "refresh": "true"}, body=body)
    source = os_client.get(index=index, id="raw-none")["_source"]
    assert source == {"image_id": "raw-none", "metadata": {"note": "kept"}}, source


def test_a_misspelled_image_field_is_dead_lettered_and_no_raw_image_is_kept(bootstrapped, stack_settings,
                                                                            os_client):
    index, dead, image = stack_settings.index.name, stack_settings.index.dead_letter, jpeg_b64()
    response = os_client.index(index=index, id="misspelled", params={"refresh": "true"},
                               body={"image_id": "misspelled", "picture": image, "metadata": {"raw": image}})
    assert response["_index"] == dead
    assert not os_client.exists(index=index, id="misspelled")
    letter = os_client.get(index=dead, id="misspelled")["_source"]
    reason = letter["failure"]["reason"]
    assert "picture" in reason and "metadata.raw" in reason and "looks like a raw image" in reason, reason
    assert letter["failure"]["retryable"] is False
    assert image not in str(letter) and letter["image_id"] == "misspelled"


def test_a_40_kb_filename_does_not_fail_an_analyzed_document(bootstrapped, stack_settings, os_client):
    index, name = stack_settings.index.name, "x" * 40_000 + ".jpg"
    response = os_client.index(index=index, id="long-name", params={"refresh": "true"},
                               body={"image_id": "long-name", "filename": name, "tags": ["t" * 40_000],
                                     "image_b64": jpeg_b64()})
    assert response["_index"] == index
    source = os_client.get(index=index, id="long-name")["_source"]
    assert source["filename"] == name and len(source["global_image_embedding"]) > 0
