"""The adapter's JSON answers, written straight from Triton's arrays.

Every analysis carries four or more vectors; building pydantic models of Python floats and letting FastAPI encode
them cost more CPU than the rest of the request (bench --only ceiling). orjson writes a float32 array as the
shortest decimal that reads back as the same float32 (the index holds float32, so nothing is lost; about 10
characters a value, half of what a float64 repr takes), in C. The shapes stay those of `schemas.AnalyzeResponse`
and `schemas.EmbedResponse`, which remain the documented contract (tests/unit/test_adapter_encode.py validates
these answers against them).
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
from fastapi.responses import Response

from common.contract import CONTENT_HASH_FIELD, DUPLICATE_GROUP_FIELD, PERCEPTUAL_HASH_FIELD
from connectors.adapter.schemas import ModelInfo

_OPTIONS = orjson.OPT_SERIALIZE_NUMPY


class JsonBytes(Response):
    """A JSON response whose body is already encoded."""

    media_type = "application/json"


@dataclass(frozen=True)
class PictureFacts:
    """What the adapter adds to an analysis about the picture itself (AnalyzeResponse's fields of the same names)."""

    thumbnail: str | None
    content_hash: str
    perceptual_hash: str | None
    duplicate_group: str


def dumps(payload: Any) -> bytes:
    return orjson.dumps(payload, option=_OPTIONS)


def base64_floats(vector: np.ndarray) -> str:
    """A vector as base64 of its little-endian float32 bytes (AnalyzeRequest.vectors = "base64")."""
    return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode("ascii")


def _as_float32(vector: np.ndarray) -> np.ndarray:
    return np.asarray(vector, dtype=np.float32)


def analysis(result: dict[str, np.ndarray], model: ModelInfo, picture: PictureFacts, vectors: str = "json"
             ) -> JsonBytes:
    """An analyze_image result as `schemas.AnalyzeResponse`: boxes in original pixels, one object per detection,
    vectors as JSON numbers or (`vectors="base64"`) base64 float32, and what identifies the picture."""
    vector: Callable[[np.ndarray], Any] = base64_floats if vectors == "base64" else _as_float32
    height, width = (int(v) for v in result["image_size"])
    boxes = np.asarray(result["boxes"], dtype=np.float32).reshape(-1, 4)
    scores = np.asarray(result["scores"], dtype=np.float32)
    embeddings = np.asarray(result["object_embeddings"], dtype=np.float32)
    names = [n.decode() if isinstance(n, bytes) else str(n) for n in result["class_names"]]
    objects = [{"bbox": {"x1": box[0], "y1": box[1], "x2": box[2], "y2": box[3]}, "class_id": int(class_id),
                "class_name": name, "confidence": score, "object_embedding": vector(embedding)}
               for box, class_id, name, score, embedding in zip(boxes, result["class_ids"], names, scores, embeddings,
                                                                strict=True)]
    return JsonBytes(dumps({"embedding": vector(result["embedding"]), "width": width,
                            "height": height, "objects": objects, "model": model.model_dump(),
                            "thumbnail": picture.thumbnail, CONTENT_HASH_FIELD: picture.content_hash,
                            PERCEPTUAL_HASH_FIELD: picture.perceptual_hash,
                            DUPLICATE_GROUP_FIELD: picture.duplicate_group}))


def embeddings(first: np.ndarray, vectors: list[np.ndarray], model: str) -> JsonBytes:
    """Query vectors as `schemas.EmbedResponse`: the first (or joint) one, then one per input."""
    first = np.asarray(first, dtype=np.float32)
    return JsonBytes(dumps({"embedding": first, "embeddings": [np.asarray(v, dtype=np.float32) for v in vectors],
                            "dimension": len(first), "model": model}))
