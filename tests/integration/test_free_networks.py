"""The free networks (bench --only ceiling) give documents of the same shape as the real models, so the ceiling
measures the real path: the same images through the session's stack (the exported models) and through a scratch
stack serving the free networks end in documents with the same fields, vector dimensions, object fields and image
sizes, under the same index mapping, and every free box lies inside its image."""

from __future__ import annotations

import base64
import io

import pytest

from export.free_networks import is_free

pytestmark = pytest.mark.integration

SIZES = [(64, 64), (640, 480), (300, 700), (1280, 720)]


def scenes() -> list[tuple[str, str]]:
    """(id, base64 JPEG) of generated scenes at several sizes and both orientations."""
    from export.shapes.dataset import render

    out = []
    for i, size in enumerate(SIZES * 2):
        scene, _ = render(777, i)
        buf = io.BytesIO()
        scene.convert("RGB").resize(size).save(buf, "JPEG", quality=85)
        out.append((f"free-check-{i}", base64.b64encode(buf.getvalue()).decode()))
    return out


def index_all(client, index: str, images: list[tuple[str, str]]) -> dict[str, dict]:
    lines: list[dict] = []
    for doc_id, b64 in images:
        lines += [{"index": {"_index": index, "_id": doc_id}}, {"image_id": doc_id, "image_b64": b64}]
    response = client.bulk(body=lines, refresh="wait_for", request_timeout=600)
    assert not response["errors"], response["items"][:2]
    hits = client.search(index=index, body={"size": 100, "query": {"ids": {"values": [i for i, _ in images]}}})
    return {h["_id"]: h["_source"] for h in hits["hits"]["hits"]}


@pytest.fixture(scope="module")
def free_stack(settings):
    from export.__main__ import ensure_models
    from localstack.scratch import ScratchStack

    base = settings.model_copy(update={"models": settings.models.model_copy(update={"free_networks": True})})
    ensure_models(base)
    with ScratchStack(base) as stack:
        yield stack


@pytest.fixture(scope="module")
def both(bootstrapped, os_client, stack_settings, free_stack):
    from bootstrap.opensearch_api import connect

    images = scenes()
    free_client = connect(free_stack.settings.opensearch)
    return {"real": index_all(os_client, stack_settings.index.name, images),
            "free": index_all(free_client, free_stack.settings.index.name, images),
            "mappings": [next(iter(c.indices.get_mapping(index=s.index.name).values()))["mappings"]
                         for c, s in ((os_client, stack_settings), (free_client, free_stack.settings))]}


def object_fields(doc: dict) -> set[str]:
    return {key for obj in doc.get("detected_objects", []) for key in obj}


def template_part(mapping: dict) -> tuple[dict, dict]:
    """A mapping without what detection adds dynamically (object_counts has one integer field per class detected:
    the free detector finds other classes than the real one), and those dynamic fields."""
    properties = dict(mapping["properties"])
    counts = properties.pop("object_counts", {}).get("properties", {})
    return {**mapping, "properties": properties}, counts


def test_both_paths_index_every_image_under_the_same_mapping(both):
    assert set(both["real"]) == set(both["free"]) == {i for i, _ in scenes()}
    (real, real_counts), (free, free_counts) = (template_part(m) for m in both["mappings"])
    assert real == free
    assert free_counts and all(f == {"type": "integer"} for f in [*real_counts.values(), *free_counts.values()])


def test_the_documents_have_the_same_fields_sizes_and_dimensions(both, clip_facts):
    for doc_id, real in both["real"].items():
        free = both["free"][doc_id]
        assert set(real) == set(free), doc_id
        assert (real["width"], real["height"]) == (free["width"], free["height"]), doc_id
        assert len(real["global_image_embedding"]) == len(free["global_image_embedding"]) == clip_facts.embedding_dim
        assert set(free["model"]) == set(real["model"]) and is_free(free["model"]["clip_weights"])
        assert not is_free(real["model"]["clip_weights"]) and real["thumbnail"] and free["thumbnail"]


def test_free_objects_carry_the_real_objects_fields_with_boxes_inside_the_image(both, clip_facts, yolo_facts):
    real_fields = set().union(*(object_fields(d) for d in both["real"].values()))
    assert real_fields, "the real detector found nothing in any scene: nothing to compare"
    for doc_id, free in both["free"].items():
        objects = free["detected_objects"]
        assert objects and object_fields(free) == real_fields, doc_id
        for obj in objects:
            box = obj["bbox"]
            assert 0 <= box["x1"] < box["x2"] <= free["width"] and 0 <= box["y1"] < box["y2"] <= free["height"]
            assert len(obj["object_embedding"]) == clip_facts.embedding_dim
            assert obj["class_name"] in yolo_facts.class_names
