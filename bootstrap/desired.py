"""Renders the desired OpenSearch resources from the config, the templates and the exported models' facts."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jinja2

from common import contract
from common.config import Settings
from common.model_facts import ClipFacts

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE_DIRS = [ROOT / "connectors" / "templates", ROOT / "pipelines" / "templates"]
MANAGED = "managed by visual-search bootstrap"

_env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATE_DIRS), undefined=jinja2.StrictUndefined,
                          autoescape=False)


def render_json(template: str, **context: Any) -> dict:
    return json.loads(_env.get_template(template).render(**context))


def cluster_settings(settings: Settings) -> dict[str, Any]:
    """ML Commons settings a loopback HTTP connector needs (DESIGN.md §7)."""
    adapter = re.escape(settings.adapter.url.rstrip("/"))
    return {
        "plugins.ml_commons.trusted_connector_endpoints_regex": [f"^{adapter}/.*$"],
        "plugins.ml_commons.connector.private_ip_enabled": "true",
        "plugins.ml_commons.only_run_on_ml_node": "false",
        # ML Commons' memory breakers stay on, at their defaults: a prediction refused by them is a transient
        # failure (dead-lettered with its image, replayable), while a heap driven past them can kill the node.
        "plugins.ml_commons.native_memory_threshold": "90",
        "plugins.ml_commons.jvm_heap_memory_threshold": "85",
        # ML Commons' own redeploy after a restart fails here on its first model ("Fetching master key timed
        # out") and then leaves that model stuck as deploying and the others unserved; the supervisor and the
        # bootstrap redeploy instead, and a model is also deployed on its first prediction.
        "plugins.ml_commons.model_auto_redeploy.enable": "false",
        "plugins.ml_commons.model_auto_deploy.enable": "true",
    }


def client_config(settings: Settings) -> dict[str, Any]:
    """Timeouts in seconds (the default of 30000 would mean eight hours). ML Commons retries only answers that
    carry the throttling header (the adapter's "busy"): without a limit on the count (-1), for up to
    retry_timeout_s, with exponential backoff and equal jitter so retries of a whole bulk spread out."""
    mlc = settings.ml_commons
    return {"max_connection": mlc.max_connection, "connection_timeout": mlc.connection_timeout_s,
            "read_timeout": mlc.read_timeout_s, "max_retry_times": -1,
            "retry_backoff_policy": "exponential_equal_jitter", "retry_backoff_millis": mlc.retry_backoff_millis,
            "retry_timeout_seconds": mlc.retry_timeout_s}


def embed_connector(settings: Settings, clip: ClipFacts) -> dict:
    return render_json(
        "mobileclip-embed.json.j2", name=settings.ml_commons.embed_model,
        description=f"{clip.variant} text/image embeddings ({clip.embedding_dim}-d) via the adapter; {MANAGED}",
        adapter_url=settings.adapter.url.rstrip("/"), client_config=client_config(settings))


def analyze_connector(settings: Settings, clip: ClipFacts) -> dict:
    return render_json(
        "visual-analyze.json.j2", name=settings.ml_commons.analyze_model,
        description=f"image → {clip.variant} embedding + detected objects via the adapter; {MANAGED}",
        adapter_url=settings.adapter.url.rstrip("/"), client_config=client_config(settings))


def base64_chars(nbytes: int) -> int:
    """Length of the base64 text of `nbytes` bytes (with padding)."""
    return 4 * ((nbytes + 2) // 3)


def ingest_pipeline(settings: Settings, analyze_model_id: str) -> dict:
    return render_json("ingest-pipeline.json.j2", analyze_model_id=analyze_model_id, c=contract,
                       dead_letter=settings.index.dead_letter, max_image_bytes=settings.adapter.max_image_bytes,
                       max_image_chars=base64_chars(settings.adapter.max_image_bytes),
                       keep_image_chars=base64_chars(settings.index.dead_letter_max_image_bytes),
                       description=f"server-side image analysis for {settings.index.name}; {MANAGED}")


def dead_letter_index_template(settings: Settings) -> dict:
    return render_json("dead-letter-index-template.json.j2", index=settings.index,
                       description=f"documents {settings.index.ingest_pipeline} could not analyze; {MANAGED}")


def search_pipeline(settings: Settings, embed_model_id: str) -> dict:
    return render_json("search-pipeline.json.j2", embed_model_id=embed_model_id, index=settings.index,
                       description=f"neural defaults for {settings.index.name}; {MANAGED}")


def images_index_template(settings: Settings, clip: ClipFacts, ingest_pipeline: str | None) -> dict:
    return render_json("images-index-template.json.j2", index=settings.index, dimension=clip.embedding_dim,
                       ingest_pipeline=ingest_pipeline, c=contract,
                       description=f"{clip.variant} vectors; {MANAGED}")
