"""How each failure is answered: the status codes and bodies that are the adapter's contract with ML Commons.

4xx = this input is bad (permanent); 429 with the throttling header = busy or briefly unavailable (ML Commons
retries); 503/500 = transient but not retried by ML Commons (the document is dead-lettered with its image, for
replay). The body always says whether a retry may help: ML Commons copies it into the failure message the
dead-letter route reads.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from common.contract import RETRYABLE_FIELD, THROTTLING_HEADER, THROTTLING_VALUE
from connectors.adapter.admission import Busy
from connectors.adapter.duplicates import LookupFailed
from connectors.adapter.fetch import FetchRefused, FetchUnavailable
from connectors.adapter.triton import InferenceFailed, TritonUnavailable

log = logging.getLogger("visual_search.adapter")


def error_response(status: int, code: str, detail: str, retryable: bool, headers: dict[str, str] | None = None
                   ) -> JSONResponse:
    """The one error shape."""
    return JSONResponse({"error": code, "detail": detail, RETRYABLE_FIELD: retryable}, status_code=status,
                        headers=headers)


def busy_response(detail: str, retry_after_s: float) -> JSONResponse:
    """429 with the header ML Commons recognises as throttling: it waits and retries instead of failing."""
    return error_response(429, "busy", detail, True, {THROTTLING_HEADER: THROTTLING_VALUE,
                                                      "Retry-After": str(max(1, round(retry_after_s)))})


def unauthorized_response() -> JSONResponse:
    """401 in the one error shape. Retryable: a missing or stale token is a deployment fault, never the document's,
    so a document the ingest pipeline dead-letters for it can be replayed once the connectors carry the token."""
    return error_response(401, "unauthorized", "missing or wrong bearer token (the connector's adapter_token)",
                          True, {"WWW-Authenticate": "Bearer"})


# failures answered with their message alone: (status, error code, whether a retry may help)
PLAIN_FAILURES: dict[type[Exception], tuple[int, str, bool]] = {
    FetchRefused: (422, "image_url_refused", False),  # the URL is not one the adapter may fetch
    FetchUnavailable: (503, "image_url_unavailable", True),  # the image's server may answer later
    LookupFailed: (503, "duplicate_lookup_failed", True),  # OpenSearch may answer later
    InferenceFailed: (422, "bad_image", False),  # the image itself cannot be analyzed
}


def _answer_with(status: int, code: str, retryable: bool) -> Callable[[Request, Exception], Awaitable[JSONResponse]]:
    async def answer(_: Request, exc: Exception) -> JSONResponse:
        return error_response(status, code, str(exc), retryable)
    return answer


def add_error_handlers(app: FastAPI) -> None:
    """Maps each failure to its answer; `app.state` holds the outage tracker and the query cache."""

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

    for kind, (status, code, retryable) in PLAIN_FAILURES.items():
        app.add_exception_handler(kind, _answer_with(status, code, retryable))

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        """A bug or an unforeseen failure is not the image's fault: retryable, so the document is kept."""
        log.exception("unexpected error")
        return error_response(500, "internal_error", f"{exc.__class__.__name__}: {exc}", True)
