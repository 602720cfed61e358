"""Renders the desired OpenSearch resources from the config, the templates and the exported models' facts.

`desired_state` gathers them into one `Desired` value, the left-hand side of the reconciler's diff. Ids the
cluster has not given yet (a model the same run creates) appear in it as `ref(kind, name)` placeholders that
the apply replaces once the object exists.

Every managed object says so in its description: `managed(settings)` names the marker and the deployment (the
images index name), so a bootstrap prunes only objects of its own deployment that are no longer desired and never
touches those of another deployment sharing the cluster (the tests run several side by side).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2

from common import contract
from common.config import Settings
from common.credentials import MODEL_USERS_ROLE
from common.model_facts import ClipFacts

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE_DIRS = [ROOT / "connectors" / "templates", ROOT / "pipelines" / "templates"]
MANAGED = "managed by visual-search bootstrap"
_DEPLOYMENT = re.compile(re.escape(MANAGED) + r"(?: \[deployment: ([^\]]+)\])?")

_env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATE_DIRS), undefined=jinja2.StrictUndefined,
                          autoescape=False)


def render_json(template: str, **context: Any) -> dict:
    return json.loads(_env.get_template(template).render(**context))


def managed(settings: Settings) -> str:
    """The marker of a managed object, naming its deployment (objects of other deployments are never pruned)."""
    return f"{MANAGED} [deployment: {settings.index.name}]"


def deployment_of(description: str | None) -> str | None:
    """The deployment a description's marker names; "" for a marker without one (written before deployments were
    named: never pruned), None when the object is not managed at all."""
    found = _DEPLOYMENT.search(description or "")
    if found is None:
        return None
    return found.group(1) or ""


def ref(kind: str, name: str) -> str:
    """Stands for the id of an object the same apply creates; `apply` swaps in the real id."""
    return f"<pending:{kind}:{name}>"


def cluster_settings(settings: Settings) -> dict[str, Any]:
    """ML Commons settings a loopback HTTP connector needs (docs/design.md#facts)."""
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
        # A node that rejoins a cluster can keep a model DEPLOYING for good while the others serve it; the deploy
        # then undeploys that node alone (a node list is a "custom deployment plan"), not the model everywhere.
        "plugins.ml_commons.allow_custom_deployment_plan": "true",
        # Secured: a model may be used only by users with a backend role its model group names (model_group_access).
        **({"plugins.ml_commons.model_access_control_enabled": "true"} if settings.opensearch.security else {}),
    }


def model_group_access(settings: Settings) -> dict[str, Any]:
    """Who may use the managed models: users with the model-users backend role (the product users and admin). Empty
    when security is off: ML Commons' access control has no users to check then."""
    if not settings.opensearch.security:
        return {}
    return {"access_mode": "restricted", "backend_roles": [MODEL_USERS_ROLE]}


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
        description=f"{clip.variant} text/image embeddings ({clip.embedding_dim}-d) via the adapter; "
                    f"{managed(settings)}",
        adapter_url=settings.adapter.url.rstrip("/"), client_config=client_config(settings),
        adapter_token=settings.adapter_token)


def analyze_connector(settings: Settings, clip: ClipFacts) -> dict:
    return render_json(
        "visual-analyze.json.j2", name=settings.ml_commons.analyze_model,
        description=f"image → {clip.variant} embedding + detected objects via the adapter; {managed(settings)}",
        adapter_url=settings.adapter.url.rstrip("/"), client_config=client_config(settings),
        adapter_token=settings.adapter_token, c=contract)


def base64_chars(nbytes: int) -> int:
    """Length of the base64 text of `nbytes` bytes (with padding)."""
    return 4 * ((nbytes + 2) // 3)


def ingest_pipeline(settings: Settings, analyze_model_id: str) -> dict:
    return render_json("ingest-pipeline.json.j2", analyze_model_id=analyze_model_id, c=contract,
                       dead_letter=settings.index.dead_letter, max_image_bytes=settings.adapter.max_image_bytes,
                       max_image_chars=base64_chars(settings.adapter.max_image_bytes),
                       keep_image_chars=base64_chars(settings.index.dead_letter_max_image_bytes),
                       duplicates=settings.duplicates.enabled,
                       description=f"server-side image analysis for {settings.index.name}; {managed(settings)}")


def dead_letter_index_template(settings: Settings) -> dict:
    return render_json("dead-letter-index-template.json.j2", index=settings.index,
                       description=f"documents {settings.index.ingest_pipeline} could not analyze; "
                                   f"{managed(settings)}")


def search_pipeline(settings: Settings, embed_model_id: str) -> dict:
    return render_json("search-pipeline.json.j2", embed_model_id=embed_model_id, index=settings.index,
                       description=f"neural defaults for {settings.index.name}; {managed(settings)}")


def images_index_template(settings: Settings, clip: ClipFacts, ingest_pipeline: str | None) -> dict:
    return render_json("images-index-template.json.j2", index=settings.index, dimension=clip.embedding_dim,
                       ingest_pipeline=ingest_pipeline, c=contract,
                       description=f"{clip.variant} vectors; {managed(settings)}")


# --- the whole desired state, the left-hand side of the diff ---------------------------------------------------
@dataclass(frozen=True)
class DesiredModel:
    name: str
    description: str
    connector: str  # the name of its connector (the same as the model's)


@dataclass(frozen=True)
class DesiredIndex:
    """An index under a stable name, created from `template` (rendered body of the index template `name`).

    `reanalyze`: its documents are the ingest pipeline's output, so a replacement must send them through
    `pipeline` again (new vectors) rather than copy them.
    """

    name: str
    template: dict
    reanalyze: bool = False
    pipeline: str | None = None
    dimension: int | None = None  # of its vector fields: what a re-analysis must produce
    dead_letter: str | None = None  # where the pipeline sends documents it cannot analyze


@dataclass(frozen=True)
class Desired:
    deployment: str
    cluster_settings: dict[str, Any]
    model_group: str
    model_group_description: str
    connectors: tuple[dict, ...]
    models: tuple[DesiredModel, ...]
    ingest_pipelines: dict[str, dict]  # name → body; model ids as `ref` placeholders
    search_pipelines: dict[str, dict]
    index_templates: dict[str, dict]
    indices: tuple[DesiredIndex, ...]  # each has the index template of the same name
    model_group_access: dict[str, Any] = field(default_factory=dict)  # access_mode + backend_roles; {}: not managed


def embed_model_description(settings: Settings, clip: ClipFacts) -> str:
    return f"{clip.variant} embeddings (text or image); {managed(settings)}"


def analyze_model_description(settings: Settings, clip: ClipFacts) -> str:
    return f"{clip.variant} + detector image analysis; {managed(settings)}"


def desired_state(settings: Settings, clip: ClipFacts) -> Desired:
    mlc, index = settings.ml_commons, settings.index
    images = images_index_template(settings, clip, ingest_pipeline=index.ingest_pipeline)
    dead_letter = dead_letter_index_template(settings)
    return Desired(
        deployment=index.name,
        cluster_settings=cluster_settings(settings),
        model_group=mlc.model_group,
        model_group_description=managed(settings),
        connectors=(embed_connector(settings, clip), analyze_connector(settings, clip)),
        models=(DesiredModel(mlc.embed_model, embed_model_description(settings, clip), mlc.embed_model),
                DesiredModel(mlc.analyze_model, analyze_model_description(settings, clip), mlc.analyze_model)),
        ingest_pipelines={index.ingest_pipeline: ingest_pipeline(settings, ref("model", mlc.analyze_model))},
        search_pipelines={index.search_pipeline: search_pipeline(settings, ref("model", mlc.embed_model))},
        index_templates={index.dead_letter: dead_letter, index.name: images},
        indices=(DesiredIndex(index.dead_letter, dead_letter),
                 DesiredIndex(index.name, images, reanalyze=True, pipeline=index.ingest_pipeline,
                              dimension=clip.embedding_dim, dead_letter=index.dead_letter)),
        model_group_access=model_group_access(settings),
    )
