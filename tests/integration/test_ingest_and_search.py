"""Images in, answers out, through OpenSearch alone: server-side ingestion and every search mode.

Expected results are computed independently: vectors from Triton called directly, rankings by brute-force
cosine over the vectors OpenSearch stored, filters by evaluating the predicate on the stored documents.
"""

from __future__ import annotations

import base64

import numpy as np
import pytest

from localstack.processes import free_port
from tests import triton_calls
from tests.ingest_corpus import bad_docs, good_docs

pytestmark = pytest.mark.integration

EXCLUDE_VECTORS = {"excludes": ["global_image_embedding", "detected_objects.object_embedding"]}


def cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return (a @ b.T) / np.outer(np.linalg.norm(a, axis=-1), np.linalg.norm(b, axis=-1)).squeeze()


@pytest.fixture(scope="module")
def corpus(bootstrapped, os_client, stack_settings, image_server):
    root, base_url = image_server
    good = good_docs()
    # two documents arrive by URL instead of base64
    for doc in good[:2]:
        (root / doc.body["filename"]).write_bytes(doc.image)
        doc.body.pop("image_b64")
        doc.body["image_url"] = f"{base_url}/{doc.body['filename']}"
    bad = bad_docs(stack_settings.models.max_image_pixels, f"http://127.0.0.1:{free_port()}/gone.jpg")
    docs = good + bad
    lines = []
    for doc in docs:
        lines += [{"index": {"_index": stack_settings.index.name, "_id": doc.id}}, doc.body]
    response = os_client.bulk(body=lines, refresh="wait_for", request_timeout=600)
    return {"docs": docs, "good": good, "bad": bad, "bulk": response}


@pytest.fixture(scope="module")
def stored(corpus, os_client, stack_settings):
    """Every indexed good document with its stored vectors."""
    hits = os_client.search(index=stack_settings.index.name, body={
        "size": 1000, "query": {"prefix": {"image_id": "shape-"}}})["hits"]["hits"]
    hits += os_client.search(index=stack_settings.index.name, body={
        "size": 1000, "query": {"prefix": {"image_id": "kind-"}}})["hits"]["hits"]
    return {h["_id"]: h["_source"] for h in hits}


def test_every_document_is_indexed_or_dead_lettered(corpus, os_client, stack_settings):
    items = [next(iter(item.values())) for item in corpus["bulk"]["items"]]
    assert not corpus["bulk"]["errors"], [i for i in items if i.get("error")]
    where = {item["_id"]: item["_index"] for item in items}
    index, dead = stack_settings.index.name, stack_settings.index.dead_letter
    assert {d.id for d in corpus["good"]} == {i for i, idx in where.items() if idx == index}
    assert {d.id for d in corpus["bad"]} == {i for i, idx in where.items() if idx == dead}
    os_client.indices.refresh(index=dead)
    # a bad image is permanent; an image_url whose server does not answer may answer later
    retryable = {"bad-unreachable-url"}
    for doc in corpus["bad"]:
        source = os_client.get(index=dead, id=doc.id)["_source"]
        assert source["failure"]["reason"], doc.id
        assert source["failure"]["retryable"] == (doc.id in retryable), (doc.id, source["failure"])
        # the dead letter keeps what was sent, image included, so it can be replayed
        assert source.get("image_b64") == doc.body.get("image_b64"), doc.id
        assert source.get("image_url") == doc.body.get("image_url"), doc.id
        assert source["image_id"] == doc.body["image_id"] and source["tags"] == ["bad"]
        assert not {"global_image_embedding", "detected_objects"} & set(source), doc.id
    # other tests share these indices: count this corpus's documents only
    ids = {"query": {"ids": {"values": [d.id for d in corpus["docs"]]}}}
    assert os_client.count(index=index, body=ids)["count"] == len(corpus["good"])
    assert os_client.count(index=dead, body=ids)["count"] == len(corpus["bad"])


def test_dead_letter_reasons_name_the_problem(corpus, os_client, stack_settings):
    dead = stack_settings.index.dead_letter
    reasons = {d.id: os_client.get(index=dead, id=d.id)["_source"]["failure"]["reason"].lower()
               for d in corpus["bad"]}
    assert "truncat" in reasons["bad-truncated"] or "decode" in reasons["bad-truncated"], reasons["bad-truncated"]
    assert "image" in reasons["bad-not-an-image"], reasons["bad-not-an-image"]
    assert "image_url" in reasons["bad-unreachable-url"], reasons["bad-unreachable-url"]
    assert "pixel" in reasons["bad-oversized"] or "large" in reasons["bad-oversized"], reasons["bad-oversized"]


def test_indexed_documents_equal_direct_analysis(corpus, stored, triton):
    for doc in corpus["good"]:
        source = stored[doc.id]
        assert "image_b64" not in source
        direct = triton_calls.analyze(triton, doc.image)
        assert cos(source["global_image_embedding"], direct["embedding"]) >= 0.999, doc.id
        assert (source["height"], source["width"]) == tuple(int(v) for v in direct["image_size"])
        assert isinstance(source["width"], int) and isinstance(source["height"], int)
        objects = source.get("detected_objects", [])
        assert len(objects) == len(direct["scores"]), doc.id
        for obj, box, name, emb in zip(objects, direct["boxes"], direct["class_names"],
                                       direct["object_embeddings"], strict=True):
            assert obj["class_name"] == name.decode()
            np.testing.assert_allclose([obj["bbox"][k] for k in ("x1", "y1", "x2", "y2")], box, atol=0.5)
            assert cos(obj["object_embedding"], emb) >= 0.999
        assert source["model"]["clip_variant"] and source["model"]["detector"]


def test_shapes_are_detected_through_opensearch(corpus, stored):
    """The bundled shapes detector finds objects in the generated images (not an empty pipeline)."""
    with_objects = [d for d in corpus["good"] if d.id.startswith("shape-") and stored[d.id].get("detected_objects")]
    assert len(with_objects) >= 0.8 * sum(d.id.startswith("shape-") for d in corpus["good"])


def _search(os_client, index, body):
    return os_client.search(index=index, body=body)["hits"]["hits"]


def test_text_query_ranks_like_brute_force(stored, os_client, triton, stack_settings):
    ids = list(stored)
    vectors = np.array([stored[i]["global_image_embedding"] for i in ids])
    query = "a red circle"
    expected = [ids[i] for i in np.argsort(-cos(vectors, triton_calls.embed_texts(triton, [query])[0]))][:10]
    hits = _search(os_client, stack_settings.index.name, {
        "size": 10, "_source": EXCLUDE_VECTORS,
        "query": {"bool": {"must": [{"neural": {"global_image_embedding": {"query_text": query, "k": 200}}}],
                           "filter": [{"terms": {"image_id": ids}}]}}})
    assert [h["_id"] for h in hits] == expected


def test_query_image_returns_that_image_first(corpus, stored, os_client, stack_settings):
    for doc in corpus["good"][5:8]:
        hits = _search(os_client, stack_settings.index.name, {
            "size": 3, "_source": EXCLUDE_VECTORS,
            "query": {"neural": {"global_image_embedding": {
                "query_image": base64.b64encode(doc.image).decode(), "k": 10}}}})
        assert hits[0]["_id"] == doc.id
        assert hits[0]["_score"] == pytest.approx(1.0, abs=1e-3)


def test_object_level_query_names_the_matching_object(stored, os_client, triton, stack_settings):
    query = "a blue triangle"
    qv = triton_calls.embed_texts(triton, [query])[0]
    # other tests share the index: the expected ranking is over every document in it, not only this corpus
    everything = {h["_id"]: h["_source"] for h in _search(os_client, stack_settings.index.name, {
        "size": 10000, "query": {"match_all": {}}})}
    best = {}
    for doc_id, source in everything.items():
        objects = source.get("detected_objects", [])
        if objects:
            sims = cos(np.array([o["object_embedding"] for o in objects]), qv).reshape(-1)
            best[doc_id] = (float(sims.max()), int(sims.argmax()))
    expected = sorted(best, key=lambda d: -best[d][0])[:5]
    neural = {"neural": {"detected_objects.object_embedding": {"query_text": query, "k": 500}}}
    inner_hits = {"size": 1, "_source": {"excludes": ["detected_objects.object_embedding"]}}
    hits = _search(os_client, stack_settings.index.name, {
        "size": 5, "_source": EXCLUDE_VECTORS,
        "query": {"nested": {"path": "detected_objects", "score_mode": "max", "query": neural,
                             "inner_hits": inner_hits}}})
    assert [h["_id"] for h in hits] == expected
    for hit in hits:
        inner = hit["inner_hits"]["detected_objects"]["hits"]["hits"][0]
        assert inner["_nested"]["offset"] == best[hit["_id"]][1]
        match = everything[hit["_id"]]["detected_objects"][inner["_nested"]["offset"]]
        assert inner["_source"]["class_name"] == match["class_name"]
        assert inner["_source"]["bbox"] == match["bbox"]


def _has_object(source, class_name, min_conf=0.0):
    return any(o["class_name"] == class_name and o["confidence"] >= min_conf
               for o in source.get("detected_objects", []))


@pytest.mark.parametrize("case", ["class", "class+confidence", "date", "tags"])
def test_filters_exclude_exactly_what_they_should(case, stored, os_client, stack_settings):
    names = sorted({o["class_name"] for s in stored.values() for o in s.get("detected_objects", [])})
    assert names, "no detections at all"
    cls = names[0]
    filters = {
        "class": ({"nested": {"path": "detected_objects", "query": {"term": {"detected_objects.class_name": cls}}}},
                  lambda s: _has_object(s, cls)),
        "class+confidence": ({"nested": {"path": "detected_objects", "query": {"bool": {"filter": [
            {"term": {"detected_objects.class_name": cls}},
            {"range": {"detected_objects.confidence": {"gte": 0.6}}}]}}}},
            lambda s: _has_object(s, cls, 0.6)),
        "date": ({"range": {"upload_date": {"gte": "2026-03-01", "lt": "2026-07-01"}}},
                 lambda s: "upload_date" in s and "2026-03-01" <= s["upload_date"] < "2026-07-01"),
        "tags": ({"term": {"tags": "even"}}, lambda s: "even" in s.get("tags", [])),
    }
    query_filter, predicate = filters[case]
    expected = {i for i, s in stored.items() if predicate(s)}
    hits = _search(os_client, stack_settings.index.name, {
        "size": 500, "_source": False,
        "query": {"neural": {"global_image_embedding": {"query_text": "shapes", "k": 500,
                                                         "filter": {"bool": {"filter": [query_filter,
                                                                    {"terms": {"_id": list(stored)}}]}}}}}})
    assert {h["_id"] for h in hits} == expected


def _min_max(scores: dict[str, float]) -> dict[str, float]:
    low, high = min(scores.values()), max(scores.values())
    return {k: (v - low) / (high - low) if high > low else 1.0 for k, v in scores.items()}


def test_hybrid_query_combines_lexical_and_neural(stored, os_client, stack_settings):
    """Scores equal the search pipeline's min-max normalization and weighted mean of the two sub-queries."""
    index = stack_settings.index.name
    lexical = {"terms": {"tags": ["kind", "star"]}}
    neural = {"neural": {"global_image_embedding": {"query_text": "a green square", "k": 10}}}
    separately = []
    for query in (lexical, neural):
        hits = _search(os_client, index, {"size": 100, "_source": False, "query": query})
        separately.append(_min_max({h["_id"]: h["_score"] for h in hits}))
    weights = stack_settings.index.hybrid_weights
    ids = set(separately[0]) | set(separately[1])
    expected = {i: sum(w * part.get(i, 0.0) for w, part in zip(weights, separately, strict=True)) for i in ids}
    hits = _search(os_client, index, {"size": 100, "_source": False,
                                      "query": {"hybrid": {"queries": [lexical, neural]}}})
    assert {h["_id"] for h in hits} == ids
    for hit in hits:
        assert hit["_score"] == pytest.approx(expected[hit["_id"]], abs=1e-3), hit["_id"]


def test_bootstrap_again_changes_nothing(corpus, cluster, stack_settings, clip_facts):
    from bootstrap.reconcile import Reconciler

    again = Reconciler(cluster, stack_settings).run(clip_facts)
    assert not again.changes, [str(s) for s in again.changes]
