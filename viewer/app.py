"""The search page's backend: serves the static page and answers its searches from OpenSearch.

The browser never talks to OpenSearch: the page sends what the form says (text or a query image, object-level or
not, filters, page) and this app builds the query with `client.queries` (the same bodies the README, the CLI and
the tests use), sends it with the configured credentials (which stay here), and answers only what the page
draws: each hit's thumbnail, size, detected objects and, for an object-level query, which object matched.
OpenSearch refusing a query (a 400: an unparseable date, say) comes back as a 400 with OpenSearch's reason, so
the page can say what was wrong instead of showing nothing.
"""

from __future__ import annotations

import base64
import binascii
import logging
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from opensearchpy import OpenSearch
from pydantic import BaseModel, ConfigDict, Field, field_validator

from client.queries import OBJECTS, Count, Filters, class_facets, with_class_facets
from client.results import SearchFailed, request_body, search, view
from common.config import Settings, load_config

STATIC = Path(__file__).resolve().parent / "static"
# at least this many k-NN candidates (README: "ask for a larger k than you show"), more for deep pages
MIN_CANDIDATES = 100
MAX_QUERY_IMAGE_BYTES = 20_000_000

log = logging.getLogger("visual_search.viewer")


class SearchRequest(BaseModel):
    """What the page's form sends. `image` is a base64 file or a data: URL; it wins over `q`."""

    model_config = ConfigDict(extra="forbid")

    q: str | None = None
    image: str | None = None
    objects: bool = False
    classes: list[str] = []
    min_confidence: float | None = Field(None, ge=0, le=1)
    tags: list[str] = []
    since: str | None = None
    until: str | None = None
    counts: list[str] = Field([], description="how many objects of a class: circle>=2, star=0")
    like_object: str | None = Field(None, description="DOC_ID:N: images holding an object like that stored one")
    all_copies: bool = Field(False, description="every copy of a picture (default: one per duplicate group)")
    page: int = Field(1, ge=1, le=1000)
    size: int = Field(12, ge=1, le=100)

    @field_validator("classes", "tags", "counts")
    @classmethod
    def _no_blanks(cls, values: list[str]) -> list[str]:
        return [v.strip() for v in values if v.strip()]

    @field_validator("q", "since", "until", "like_object")
    @classmethod
    def _blank_is_none(cls, value: str | None) -> str | None:
        if value is None:
            return None
        return value.strip() or None

    def filters(self) -> Filters:
        return Filters(classes=tuple(self.classes), min_confidence=self.min_confidence, tags=tuple(self.tags),
                       since=self.since, until=self.until, counts=tuple(Count.parse(c) for c in self.counts))

    def image_bytes(self) -> bytes | None:
        if not self.image:
            return None
        data = self.image.split(",", 1)[1] if self.image.startswith("data:") else self.image
        if len(data) * 3 // 4 > MAX_QUERY_IMAGE_BYTES:
            raise ValueError(f"the query image is larger than {MAX_QUERY_IMAGE_BYTES} bytes")
        try:
            decoded = base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ValueError(f"the query image is not valid base64 ({exc})") from exc
        if not decoded:
            raise ValueError("the query image is empty")
        return decoded


def error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def connect(settings: Settings) -> OpenSearch:
    """As the search-only user when the cluster is secured (the page can search, nothing else)."""
    from bootstrap.opensearch_api import connect as connect_opensearch
    from common.credentials import SEARCH_USER

    return connect_opensearch(settings.opensearch, user=SEARCH_USER)


def create_app(settings: Settings | None = None, client: OpenSearch | None = None) -> FastAPI:
    settings = settings or load_config()
    opensearch = client or connect(settings)
    index = settings.index.name
    app = FastAPI(title="visual-search viewer", docs_url=None, redoc_url=None, openapi_url=None)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Any, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'][1:]) or 'body'}: {e['msg']}" for e in exc.errors())
        return error(400, f"invalid search: {problems}")

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    @app.get("/health")
    def health() -> dict:
        """The page is up whether or not OpenSearch is (it says so per search); this tells the supervisor."""
        try:
            reachable = bool(opensearch.ping())
        except Exception:
            reachable = False
        return {"status": "ok", "opensearch": "up" if reachable else "unreachable", "index": index}

    @app.get("/api/classes")
    def classes() -> Any:
        """The object classes present in the index, most frequent first: the class filter's suggestions."""
        body = {"size": 0, "aggs": {"objects": {"nested": {"path": OBJECTS}, "aggs": {
            "classes": {"terms": {"field": f"{OBJECTS}.class_name", "size": 200}}}}}}
        try:
            found = search(opensearch, index, body)
        except SearchFailed as exc:
            return error(502, str(exc))
        buckets = found.get("aggregations", {}).get("objects", {}).get("classes", {}).get("buckets", [])
        return {"classes": [b["key"] for b in buckets]}

    def search_for(request: SearchRequest) -> dict:
        """The body for what the form asks (ValueError or SearchFailed when it cannot be built): facets of the
        results, one hit per duplicate group unless every copy is asked for."""
        offset = (request.page - 1) * request.size
        candidates = max(MIN_CANDIDATES, offset + 2 * request.size)
        return with_class_facets(request_body(
            opensearch, index, text=request.q, image=request.image_bytes(), objects=request.objects,
            like_object=request.like_object, all_copies=request.all_copies, filters=request.filters(),
            k=request.size, offset=offset, candidates=candidates))

    @app.post("/api/search")
    def run_search(request: SearchRequest) -> Any:
        try:
            body = search_for(request)
            found = search(opensearch, index, body)
        except ValueError as exc:
            return error(400, str(exc))
        except SearchFailed as exc:
            log.info("search failed: %s", exc)
            # the query's fault (a 4xx from OpenSearch) is said as such; anything else is the service's
            return error(400 if exc.bad_query else 502, str(exc))
        hits = found["hits"]
        total = hits.get("total") or {}
        objects = request.objects or request.like_object is not None
        by = "like-object" if request.like_object else "by-image" if request.image else "by-text"
        return {"total": total.get("value", len(hits["hits"])), "relation": total.get("relation", "eq"),
                "page": request.page, "size": request.size, "took_ms": found.get("took"),
                "mode": ("object" if objects else "image") + "-" + by, "facets": class_facets(found),
                "hits": [view(hit) for hit in hits["hits"]]}

    return app


def main() -> None:
    import uvicorn

    settings = load_config()
    uvicorn.run(create_app(settings), host=settings.viewer.host, port=settings.viewer.port, log_level="info")


if __name__ == "__main__":
    main()
