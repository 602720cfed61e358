"""What the benchmark measures against: the running stack (`make up`) as the config names it.

Model facts come from what Triton actually serves (its configs name the ONNX files and the weights), so the
figures describe the running models even when the stack was started with other `VS_*` overrides.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from opensearchpy import OpenSearch

from bootstrap.compare import flatten_settings
from bootstrap.opensearch_api import Cluster, ClusterError, cluster_for
from common.config import Settings
from common.contract import DUPLICATES_INDEX_PARAM
from common.errors import VisualSearchError
from common.model_facts import ClipFacts, MissingArtifactError, YoloFacts


class StackDown(VisualSearchError):
    """A service of the stack is not reachable; the message says which and how to start it."""


@dataclass
class Context:
    settings: Settings
    cluster: Cluster  # keep-alive client to OpenSearch, shared by every timed call
    adapter: httpx.Client
    clip: ClipFacts
    yolo: YoloFacts
    yolo_dir: Path
    provenance: dict[str, str] = field(default_factory=dict)  # the parameters analyze_image reports its models by
    embed_model_id: str = ""

    @property
    def triton_grpc(self) -> str:
        return self.settings.triton.grpc_url

    @property
    def triton_http(self) -> str:
        return f"http://{self.settings.triton.http_url}"

    def close(self) -> None:
        self.cluster.client.close()
        self.adapter.close()


def _get_json(url: str) -> dict[str, Any]:
    response = httpx.get(url, timeout=10)
    response.raise_for_status()
    return response.json()


def _parameters(config: dict[str, Any]) -> dict[str, str]:
    return {k: v.get("string_value", "") for k, v in config.get("parameters", {}).items()}


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


def connect(settings: Settings) -> Context:
    """Checks that OpenSearch, Triton and the adapter answer, and reads the served models' facts."""
    o, t, a = settings.opensearch, settings.triton, settings.adapter
    cluster = cluster_for(o, timeout_s=600)
    down = []
    try:
        cluster.request("GET", "/_cluster/health", timeout_s=5)
    except ClusterError:
        down.append(f"OpenSearch ({o.url})")
    # Triton and the adapter's /health need no credentials
    for name, url in {"Triton": f"http://{t.http_url}/v2/health/ready",
                      "adapter": f"http://{a.host}:{a.port}/health"}.items():
        if not _answers(url):
            down.append(f"{name} ({url})")
    if down:
        raise StackDown(f"not reachable: {', '.join(down)}; start the stack with `make up`")

    triton = f"http://{t.http_url}"
    provenance = _parameters(_get_json(f"{triton}/v2/models/analyze_image/config"))
    yolo_params = _parameters(_get_json(f"{triton}/v2/models/yolo/config"))
    yolo_dir = Path(yolo_params["onnx_path"]).parent if "onnx_path" in yolo_params else settings.yolo_dir
    clip_params = _parameters(_get_json(f"{triton}/v2/models/clip_image/config"))
    clip_dir = Path(clip_params["onnx_path"]).parent if "onnx_path" in clip_params else settings.clip_dir
    try:
        clip, yolo = ClipFacts.load(clip_dir), YoloFacts.load(yolo_dir)
    except MissingArtifactError as exc:
        raise StackDown(f"{exc}. Triton serves the models in {clip_dir} and {yolo_dir}; if they were re-exported or "
                        "removed since the stack started, restart it: `make down && make up`") from exc

    token = settings.adapter_token
    model = cluster.find_model(settings.ml_commons.embed_model)
    if model is None:
        raise StackDown(f"ML Commons model {settings.ml_commons.embed_model!r} not found; run `make bootstrap`")
    return Context(settings=settings, cluster=cluster,
                   adapter=httpx.Client(base_url=f"http://{a.host}:{a.port}", timeout=120,
                                        headers={"Authorization": f"Bearer {token}"} if token else None),
                   clip=clip, yolo=yolo, yolo_dir=yolo_dir, provenance=provenance, embed_model_id=model["id"])


def index_template_body(ctx: Context, *, with_ingest_pipeline: bool) -> dict[str, Any]:
    """Settings and mappings of the configured images index template, for a bench index of another name."""
    name = ctx.settings.index.name
    found = ctx.cluster.get_index_template(name)
    if found is None:
        raise StackDown(f"index template {name!r} not found; run `make bootstrap`")
    return template_body(found["template"], with_ingest_pipeline=with_ingest_pipeline)


def template_body(template: dict[str, Any], *, with_ingest_pipeline: bool) -> dict[str, Any]:
    """An index body from an index template's `template` (settings and mappings), without the default pipeline
    unless asked."""
    template = json.loads(json.dumps(template))
    # flat keys ("knn", "knn.derived_source.enabled"): the cluster nests them, which a variant can then not set
    index_settings = {key.removeprefix("index."): value
                      for key, value in flatten_settings(template.get("settings", {})).items()}
    if not with_ingest_pipeline:
        index_settings.pop("default_pipeline", None)
    return {"settings": {"index": index_settings}, "mappings": template.get("mappings", {})}


# OpenSearch caches an index's store size for 10 s by default (a static index setting): read within 10 s of another
# reader (the cluster's own disk-usage poll runs every 30 s), `_stats/store` gives the size from before the last
# refresh or merge. Seen once in the bytes bench (10.6 KB per image reported, 17.4 KB on disk); bench indices read
# it fresh.
FRESH_STORE_STATS = {"store.stats_refresh_interval": "0s"}


def create_index(ctx: Context, name: str, body: dict[str, Any]) -> None:
    """Creates `name` afresh from `body` (settings nested under "index" or flat), its store size never cached."""
    delete_index(ctx, name)
    settings = body.get("settings", {})
    index = {**settings.get("index", {}), **FRESH_STORE_STATS}
    ctx.cluster.create_index(name, {**body, "settings": {**settings, "index": index}})


def store_bytes(ctx: Context, index: str) -> int:
    """The primaries' store size of an index `create_index` made, as it is on disk now."""
    stats = ctx.cluster.request("GET", f"/{index}/_stats/store")["indices"][index]["primaries"]
    return int(stats["store"]["size_in_bytes"])


def delete_index(ctx: Context, name: str) -> None:
    ctx.cluster.delete_index(name, missing_ok=True)


def without_lookup(client: OpenSearch, pipeline: str, name: str) -> None:
    """The shipped ingest pipeline as `name`, less the duplicate lookup: its analysis call does not name the index, so
    the adapter looks nothing up (the content hash is then the group)."""
    body = client.ingest.get_pipeline(id=pipeline)[pipeline]
    for processor in body["processors"]:
        for entry in processor.get("ml_inference", {}).get("input_map", []):
            entry.pop(DUPLICATES_INDEX_PARAM, None)
    client.ingest.put_pipeline(id=name, body=body)
