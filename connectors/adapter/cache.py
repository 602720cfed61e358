"""A bounded cache of query embeddings: people repeat queries, and each miss costs an encoder pass.

Keys carry the served model's identity (the provenance parameters Triton reports for the embedding ensembles),
so a model change never serves a vector of the old model: the identity is re-read from Triton at most every
`recheck_s`, and after any outage, and a new identity empties the cache. Least recently used entries go first
once `max_entries` is reached.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable

import numpy as np


class EmbeddingCache:
    def __init__(self, max_entries: int, model_identity: Callable[[], Awaitable[str]], recheck_s: float = 30.0) -> None:
        self.max_entries = max_entries
        self._identity_of = model_identity
        self.recheck_s = recheck_s
        self.identity: str | None = None
        self._checked_at = 0.0
        self._stale = True
        self._entries: OrderedDict[str, np.ndarray] = OrderedDict()
        self.hits = 0
        self.misses = 0

    async def _current_identity(self) -> str:
        now = time.monotonic()
        if self._stale or now - self._checked_at > self.recheck_s:
            identity = await self._identity_of()
            if identity != self.identity:
                self._entries.clear()
                self.identity = identity
            self._checked_at, self._stale = now, False
        assert self.identity is not None
        return self.identity

    def expire_identity(self) -> None:
        """Re-read the model identity on the next lookup (called after Triton was unreachable)."""
        self._stale = True

    async def get_or_compute(self, kind: str, payload: bytes, compute: Callable[[], Awaitable[np.ndarray]]
                             ) -> np.ndarray:
        if self.max_entries == 0:
            return await compute()
        identity = await self._current_identity()
        key = hashlib.sha256(identity.encode() + b"\0" + kind.encode() + b"\0" + payload).hexdigest()
        found = self._entries.get(key)
        if found is not None:
            self._entries.move_to_end(key)
            self.hits += 1
            return found
        self.misses += 1
        vector = await compute()
        if self.identity == identity:  # the model did not change while computing
            self._entries[key] = vector
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)
        return vector

    def snapshot(self) -> dict[str, float | int | str | None]:
        return {"entries": len(self._entries), "max_entries": self.max_entries, "hits": self.hits,
                "misses": self.misses, "bytes": sum(v.nbytes for v in self._entries.values()),
                "model": self.identity}
