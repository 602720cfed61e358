"""Duplicate groups: which group an analyzed image joins, from its neighbours' perceptual hashes and the groups this
process gave recently; and the perceptual hash's behaviour on copies of a generated scene."""

from __future__ import annotations

import asyncio
import io
from collections.abc import Sequence

import pytest
from PIL import Image

from connectors.adapter.duplicates import DuplicateGroups, LookupFailed, RecentGroups
from connectors.adapter.fingerprint import HASH_BITS, content_hash, distance, perceptual_hash
from connectors.adapter.thumbnail import small_picture
from export.shapes.dataset import HELD_OUT_SEED, HELD_OUT_STYLE, render

ZERO = "0" * 64


def flipped(phash: str, bits: int) -> str:
    """`phash` with its first `bits` bits inverted."""
    value = int(phash, 16) ^ (((1 << bits) - 1) << (HASH_BITS - bits))
    return f"{value:064x}"


class Index:
    """Neighbours double: every document of an index, nearest first whatever the embedding."""

    def __init__(self, docs: dict[str, list[tuple[str, str]]] | None = None, fail: bool = False) -> None:
        self.docs = docs or {}
        self.fail = fail
        self.asked: list[tuple[str, int]] = []

    async def near(self, index: str, embedding: Sequence[float], k: int) -> list[tuple[str, str]]:
        self.asked.append((index, k))
        if self.fail:
            raise ConnectionError("refused")
        return self.docs.get(index, [])[:k]


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def groups(index: Index, clock: Clock | None = None, max_distance: int = 36) -> DuplicateGroups:
    return DuplicateGroups(index, max_distance, 10, RecentGroups(30, clock=clock or Clock()))


def group_for(finder: DuplicateGroups, phash: str, digest: str = "own-digest", index: str = "images") -> str:
    return asyncio.run(finder.group_for(index, digest, phash, [0.0]))


def test_a_copy_within_the_distance_joins_the_nearest_group():
    index = Index({"images": [("far", flipped(ZERO, 30)), ("near", flipped(ZERO, 4)), ("out", flipped(ZERO, 60))]})
    assert group_for(groups(index), ZERO) == "near"
    assert index.asked == [("images", 10)]


def test_nothing_within_the_distance_starts_a_group_named_by_the_content_hash():
    index = Index({"images": [("other", flipped(ZERO, 38))]})
    assert group_for(groups(index), ZERO, digest="abc") == "abc"


def test_recent_groups_cover_copies_not_yet_searchable_in_that_index_only():
    clock = Clock()
    finder = groups(Index(), clock)
    assert group_for(finder, ZERO, digest="first") == "first"
    assert group_for(finder, flipped(ZERO, 6), digest="second") == "first"
    assert group_for(finder, flipped(ZERO, 6), digest="elsewhere", index="other") == "elsewhere"
    clock.now = 31  # past recent_s: only the index can tell now
    assert group_for(finder, flipped(ZERO, 2), digest="third") == "third"


def test_a_failed_search_is_a_lookup_failure():
    with pytest.raises(LookupFailed, match="refused"):
        group_for(groups(Index(fail=True)), ZERO)


def _jpeg(image: Image.Image, quality: int) -> bytes:
    out = io.BytesIO()
    image.convert("RGB").save(out, "JPEG", quality=quality)
    return out.getvalue()


def _phash(data: bytes) -> str:
    picture = small_picture(data)
    assert picture is not None
    return perceptual_hash(picture)


def test_resized_recompressed_copies_stay_close_and_other_scenes_stay_far():
    """The adapter's path (small picture → pHash) on held-out scenes: each copy within the default distance of its
    original, each other scene beyond it (the 1000-scene figures are bench --only duplicates)."""
    scenes = [render(HELD_OUT_SEED, i, style=HELD_OUT_STYLE)[0] for i in range(12)]
    originals = [_phash(_jpeg(scene, 90)) for scene in scenes]
    for scene, original in zip(scenes, originals, strict=True):
        w, h = scene.size
        copy = _jpeg(scene.resize((round(w * 0.6), round(h * 0.6)), Image.Resampling.BILINEAR), 70)
        assert distance(_phash(copy), original) <= 36
        assert content_hash(copy) != content_hash(_jpeg(scene, 90))
    others = [distance(a, b) for i, a in enumerate(originals) for b in originals[i + 1:]]
    assert min(others) > 36, sorted(others)[:5]
    assert distance(originals[0], originals[0]) == 0 and distance(originals[0], "ab") > HASH_BITS


def test_recent_groups_keep_the_last_entries_and_measure_distance_exactly():
    clock = Clock()
    recent = RecentGroups(30, max_entries=4, clock=clock)
    hashes = [flipped(ZERO, 40 * i) for i in range(6)]  # far apart from each other
    for i, phash in enumerate(hashes):
        recent.add("images", phash, f"g{i}")
    assert recent.nearest("images", hashes[0], 36) is None  # pushed out of the ring by the two after the fourth
    for i in range(2, 6):
        assert recent.nearest("images", flipped(hashes[i], 3), 36) == (distance(flipped(hashes[i], 3), hashes[i]),
                                                                       f"g{i}")
    assert recent.nearest("other", hashes[5], 36) is None
