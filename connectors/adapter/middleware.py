"""The adapter's two cross-cutting concerns, as plain ASGI middleware: the bearer token, and request metrics.

Plain ASGI rather than `@app.middleware("http")`: Starlette's BaseHTTPMiddleware runs each request through an
anyio task group and memory streams, which cost a measurable share of the adapter's CPU per analysis at ingest
rates (bench --only ceiling); these only look at the scope and wrap `send`.
"""

from __future__ import annotations

import hmac
import time

from prometheus_client import Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from connectors.adapter.answers import unauthorized_response

REQUESTS = Counter("adapter_requests_total", "Requests by endpoint and outcome", ["endpoint", "outcome"])
LATENCY = Histogram("adapter_request_seconds", "Request latency by endpoint", ["endpoint"])

# Open without the token: load balancers and `make up` probe it, and it tells nothing about the data.
OPEN_PATHS = frozenset({"/health"})


def authorized(header: str | None, token: str) -> bool:
    """Whether an Authorization header carries `Bearer <token>`. Compared in constant time (hmac.compare_digest),
    so response timing says nothing about how much of a guess was right."""
    scheme, _, given = (header or "").partition(" ")
    return hmac.compare_digest(given.strip().encode(), token.encode()) and scheme.lower() == "bearer"


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return bytes(value).decode("latin-1")
    return None


class BearerAuth:
    """Refuses every HTTP request but OPEN_PATHS that lacks `Authorization: Bearer <token>`."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self.token = token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] not in OPEN_PATHS \
                and not authorized(_header(scope, b"authorization"), self.token):
            await unauthorized_response()(scope, receive, send)
            return
        await self.app(scope, receive, send)


class Metrics:
    """Counts every HTTP answer by path and status, and times it (outermost, so refusals are counted too)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500  # what the server answers when the app raises before it starts a response

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            path = scope["path"]
            LATENCY.labels(path).observe(time.perf_counter() - start)
            REQUESTS.labels(path, str(status)).inc()
