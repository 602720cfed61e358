"""What the cluster has, read once for the diff: cluster settings, ML Commons objects, pipelines, templates, indices.

Connectors and models of a desired name are read by id (real time, where a search can lag an update made a moment
ago), and for those models whether they are deployed for real (`bootstrap.deploy.deployed`: the model index alone
may say DEPLOYED after a restart while no node holds the model). A managed index name is resolved: to nothing, a
concrete index, or an alias of one version `<name>-v<N>`, with its mapping, settings and document counts.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from bootstrap.deploy import is_deployed
from bootstrap.opensearch_api import Cluster, age_order
from common import contract
from common.config import Settings

# A version of an index named `base`: `<base>-v<N>`.
_VERSION = re.compile(r"^(?P<base>.+)-v(?P<n>[0-9]+)$")
# OpenSearch sets this on a closed index and drops it when it reopens.
_CLOSED_FLAG = "index.verified_before_close"
SHARDS_ACTIVE_WAIT_S = 300.0  # a node recovering many indices after a restart; the local stack waits 240 s to start


@dataclass(frozen=True)
class MLObject:
    """A model group, connector or model as observed. Model-only fields stay empty for the others."""

    id: str
    name: str
    description: str = ""
    created_time: float | None = None
    connector_id: str | None = None
    model_group_id: str | None = None
    state: str = ""  # as the model index records it (may be stale after a restart: see `deployed`)
    deployed: bool | None = None  # `bootstrap.deploy.deployed`; None where not asked (models of no desired name)
    access: str = ""  # a model group's access mode (public, private, restricted); "" where none is recorded
    backend_roles: tuple[str, ...] = ()  # a model group's: users with one of them may use its models (restricted)

    @classmethod
    def of(cls, record: dict, deployed: bool | None = None) -> MLObject:
        created = record.get("created_time")
        return cls(id=str(record["id"]), name=str(record.get("name", "")), description=record.get("description") or "",
                   created_time=float(created) if isinstance(created, int | float) else None,
                   connector_id=record.get("connector_id"), model_group_id=record.get("model_group_id"),
                   state=record.get("model_state") or "", deployed=deployed, access=record.get("access") or "",
                   backend_roles=tuple(record.get("backend_roles") or ()))


def oldest_named(objects: tuple[MLObject, ...], name: str) -> MLObject | None:
    """The one of that name to use when there are duplicates: the choice `opensearch_api.oldest` makes."""
    return min((o for o in objects if o.name == name), key=lambda o: age_order(o.created_time, o.id), default=None)


@dataclass(frozen=True)
class ObservedIndex:
    """What a managed index name resolves to: nothing, a concrete index, or an alias of one version."""

    name: str
    concrete: str | None = None  # the index holding the documents
    via_alias: bool = False
    mapping: dict = field(default_factory=dict)
    settings: dict = field(default_factory=dict)  # flat, values as the cluster returns them (strings)
    docs: int = 0
    docs_with_url: int = 0  # documents whose image can be fetched again (re-analysis needs it)
    versions: dict[str, int] = field(default_factory=dict)  # `<name>-v<N>` → documents (the current one included)

    @property
    def closed(self) -> bool:
        """Left closed by a codec change that was interrupted between close and open: it serves nothing."""
        return is_closed(self.settings)


@dataclass(frozen=True)
class Observed:
    cluster_settings: dict[str, Any]
    model_groups: tuple[MLObject, ...]
    connectors: tuple[MLObject, ...]
    models: tuple[MLObject, ...]
    ingest_pipelines: dict[str, dict]
    search_pipelines: dict[str, dict]
    index_templates: dict[str, dict]
    indices: dict[str, ObservedIndex]


def observe(cluster: Cluster, settings: Settings) -> Observed:
    """Everything the diff compares, read once, after the product's indices have their primaries (a restarted
    node recovers them for a while, and they cannot be counted until then)."""
    mlc, idx = settings.ml_commons, settings.index
    cluster.wait_primaries_active([f"{idx.name}*", f"{idx.dead_letter}*"], SHARDS_ACTIVE_WAIT_S)
    desired_names = {mlc.embed_model, mlc.analyze_model}
    return Observed(
        cluster_settings=cluster.persistent_settings(),
        model_groups=tuple(MLObject.of(r) for r in cluster.search_ml("model_groups")),
        connectors=tuple(_observe_connector(cluster, r, desired_names) for r in cluster.search_ml("connectors")),
        models=tuple(_observe_model(cluster, r, desired_names) for r in cluster.search_ml("models")),
        ingest_pipelines=cluster.ingest_pipelines(),
        search_pipelines=cluster.search_pipelines(),
        index_templates=cluster.index_templates(),
        indices={name: observe_index(cluster, name) for name in (idx.dead_letter, idx.name)},
    )


def _observe_connector(cluster: Cluster, record: dict, desired_names: set[str]) -> MLObject:
    if record.get("name") in desired_names:
        record = {**record, **cluster.get_connector(record["id"])}
    return MLObject.of(record)


def _observe_model(cluster: Cluster, record: dict, desired_names: set[str]) -> MLObject:
    if record.get("name") not in desired_names:
        return MLObject.of(record)
    record = {**record, **cluster.get_model(record["id"])}
    return MLObject.of(record, is_deployed(cluster, record["id"], record.get("model_state") or ""))


def observe_index(cluster: Cluster, name: str) -> ObservedIndex:
    resolved = cluster.resolve_index(name)
    concrete, via_alias = resolved or (None, False)
    settings = cluster.index_settings(concrete) if concrete else {}
    closed = is_closed(settings)  # a closed index answers no count: it is reopened first

    def count(index: str, query: dict | None = None) -> int:
        return 0 if closed and index == concrete else cluster.count(index, query)

    versions = {v: count(v) for v in cluster.index_names(f"{name}-v*") if version_of(v, name) is not None}
    if concrete is None:
        return ObservedIndex(name, versions=versions)
    with_url = {"exists": {"field": contract.IMAGE_URL_FIELD}}
    return ObservedIndex(name, concrete, via_alias, mapping=cluster.index_mapping(concrete), settings=settings,
                         docs=count(concrete), docs_with_url=count(concrete, with_url), versions=versions)


def is_closed(flat_settings: dict) -> bool:
    return flat_settings.get(_CLOSED_FLAG) == "true"


def version_of(index: str, base: str) -> int | None:
    """N of an index named `<base>-v<N>`; None for any other name."""
    found = _VERSION.match(index)
    return int(found["n"]) if found and found["base"] == base else None
