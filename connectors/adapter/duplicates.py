"""Which duplicate group an image joins: the group of an earlier copy of the same picture, or a new one of its own.

A copy is a document within `max_distance` bits of perceptual hash (connectors.adapter.fingerprint). Candidates
come from the image's embedding neighbourhood in the index being written (the `k` nearest global embeddings: a
resized or recompressed copy embeds almost where its original does), each confirmed by its perceptual hash, so
two pictures that merely look alike to the model never share a group. The nearest confirmed copy gives its group;
with none, the image starts a group named by its own content hash (so exact copies agree even when no lookup can
see the other yet).

Guarantee: an image analyzed after a copy of it became searchable (OpenSearch refreshes every second by default)
joins that copy's group, and so the group of the first copy indexed. Limit: a copy indexed within the refresh
interval of its original is invisible to the search; the copies this adapter process analyzed in the last
`recent_s` seconds are therefore checked too, but copies analyzed at the same moment by two adapters (or sent in
one bulk to two) can start two groups (exact copies still agree: the content hash).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from connectors.adapter.fingerprint import distance, hash_bits


class Neighbours(Protocol):
    """The documents nearest an embedding in an index: (duplicate group, perceptual hash) of each that has both."""

    async def near(self, index: str, embedding: Sequence[float], k: int) -> list[tuple[str, str]]: ...


class LookupFailed(Exception):
    """The index could not be searched for copies: transient (the document is dead-lettered for replay)."""


@dataclass
class _Seen:
    at: float
    index: str
    bits: np.ndarray
    group: str


@dataclass
class RecentGroups:
    """The groups this process gave in the last `ttl_s` seconds, by index and perceptual hash (not yet searchable)."""

    ttl_s: float
    max_entries: int = 20_000
    clock: Callable[[], float] = time.monotonic
    _seen: deque[_Seen] = field(default_factory=deque)

    def add(self, index: str, phash: str, group: str) -> None:
        self._expire()
        self._seen.append(_Seen(self.clock(), index, hash_bits(phash), group))
        while len(self._seen) > self.max_entries:
            self._seen.popleft()

    def nearest(self, index: str, phash: str, max_distance: int) -> tuple[int, str] | None:
        """(distance, group) of the nearest one within `max_distance` bits, else None."""
        self._expire()
        mine = [s for s in self._seen if s.index == index]
        if not mine:
            return None
        distances = np.count_nonzero(np.stack([s.bits for s in mine]) != hash_bits(phash), axis=1)
        best = int(np.argmin(distances))
        return (int(distances[best]), mine[best].group) if distances[best] <= max_distance else None

    def _expire(self) -> None:
        horizon = self.clock() - self.ttl_s
        while self._seen and self._seen[0].at < horizon:
            self._seen.popleft()


@dataclass
class DuplicateGroups:
    """Gives each analyzed image its duplicate group (see the module docstring)."""

    neighbours: Neighbours
    max_distance: int
    k: int
    recent: RecentGroups

    async def group_for(self, index: str, content_hash: str, phash: str, embedding: Sequence[float]) -> str:
        try:
            found = await self.neighbours.near(index, embedding, self.k)
        except Exception as exc:
            raise LookupFailed(f"looking for earlier copies in {index}: {exc.__class__.__name__}: {exc}") from exc
        candidates = [(distance(phash, other), group) for group, other in found]
        recent = self.recent.nearest(index, phash, self.max_distance)
        if recent is not None:
            candidates.append(recent)
        confirmed = sorted(c for c in candidates if c[0] <= self.max_distance)
        group = confirmed[0][1] if confirmed else content_hash
        self.recent.add(index, phash, group)
        return group
