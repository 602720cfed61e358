"""The adapter ML Commons connectors call: translates connector JSON to Triton requests and back.

No business logic beyond translation (DESIGN.md §9): decoding base64, choosing the Triton ensemble, and
shaping vectors the way ML Commons' post-processing reads them. Errors name the input that caused them.
"""

from __future__ import annotations

import base64
import binascii
import time
from contextlib import asynccontextmanager

import httpx
import numpy as np
from fastapi import FastAPI, HTTPException, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest

from common.config import Settings, load_config
from connectors.adapter.fetch import FetchRefused, fetch_image
from connectors.adapter.schemas import (
    AnalyzeRequest,
    AnalyzeResponse,
    BBox,
    DetectedObject,
    EmbedRequest,
    EmbedResponse,
    ModelInfo,
)
from connectors.adapter.triton import InferenceFailed, TritonModels, TritonUnavailable

REQUESTS = Counter("adapter_requests_total", "Requests by endpoint and outcome", ["endpoint", "outcome"])
LATENCY = Histogram("adapter_request_seconds", "Request latency by endpoint", ["endpoint"])


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


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or load_config()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        app.state.triton = TritonModels(settings.triton.grpc_url)
        app.state.http = httpx.AsyncClient()
        app.state.model_info = None
        yield
        await app.state.http.aclose()
        await app.state.triton.close()

    app = FastAPI(title="visual-search adapter", lifespan=lifespan)

    @app.exception_handler(TritonUnavailable)
    async def _unavailable(_: Request, exc: TritonUnavailable) -> JSONResponse:
        return JSONResponse({"error": "triton_unavailable", "detail": str(exc)}, status_code=503)

    @app.exception_handler(FetchRefused)
    async def _refused(_: Request, exc: FetchRefused) -> JSONResponse:
        return JSONResponse({"error": "image_url_refused", "detail": str(exc)}, status_code=422)

    @app.exception_handler(InferenceFailed)
    async def _failed(_: Request, exc: InferenceFailed) -> JSONResponse:
        return JSONResponse({"error": "inference_failed", "detail": str(exc)}, status_code=422)

    @app.middleware("http")
    async def _measure(request: Request, call_next):
        start = time.perf_counter()
        response = await call_next(request)
        LATENCY.labels(request.url.path).observe(time.perf_counter() - start)
        REQUESTS.labels(request.url.path, str(response.status_code)).inc()
        return response

    @app.get("/health")
    async def health() -> JSONResponse:
        ready = await app.state.triton.ready()
        return JSONResponse({"status": "ok" if ready else "triton_not_ready", "triton": settings.triton.grpc_url},
                            status_code=200 if ready else 503)

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    @app.post("/v1/embed", response_model=EmbedResponse)
    async def embed(body: EmbedRequest) -> EmbedResponse:
        texts, images = body.texts, body.images
        if not texts and not images:
            raise HTTPException(400, "give `text` and/or `image` (base64)")
        triton: TritonModels = app.state.triton
        vectors = [await triton.embed_text(t) for t in texts]
        for i, b64 in enumerate(images):
            vectors.append(await triton.embed_image(decode_image(b64, settings.adapter.max_image_bytes, f"image[{i}]")))
        first = _normalize(np.mean(vectors, axis=0)) if texts and images else vectors[0]
        return EmbedResponse(embedding=first.tolist(), embeddings=[v.tolist() for v in vectors],
                             dimension=len(first), model=settings.models.clip_variant)

    async def model_info() -> ModelInfo:
        """Provenance rendered into the ensemble's config: read once, reported with every analysis."""
        if app.state.model_info is None:
            app.state.model_info = ModelInfo(**{k: v for k, v in (await app.state.triton.parameters("analyze_image"))
                                                .items() if k in ModelInfo.model_fields})
        return app.state.model_info

    async def image_bytes(body: AnalyzeRequest) -> bytes:
        source = body.source
        if source is None:
            raise HTTPException(400, "give `image` (base64) or `image_url`")
        kind, value = source
        a = settings.adapter
        if kind == "image":
            return decode_image(value, a.max_image_bytes)
        return await fetch_image(app.state.http, value, a.max_image_bytes, a.url_fetch_timeout_s,
                                 a.url_fetch_allow_private)

    @app.post("/v1/analyze", response_model=AnalyzeResponse)
    async def analyze(body: AnalyzeRequest) -> AnalyzeResponse:
        result = await app.state.triton.analyze(await image_bytes(body))
        height, width = (int(v) for v in result["image_size"])
        objects = [
            DetectedObject(bbox=BBox(x1=b[0], y1=b[1], x2=b[2], y2=b[3]), class_id=int(c),
                           class_name=n.decode() if isinstance(n, bytes) else str(n), confidence=float(s),
                           object_embedding=e.tolist())
            for b, c, n, s, e in zip(result["boxes"].tolist(), result["class_ids"], result["class_names"],
                                     result["scores"], result["object_embeddings"], strict=True)
        ]
        return AnalyzeResponse(embedding=result["embedding"].tolist(), width=width, height=height, objects=objects,
                               model=await model_info())

    return app


def main() -> None:
    import uvicorn

    settings = load_config()
    uvicorn.run(create_app(settings), host=settings.adapter.host, port=settings.adapter.port, log_level="info")


if __name__ == "__main__":
    main()
