"""OpenSearch → ML Commons connector → adapter → Triton: a neural text query ranks like brute force."""

from __future__ import annotations

import numpy as np
import pytest

from bootstrap.reconcile import Reconciler
from tests.captions import CAPTIONS
from tests.triton_calls import embed_texts

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def caption_vectors(bootstrapped, os_client, triton, stack_settings):
    vectors = embed_texts(triton, CAPTIONS)
    index = stack_settings.index.name
    for i, (caption, vector) in enumerate(zip(CAPTIONS, vectors, strict=True)):
        os_client.index(index=index, id=f"caption-{i}", body={"image_id": f"caption-{i}", "caption": caption,
                                                             "global_image_embedding": vector.tolist()})
    os_client.indices.refresh(index=index)
    yield vectors
    for i in range(len(CAPTIONS)):
        os_client.delete(index=index, id=f"caption-{i}", refresh=True)


def caption_query(query: str) -> dict:
    """A neural text query over the caption documents only, every one of them ranked. No model id in the query: the
    index's default search pipeline supplies it. Only the caption documents: with a trained CLIP the index's pictures
    of shapes are nearer "a red circle" than captions of dogs and pasta are."""
    return {"size": len(CAPTIONS), "_source": ["caption"],
            "query": {"neural": {"global_image_embedding": {"query_text": query, "k": len(CAPTIONS),
                                                            "filter": {"prefix": {"image_id": "caption-"}}}}}}


def brute_force(caption_vectors: np.ndarray, query_vector: np.ndarray) -> tuple[list[str], np.ndarray]:
    """The caption ids nearest first and the scores lucene gives them: (1 + cos) / 2 for cosinesimil."""
    cosines = caption_vectors @ query_vector / np.linalg.norm(caption_vectors, axis=1) / np.linalg.norm(query_vector)
    return [f"caption-{i}" for i in np.argsort(-cosines)], (1 + np.sort(cosines)[::-1]) / 2


@pytest.mark.parametrize("query", ["a red circle", "a dog on the beach", "pasta"])
def test_neural_query_text_ranks_like_brute_force(query, caption_vectors, os_client, triton, stack_settings):
    expected, scores = brute_force(caption_vectors, embed_texts(triton, [query])[0])
    hits = os_client.search(index=stack_settings.index.name, body=caption_query(query))["hits"]["hits"]
    assert [h["_id"] for h in hits] == expected
    # the scores are those of the vector the adapter produced
    np.testing.assert_allclose([h["_score"] for h in hits], scores, atol=1e-4)


def test_bootstrap_twice_changes_nothing(bootstrapped, cluster, stack_settings, clip_facts):
    assert all(step.action == "create" or step.kind == "cluster_settings" for step in bootstrapped.steps)
    again = Reconciler(cluster, stack_settings).run(clip_facts)
    assert [s.action for s in again.steps] == ["unchanged"] * len(again.steps), [str(s) for s in again.steps]
    assert again.ids == bootstrapped.ids


def test_changed_definition_is_updated_in_place(bootstrapped, cluster, stack_settings, clip_facts, os_client,
                                                caption_vectors, triton):
    changed = stack_settings.model_copy(update={"ml_commons": stack_settings.ml_commons.model_copy(
        update={"read_timeout_s": stack_settings.ml_commons.read_timeout_s + 1})})
    try:
        plan = Reconciler(cluster, changed).run(clip_facts)
        actions = {f"{s.kind}:{s.name}": s.action for s in plan.steps}
        assert actions[f"connector:{changed.ml_commons.embed_model}"] == "update"
        assert actions[f"model:{changed.ml_commons.embed_model}"] == "update"  # redeployed
        assert plan.ids == bootstrapped.ids  # same objects, updated in place
        # the redeployed model answers, with the same embedding as before the update
        expected, scores = brute_force(caption_vectors, embed_texts(triton, ["a red circle"])[0])
        hits = os_client.search(index=stack_settings.index.name, body=caption_query("a red circle"))["hits"]["hits"]
        assert [h["_id"] for h in hits] == expected
        np.testing.assert_allclose([h["_score"] for h in hits], scores, atol=1e-4)
    finally:
        restored = Reconciler(cluster, stack_settings).run(clip_facts)
    assert restored.ids == bootstrapped.ids
    assert not Reconciler(cluster, stack_settings, dry_run=True).run(clip_facts).changes
