"""The index search the duplicate lookup makes (connectors.adapter.duplicates.Neighbours), over HTTP to OpenSearch.

The adapter reads the images index for this one thing, as the search user when security is on (read-only on the
product's indices). Lookups that arrive together (Triton answers a dynamic batch of analyses at once) go as one
`_msearch`: on the 2-core test machine OpenSearch spends about 1.2 ms of CPU on any request before its work (a
bare `GET /`), 2.6 ms on a trivial search and 4.2 ms on one of these k-NN lookups. The request is made with
aiohttp (which the Triton client already brings): 0.8 ms of the adapter's CPU per lookup, where httpx took 2.75.
A document being written to an index that does not exist yet has no earlier copies.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp
import orjson

from client.queries import DUPLICATE_GROUP, PERCEPTUAL_HASH, copies_query
from common.config import OpenSearchSettings
from common.credentials import SEARCH_USER


class Post(Protocol):
    """POST of NDJSON to OpenSearch → the JSON answer; raises for a status other than 200."""

    async def __call__(self, path: str, ndjson: bytes) -> dict: ...

    async def aclose(self) -> None: ...


class AiohttpPost:
    def __init__(self, settings: OpenSearchSettings, timeout_s: float) -> None:
        auth = settings.auth(SEARCH_USER)
        verify = settings.verify
        self._session: aiohttp.ClientSession | None = None
        self._auth = aiohttp.BasicAuth(*auth) if auth else None
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._url = settings.url.rstrip("/")
        self._ssl: Any = verify if not isinstance(verify, bool) else (None if verify else False)

    async def __call__(self, path: str, ndjson: bytes) -> dict:
        if self._session is None:  # made inside the running loop
            self._session = aiohttp.ClientSession(auth=self._auth, timeout=self._timeout)
        async with self._session.post(self._url + path, data=ndjson, ssl=self._ssl,
                                      headers={"Content-Type": "application/x-ndjson"}) as response:
            body = await response.read()
            if response.status != 200:
                raise RuntimeError(f"OpenSearch answered {response.status}: {body[:300]!r}")
            return dict(orjson.loads(body))

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()


@dataclass
class _Lookup:
    index: str
    body: dict
    answer: asyncio.Future[list[tuple[str, str]]]


class OpenSearchNeighbours:
    """`near` for every lookup; those made within `window_s` of each other (at most `max_batch`) share a request."""

    def __init__(self, post: Post, window_s: float = 0.002, max_batch: int = 32) -> None:
        self.post = post
        self.window_s = window_s
        self.max_batch = max_batch
        self._waiting: list[_Lookup] = []
        self._timer: asyncio.TimerHandle | None = None
        self._sending: set[asyncio.Task[None]] = set()

    @classmethod
    def connect(cls, settings: OpenSearchSettings, timeout_s: float) -> OpenSearchNeighbours:
        return cls(AiohttpPost(settings, timeout_s))

    async def near(self, index: str, embedding: Sequence[float], k: int) -> list[tuple[str, str]]:
        loop = asyncio.get_running_loop()
        lookup = _Lookup(index, copies_query([float(v) for v in embedding], k), loop.create_future())
        self._waiting.append(lookup)
        if len(self._waiting) >= self.max_batch:
            self._flush()
        elif self._timer is None:
            self._timer = loop.call_later(self.window_s, self._flush)
        return await lookup.answer

    def _flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        batch, self._waiting = self._waiting, []
        if batch:
            task = asyncio.get_running_loop().create_task(self._send(batch))
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)

    async def _send(self, batch: list[_Lookup]) -> None:
        lines = b"".join(orjson.dumps({"index": lookup.index}) + b"\n" + orjson.dumps(lookup.body) + b"\n"
                         for lookup in batch)
        try:
            answers = (await self.post("/_msearch", lines))["responses"]
        except Exception as exc:
            for lookup in batch:
                if not lookup.answer.done():
                    lookup.answer.set_exception(exc)
            return
        for lookup, answer in zip(batch, answers, strict=True):
            if not lookup.answer.done():
                _settle(lookup.answer, answer)

    async def aclose(self) -> None:
        if self._sending:
            await asyncio.gather(*self._sending, return_exceptions=True)
        await self.post.aclose()


def _settle(answer: asyncio.Future[list[tuple[str, str]]], response: dict) -> None:
    """One search's part of an `_msearch` answer: its (group, hash) pairs, [] for a missing index, else an error."""
    error = response.get("error")
    if error is not None:
        if response.get("status") == 404 and "index_not_found" in str(error):
            answer.set_result([])
        else:
            answer.set_exception(RuntimeError(f"search failed ({response.get('status')}): {str(error)[:300]}"))
        return
    found = []
    for hit in response.get("hits", {}).get("hits", []):
        fields = hit.get("fields", {})
        group, phash = fields.get(DUPLICATE_GROUP, [None])[0], fields.get(PERCEPTUAL_HASH, [None])[0]
        if isinstance(group, str) and isinstance(phash, str):
            found.append((group, phash))
    answer.set_result(found)
