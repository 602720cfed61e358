"""Search you can judge: the bundled models, through OpenSearch, on held-out scenes whose contents are known
(and, on the same scenes, duplicate groups, object counts and search by a box: bench/beyond.py).

The scenes (another seed, backgrounds the CLIP never saw, other sizes) go through the real ingest pipeline and are
searched with the README's query bodies, restricted by a tag to this set; bench/relevance.py says how each measure
judges a hit, and `python -m bench --only relevance` measures the same (1000 scenes; 240 with --quick) against the
product's targets (`bench.relevance`: text → image precision@10 0.8, object 0.9, hybrid with a class filter 0.9,
image → image 0.95).

The tests hold the bundled models to those targets on 1000 scenes, as the bench measures them: with fewer
scenes a query has fewer true pictures and precision over min(10, true pictures) is a harder measure (on 240
scenes the same model measured text → image 0.82 and hybrid 0.86, on 1000 0.91 and 0.93).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from bench import beyond
from bench.relevance import (
    COPY_TARGET,
    HYBRID_TARGET,
    OBJECT_TARGET,
    TEXT_TARGET,
    Measure,
    held_out_scenes,
    index_scenes,
)
from common.config import BUNDLED_CLIP

pytestmark = pytest.mark.integration

SCENES = 1000
COPIES = 40
TAG = "relevance-test"
# duplicate groups, counts and search by a box on the same scenes (bench/beyond.py)
RESIZED_COPIES, EXACT_COPIES, LIKE_CLICKS = 200, 40, 30


@pytest.fixture(scope="module")
def measure(bootstrapped, os_client, stack_settings) -> Iterator[Measure]:
    if stack_settings.models.clip_variant != BUNDLED_CLIP:
        pytest.fail(f"relevance is defined for the bundled CLIP, the config names {stack_settings.models.clip_variant}")
    index = stack_settings.index.name
    scenes = held_out_scenes(SCENES, TAG)
    outcome = index_scenes(os_client, index, scenes, TAG)
    os_client.indices.refresh(index=index)
    found = os_client.count(index=index, body={"query": {"term": {"tags": TAG}}})["count"]
    assert found == SCENES, f"{found} of {SCENES} held-out scenes indexed ({outcome.by_index}, {outcome.rejected[:3]})"
    yield Measure(os_client, index, scenes, TAG)
    # the index is shared with later tests, whose candidate-limited queries must not meet 1000 more shapes
    os_client.delete_by_query(index=index, body={"query": {"term": {"tags": TAG}}}, refresh=True, conflicts="proceed")


def test_text_query_finds_the_named_object(measure: Measure) -> None:
    result = measure.text()
    print(f"\ntext → image precision@10: {result}")
    assert result["queries"] >= 35  # nearly all 40 colour × shape pairs occur in the set
    assert result["mean"] >= TEXT_TARGET


def test_object_query_matches_the_right_object(measure: Measure) -> None:
    result = measure.objects()
    print(f"\nobject query, matched object right: {result}")
    assert result["hits"] >= 300
    assert result["rate"] >= OBJECT_TARGET


def test_hybrid_with_class_filter_is_precise_and_filtered(measure: Measure) -> None:
    result = measure.hybrid()
    print(f"\nhybrid + class filter: {result}")
    assert result["hits_without_class"] == 0
    assert result["mean"] >= HYBRID_TARGET


def test_a_copy_of_an_image_finds_it_first(measure: Measure) -> None:
    result = measure.image(COPIES)
    print(f"\nimage → image, copy finds its original first: {result}")
    assert result["rate"] >= COPY_TARGET


def test_copies_join_their_originals_group_and_different_scenes_do_not_share_one(measure: Measure) -> None:
    result = beyond.duplicates(measure, RESIZED_COPIES, EXACT_COPIES)
    print(f"\nduplicate groups on {SCENES} scenes: {result}")
    assert result["copies_indexed"] == RESIZED_COPIES + EXACT_COPIES and result["groups_without_value"] == 0
    assert result["exact_joined"] >= beyond.EXACT_JOIN_TARGET
    assert result["resized_joined"] >= beyond.COPY_JOIN_TARGET
    assert result["false_share"] <= beyond.FALSE_SHARE_TARGET


def test_object_counts_are_the_detections_and_count_filters_are_exact(measure: Measure) -> None:
    result = beyond.counts(measure)
    print(f"\nobject counts: exact {result['counts_exact']}, filter precision {result['filter_precision']} over "
          f"{result['filter_hits']} hits")
    assert result["documents"] == SCENES and result["counts_exact"] == 1.0
    assert result["filter_hits"] >= 200  # the filters matched something to judge
    assert result["filter_precision"] >= beyond.COUNT_PRECISION_TARGET


def test_a_clicked_box_finds_objects_of_its_class_and_colour(measure: Measure) -> None:
    result = beyond.like_object(measure, LIKE_CLICKS)
    print(f"\nsearch by a box: {result}")
    assert result["hits"] >= LIKE_CLICKS * 9
    assert result["hold_rate"] >= beyond.LIKE_OBJECT_TARGET
