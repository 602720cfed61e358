"""The adapter's hand-encoded answers keep the documented contract (schemas.AnalyzeResponse / EmbedResponse) and
carry every float32 exactly, in the fewest digits (the index stores float32; more digits only cost parsing)."""

from __future__ import annotations

import base64
import json

import numpy as np

from connectors.adapter import encode
from connectors.adapter.schemas import AnalyzeResponse, EmbedResponse, ModelInfo

MODEL = ModelInfo(clip_variant="v", clip_weights="w", detector="d", detector_weights="dw")
PICTURE = encode.PictureFacts(thumbnail="dGh1bWI=", content_hash="c0ffee", perceptual_hash="ab" * 32,
                              duplicate_group="g1")
NO_PICTURE = encode.PictureFacts(thumbnail=None, content_hash="c0ffee", perceptual_hash=None, duplicate_group="c0ffee")


def triton_result(objects: int, dim: int = 8) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(objects)
    return {"embedding": rng.standard_normal(dim).astype(np.float32), "image_size": np.array([48, 64], np.int32),
            "boxes": (rng.random((objects, 4)) * 40).astype(np.float32),
            "scores": rng.random(objects).astype(np.float32),
            "class_ids": np.arange(objects, dtype=np.int32), "class_names": np.array([b"circle"] * objects, object),
            "object_embeddings": rng.standard_normal((objects, dim)).astype(np.float32)}


def test_an_analysis_is_an_analyze_response_with_the_same_float32_values():
    result = triton_result(3)
    body = encode.analysis(result, MODEL, PICTURE).body
    parsed = AnalyzeResponse.model_validate_json(body)
    assert (parsed.width, parsed.height) == (64, 48) and parsed.thumbnail == "dGh1bWI=" and parsed.model == MODEL
    assert (parsed.content_hash, parsed.perceptual_hash, parsed.duplicate_group) == ("c0ffee", "ab" * 32, "g1")
    assert np.array_equal(np.array(parsed.embedding, np.float32), result["embedding"])
    for i, obj in enumerate(parsed.objects):
        assert np.array_equal(np.array(obj.object_embedding, np.float32), result["object_embeddings"][i])
        assert np.array_equal(np.array([obj.bbox.x1, obj.bbox.y1, obj.bbox.x2, obj.bbox.y2], np.float32),
                              result["boxes"][i])
        assert (obj.class_id, obj.class_name) == (i, "circle")
        assert np.float32(obj.confidence) == result["scores"][i]


def test_no_objects_and_no_thumbnail():
    parsed = AnalyzeResponse.model_validate_json(encode.analysis(triton_result(0), MODEL, NO_PICTURE).body)
    assert parsed.objects == [] and parsed.thumbnail is None and parsed.perceptual_hash is None


def test_floats_take_the_shortest_text_that_reads_back_as_the_same_float32():
    value = np.float32(0.1)
    text = encode.dumps(np.array([value], np.float32)).decode()
    assert text == "[0.1]"  # a float64 repr of the same float32 would be 0.10000000149011612
    assert np.float32(json.loads(text)[0]) == value


def test_embeddings_are_an_embed_response():
    vectors = [np.ones(4, np.float32) / 2, np.zeros(4, np.float32)]
    parsed = EmbedResponse.model_validate_json(encode.embeddings(vectors[0], vectors, "m").body)
    assert parsed.dimension == 4 and parsed.embedding == [0.5] * 4 and parsed.embeddings[1] == [0.0] * 4


def test_base64_vectors_carry_the_same_float32_bytes():
    result = triton_result(2)
    parsed = AnalyzeResponse.model_validate_json(encode.analysis(result, MODEL, NO_PICTURE, vectors="base64").body)
    assert isinstance(parsed.embedding, str)
    assert np.array_equal(np.frombuffer(base64.b64decode(parsed.embedding), "<f4"), result["embedding"])
    for i, obj in enumerate(parsed.objects):
        assert isinstance(obj.object_embedding, str)
        assert np.array_equal(np.frombuffer(base64.b64decode(obj.object_embedding), "<f4"),
                              result["object_embeddings"][i])
