"""The README's search modes as query bodies: the one place the CLI, the demo, the bench and the tests build them."""

from __future__ import annotations

import base64

HIDE_VECTORS = {"excludes": ["global_image_embedding", "detected_objects.object_embedding"]}


def text_query(text: str, k: int = 5) -> dict:
    return {"size": k, "_source": HIDE_VECTORS,
            "query": {"neural": {"global_image_embedding": {"query_text": text, "k": k}}}}


def image_query(image: bytes, k: int = 5) -> dict:
    return {"size": k, "_source": HIDE_VECTORS, "query": {"neural": {"global_image_embedding": {
        "query_image": base64.b64encode(image).decode(), "k": k}}}}


def object_query(text: str, k: int = 5) -> dict:
    """Which images contain an object like `text`, and which object (box, class, confidence) matched."""
    neural = {"neural": {"detected_objects.object_embedding": {"query_text": text, "k": 50}}}
    inner_hits = {"size": 1, "_source": {"excludes": ["detected_objects.object_embedding"]}}
    return {"size": k, "_source": ["image_id", "filename"],
            "query": {"nested": {"path": "detected_objects", "score_mode": "max", "query": neural,
                                 "inner_hits": inner_hits}}}


def filtered_query(text: str, class_name: str, min_confidence: float, since: str, k: int = 5) -> dict:
    object_filter = {"nested": {"path": "detected_objects", "query": {"bool": {"filter": [
        {"term": {"detected_objects.class_name": class_name}},
        {"range": {"detected_objects.confidence": {"gte": min_confidence}}}]}}}}
    return {"size": k, "_source": HIDE_VECTORS, "query": {"neural": {"global_image_embedding": {
        "query_text": text, "k": 100,
        "filter": {"bool": {"filter": [object_filter, {"range": {"upload_date": {"gte": since}}}]}}}}}}


def hybrid_query(text: str, keywords: str, k: int = 5) -> dict:
    return {"size": k, "_source": HIDE_VECTORS, "query": {"hybrid": {"queries": [
        {"multi_match": {"query": keywords, "fields": ["filename", "tags"]}},
        {"neural": {"global_image_embedding": {"query_text": text, "k": 50}}}]}}}
