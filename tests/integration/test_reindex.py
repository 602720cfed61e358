"""A replacement against the real OpenSearch, adapter and Triton: refused without the flag, rebuilt with it.

What is exercised and what is not, honestly:

* Triton here serves the configured CLIP only (the bundled shapes CLIP, 256-d); no 768-d model exists in the test
  stack. So a change to MobileCLIP2-S3 is
  exercised up to the point where a real S3 model would be needed: with a `ClipFacts` claiming S3 / 768-d, the
  plan has the `replace` step with the dimension as its reason, the real CLI refuses it without --allow-reindex
  (exit 2, the reason and the flag on stderr) and changes nothing; with the flag, the pre-flight analysis of one
  image finds the served dimension and stops before any write is blocked or any index created.
* The replacement itself (write block, clone of the concrete index, new version from the template, `_reindex`
  through the ingest pipeline so URL documents are analyzed again by the real models, dead-lettering of a URL
  that no longer answers, the alias switch, searches and writes by the name) runs for real on another change an
  index cannot take in place that the served model *can* satisfy: the HNSW parameter `m`. A 768-d re-analysis
  is covered against the in-memory cluster in tests/unit/test_reconcile.py.

The objects get names of their own (`reidx-*`) so that they never meet the stack tests' ones on the same node.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import io
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from bootstrap.apply import delete_connector
from bootstrap.deploy import ModelDeployer
from bootstrap.opensearch_api import Cluster, ClusterError
from bootstrap.plan import Replacement
from bootstrap.reconcile import Plan, Reconciler
from client.replay import replay
from common.config import Settings
from common.model_facts import ClipFacts
from export.shapes.dataset import render

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
NAMES = {"ml_commons": {"model_group": "reidx-group", "embed_model": "reidx-embed", "analyze_model": "reidx-analyze"},
         "index": {"name": "reidx-images", "dead_letter": "reidx-images-failed", "ingest_pipeline": "reidx-ingest",
                   "search_pipeline": "reidx-search"}}
INDEX = NAMES["index"]["name"]
DEAD = NAMES["index"]["dead_letter"]
URL_DOCS = ["url-0", "url-1", "url-2"]
B64_DOC = "b64-0"
VECTORS = ["global_image_embedding"]


def named(settings: Settings, **index: object) -> Settings:
    return settings.model_copy(update={
        "ml_commons": settings.ml_commons.model_copy(update=NAMES["ml_commons"]),
        "index": settings.index.model_copy(update={**NAMES["index"], **index})})


def fake_s3(clip: ClipFacts) -> ClipFacts:
    """What the exported metadata would say after `models.clip_variant: MobileCLIP2-S3` (no such model is served)."""
    return clip.model_copy(update={"variant": "MobileCLIP2-S3", "embedding_dim": 768})


def cli_env(settings: Settings, cache: Path) -> dict[str, str]:
    """The same config for a child process, as VS_* overrides, reading model facts from `cache`."""
    env = {**os.environ, "VS_OPENSEARCH__URL": settings.opensearch.url,
           "VS_TRITON__HTTP_PORT": str(settings.triton.http_port),
           "VS_TRITON__GRPC_PORT": str(settings.triton.grpc_port),
           "VS_TRITON__METRICS_PORT": str(settings.triton.metrics_port),
           "VS_ADAPTER__PORT": str(settings.adapter.port),
           "VS_CACHE_DIR": str(cache), "VS_MODELS__CLIP_VARIANT": "MobileCLIP2-S3"}
    for section, values in NAMES.items():
        for key, value in values.items():
            env[f"VS_{section.upper()}__{key.upper()}"] = value
    return env


def jpeg(i: int) -> bytes:
    image, _ = render(777, i)
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=85)
    return out.getvalue()


def vectors(os_client, index: str, ids: list[str]) -> dict[str, np.ndarray]:
    found = os_client.mget(index=index, body={"ids": ids}, _source_includes=VECTORS)["docs"]
    return {d["_id"]: np.asarray(d["_source"]["global_image_embedding"]) for d in found if d.get("found")}


def remove_deployment(cluster: Cluster, settings: Settings) -> None:
    """Deletes every object of this module's deployment, so the shared node is left as the stack tests expect."""
    mlc, idx = settings.ml_commons, settings.index
    for name in (mlc.embed_model, mlc.analyze_model):
        model = cluster.find_model(name)
        if model:
            ModelDeployer(cluster).undeploy(model["id"])
            cluster.delete_model(model["id"])
        connector = cluster.find_connector(name)
        if connector:
            delete_connector(cluster, connector["id"])  # may be kept by ML Commons' id-word check, used by nothing
    group = cluster.find_model_group(mlc.model_group)
    if group:
        cluster.delete_model_group(group["id"])
    for index in cluster.index_names(f"{idx.name}*"):
        cluster.delete_index(index)
    for delete, name in ((cluster.delete_ingest_pipeline, idx.ingest_pipeline),
                         (cluster.delete_search_pipeline, idx.search_pipeline),
                         (cluster.delete_index_template, idx.name), (cluster.delete_index_template, idx.dead_letter)):
        with contextlib.suppress(ClusterError):
            delete(name)


@pytest.fixture(scope="module")
def deployment(cluster: Cluster, stack_settings: Settings, clip_facts: ClipFacts, bootstrapped, os_client,
               image_server) -> Iterator[Settings]:
    """A second deployment, bootstrapped with the served model (S2), holding three URL documents and one base64."""
    import base64

    settings = named(stack_settings)
    remove_deployment(cluster, settings)  # a previous run interrupted midway
    Reconciler(cluster, settings).run(clip_facts)
    root, base_url = image_server
    lines: list[dict] = []
    for i, doc_id in enumerate(URL_DOCS):
        (root / f"{doc_id}.jpg").write_bytes(jpeg(i))
        lines += [{"index": {"_index": INDEX, "_id": doc_id}},
                  {"image_id": doc_id, "tags": ["url"], "image_url": f"{base_url}/{doc_id}.jpg"}]
    lines += [{"index": {"_index": INDEX, "_id": B64_DOC}},
              {"image_id": B64_DOC, "tags": ["b64"], "image_b64": base64.b64encode(jpeg(9)).decode()}]
    response = os_client.bulk(body=lines, refresh="wait_for", request_timeout=600)
    assert not response["errors"], response
    assert {next(iter(i.values()))["_index"] for i in response["items"]} == {INDEX}, response
    yield settings
    remove_deployment(cluster, settings)


def test_dimension_change_is_refused_without_the_flag(deployment: Settings, cluster: Cluster, clip_facts: ClipFacts,
                                                      tmp_path: Path, os_client):
    """The real CLI, with model facts that say S3 / 768-d: the dry run shows the replacement, the run refuses it."""
    fake_s3(clip_facts).save(tmp_path / "models" / "mobileclip2-s3")
    before = vectors(os_client, INDEX, URL_DOCS)
    run = functools.partial(subprocess.run, cwd=ROOT, env=cli_env(deployment, tmp_path), capture_output=True,
                            text=True, timeout=600)

    dry = run([sys.executable, "-m", "cli", "bootstrap", "--skip-preflight", "--dry-run"])
    print(dry.stdout)  # the plan of an S2 → S3 change, for whoever reads the test log
    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert "replace  index" in dry.stdout and f"dimension {clip_facts.embedding_dim} → 768" in dry.stdout
    assert "--allow-reindex" in dry.stdout

    refused = run([sys.executable, "-m", "cli", "bootstrap", "--skip-preflight"])
    print(refused.stderr)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "--allow-reindex" in refused.stderr
    assert f"global_image_embedding: dimension {clip_facts.embedding_dim} → 768" in refused.stderr
    assert INDEX in refused.stderr
    assert "Nothing was changed" in refused.stderr

    # nothing was applied, not even the connector updates planned before the replacement
    assert cluster.resolve_index(INDEX) == (INDEX, False)
    connector = cluster.find_connector(deployment.ml_commons.embed_model)
    assert connector is not None and clip_facts.variant in connector["description"]
    assert not Reconciler(cluster, deployment).plan(clip_facts).changes
    after = vectors(os_client, INDEX, URL_DOCS)
    assert all(np.array_equal(before[k], after[k]) for k in URL_DOCS)


def test_dimension_change_with_the_flag_stops_when_the_served_model_disagrees(deployment: Settings, cluster: Cluster,
                                                                            clip_facts: ClipFacts, os_client):
    """With --allow-reindex and S3 facts, the analysis of one test image still gives the served model's dimension: the
    replacement stops before blocking writes or creating an index. Steps before it (connector descriptions, the
    template) were applied, as in any partial apply; the next bootstrap with the real facts puts them back."""
    disagree = rf"produces {clip_facts.embedding_dim}-d vectors but the new version of reidx-images needs 768-d"
    with pytest.raises(ClusterError, match=disagree):
        Reconciler(cluster, deployment, allow_reindex=True).run(fake_s3(clip_facts))
    assert cluster.resolve_index(INDEX) == (INDEX, False)
    assert not cluster.index_names(f"{INDEX}-v*")
    assert cluster.index_settings(INDEX).get("index.blocks.write") in (None, "false")
    assert cluster.count(INDEX) == len(URL_DOCS) + 1

    restored = Reconciler(cluster, deployment).run(clip_facts)
    assert not restored.replacements
    assert not Reconciler(cluster, deployment).plan(clip_facts).changes


def test_codec_change_closes_and_reopens_the_index_keeping_every_document(deployment: Settings, cluster: Cluster,
                                                                           clip_facts: ClipFacts, os_client):
    """The stored-fields codec changes in place on the real node (close, put, open): no replacement, the base64
    document stays, vectors unchanged, neural search answers; the way back is the same."""
    before = vectors(os_client, INDEX, [*URL_DOCS, B64_DOC])
    other = "best_compression" if deployment.index.codec == "default" else "default"
    for codec in (other, deployment.index.codec):
        settings = named(deployment, codec=codec)
        plan = Reconciler(cluster, settings).run(clip_facts)
        step = plan.step("index", INDEX)
        assert step is not None and step.action == "update" and "index.codec" in step.detail, plan.lines()
        assert cluster.index_settings(INDEX)["index.codec"] == codec
        assert cluster.resolve_index(INDEX) == (INDEX, False) and cluster.count(INDEX) == len(URL_DOCS) + 1
        after = vectors(os_client, INDEX, [*URL_DOCS, B64_DOC])
        assert all(np.array_equal(before[k], after[k]) for k in before) and len(after) == len(before)
        body = {"size": 4, "_source": ["image_id"],
                "query": {"neural": {"global_image_embedding": {"query_text": "a red circle", "k": 4}}}}
        assert len(os_client.search(index=INDEX, body=body)["hits"]["hits"]) == 4
        assert not Reconciler(cluster, settings).plan(clip_facts).changes


def test_index_left_closed_is_reopened_by_the_next_bootstrap(deployment: Settings, cluster: Cluster,
                                                             clip_facts: ClipFacts, os_client):
    """A codec change killed between close and open leaves the index closed; the next bootstrap reopens it."""
    os_client.indices.close(index=INDEX)
    plan = Reconciler(cluster, deployment).run(clip_facts)
    step = plan.step("index", INDEX)
    assert step is not None and step.action == "update" and "reopened" in step.detail, plan.lines()
    assert cluster.count(INDEX) == len(URL_DOCS) + 1
    body = {"size": 4, "_source": ["image_id"],
            "query": {"neural": {"global_image_embedding": {"query_text": "a red circle", "k": 4}}}}
    assert len(os_client.search(index=INDEX, body=body)["hits"]["hits"]) == 4
    assert not Reconciler(cluster, deployment).plan(clip_facts).changes


def step_of(plan: Plan) -> dict:
    step = plan.step("index", INDEX)
    assert step is not None and step.action == "replace", plan.lines()
    result = step.payload(Replacement).result
    assert result is not None, "the replacement reported no result"
    return dataclasses.asdict(result)


def test_replace_reanalyzes_url_documents_and_moves_the_alias(deployment: Settings, cluster: Cluster,
                                                             clip_facts: ClipFacts, os_client, image_server):
    root, _ = image_server
    before = vectors(os_client, INDEX, URL_DOCS)
    (root / "url-2.jpg").unlink()  # this image no longer answers: its re-analysis must be dead-lettered
    wider = named(deployment, hnsw_m=deployment.index.hnsw_m + 8)
    plan = Reconciler(cluster, wider).plan(clip_facts)
    step = plan.step("index", INDEX)
    assert step is not None and "HNSW parameters" in step.detail

    said: list[str] = []
    plan = Reconciler(cluster, wider, allow_reindex=True, say=said.append).run(clip_facts)
    print("\n".join(plan.lines() + said))
    assert step_of(plan) == {"target": f"{INDEX}-v2", "retired": f"{INDEX}-v1", "indexed": 2, "dead_lettered": 1,
                             "not_carried": 1}

    # the name is an alias of the new version, whose mapping has the new parameters
    assert cluster.resolve_index(INDEX) == (f"{INDEX}-v2", True)
    method = cluster.index_mapping(f"{INDEX}-v2")["properties"]["global_image_embedding"]["method"]
    assert int(method["parameters"]["m"]) == wider.index.hnsw_m
    # the old index, cloned without the template's mapping, read-only, holds every old document
    old = cluster.index_mapping(f"{INDEX}-v1")["properties"]["global_image_embedding"]["method"]
    assert int(old["parameters"]["m"]) == deployment.index.hnsw_m
    assert cluster.count(f"{INDEX}-v1") == len(URL_DOCS) + 1
    with pytest.raises(Exception, match="blocked"):
        os_client.index(index=f"{INDEX}-v1", id="late", body={"image_id": "late"}, refresh=True)

    # re-analyzed by the real models: the same model gives the same vectors
    after = vectors(os_client, INDEX, URL_DOCS)
    assert sorted(after) == ["url-0", "url-1"]
    for doc_id, vector in after.items():
        np.testing.assert_allclose(vector, before[doc_id], atol=1e-4)
    # the base64 document could not be re-analyzed (its image is not kept): it is not in the new version
    assert not os_client.exists(index=INDEX, id=B64_DOC)
    # the URL that no longer answers waits in the dead letter with its URL and reason, named for the new version
    # (a 404 is the adapter's "permanent" verdict: replaying it takes --all, once the image is back)
    os_client.indices.refresh(index=DEAD)
    letter = os_client.get(index=DEAD, id="url-2")["_source"]
    assert letter["image_url"].endswith("/url-2.jpg") and letter["failure"]["index"] == f"{INDEX}-v2"
    assert letter["failure"]["reason"]

    # searches by the name: a neural query through the search pipeline of the new version, and filters
    body = {"size": 5, "_source": ["image_id"],
            "query": {"neural": {"global_image_embedding": {"query_text": "a red circle", "k": 5}}}}
    hits = os_client.search(index=INDEX, body=body)["hits"]["hits"]
    assert {h["_id"] for h in hits} == {"url-0", "url-1"} and {h["_index"] for h in hits} == {f"{INDEX}-v2"}
    assert os_client.count(index=INDEX, body={"query": {"term": {"tags": "url"}}})["count"] == 2

    # the image answers again: replay re-drives the dead letter into the new version
    (root / "url-2.jpg").write_bytes(jpeg(2))
    outcome = replay(os_client, INDEX, DEAD, include_permanent=True, ids=["url-2"])
    assert outcome.indexed == 1, outcome.summary()
    # writes by the name land in the new version, analyzed
    os_client.index(index=INDEX, id="url-new", body={"image_id": "url-new", "image_url": letter["image_url"]},
                    refresh=True)
    assert len(vectors(os_client, INDEX, ["url-new"])["url-new"]) == len(before["url-0"])

    again = Reconciler(cluster, wider).run(clip_facts)
    assert not again.changes, again.lines()
    retired = again.step("index", f"{INDEX}-v1")
    assert retired is not None and "4 document(s)" in retired.detail

    # a second replacement starts from the alias: next version, alias moved, the previous version retired
    wider_still = named(deployment, hnsw_m=deployment.index.hnsw_m + 16)
    plan = Reconciler(cluster, wider_still, allow_reindex=True).run(clip_facts)
    assert step_of(plan) == {"target": f"{INDEX}-v3", "retired": f"{INDEX}-v2", "indexed": 4, "dead_lettered": 0,
                             "not_carried": 0}
    assert cluster.resolve_index(INDEX) == (f"{INDEX}-v3", True)
    assert cluster.index_settings(f"{INDEX}-v2").get("index.blocks.write") == "true"
    assert not Reconciler(cluster, wider_still).plan(clip_facts).changes
