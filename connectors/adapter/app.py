"""The adapter ML Commons connectors call: translates connector JSON to Triton requests and back.

The app is assembled here: what the routes share (one async Triton client per replica, the admission queues, the
query cache, the URL fetcher) is built in the lifespan and kept on `app.state`; the endpoints are in `routes`, the
failure answers in `answers`, the token check and metrics in `middleware`.
"""

from __future__ import annotations

from contextlib import asynccontextmanager

from fastapi import FastAPI

from common.config import Settings, load_config
from connectors.adapter.admission import Admission, Outage
from connectors.adapter.answers import add_error_handlers
from connectors.adapter.cache import EmbeddingCache
from connectors.adapter.duplicates import DuplicateGroups, RecentGroups
from connectors.adapter.fetch import ImageFetcher
from connectors.adapter.middleware import BearerAuth, Metrics
from connectors.adapter.neighbours import OpenSearchNeighbours
from connectors.adapter.routes import router
from connectors.adapter.triton import TritonPool


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or load_config()
    a = settings.adapter

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        triton = app.state.triton = TritonPool.connect(settings.triton.urls)
        fetcher = app.state.fetcher = ImageFetcher(a.max_image_bytes, a.url_fetch_timeout_s, a.url_fetch_allow_private,
                                         a.url_fetch_max_concurrent)
        app.state.model_info = None
        app.state.analyze_queue = Admission(a.analyze_concurrency, a.max_queue_wait_s, a.max_queued_bytes)
        app.state.embed_queue = Admission(a.analyze_concurrency * 2, a.max_queue_wait_s, a.max_queued_bytes)
        app.state.outage = Outage(a.unavailable_retry_s)
        app.state.embed_cache = EmbeddingCache(a.embed_cache_entries, triton.identity)
        d = settings.duplicates
        neighbours = OpenSearchNeighbours.connect(settings.opensearch, d.lookup_timeout_s) if d.enabled else None
        app.state.duplicates = None if neighbours is None else DuplicateGroups(
            neighbours, d.max_distance, d.candidates, RecentGroups(d.recent_s))
        yield
        await fetcher.aclose()  # the ones made here, even where a test swapped in a double
        await triton.close()
        if neighbours is not None:
            await neighbours.aclose()

    app = FastAPI(title="visual-search adapter", lifespan=lifespan)
    app.state.settings = settings
    add_error_handlers(app)
    app.include_router(router)
    token = settings.adapter_token  # None: no token configured, nothing checked (security off)
    if token is not None:
        app.add_middleware(BearerAuth, token=token)
    app.add_middleware(Metrics)  # added last: outermost, so refusals are counted too
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
