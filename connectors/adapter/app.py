"""The adapter ML Commons connectors call: translates connector JSON to Triton requests and back.

No business logic beyond translation (DESIGN.md §9): decoding base64, choosing the Triton ensemble, and
shaping vectors the way ML Commons' post-processing reads them. Errors name the input that caused them and
say whether they are worth retrying: 4xx = this input is bad (permanent), 429 + the throttling header = busy
or briefly unavailable (ML Commons retries), 503/500 = transient but not retried by ML Commons (the document
is dead-lettered with its image, for replay).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import logging
import time
from collections.abc import Awaitable, Callable
from contextlib import asynccontextmanager
from functools import partial

import numpy as np
from fastapi import FastAPI, HTTPException, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest

from common.config import Settings, load_config
from common.contract import RETRYABLE_FIELD, THROTTLING_HEADER, THROTTLING_VALUE
from common.vectors import wire_floats
from connectors.adapter.admission import Admission, Busy, Outage
from connectors.adapter.cache import EmbeddingCache
from connectors.adapter.fetch import FetchRefused, FetchUnavailable, ImageFetcher
from connectors.adapter.schemas import (
    AnalyzeRequest,
    AnalyzeResponse,
    BBox,
    DetectedObject,
    EmbedRequest,
    EmbedResponse,
    ModelInfo,
)
from connectors.adapter.thumbnail import make_thumbnail
from connectors.adapter.triton import InferenceFailed, TritonPool, TritonUnavailable

REQUESTS = Counter("adapter_requests_total", "Requests by endpoint and outcome", ["endpoint", "outcome"])
log = logging.getLogger("visual_search.adapter")
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


def error_response(status: int, code: str, detail: str, retryable: bool, headers: dict[str, str] | None = None
                   ) -> JSONResponse:
    """The one error shape: ML Commons copies the body into the failure message the dead-letter route reads."""
    return JSONResponse({"error": code, "detail": detail, RETRYABLE_FIELD: retryable}, status_code=status,
                        headers=headers)


def busy_response(detail: str, retry_after_s: float) -> JSONResponse:
    """429 with the header ML Commons recognises as throttling: it waits and retries instead of failing."""
    return error_response(429, "busy", detail, True, {THROTTLING_HEADER: THROTTLING_VALUE,
                                                      "Retry-After": str(max(1, round(retry_after_s)))})


# Open without the token: load balancers and `make up` probe it, and it tells nothing about the data.
OPEN_PATHS = frozenset({"/health"})


def authorized(header: str | None, token: str) -> bool:
    """Whether an Authorization header carries `Bearer <token>`. Compared in constant time (hmac.compare_digest),
    so response timing says nothing about how much of a guess was right."""
    scheme, _, given = (header or "").partition(" ")
    return hmac.compare_digest(given.strip().encode(), token.encode()) and scheme.lower() == "bearer"


def unauthorized_response() -> JSONResponse:
    """401 in the one error shape. Retryable: a missing or stale token is a deployment fault, never the document's,
    so a document the ingest pipeline dead-letters for it can be replayed once the connectors carry the token."""
    return error_response(401, "unauthorized", "missing or wrong bearer token (the connector's adapter_token)",
                          True, {"WWW-Authenticate": "Bearer"})


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or load_config()
    a = settings.adapter
    token = settings.adapter_token  # None: no token configured, nothing checked (security off)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        app.state.triton = TritonPool.connect(settings.triton.urls)
        app.state.fetcher = ImageFetcher(a.max_image_bytes, a.url_fetch_timeout_s, a.url_fetch_allow_private,
                                         a.url_fetch_max_concurrent)
        app.state.model_info = None
        app.state.analyze_queue = Admission(a.analyze_concurrency, a.max_queue_wait_s, a.max_queued_bytes)
        app.state.embed_queue = Admission(a.analyze_concurrency * 2, a.max_queue_wait_s, a.max_queued_bytes)
        app.state.outage = Outage(a.unavailable_retry_s)
        app.state.embed_cache = EmbeddingCache(a.embed_cache_entries, app.state.triton.identity)
        yield
        await app.state.fetcher.aclose()
        await app.state.triton.close()

    app = FastAPI(title="visual-search adapter", lifespan=lifespan)

    @app.exception_handler(HTTPException)
    async def _bad_request(_: Request, exc: HTTPException) -> JSONResponse:
        return error_response(exc.status_code, "bad_request", str(exc.detail), False)

    @app.exception_handler(RequestValidationError)
    async def _invalid_body(_: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(422, "bad_request", f"request body: {exc.errors()}", False)

    @app.exception_handler(Busy)
    async def _busy(_: Request, exc: Busy) -> JSONResponse:
        return busy_response(str(exc), exc.retry_after_s)

    @app.exception_handler(TritonUnavailable)
    async def _unavailable(_: Request, exc: TritonUnavailable) -> JSONResponse:
        app.state.outage.failed()
        app.state.embed_cache.expire_identity()  # the server that comes back may serve another model
        if app.state.outage.worth_retrying:
            return busy_response(f"triton unavailable, retry: {exc}", 5)
        return error_response(503, "triton_unavailable", str(exc), True)

    @app.exception_handler(FetchRefused)
    async def _refused(_: Request, exc: FetchRefused) -> JSONResponse:
        return error_response(422, "image_url_refused", str(exc), False)

    @app.exception_handler(FetchUnavailable)
    async def _fetch_unavailable(_: Request, exc: FetchUnavailable) -> JSONResponse:
        return error_response(503, "image_url_unavailable", str(exc), True)

    @app.exception_handler(InferenceFailed)
    async def _failed(_: Request, exc: InferenceFailed) -> JSONResponse:
        return error_response(422, "bad_image", str(exc), False)

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        """A bug or an unforeseen failure is not the image's fault: retryable, so the document is kept."""
        log.exception("unexpected error")
        return error_response(500, "internal_error", f"{exc.__class__.__name__}: {exc}", True)

    @app.middleware("http")
    async def _authenticate(request: Request, call_next):
        if token is not None and request.url.path not in OPEN_PATHS \
                and not authorized(request.headers.get("authorization"), token):
            return unauthorized_response()  # counted by _measure, the outer middleware
        return await call_next(request)

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
        return JSONResponse({"status": "ok" if ready else "triton_not_ready", "triton": settings.triton.urls},
                            status_code=200 if ready else 503)

    @app.get("/v1/queue")
    async def queue() -> dict:
        """What waits where: for operators and the benchmarks (how deep the back-pressure goes)."""
        return {"analyze": app.state.analyze_queue.snapshot(), "embed": app.state.embed_queue.snapshot(),
                "embed_cache": app.state.embed_cache.snapshot(),
                "triton_unavailable_since": app.state.outage.since}

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    @app.post("/v1/embed", response_model=EmbedResponse)
    async def embed(body: EmbedRequest) -> EmbedResponse:
        texts, images = body.texts, body.images
        if not texts and not images:
            raise HTTPException(400, "give `text` and/or `image` (base64)")
        triton: TritonPool = app.state.triton
        decoded = [decode_image(b64, a.max_image_bytes, f"image[{i}]") for i, b64 in enumerate(images)]
        cache: EmbeddingCache = app.state.embed_cache

        async def queued(nbytes: int, call: Callable[[], Awaitable[np.ndarray]]) -> np.ndarray:
            async with app.state.embed_queue.slot(nbytes):
                return await call()

        vectors = [await cache.get_or_compute("text", t.encode(), partial(queued, 0, partial(triton.embed_text, t)))
                   for t in texts]
        vectors += [await cache.get_or_compute("image", d, partial(queued, len(d), partial(triton.embed_image, d)))
                    for d in decoded]
        app.state.outage.recovered()
        first = _normalize(np.mean(vectors, axis=0)) if texts and images else vectors[0]
        return EmbedResponse(embedding=wire_floats(first), embeddings=[wire_floats(v) for v in vectors],
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
        if kind == "image":
            return decode_image(value, a.max_image_bytes)
        return await app.state.fetcher.fetch(value)

    @app.post("/v1/analyze", response_model=AnalyzeResponse)
    async def analyze(body: AnalyzeRequest) -> AnalyzeResponse:
        image = await image_bytes(body)
        async with app.state.analyze_queue.slot(len(image)):
            result = await app.state.triton.analyze(image)
        app.state.outage.recovered()
        height, width = (int(v) for v in result["image_size"])
        objects = [
            DetectedObject(bbox=BBox(x1=b[0], y1=b[1], x2=b[2], y2=b[3]), class_id=int(c),
                           class_name=n.decode() if isinstance(n, bytes) else str(n), confidence=float(s),
                           object_embedding=wire_floats(e))
            for b, c, n, s, e in zip(result["boxes"].tolist(), result["class_ids"], result["class_names"],
                                     result["scores"], result["object_embeddings"], strict=True)
        ]
        # after the models accepted the image (its pixel count is bounded), off the event loop: it decodes
        thumbnail = await asyncio.to_thread(make_thumbnail, image)
        return AnalyzeResponse(embedding=wire_floats(result["embedding"]), width=width, height=height, objects=objects,
                               model=await model_info(), thumbnail=thumbnail)

    return app


def main() -> None:
    import uvicorn

    settings = load_config()
    # Keep idle connections longer than ML Commons' pool does (60 s), so the client always closes first and
    # never sends a request on a connection the server is closing; a deep backlog for a bulk's burst.
    uvicorn.run(create_app(settings), host=settings.adapter.host, port=settings.adapter.port, log_level="info",
                timeout_keep_alive=75, backlog=4096)


if __name__ == "__main__":
    main()
