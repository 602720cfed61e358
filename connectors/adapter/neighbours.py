"""The index search the duplicate lookup makes (connectors.adapter.duplicates.Neighbours), over HTTP to OpenSearch.

The adapter reads the images index for this one thing, as the search user when security is on (read-only on the
product's indices). A document being written to an index that does not exist yet has no earlier copies.
"""

from __future__ import annotations

from collections.abc import Sequence

import httpx

from client.queries import DUPLICATE_GROUP, PERCEPTUAL_HASH, copies_query
from common.config import OpenSearchSettings
from common.credentials import SEARCH_USER


class OpenSearchNeighbours:
    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client

    @classmethod
    def connect(cls, settings: OpenSearchSettings, timeout_s: float) -> OpenSearchNeighbours:
        return cls(httpx.AsyncClient(base_url=settings.url, auth=settings.auth(SEARCH_USER), verify=settings.verify,
                                     timeout=timeout_s))

    async def near(self, index: str, embedding: Sequence[float], k: int) -> list[tuple[str, str]]:
        response = await self.client.post(f"/{index}/_search", json=copies_query([float(v) for v in embedding], k))
        if response.status_code == 404:
            return []
        response.raise_for_status()
        hits = response.json()["hits"]["hits"]
        return [(h["_source"][DUPLICATE_GROUP], h["_source"][PERCEPTUAL_HASH]) for h in hits
                if isinstance(h.get("_source", {}).get(DUPLICATE_GROUP), str)
                and isinstance(h["_source"].get(PERCEPTUAL_HASH), str)]

    async def aclose(self) -> None:
        await self.client.aclose()
