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

from bootstrap.reconcile import flatten_settings
from common.config import Settings
from common.errors import VisualSearchError
from common.model_facts import ClipFacts, MissingArtifactError, YoloFacts


class StackDown(VisualSearchError):
    """A service of the stack is not reachable; the message says which and how to start it."""


@dataclass
class Context:
    settings: Settings
    os: httpx.Client  # keep-alive client to OpenSearch, shared by every timed call
    adapter: httpx.Client
    clip: ClipFacts
    yolo: YoloFacts
    yolo_dir: Path
    served: dict[str, str] = field(default_factory=dict)  # analyze_image's provenance parameters
    embed_model_id: str = ""

    @property
    def triton_grpc(self) -> str:
        return self.settings.triton.grpc_url

    @property
    def triton_http(self) -> str:
        return f"http://{self.settings.triton.http_url}"

    def request(self, method: str, path: str, body: Any = None, *, content: bytes | None = None,
                params: dict[str, str] | None = None, ok: tuple[int, ...] = (200, 201)) -> Any:
        """One OpenSearch call; a status outside `ok` raises with the cluster's reason."""
        headers = {"Content-Type": "application/x-ndjson" if content is not None else "application/json"}
        response = self.os.request(method, path, json=body if content is None else None, content=content,
                                   params=params, headers=headers)
        if response.status_code not in ok:
            raise RuntimeError(f"{method} {path} → {response.status_code}: {response.text[:500]}")
        return response.json() if response.content else None

    def close(self) -> None:
        self.os.close()
        self.adapter.close()


def _get_json(url: str) -> dict[str, Any]:
    response = httpx.get(url, timeout=10)
    response.raise_for_status()
    return response.json()


def _parameters(config: dict[str, Any]) -> dict[str, str]:
    return {k: v.get("string_value", "") for k, v in config.get("parameters", {}).items()}


def connect(settings: Settings) -> Context:
    """Checks that OpenSearch, Triton and the adapter answer, and reads the served models' facts."""
    o, t, a = settings.opensearch, settings.triton, settings.adapter
    checks = {"OpenSearch": f"{o.url}/_cluster/health", "Triton": f"http://{t.http_url}/v2/health/ready",
              "adapter": f"http://{a.host}:{a.port}/health"}
    down = []
    for name, url in checks.items():
        secured = name == "OpenSearch"  # Triton and the adapter's /health need no credentials
        try:
            if httpx.get(url, timeout=5, auth=o.auth() if secured else None,
                         verify=o.verify if secured else True).status_code != 200:
                down.append(f"{name} ({url})")
        except httpx.HTTPError:
            down.append(f"{name} ({url})")
    if down:
        raise StackDown(f"not reachable: {', '.join(down)}; start the stack with `make up`")

    triton = f"http://{t.http_url}"
    served = _parameters(_get_json(f"{triton}/v2/models/analyze_image/config"))
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
    ctx = Context(settings=settings,
                  os=httpx.Client(base_url=o.url, auth=o.auth(), verify=o.verify, timeout=600),
                  adapter=httpx.Client(base_url=f"http://{a.host}:{a.port}", timeout=120,
                                       headers={"Authorization": f"Bearer {token}"} if token else None),
                  clip=clip, yolo=yolo, yolo_dir=yolo_dir, served=served)
    ctx.embed_model_id = find_model_id(ctx, settings.ml_commons.embed_model)
    return ctx


def find_model_id(ctx: Context, name: str) -> str:
    query = {"query": {"bool": {"must": [{"term": {"name.keyword": name}}],
                                "must_not": [{"exists": {"field": "chunk_number"}}]}}, "size": 1}
    hits = ctx.request("POST", "/_plugins/_ml/models/_search", query)["hits"]["hits"]
    if not hits:
        raise StackDown(f"ML Commons model {name!r} not found; run `make bootstrap`")
    return str(hits[0]["_id"])


def index_template_body(ctx: Context, *, with_ingest_pipeline: bool) -> dict[str, Any]:
    """Settings and mappings of the configured images index template, for a bench index of another name."""
    name = ctx.settings.index.name
    found = ctx.request("GET", f"/_index_template/{name}")["index_templates"]
    if not found:
        raise StackDown(f"index template {name!r} not found; run `make bootstrap`")
    return template_body(found[0]["index_template"]["template"], with_ingest_pipeline=with_ingest_pipeline)


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
    ctx.request("PUT", f"/{name}", {**body, "settings": {**settings, "index": index}})


def store_bytes(ctx: Context, index: str) -> int:
    """The primaries' store size of an index `create_index` made, as it is on disk now."""
    stats = ctx.request("GET", f"/{index}/_stats/store")["indices"][index]["primaries"]
    return int(stats["store"]["size_in_bytes"])


def delete_index(ctx: Context, name: str) -> None:
    ctx.request("DELETE", f"/{name}", ok=(200, 404))
