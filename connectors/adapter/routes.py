"""The adapter's endpoints: translation between connector JSON and Triton, nothing more.

Decoding base64, choosing the Triton ensemble, and shaping vectors the way ML Commons' post-processing reads them.
What the app holds for them (the Triton pool, the admission queues, the query cache) is on `request.app.state`,
set up by app.create_app's lifespan; a test may swap any of it.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
from collections.abc import Awaitable, Callable
from functools import partial

import numpy as np
from fastapi import APIRouter, HTTPException, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.datastructures import State

from common.config import Settings
from connectors.adapter import encode
from connectors.adapter.fingerprint import content_hash, perceptual_hash
from connectors.adapter.schemas import AnalyzeRequest, AnalyzeResponse, EmbedRequest, EmbedResponse, ModelInfo
from connectors.adapter.thumbnail import small_picture, thumbnail_jpeg

router = APIRouter()


def decode_image(b64: str, limit: int, what: str = "image") -> bytes:
    """Base64 → bytes with a clear 4xx for each way it can be wrong; accepts data: URLs too."""
    if b64.startswith("data:") and "," in b64:
        b64 = b64.split(",", 1)[1]
    if len(b64) * 3 // 4 > limit:
        raise HTTPException(413, f"{what}: larger than the {limit} byte limit")
    try:
        data = base64.b64decode(b64, validate=False)
    except (binascii.Error, ValueError) as exc:
        raise HTTPException(400, f"{what}: not valid base64 ({exc})") from exc
    if not data:
        raise HTTPException(400, f"{what}: empty")
    return data


def _normalize(vector: np.ndarray) -> np.ndarray:
    return vector / max(float(np.linalg.norm(vector)), 1e-12)


def _settings(request: Request) -> Settings:
    return request.app.state.settings


@router.get("/health")
async def health(request: Request) -> JSONResponse:
    state: State = request.app.state
    ready = await state.triton.ready()
    return JSONResponse({"status": "ok" if ready else "triton_not_ready", "triton": _settings(request).triton.urls},
                        status_code=200 if ready else 503)


@router.get("/v1/queue")
async def queue(request: Request) -> dict:
    """What waits where: for operators and the benchmarks (how deep the back-pressure goes)."""
    state: State = request.app.state
    return {"analyze": state.analyze_queue.snapshot(), "embed": state.embed_queue.snapshot(),
            "embed_cache": state.embed_cache.snapshot(), "triton_unavailable_since": state.outage.since}


@router.get("/metrics")
async def metrics() -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


@router.post("/v1/embed", response_model=EmbedResponse)
async def embed(body: EmbedRequest, request: Request) -> Response:
    texts, images = body.texts, body.images
    if not texts and not images:
        raise HTTPException(400, "give `text` and/or `image` (base64)")
    state: State = request.app.state
    settings = _settings(request)
    decoded = [decode_image(b64, settings.adapter.max_image_bytes, f"image[{i}]") for i, b64 in enumerate(images)]

    async def queued(nbytes: int, call: Callable[[], Awaitable[np.ndarray]]) -> np.ndarray:
        async with state.embed_queue.slot(nbytes):
            return await call()

    cache, triton = state.embed_cache, state.triton
    vectors = [await cache.get_or_compute("text", t.encode(), partial(queued, 0, partial(triton.embed_text, t)))
               for t in texts]
    vectors += [await cache.get_or_compute("image", d, partial(queued, len(d), partial(triton.embed_image, d)))
                for d in decoded]
    state.outage.recovered()
    first = _normalize(np.mean(vectors, axis=0)) if texts and images else vectors[0]
    return encode.embeddings(first, vectors, settings.models.clip_variant)


async def model_info(state: State) -> ModelInfo:
    """Provenance rendered into the ensemble's config: read once, reported with every analysis."""
    if state.model_info is None:
        parameters = await state.triton.parameters("analyze_image")
        state.model_info = ModelInfo(**{k: v for k, v in parameters.items() if k in ModelInfo.model_fields})
    return state.model_info


async def image_bytes(body: AnalyzeRequest, state: State, limit: int) -> bytes:
    source = body.source
    if source is None:
        raise HTTPException(400, "give `image` (base64) or `image_url`")
    kind, value = source
    if kind == "image":
        return decode_image(value, limit)
    return await state.fetcher.fetch(value)


def _look(image: bytes) -> tuple[str, str | None, str | None]:
    """(content hash, thumbnail, perceptual hash), the last two from one small decode of the picture (None if Pillow
    cannot decode it). Run off the event loop: the decode, and the digest of an image of up to 20 MB."""
    picture = small_picture(image)
    digest = content_hash(image)
    return (digest, None, None) if picture is None else (digest, thumbnail_jpeg(picture), perceptual_hash(picture))


async def _picture_facts(body: AnalyzeRequest, state: State, image: bytes, embedding: np.ndarray
                         ) -> encode.PictureFacts:
    """Thumbnail, hashes and duplicate group: after the models accepted the image (its pixel count is bounded), and
    off the event loop (it decodes)."""
    digest, thumbnail, phash = await asyncio.to_thread(_look, image)
    group = body.known_group or digest
    index = body.lookup_index
    if body.known_group is None and index is not None and phash is not None and state.duplicates is not None:
        group = await state.duplicates.group_for(index, digest, phash, embedding)
    return encode.PictureFacts(thumbnail, digest, phash, group)


@router.post("/v1/analyze", response_model=AnalyzeResponse)
async def analyze(body: AnalyzeRequest, request: Request) -> Response:
    state: State = request.app.state
    image = await image_bytes(body, state, _settings(request).adapter.max_image_bytes)
    async with state.analyze_queue.slot(len(image)):
        result = await state.triton.analyze(image)
    state.outage.recovered()
    picture = await _picture_facts(body, state, image, np.asarray(result["embedding"], dtype=np.float32))
    return encode.analysis(result, await model_info(state), picture, body.vectors)
