"""A partial `_update` of an image document (a tag, a metadata field) keeps its vectors, and why the vectors stay in
`_source`: OpenSearch 2.19 rebuilds an updated document from `_source`, so a vector excluded from it is lost.
The k-NN plugin's derived source (`index.derived_source`) is the safe way out: the vectors (the nested object ones
too) are kept in the vector index only and put back whenever the document is read, by a GET, a search or the update
itself.

Measured here against the real cluster, because the index's size depends on it: dropping the vectors from `_source`
would save about half of each document (bench --only bytes), and these tests say which way of doing it is safe.
"""

from __future__ import annotations

import base64
import io
import json

import pytest

from export.shapes.dataset import render

pytestmark = pytest.mark.integration

VECTORS = ("global_image_embedding", "detected_objects.object_embedding")


def _jpeg_b64() -> str:
    image, _ = render(1515, 0)
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=90)
    return base64.b64encode(out.getvalue()).decode()


def _probe_index(os_client, stack_settings, name: str, *, derived: bool, excluded: tuple[str, ...] = ()) -> dict:
    """A fresh index with the images template's mappings (no ingest pipeline: documents come with their vectors)."""
    template = os_client.indices.get_index_template(name=stack_settings.index.name)
    mappings = json.loads(json.dumps(template["index_templates"][0]["index_template"]["template"]["mappings"]))
    mappings["_source"]["excludes"] = [*mappings["_source"].get("excludes", []), *excluded]
    os_client.indices.delete(index=name, ignore_unavailable=True)
    os_client.indices.create(index=name, body={"settings": {"index": {
        "knn": True, "number_of_shards": 1, "number_of_replicas": 0, "knn.derived_source.enabled": derived}},
        "mappings": mappings})
    return mappings


def _unit(dimension: int, hot: int) -> list[float]:
    return [1.0 if i == hot else 0.01 * ((i * 7 + hot) % 5) for i in range(dimension)]


def _found_by_its_vector(os_client, index: str, doc_id: str, vector: list[float]) -> bool:
    body = {"size": 10, "_source": False,
            "query": {"knn": {"global_image_embedding": {"vector": vector, "k": 10}}}}
    return doc_id in [h["_id"] for h in os_client.search(index=index, body=body)["hits"]["hits"]]


def test_partial_update_keeps_the_vectors(bootstrapped, os_client, stack_settings):
    index, doc_id = stack_settings.index.name, "update-keeps-vectors"
    os_client.index(index=index, id=doc_id, refresh=True, request_timeout=300,
                    body={"image_id": doc_id, "filename": "update.jpg", "image_b64": _jpeg_b64(), "tags": ["before"]})
    before = os_client.get(index=index, id=doc_id)["_source"]
    vector = before["global_image_embedding"]
    assert len(vector) > 0 and before["detected_objects"], "the ingest pipeline analyzed the image"
    assert _found_by_its_vector(os_client, index, doc_id, vector)

    os_client.update(index=index, id=doc_id, body={"doc": {"tags": ["before", "after"], "metadata": {"album": "x"}}},
                     refresh=True)

    after = os_client.get(index=index, id=doc_id)["_source"]
    assert after["tags"] == ["before", "after"] and after["metadata"] == {"album": "x"}
    assert after["global_image_embedding"] == vector
    assert [o["object_embedding"] for o in after["detected_objects"]] == \
        [o["object_embedding"] for o in before["detected_objects"]]
    assert _found_by_its_vector(os_client, index, doc_id, vector)
    nested = {"size": 0, "query": {"bool": {"filter": [{"ids": {"values": [doc_id]}}, {"nested": {
        "path": "detected_objects", "query": {"exists": {"field": "detected_objects.object_embedding"}}}}]}}}
    assert os_client.search(index=index, body=nested)["hits"]["total"]["value"] == 1


def test_vectors_excluded_from_source_are_lost_by_a_partial_update(bootstrapped, os_client, stack_settings):
    """Why the template keeps the vectors in `_source` (if this starts failing, OpenSearch keeps them another way and
    excluding them becomes worth measuring again)."""
    index, doc_id = "vectors-out-of-source-probe", "probe"
    mappings = _probe_index(os_client, stack_settings, index, derived=False, excluded=VECTORS)
    try:
        vector = [1.0] + [0.0] * (mappings["properties"]["global_image_embedding"]["dimension"] - 1)
        os_client.index(index=index, id=doc_id, refresh=True,
                        body={"image_id": doc_id, "tags": ["before"], "global_image_embedding": vector})
        assert _found_by_its_vector(os_client, index, doc_id, vector)
        os_client.update(index=index, id=doc_id, body={"doc": {"tags": ["after"]}}, refresh=True)
        assert not _found_by_its_vector(os_client, index, doc_id, vector)
        exists = {"size": 0, "query": {"exists": {"field": "global_image_embedding"}}}
        assert os_client.search(index=index, body=exists)["hits"]["total"]["value"] == 0
    finally:
        os_client.indices.delete(index=index, ignore_unavailable=True)


def test_derived_source_keeps_the_vectors_out_of_source_through_updates_and_merges(bootstrapped, os_client,
                                                                                  stack_settings):
    index = "vectors-derived-source-probe"
    mappings = _probe_index(os_client, stack_settings, index, derived=True)
    dim = mappings["properties"]["global_image_embedding"]["dimension"]
    try:
        docs = {f"d{i}": {"image_id": f"d{i}", "tags": ["before"], "global_image_embedding": _unit(dim, i),
                          "detected_objects": [{"class_name": "circle", "object_embedding": _unit(dim, dim - 1 - i)}]}
                for i in range(3)}
        for doc_id, doc in docs.items():
            os_client.index(index=index, id=doc_id, body=doc, refresh=True)
        # and one analyzed by the ingest pipeline, as the images index writes its documents
        os_client.index(index=index, id="analyzed", refresh=True, request_timeout=300,
                        pipeline=stack_settings.index.ingest_pipeline,
                        body={"image_id": "analyzed", "image_b64": _jpeg_b64(), "tags": ["before"]})
        docs["analyzed"] = os_client.get(index=index, id="analyzed")["_source"]
        assert len(docs["analyzed"]["global_image_embedding"]) == dim and docs["analyzed"]["detected_objects"]
        for doc_id in ("d1", "analyzed"):
            os_client.update(index=index, id=doc_id, body={"doc": {"tags": ["after"], "metadata": {"album": "x"}}},
                             refresh=True)
        os_client.indices.forcemerge(index=index, max_num_segments=1)  # a merge rewrites where vectors live
        os_client.indices.refresh(index=index)

        for doc_id, doc in docs.items():
            got = os_client.get(index=index, id=doc_id)["_source"]
            assert got["global_image_embedding"] == pytest.approx(doc["global_image_embedding"], abs=1e-6)
            for found, sent in zip(got["detected_objects"], doc["detected_objects"], strict=True):
                assert found["object_embedding"] == pytest.approx(sent["object_embedding"], abs=1e-6)
            assert _found_by_its_vector(os_client, index, doc_id, doc["global_image_embedding"])
        assert os_client.get(index=index, id="analyzed")["_source"]["tags"] == ["after"]
        hidden = {"size": len(docs), "_source": {"excludes": list(VECTORS)}, "query": {"match_all": {}}}
        for hit in os_client.search(index=index, body=hidden)["hits"]["hits"]:
            assert "global_image_embedding" not in hit["_source"] and "tags" in hit["_source"]
            assert all("object_embedding" not in o for o in hit["_source"]["detected_objects"])
        exists = {"size": 0, "query": {"exists": {"field": "global_image_embedding"}}}
        assert os_client.search(index=index, body=exists)["hits"]["total"]["value"] == len(docs)
    finally:
        os_client.indices.delete(index=index, ignore_unavailable=True)
