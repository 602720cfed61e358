"""Nothing accepted is lost: a bulk far larger than the connection pool, and servers killed mid-bulk.

Each test sends one plain `_bulk` (as any client would) and then accounts for every document: indexed with its
vectors, or dead-lettered with its image and `failure.retryable`; after `replay`, every good document indexed
and the dead-letter index empty of them. The count that matters: indexed + dead-lettered-with-image == sent.
"""

from __future__ import annotations

import base64
import io
import os
import signal
import threading
import time
from typing import Any

import httpx
import pytest

from bootstrap.reconcile import Reconciler
from client.replay import replay
from common.config import Settings
from export.shapes.dataset import render
from localstack.triton_server import SHM_DIR, mapped_shm_names
from tests.adapter_metrics import requests_total
from tests.conftest import restart_triton_if_exited

pytestmark = pytest.mark.integration

SEED = 4242


def shape_docs(prefix: str, count: int) -> dict[str, dict[str, Any]]:
    docs = {}
    for i in range(count):
        image, _ = render(SEED, i)
        out = io.BytesIO()
        image.save(out, format="JPEG", quality=85)
        docs[f"{prefix}-{i}"] = {"image_id": f"{prefix}-{i}", "tags": [prefix],
                                 "image_b64": base64.b64encode(out.getvalue()).decode()}
    return docs


def plain_bulk(os_client, index: str, docs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    lines: list[dict[str, Any]] = []
    for doc_id, body in docs.items():
        lines += [{"index": {"_index": index, "_id": doc_id}}, body]
    return os_client.bulk(body=lines, request_timeout=1800)


def account(os_client, settings: Settings, docs: dict[str, dict[str, Any]]) -> dict[str, list[str]]:
    """Where each document is: indexed (with vectors), dead-lettered retryable/permanent (with its image), or lost."""
    index, dead = settings.index.name, settings.index.dead_letter
    os_client.indices.refresh(index=f"{index},{dead}")
    ids = list(docs)
    indexed = {d["_id"]: d["_source"] for d in os_client.mget(index=index, body={"ids": ids})["docs"] if d["found"]}
    letters = {d["_id"]: d["_source"] for d in os_client.mget(index=dead, body={"ids": ids})["docs"] if d["found"]}
    where: dict[str, list[str]] = {"indexed": [], "retryable": [], "permanent": [], "lost": [], "both": []}
    for doc_id, body in docs.items():
        if doc_id in indexed:
            source = indexed[doc_id]
            assert len(source["global_image_embedding"]) > 0 and "image_b64" not in source, doc_id
            where["both" if doc_id in letters else "indexed"].append(doc_id)
        elif doc_id in letters:
            letter = letters[doc_id]
            assert letter.get("image_b64") == body["image_b64"], f"{doc_id} dead-lettered without its image"
            where["retryable" if letter["failure"]["retryable"] else "permanent"].append(doc_id)
        else:
            where["lost"].append(doc_id)
    return where


def replay_until_done(os_client, settings: Settings, docs: dict[str, dict[str, Any]], rounds: int = 6
                      ) -> dict[str, list[str]]:
    where = account(os_client, settings, docs)
    for _ in range(rounds):
        if not where["retryable"]:
            break
        replay(os_client, settings.index.name, settings.index.dead_letter, ids=where["retryable"])
        where = account(os_client, settings, docs)
    return where


def test_a_bulk_four_hundred_times_the_pool_loses_nothing(cluster, stack_settings, clip_facts, bootstrapped, os_client):
    """max_connection 1 and one _bulk of 400: the calls that wait too long for a pooled connection fail inside
    ML Commons; they must come back as retryable dead letters with their image, and replay indexes them. (With the
    bundled CLIP an analysis is fast enough that 60 calls through 4 connections, and 120 through 2, all got one within
    ML Commons' ~10 s: the bulk must outlast that wait.)"""
    s = stack_settings.model_copy(update={
        "ml_commons": stack_settings.ml_commons.model_copy(update={
            "max_connection": 1, "embed_model": "pool1-embed", "analyze_model": "pool1-analyze"}),
        "index": stack_settings.index.model_copy(update={
            "name": "pool1-images", "dead_letter": "pool1-images-failed", "ingest_pipeline": "pool1-ingest",
            "search_pipeline": "pool1-search"}),
    })
    Reconciler(cluster, s).run(clip_facts)
    docs = shape_docs("pool1", 400)
    response = plain_bulk(os_client, s.index.name, docs)
    assert not response["errors"]
    first = account(os_client, s, docs)
    print(f"\npool of 1, one _bulk of 400: {len(first['indexed'])} indexed, {len(first['retryable'])} dead-lettered "
          "as retryable with their image")
    assert not first["lost"] and not first["permanent"] and not first["both"], first
    assert len(first["indexed"]) + len(first["retryable"]) == 400
    assert first["retryable"], "with 1 connection for 400 calls some should have timed out waiting for one"
    final = replay_until_done(os_client, s, docs)
    assert sorted(final["indexed"]) == sorted(docs), {k: len(v) for k, v in final.items()}


def busy_answers(adapter_url: str) -> float:
    """How many analyze requests the adapter has answered 429 ("busy, retry") since it started."""
    return requests_total(adapter_url, "/v1/analyze", "429")


def _kill_mid_bulk(os_client, settings: Settings, adapter_url: str, docs: dict[str, dict[str, Any]],
                   kill, restart, down_s: float) -> dict[str, Any]:
    """Sends the bulk, kills a server once analyses are under way, brings it back after `down_s`."""
    result: dict[str, Any] = {}
    sender = threading.Thread(target=lambda: result.update(plain_bulk(os_client, settings.index.name, docs)))
    sender.start()
    token = settings.adapter_token
    headers = {"Authorization": f"Bearer {token}"} if token else None
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # analyses are running: the adapter holds some in its queue
        queue = httpx.get(f"{adapter_url}/v1/queue", headers=headers, timeout=5).json()["analyze"]
        if queue["running"] and queue["waiting"]:
            break
        time.sleep(0.2)
    time.sleep(2)
    kill()
    time.sleep(down_s)
    restart()
    sender.join(1800)
    assert not sender.is_alive(), "the bulk never returned"
    return result


def test_triton_killed_mid_bulk_loses_nothing_and_blames_no_image(request, os_client, stack_settings, bootstrapped,
                                                                  triton_server, adapter_process):
    docs = shape_docs("triton-kill", 40)

    def kill() -> None:
        os.killpg(triton_server.proc.pid, signal.SIGKILL)
        triton_server.proc.wait(10)

    busy_before = busy_answers(adapter_process.url)
    response = _kill_mid_bulk(os_client, stack_settings, adapter_process.url, docs, kill, triton_server.start, 3)
    assert not response["errors"], response
    restart_triton_if_exited(request)  # the restarted server may itself have crashed (see tests/conftest.py)
    # the killed server's shared memory (64 MiB per python-backend instance) went when its successor started
    leftover = {p.name for p in SHM_DIR.glob(f"{triton_server.shm_prefix}*")} - mapped_shm_names()
    assert not leftover, f"the killed Triton's shared-memory regions are still in {SHM_DIR}: {sorted(leftover)}"
    print(f"\nTriton killed mid-bulk: { {k: len(v) for k, v in account(os_client, stack_settings, docs).items()} }, "
          f"busy answers {busy_answers(adapter_process.url) - busy_before:.0f}")
    # while Triton was down the adapter answered "busy, retry" (ML Commons retried) instead of "bad image"
    assert busy_answers(adapter_process.url) > busy_before
    where = account(os_client, stack_settings, docs)
    assert not where["lost"] and not where["both"], where
    assert not where["permanent"], f"an outage was reported as a bad image: {where['permanent']}"
    final = replay_until_done(os_client, stack_settings, docs)
    assert sorted(final["indexed"]) == sorted(docs), {k: len(v) for k, v in final.items()}


def test_adapter_killed_mid_bulk_loses_nothing_and_blames_no_image(os_client, stack_settings, bootstrapped,
                                                                   adapter_process):
    docs = shape_docs("adapter-kill", 40)
    response = _kill_mid_bulk(os_client, stack_settings, adapter_process.url, docs, adapter_process.kill,
                              adapter_process.start, 3)
    assert not response["errors"], response
    print(f"\nadapter killed mid-bulk: { {k: len(v) for k, v in account(os_client, stack_settings, docs).items()} }")
    where = account(os_client, stack_settings, docs)
    assert not where["lost"] and not where["both"], where
    assert not where["permanent"], f"an outage was reported as a bad image: {where['permanent']}"
    assert where["retryable"], "killing the adapter mid-bulk should have dead-lettered the calls it was holding"
    final = replay_until_done(os_client, stack_settings, docs)
    assert sorted(final["indexed"]) == sorted(docs), {k: len(v) for k, v in final.items()}
