"""The bootstrap as a reconciler: read what the cluster has, diff it against what the config wants, apply the plan.

Three stages, the way Terraform plans and applies:

* `observe(cluster, settings)` reads everything once: cluster settings, model groups, connectors, models (with the
  state the model index records and whether a node really serves them), pipelines, index templates, and the managed
  indices (what their name resolves to, mapping, settings, document counts, older versions).
* `diff(desired, observed)` is pure: it returns a `Plan` of steps, each `create`, `update`, `replace`, `delete` or
  `unchanged`, each saying why. Ids that only the apply will know (a model this run creates) are `ref`
  placeholders. It is tested without a cluster.
* `apply(plan, cluster)` executes the steps in plan order, which is dependency order (cluster settings → model group
  → connector → model → pipelines → index templates → indices → prunes), swapping each placeholder for the id an
  earlier step created. It reads the cluster only where acting needs the current truth (a model's state right
  before undeploying it, a replacement's document counts and its pre-flight analysis). A dry run is `diff` without
  `apply`.

Changed? is one string comparison: every managed object carries a fingerprint of its rendered definition (in its
description, or the index template's `_meta`). Connectors are updated in place and keep their ids (their models
are undeployed first: ML Commons refuses to update a connector a node holds a model of) and models are deployed
with the restart-safe `Cluster.deploy_model`.

**Replace.** Some changes cannot be made to an existing index: a vector's dimension (a new CLIP variant), its k-NN
method, engine, space or HNSW parameters, a field's type, the `_source` excludes, a static setting. The diff makes
them a `replace` step, and `apply` refuses the whole plan (nothing is touched) unless `allow_reindex` is given,
because a replacement re-indexes documents and refuses writes while it runs. A change to a *deferred* setting or mapping
parameter (how the index stores what it holds: the k-NN plugin's derived source, the vectors' doc values, the
recovery source) replaces the index only when `allow_reindex` is given; otherwise the index keeps its value and the
plan says so. With it:

1. *Canary*: one generated image goes through the ingest pipeline (`_simulate`, nothing indexed); if the vectors do
   not have the new dimension (the adapter's Triton still serves the old model) nothing is replaced.
2. Writes to the current index are blocked: a document sent meanwhile is refused with an error, never silently
   left behind in the old index.
3. A new version `<name>-v<N>` is created with the desired template's settings and mappings (the index template
   also matches `<name>-v*`).
4. Documents are re-analyzed, not copied: their vectors come from the model that changed. A `_reindex` sends them
   through the ingest pipeline again (with their old analysis fields removed), which needs the image. Only the
   *URL* survives indexing: `image_url` is kept in `_source`, while base64 images are never kept (by design, see
   the images index template). So documents carrying `image_url` are re-analyzed (the adapter fetches each URL
   again; one that fails is dead-lettered with its URL and the reason, and `make replay` re-drives it, with --all
   when the adapter judged the failure permanent, a 404 say), and documents sent as base64 cannot be: they are not
   carried over, their count is reported, and they stay, read-only and listable, in the retired version until they
   are sent again (same ids) and the retired version is deleted by hand. No dead letter or other store holds their
   images, so sending them again is the only honest way to give them new vectors.
5. The alias `<name>` is switched to the new version in one `_aliases` call, so searches and writes by the name go
   on working. The first replacement of an index created before versions existed (a concrete index named
   `<name>`) first clones it to `<name>-v<N>` (OpenSearch cannot rename; a clone shares segment files and is
   cheap), and the same `_aliases` call removes the concrete index and adds the alias.

After the first replacement the name is an alias: searches, counts, gets and writes by it work unchanged, but a
bulk response names the concrete version (`<name>-v2`) in `_index`, so a client that compares `_index` with the
configured name must resolve the alias first.

A replacement that fails at any point is rolled back: the new version, a clone and the dead letters the failed
re-analysis wrote are deleted, and the write block is lifted, so the old index serves as before. Steps before the
replace in the same plan (a connector update, say) stay applied; the next plan shows what is left.

Retired versions are never deleted by the bootstrap: they may hold the only copy of base64 documents not yet
re-sent. The plan lists each one (as `unchanged`, with its document count) until someone deletes it.

**Prune.** Managed objects that are no longer desired (a connector or model left from an old name, a pipeline or
template renamed in the config) are `delete` steps, as are duplicates of a desired name left by an interrupted
run (the oldest is the one kept). Managed means the description carries the marker of *this* deployment (the
images index name); objects of another deployment on the same cluster, or without the marker, are never deleted.
A connector or model group still used by a model that stays is kept.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import io
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bootstrap import desired as desired_mod
from bootstrap.desired import Desired, DesiredIndex, DesiredModel, deployment_of, ref
from bootstrap.opensearch_api import DEPLOYED, IDLE_STATES, Cluster, ClusterError
from common import contract
from common.config import Settings
from common.errors import VisualSearchError
from common.model_facts import ClipFacts

ACTIONS = ("create", "update", "replace", "delete", "unchanged")
_REF = re.compile(r"^<pending:([a-z_]+):(.+)>$")
# A version of an index named `base`: `<base>-v<N>`.
_VERSION = re.compile(r"^(?P<base>.+)-v(?P<n>[0-9]+)$")
# Re-analysis sends documents through the ingest pipeline in bulks of this many: ML Commons starts every model
# call of a bulk at once (docs/design.md#facts), so a reindex's default of 1000 would be one burst of 1000 analyses.
REINDEX_BATCH = 50
# Settings an existing index can take in place; any other difference in the template's settings is a replacement.
DYNAMIC_SETTINGS = frozenset({
    "index.number_of_replicas", "index.auto_expand_replicas", "index.refresh_interval", "index.default_pipeline",
    "index.final_pipeline", "index.search.default_pipeline", "index.knn.algo_param.ef_search", "index.hidden",
    "index.max_result_window",
})
# Static settings OpenSearch takes on a closed index, so an existing one takes them in place (closed for a moment)
# instead of a rebuild: the codec applies to segments written from then on, older ones take it as they merge.
CLOSED_SETTINGS = frozenset({"index.codec"})
# Static settings that change only how an index stores what it holds, not what it answers: an existing index keeps
# its value until it is rebuilt (for another reason, or when the bootstrap may reindex), so an upgrade that changes
# one does not stop `make up` with a refused replacement.
DERIVED_SOURCE = "index.knn.derived_source.enabled"  # the k-NN plugin's derived source (config: index.derived_source)
DEFERRED_SETTINGS = frozenset({DERIVED_SOURCE})
# What an index reports for a setting it was created without (OpenSearch lists only the settings set explicitly): an
# index made before the template named the setting is not rebuilt for the value it already has.
SETTING_DEFAULTS = {"index.codec": "default", DERIVED_SOURCE: "false"}
# The same for mapping parameters, with the value an index created without them has: `_source` parameters, and
# parameters of a knn_vector field.
DEFERRED_SOURCE_PARAMETERS = {"recovery_source_enabled": True}
DEFERRED_VECTOR_PARAMETERS = {"doc_values": True}
# OpenSearch sets this on a closed index and drops it when it reopens.
_CLOSED_FLAG = "index.verified_before_close"
_STRIP_ANALYSIS = "for (String f : params.fields) { ctx._source.remove(f); }"


def fingerprint(body: Any) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]


def _stamp(description: str, fp: str) -> str:
    return f"{description} [fp:{fp}]"


def _stamped(existing: str | None, fp: str) -> bool:
    return f"[fp:{fp}]" in (existing or "")


class ReplaceRefused(VisualSearchError):
    """The plan replaces an index (re-indexing its documents) and the caller did not allow it; nothing was done.

    Its message names the index, the reason and the flag that allows it; `plan` is the refused plan."""

    def __init__(self, message: str, plan: Plan) -> None:
        super().__init__(message)
        self.plan = plan


# --- what the cluster has ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class MLObject:
    """A model group, connector or model as observed. Model-only fields stay empty for the others."""

    id: str
    name: str
    description: str = ""
    created_time: float | None = None
    connector_id: str | None = None
    model_group_id: str | None = None
    state: str = ""  # as the model index records it (may be stale after a restart: see `served`)
    served: bool | None = None  # held deployed by a node; None where not asked (models of no desired name)
    access: str = ""  # a model group's access mode (public, private, restricted); "" where none is recorded
    backend_roles: tuple[str, ...] = ()  # a model group's: users with one of them may use its models (restricted)

    @classmethod
    def of(cls, record: dict, served: bool | None = None) -> MLObject:
        created = record.get("created_time")
        return cls(id=str(record["id"]), name=str(record.get("name", "")), description=record.get("description") or "",
                   created_time=float(created) if isinstance(created, int | float) else None,
                   connector_id=record.get("connector_id"), model_group_id=record.get("model_group_id"),
                   state=record.get("model_state") or "", served=served, access=record.get("access") or "",
                   backend_roles=tuple(record.get("backend_roles") or ()))


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
        return _is_closed(self.settings)


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
    """Everything the diff compares, read once. Connectors and models of a desired name are read by id (real time,
    where a search can lag an update made a moment ago), and for those models a node profile says whether they
    are really served."""
    mlc, idx = settings.ml_commons, settings.index
    desired_names = {mlc.embed_model, mlc.analyze_model}
    connectors = []
    for record in cluster.search_ml_all("connectors"):
        if record.get("name") in desired_names:
            record = {**record, **cluster.get_connector(record["id"])}
        connectors.append(MLObject.of(record))
    models = []
    for record in cluster.search_ml_all("models"):
        served = None
        if record.get("name") in desired_names:
            record = {**record, **cluster.get_model(record["id"])}
            served = cluster.serves_everywhere(cluster.served_on(record["id"]))
        models.append(MLObject.of(record, served))
    return Observed(
        cluster_settings=cluster.persistent_settings(),
        model_groups=tuple(MLObject.of(r) for r in cluster.search_ml_all("model_groups")),
        connectors=tuple(connectors),
        models=tuple(models),
        ingest_pipelines=cluster.ingest_pipelines(),
        search_pipelines=cluster.search_pipelines(),
        index_templates=cluster.index_templates(),
        indices={name: observe_index(cluster, name) for name in (idx.dead_letter, idx.name)},
    )


def observe_index(cluster: Cluster, name: str) -> ObservedIndex:
    resolved = cluster.resolve_index(name)
    concrete, via_alias = resolved or (None, False)
    settings = cluster.index_settings(concrete) if concrete else {}
    closed = _is_closed(settings)  # a closed index answers no count: it is reopened first

    def count(index: str, query: dict | None = None) -> int:
        return 0 if closed and index == concrete else cluster.count(index, query)

    versions = {v: count(v) for v in cluster.index_names(f"{name}-v*") if _version_of(v, name) is not None}
    if concrete is None:
        return ObservedIndex(name, versions=versions)
    with_url = {"exists": {"field": contract.IMAGE_URL_FIELD}}
    return ObservedIndex(name, concrete, via_alias, mapping=cluster.index_mapping(concrete), settings=settings,
                         docs=count(concrete), docs_with_url=count(concrete, with_url), versions=versions)


def _is_closed(flat_settings: dict) -> bool:
    return flat_settings.get(_CLOSED_FLAG) == "true"


def _version_of(index: str, base: str) -> int | None:
    found = _VERSION.match(index)
    return int(found["n"]) if found and found["base"] == base else None


# --- the plan ------------------------------------------------------------------------------------------------------
@dataclass
class Step:
    kind: str
    name: str
    action: str  # create | update | replace | delete | unchanged
    id: str | None = None
    detail: str = ""  # why
    data: dict = field(default_factory=dict, repr=False, compare=False)  # what apply needs; placeholders allowed

    @property
    def key(self) -> str:
        return f"{self.kind}:{self.name}"

    def __str__(self) -> str:
        ident = f" ({self.id})" if self.id and not _REF.match(self.id) else ""
        return f"{self.action:>9}  {self.kind:<16} {self.name}{ident}{'  ' + self.detail if self.detail else ''}"


@dataclass
class Plan:
    steps: list[Step] = field(default_factory=list)

    def add(self, step: Step) -> Step:
        assert step.action in ACTIONS, step.action
        self.steps.append(step)
        return step

    @property
    def ids(self) -> dict[str, str]:
        """`kind:name` → id of every object the plan keeps (known before apply, or given by it)."""
        return {s.key: s.id for s in self.steps if s.id and s.action != "delete" and not _REF.match(s.id)}

    @property
    def changes(self) -> list[Step]:
        return [s for s in self.steps if s.action != "unchanged"]

    @property
    def replacements(self) -> list[Step]:
        return [s for s in self.steps if s.action == "replace"]

    def step(self, kind: str, name: str) -> Step | None:
        return next((s for s in self.steps if s.kind == kind and s.name == name), None)

    def lines(self) -> list[str]:
        return [str(s) for s in self.steps]

    def summary(self) -> str:
        counts = {a: sum(s.action == a for s in self.steps) for a in ACTIONS}
        parts = [f"{counts[a]} to {a}" for a in ("create", "update", "replace", "delete") if counts[a]]
        return f"{len(self.changes)} change(s), {counts['unchanged']} unchanged" + (
            f" ({', '.join(parts)})" if parts else "")


def refusal(plan: Plan) -> str:
    """Why a plan with replacements is not applied without `allow_reindex`, and what allowing it would do."""
    lines = ["refused: this plan replaces an index, which re-indexes its documents and refuses writes to it while "
             "that runs:"]
    for step in plan.replacements:
        lines.append(f"  {step.name}: {step.detail}")
    lines.append("Run the bootstrap again with --allow-reindex to replace it (see `bootstrap --dry-run` for the "
                 "whole plan). Nothing was changed.")
    return "\n".join(lines)


def _oldest(objects: list[MLObject]) -> MLObject | None:
    """The same choice as `opensearch_api.oldest`: the oldest, then the smallest id (every runner agrees)."""
    return min(objects, key=lambda o: (o.created_time if o.created_time is not None else float("inf"), o.id),
               default=None)


def _named(objects: tuple[MLObject, ...], name: str) -> list[MLObject]:
    return [o for o in objects if o.name == name]


def _resolve(value: Any, ids: dict[str, str], strict: bool = True) -> Any:
    """`value` with every `ref` placeholder whose object has an id swapped for it (all of them when `strict`)."""
    if isinstance(value, dict):
        return {k: _resolve(v, ids, strict) for k, v in value.items()}
    if isinstance(value, list):
        return [_resolve(v, ids, strict) for v in value]
    if isinstance(value, str) and (found := _REF.match(value)):
        key = f"{found[1]}:{found[2]}"
        if key in ids:
            return ids[key]
        if strict:
            raise RuntimeError(f"the plan refers to {key}, which no earlier step created")
    return value


def _has_refs(value: Any) -> bool:
    if isinstance(value, dict):
        return any(_has_refs(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_refs(v) for v in value)
    return isinstance(value, str) and bool(_REF.match(value))


def _canon(value: Any) -> Any:
    """Values as comparable text: the cluster returns settings as strings and some mapping values as either."""
    if isinstance(value, dict):
        return {k: _canon(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_canon(v) for v in value]
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return None
    return str(value)


# --- the diff (pure) -----------------------------------------------------------------------------------------------
def diff(desired: Desired, observed: Observed, rebuild_deferred: bool = False) -> Plan:
    """The steps that take `observed` to `desired`, in the order `apply` must run them. Reads nothing.

    `rebuild_deferred`: a difference in a deferred setting alone replaces the index (else it waits for a rebuild).
    """
    plan = Plan()
    wanted = {k: v for k, v in desired.cluster_settings.items()
              if _canon(observed.cluster_settings.get(k)) != _canon(v)}
    plan.add(Step("cluster_settings", "ml_commons", "update" if wanted else "unchanged",
                  detail=f"differs: {', '.join(sorted(wanted))}" if wanted else "", data={"values": wanted}))

    group = _oldest(_named(observed.model_groups, desired.model_group))
    access = desired.model_group_access
    if group is None:
        plan.add(Step("model_group", desired.model_group, "create", detail="not found",
                      data={"description": desired.model_group_description, "access": access}))
    elif access and (group.access != access["access_mode"]
                     or sorted(group.backend_roles) != sorted(access["backend_roles"])):
        plan.add(Step("model_group", desired.model_group, "update", group.id,
                      detail=f"access {group.access or 'unset'} {list(group.backend_roles)} → {access['access_mode']} "
                             f"{access['backend_roles']}", data={"access": access}))
    else:
        plan.add(Step("model_group", desired.model_group, "unchanged", group.id))
    group_id = group.id if group else ref("model_group", desired.model_group)

    connectors = {body["name"]: body for body in desired.connectors}
    for model in desired.models:
        connector = _connector_step(plan, connectors[model.connector], observed)
        _model_step(plan, model, connector, group_id, observed)

    for kind, wanted_pipelines, found_pipelines in (
            ("ingest_pipeline", desired.ingest_pipelines, observed.ingest_pipelines),
            ("search_pipeline", desired.search_pipelines, observed.search_pipelines)):
        for name, body in wanted_pipelines.items():
            _pipeline_step(plan, kind, name, _resolve(body, plan.ids, strict=False), found_pipelines.get(name))

    for index in desired.indices:
        _template_step(plan, index.name, index.template, observed.index_templates.get(index.name))
        _index_step(plan, index, observed.indices.get(index.name) or ObservedIndex(index.name), rebuild_deferred)

    _prune_steps(plan, desired, observed)
    return plan


def _connector_step(plan: Plan, body: dict, observed: Observed) -> Step:
    fp = fingerprint(body)
    stamped = {**body, "description": _stamp(body["description"], fp)}
    name = body["name"]
    found = _oldest(_named(observed.connectors, name))
    if found is None:
        return plan.add(Step("connector", name, "create", detail="not found", data={"body": stamped}))
    if _stamped(found.description, fp):
        return plan.add(Step("connector", name, "unchanged", found.id))
    # ML Commons only updates a connector no node holds a model of: a model stuck deploying counts
    holders = [m.id for m in observed.models if m.connector_id == found.id and m.state not in IDLE_STATES]
    why = "definition changed" + (f"; its model(s) {', '.join(holders)} are undeployed first" if holders else "")
    return plan.add(Step("connector", name, "update", found.id, why, data={"body": stamped, "undeploy": holders}))


def _model_step(plan: Plan, want: DesiredModel, connector: Step, group_id: str, observed: Observed) -> Step:
    connector_id = connector.id or ref("connector", connector.name)
    found = _oldest(_named(observed.models, want.name))
    if found is None:
        body = {"name": want.name, "function_name": "remote", "model_group_id": group_id,
                "connector_id": connector_id, "description": want.description}
        return plan.add(Step("model", want.name, "create", detail="not found: register + deploy", data={"body": body}))
    changes: dict[str, str] = {}
    why = []
    if found.connector_id != connector_id:
        changes["connector_id"] = connector_id
        why.append("connector changed")
    if found.description != want.description:
        changes["description"] = want.description
        why.append("description changed")
    # Deployed means recorded DEPLOYED *and* held by a node: after a restart the record still says DEPLOYED while
    # no node serves the model. A connector updated in place leaves its model undeployed: deploying is the change.
    if connector.action == "update":
        why.append("redeploy (its connector is updated in place)")
    elif found.state == DEPLOYED and not found.served:
        why.append("deploy (recorded DEPLOYED, but no node serves it)")
    elif found.state != DEPLOYED:
        why.append(f"deploy (was {found.state or 'unknown'})")
    if not why:
        return plan.add(Step("model", want.name, "unchanged", found.id))
    return plan.add(Step("model", want.name, "update", found.id, "; ".join(why), data={"changes": changes}))


def _pipeline_step(plan: Plan, kind: str, name: str, body: dict, found: dict | None) -> Step:
    if _has_refs(body):  # it names a model this apply creates: it cannot match what exists
        return plan.add(Step(kind, name, "update" if found else "create",
                             detail="refers to a model created by this plan" if found else "not found",
                             data={"body": body}))
    if found and _stamped(found.get("description"), fingerprint(body)):
        return plan.add(Step(kind, name, "unchanged"))
    return plan.add(Step(kind, name, "update" if found else "create",
                         detail="definition changed" if found else "not found", data={"body": body}))


def _template_step(plan: Plan, name: str, body: dict, found: dict | None) -> Step:
    fp = fingerprint(body)
    stamped = {**body, "_meta": {**body.get("_meta", {}), "fingerprint": fp}}
    if found and found.get("_meta", {}).get("fingerprint") == fp:
        return plan.add(Step("index_template", name, "unchanged"))
    return plan.add(Step("index_template", name, "update" if found else "create",
                         detail="definition changed" if found else "not found", data={"body": stamped}))


def _index_step(plan: Plan, want: DesiredIndex, found: ObservedIndex, rebuild_deferred: bool = False) -> None:
    template = want.template["template"]
    body = {"settings": template.get("settings", {}), "mappings": template.get("mappings", {})}
    if found.concrete is None:
        plan.add(Step("index", want.name, "create", detail="not found", data={"index": want.name, "body": body}))
    else:
        mapping_diff = compare_mapping(body["mappings"], found.mapping)
        static, dynamic, deferred = compare_settings(body["settings"], found.settings)
        replace, mapping_changes = mapping_diff.replace + static, mapping_diff.inplace
        deferred += mapping_diff.deferred
        if replace or rebuild_deferred:  # a new version takes the template's values anyway
            replace += deferred
            deferred = []
        where = f" (alias of {found.concrete})" if found.via_alias else ""
        if deferred:
            where += f" (keeps {'; '.join(deferred)} until it is rebuilt: bootstrap --allow-reindex)"
        if replace and not found.closed:
            plan.add(_replace_step(want, found, body, replace))
        elif mapping_changes or dynamic or found.closed:
            why = ", ".join(mapping_changes + [f"setting {k}" for k in sorted(dynamic)])
            if found.closed:
                why = ", ".join(filter(None, ["reopened (left closed by an interrupted change)", why]))
                why += f"; bootstrap again for: {'; '.join(replace)}" if replace else ""
            elif CLOSED_SETTINGS & dynamic.keys():
                why += " (closed for a moment: searches and writes to it fail until it reopens)"
            mapping = _in_place_mapping(body["mappings"], found.mapping) if mapping_changes else None
            plan.add(Step("index", want.name, "update", detail=f"in place{where}: {why}",
                          data={"index": found.concrete, "settings": dynamic, "mapping": mapping,
                                "reopen": found.closed}))
        else:
            plan.add(Step("index", want.name, "unchanged", detail=where.strip()))
    for version, docs in sorted(found.versions.items(), key=lambda item: _version_of(item[0], want.name) or 0):
        if version != found.concrete:
            plan.add(Step("index", version, "unchanged",
                          detail=f"retired version of {want.name}, read-only, {docs} document(s): documents sent as "
                                 "base64 stay here until re-sent; delete it by hand when no longer needed"))


def _replace_step(want: DesiredIndex, found: ObservedIndex, body: dict, reasons: list[str]) -> Step:
    assert found.concrete is not None
    n = max((_version_of(v, want.name) or 0 for v in found.versions), default=0) + 1
    retire_as = None if found.via_alias else f"{want.name}-v{n}"
    target = f"{want.name}-v{n + 1}" if retire_as else f"{want.name}-v{n}"
    kept = found.concrete if found.via_alias else retire_as
    if want.reanalyze:
        without_url = found.docs - found.docs_with_url
        docs = (f"{found.docs_with_url} of {found.docs} document(s) carry {contract.IMAGE_URL_FIELD} and are "
                f"re-analyzed; {without_url} sent as base64 (image not kept) must be re-sent")
    else:
        docs = f"{found.docs} document(s) copied"
    origin = f"alias {want.name} moves from {found.concrete}" if found.via_alias else (
        f"the concrete index {want.name} is kept as {retire_as} and {want.name} becomes an alias")
    detail = f"{'; '.join(reasons)} → new version {target} ({origin}; {docs}; {kept} kept read-only)"
    return Step("index", want.name, "replace", detail=detail, data={
        "source": found.concrete, "via_alias": found.via_alias, "retire_as": retire_as, "target": target,
        "body": body, "reanalyze": want.reanalyze, "pipeline": want.pipeline, "dimension": want.dimension,
        "dead_letter": want.dead_letter, "reasons": reasons})


@dataclass
class MappingDiff:
    """How a wanted mapping differs from an index's: what needs a new index, what a put-mapping does, and what waits
    for a rebuild (DEFERRED_SOURCE_PARAMETERS, DEFERRED_VECTOR_PARAMETERS)."""

    replace: list[str] = field(default_factory=list)
    inplace: list[str] = field(default_factory=list)
    deferred: list[str] = field(default_factory=list)


def compare_mapping(want: dict, have: dict) -> MappingDiff:
    out = MappingDiff()
    want_source, have_source = want.get("_source", {}), have.get("_source", {})
    want_excludes, have_excludes = sorted(want_source.get("excludes", [])), sorted(have_source.get("excludes", []))
    if want_excludes != have_excludes:
        out.replace.append(f"_source excludes {have_excludes} → {want_excludes}")
    _compare_deferred("_source", want_source, have_source, DEFERRED_SOURCE_PARAMETERS, out)
    if _canon(want.get("dynamic_templates", [])) != _canon(have.get("dynamic_templates", [])):
        out.inplace.append("dynamic templates")
    if "dynamic" in want and _canon(want["dynamic"]) != _canon(have.get("dynamic", True)):
        out.inplace.append("dynamic")
    _compare_properties(want.get("properties", {}), have.get("properties", {}), "", out)
    return out


def _compare_deferred(path: str, w: dict, h: dict, defaults: dict[str, Any], out: MappingDiff) -> None:
    for key, default in defaults.items():
        if key in w and _canon(w[key]) != _canon(h.get(key, default)):
            out.deferred.append(f"{path} {key} {_canon(h.get(key, default))} → {_canon(w[key])}")


def _field_type(definition: dict) -> str:
    return definition.get("type", "object")


def _compare_properties(want: dict, have: dict, prefix: str, out: MappingDiff) -> None:
    for name, w in want.items():
        path = f"{prefix}{name}"
        h = have.get(name)
        if h is None:
            out.inplace.append(f"new field {path}")
        else:
            _compare_field(path, w, h, out)


def _compare_field(path: str, w: dict, h: dict, out: MappingDiff) -> None:
    if _field_type(w) != _field_type(h):
        out.replace.append(f"{path}: type {_field_type(h)} → {_field_type(w)}")
        return
    if _field_type(w) == "knn_vector":
        if _canon(w.get("dimension")) != _canon(h.get("dimension")):
            out.replace.append(f"{path}: dimension {h.get('dimension')} → {w.get('dimension')}")
        wm, hm = w.get("method", {}), h.get("method", {})
        for key in ("name", "engine", "space_type"):
            if _canon(wm.get(key)) != _canon(hm.get(key)):
                out.replace.append(f"{path}: k-NN {key} {hm.get(key)} → {wm.get(key)}")
        if _canon(wm.get("parameters", {})) != _canon(hm.get("parameters", {})):
            out.replace.append(f"{path}: HNSW parameters {hm.get('parameters', {})} → {wm.get('parameters', {})}")
        _compare_deferred(f"{path}:", w, h, DEFERRED_VECTOR_PARAMETERS, out)
        for key in sorted(set(w) - {"type", "dimension", "method", *DEFERRED_VECTOR_PARAMETERS}):
            if _canon(w[key]) != _canon(h.get(key)):
                out.replace.append(f"{path}: {key} {h.get(key)} → {w[key]}")
        return
    if _field_type(w) in ("object", "nested"):
        if _canon(w.get("enabled", True)) != _canon(h.get("enabled", True)):
            out.replace.append(f"{path}: enabled {h.get('enabled', True)} → {w.get('enabled', True)}")
        _compare_properties(w.get("properties", {}), h.get("properties", {}), f"{path}.", out)
        return
    for key in sorted(set(w) - {"type", "fields"}):
        if _canon(w[key]) != _canon(h.get(key)):
            (out.inplace if key == "ignore_above" else out.replace).append(f"{path}: {key} {h.get(key)} → {w[key]}")
    for sub, sw in w.get("fields", {}).items():
        sh = h.get("fields", {}).get(sub)
        if sh is None:
            out.inplace.append(f"new multi-field {path}.{sub}")
        else:
            _compare_field(f"{path}.{sub}", sw, sh, out)


def _in_place_mapping(want: dict, have: dict) -> dict:
    """The put-mapping body for an in-place change: the wanted mapping without `_source` (fixed at creation), its
    knn_vector fields keeping the deferred parameters the index has (OpenSearch refuses to change them on it)."""
    return {"properties": _keep_deferred(want.get("properties", {}), have.get("properties", {})),
            **{k: v for k, v in want.items() if k not in ("_source", "properties")}}


def _keep_deferred(want: dict, have: dict) -> dict:
    kept = {}
    for name, w in want.items():
        h = have.get(name, {})
        if _field_type(w) == "knn_vector" and h:
            w = {**w, **{k: h.get(k, default) for k, default in DEFERRED_VECTOR_PARAMETERS.items()}}
        elif "properties" in w:
            w = {**w, "properties": _keep_deferred(w["properties"], h.get("properties", {}))}
        kept[name] = w
    return kept


def flatten_settings(settings: dict, prefix: str = "") -> dict[str, Any]:
    """Nested settings as OpenSearch's dotted keys (how an index reports them with flat_settings)."""
    flat: dict[str, Any] = {}
    for key, value in settings.items():
        if isinstance(value, dict):
            flat.update(flatten_settings(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def compare_settings(want: dict, have_flat: dict) -> tuple[list[str], dict[str, Any], list[str]]:
    """(reasons to replace: static settings that differ, {setting: value} to put in place, deferred differences)."""
    replace: list[str] = []
    inplace: dict[str, Any] = {}
    deferred: list[str] = []
    for key, value in flatten_settings(want).items():
        key = key if key.startswith("index.") else f"index.{key}"
        have = have_flat.get(key, SETTING_DEFAULTS.get(key))
        if _canon(have) != _canon(value):
            if key in DYNAMIC_SETTINGS or key in CLOSED_SETTINGS:
                inplace[key] = value
            else:
                (deferred if key in DEFERRED_SETTINGS else replace).append(f"setting {key} {have} → {_canon(value)}")
    if _canon(have_flat.get("index.blocks.write")) == "true":
        inplace["index.blocks.write"] = None  # left by a replacement that was interrupted: the index serves again
    return replace, inplace, deferred


def _prune_steps(plan: Plan, desired: Desired, observed: Observed) -> None:
    """Deletes managed objects of this deployment that are no longer desired, and duplicates of desired names."""
    ours = desired.deployment

    def doomed(objects: tuple[MLObject, ...], names: set[str]) -> list[tuple[MLObject, str]]:
        out = []
        for obj in objects:
            deployment = deployment_of(obj.description)
            if deployment is None:
                continue  # not managed by the bootstrap
            if obj.name in names:
                kept = _oldest(_named(objects, obj.name))
                if kept is not None and kept.id != obj.id:
                    out.append((obj, f"duplicate of {obj.name} (the oldest, {kept.id}, is kept)"))
            elif deployment == ours:
                out.append((obj, f"no longer desired by deployment {ours}"))
        return out

    for kind, found, wanted in (("ingest_pipeline", observed.ingest_pipelines, desired.ingest_pipelines),
                                ("search_pipeline", observed.search_pipelines, desired.search_pipelines)):
        for name, body in sorted(found.items()):
            if name not in wanted and deployment_of(body.get("description")) == ours:
                plan.add(Step(kind, name, "delete", detail=f"no longer desired by deployment {ours}"))

    model_names = {m.name for m in desired.models}
    dead_models = doomed(observed.models, model_names)
    gone = {m.id for m, _ in dead_models}
    for model, why in dead_models:
        plan.add(Step("model", model.name, "delete", model.id, why + (
            "; undeployed first" if model.state not in IDLE_STATES else "")))
    # which connector and group each model that stays will use once the plan is applied
    staying = [m for m in observed.models if m.id not in gone]
    future_connector = {m.id: m.connector_id for m in staying}
    future_group = {m.id: m.model_group_id for m in staying}
    for m in desired.models:
        step = plan.step("model", m.name)
        if step is not None and step.id:
            future_connector[step.id] = plan.ids.get(f"connector:{m.connector}")
            future_group[step.id] = plan.ids.get(f"model_group:{desired.model_group}", future_group.get(step.id))

    for kind, objects, names, users in (
            ("connector", observed.connectors, {c["name"] for c in desired.connectors}, future_connector),
            ("model_group", observed.model_groups, {desired.model_group}, future_group)):
        for obj, why in doomed(objects, names):
            using = sorted(model_id for model_id, used in users.items() if used == obj.id)
            if using:
                # no id on the step: a kept duplicate must not stand for the desired object of its name in `ids`
                plan.add(Step(kind, obj.name, "unchanged",
                              detail=f"{obj.id} kept although {why}: still used by model(s) {', '.join(using)}"))
            else:
                plan.add(Step(kind, obj.name, "delete", obj.id, why))

    wanted_templates = set(desired.index_templates)
    for name, body in sorted(observed.index_templates.items()):
        if name not in wanted_templates and deployment_of(body.get("_meta", {}).get("description")) == ours:
            plan.add(Step("index_template", name, "delete", detail=f"no longer desired by deployment {ours}"))


# --- apply -----------------------------------------------------------------------------------------------------------
def apply(plan: Plan, cluster: Cluster, *, allow_reindex: bool = False,
          say: Callable[[str], None] | None = None) -> Plan:
    """Execute the plan's steps in order; each created object's id fills the placeholders of the steps after it.

    A plan with a `replace` step is refused before anything is done unless `allow_reindex`. Returns the plan, its
    steps now carrying the ids of what was created and, for a replacement, what was carried over.
    """
    if plan.replacements and not allow_reindex:
        raise ReplaceRefused(refusal(plan), plan)
    say = say or (lambda message: None)
    ids = plan.ids
    for step in plan.steps:
        if step.action == "unchanged":
            continue
        _APPLY[(step.kind, step.action)](cluster, step, ids, say)
        if step.id and step.action != "delete":
            ids[step.key] = step.id
    return plan


def _apply_settings(cluster: Cluster, step: Step, ids: dict, say: Callable) -> None:
    cluster.put_persistent_settings(step.data["values"])


def _create_group(cluster: Cluster, step: Step, ids: dict, say: Callable) -> None:
    access = step.data.get("access")
    step.id = cluster.create_model_group(step.name, step.data["description"], **({"access": access} if access else {}))


def _update_group(cluster: Cluster, step: Step, ids: dict, say: Callable) -> None:
    assert step.id
    cluster.update_model_group(step.id, step.data["access"])


def _create_connector(cluster: Cluster, step: Step, ids: dict, say: Callable) -> None:
    step.id = cluster.create_connector(step.data["body"])


def _update_connector(cluster: Cluster, step: Step, ids: dict, say: Callable) -> None:
    assert step.id
    for model_id in step.data["undeploy"]:
        if cluster.model_state(model_id) not in IDLE_STATES:
            cluster.undeploy_model(model_id)
    cluster.update_connector(step.id, step.data["body"])


def _create_model(cluster: Cluster, step: Step, ids: dict, say: Callable) -> None:
    step.id = cluster.register_model(_resolve(step.data["body"], ids))
    cluster.deploy_model(step.id, name=step.name)
    step.detail = "registered + deployed"


def _update_model(cluster: Cluster, step: Step, ids: dict, say: Callable) -> None:
    assert step.id
    changes = _resolve(step.data["changes"], ids)
    if changes:
        if cluster.model_state(step.id) not in IDLE_STATES:
            cluster.undeploy_model(step.id)
        cluster.update_model(step.id, changes)
    # waits for a deploy already in flight (ML Commons redeploys by itself after a restart) instead of racing it,
    # and retries what ML Commons reports as transient
    cluster.deploy_model(step.id, name=step.name)


def _put_pipeline(put_name: str) -> Callable[[Cluster, Step, dict, Callable], None]:
    def put(cluster: Cluster, step: Step, ids: dict, say: Callable) -> None:
        body = _resolve(step.data["body"], ids)
        body = {**body, "description": _stamp(body.get("description", ""), fingerprint(body))}
        getattr(cluster, put_name)(step.name, body)
    return put


def _put_template(cluster: Cluster, step: Step, ids: dict, say: Callable) -> None:
    cluster.put_index_template(step.name, step.data["body"])


def _create_index(cluster: Cluster, step: Step, ids: dict, say: Callable) -> None:
    cluster.create_index(step.data["index"], step.data["body"])


def _update_index(cluster: Cluster, step: Step, ids: dict, say: Callable) -> None:
    index, settings = step.data["index"], step.data["settings"]
    closed = {k: v for k, v in settings.items() if k in CLOSED_SETTINGS}
    if step.data.get("reopen"):
        say(f"reopening {index}, left closed by an interrupted change")
        if closed:
            cluster.put_index_settings(index, closed)
        cluster.open_index(index)
    elif closed:
        say(f"closing {index} for a moment to change {', '.join(sorted(closed))}")
        cluster.put_closed_index_settings(index, closed)
    if len(closed) < len(settings):
        cluster.put_index_settings(index, {k: v for k, v in settings.items() if k not in closed})
    if step.data["mapping"]:
        cluster.put_mapping(step.data["index"], step.data["mapping"])


def _delete(method: str, by_id: bool = True) -> Callable[[Cluster, Step, dict, Callable], None]:
    def delete(cluster: Cluster, step: Step, ids: dict, say: Callable) -> None:
        getattr(cluster, method)(step.id if by_id else step.name)
    return delete


def _delete_model(cluster: Cluster, step: Step, ids: dict, say: Callable) -> None:
    assert step.id
    if cluster.model_state(step.id) not in IDLE_STATES:
        cluster.undeploy_model(step.id)
    cluster.delete_model(step.id)


def canary_image() -> str:
    """A small generated JPEG, base64: enough for the analysis to produce a global embedding."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (160, 120), (235, 235, 225))
    draw = ImageDraw.Draw(image)
    draw.ellipse((20, 20, 80, 80), fill=(200, 30, 30))
    draw.rectangle((90, 40, 150, 100), fill=(30, 60, 200))
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=90)
    return base64.b64encode(out.getvalue()).decode()


def check_analysis(cluster: Cluster, pipeline: str, dimension: int | None, index: str) -> None:
    """Before a replacement blocks any write: one image through the ingest pipeline must give vectors of the new
    dimension. Catches the model that did not change with the config (Triton still serving the old variant)."""
    doc = {"_index": index, "_id": "bootstrap-canary",
           "_source": {"image_id": "bootstrap-canary", contract.IMAGE_FIELD: canary_image()}}
    result = cluster.simulate_pipeline(pipeline, [doc])[0]
    source = (result.get("doc") or {}).get("_source", {})
    failure = source.get(contract.FAILURE_FIELD) or result.get("error")
    if failure:
        raise ClusterError(f"a test image sent through {pipeline} was not analyzed ({failure}); nothing was "
                           f"replaced: make the analysis work first (is the adapter up?)")
    got = len(source.get("global_image_embedding") or [])
    if dimension is not None and got != dimension:
        raise ClusterError(f"the ingest pipeline {pipeline} produces {got}-d vectors but the new version of {index} "
                           f"needs {dimension}-d: the adapter's Triton does not serve the configured model yet "
                           "(export it with `make models`, restart the stack), then bootstrap again. Nothing was "
                           "replaced.")


def _replace_index(cluster: Cluster, step: Step, ids: dict, say: Callable[[str], None]) -> None:
    d = step.data
    name, source, target, retire_as = step.name, d["source"], d["target"], d["retire_as"]
    if d["reanalyze"]:
        check_analysis(cluster, d["pipeline"], d["dimension"], name)
    say(f"replacing {name}: writes to {source} are refused until {target} serves")
    cluster.block_writes(source)
    made: list[str] = []
    try:
        if retire_as:
            cluster.clone_index(source, retire_as)
            made.append(retire_as)
        cluster.create_index(target, d["body"])
        made.append(target)
        total = cluster.count(source)
        if d["reanalyze"]:
            query = {"exists": {"field": contract.IMAGE_URL_FIELD}}
            carried = cluster.count(source, query)
            body = {"source": {"index": source, "size": REINDEX_BATCH, "query": query},
                    "dest": {"index": target, "pipeline": d["pipeline"]},
                    "script": {"lang": "painless", "source": _STRIP_ANALYSIS,
                               "params": {"fields": list(contract.ANALYSIS_FIELDS)}}}
            say(f"re-analyzing the {carried} document(s) of {source} that carry {contract.IMAGE_URL_FIELD} into "
                f"{target}")
        else:
            carried = total
            body = {"source": {"index": source, "size": 500}, "dest": {"index": target}}
            say(f"copying {total} document(s) of {source} into {target}")
        response = cluster.reindex(body, on_progress=_progress(say))
        if response.get("failures"):
            raise ClusterError(f"{len(response['failures'])} document(s) failed, e.g. {response['failures'][:2]}")
        cluster.refresh(target)
        indexed = cluster.count(target)
        dead = 0
        if d["reanalyze"] and d["dead_letter"]:
            cluster.refresh(d["dead_letter"])
            dead = cluster.count(d["dead_letter"], {"term": {f"{contract.FAILURE_FIELD}.index": target}})
        if retire_as:
            actions = [{"remove_index": {"index": source}}, {"add": {"index": target, "alias": name}}]
        else:
            actions = [{"remove": {"index": source, "alias": name}}, {"add": {"index": target, "alias": name}}]
        cluster.update_aliases(actions)
    except BaseException as exc:
        _roll_back(cluster, step, made)
        if isinstance(exc, ClusterError):
            raise ClusterError(f"replacing {name} failed and was rolled back ({name} serves {source} as before): "
                               f"{exc}", status=exc.status) from exc
        raise
    kept = retire_as or source
    outcome = f"{indexed} indexed in {target}"
    if d["reanalyze"]:
        outcome = (f"{carried} re-analyzed from {contract.IMAGE_URL_FIELD}: {indexed} indexed in {target}, "
                   f"{dead} dead-lettered with their {contract.IMAGE_URL_FIELD} and reason (`make replay`); "
                   f"{total - carried} sent as base64 must be re-sent (they stay in {kept})")
    step.detail = f"{'; '.join(d['reasons'])} → {name} is now an alias of {target}; {outcome}; {kept} kept read-only"
    step.data["result"] = {"target": target, "retired": kept, "indexed": indexed, "dead_lettered": dead,
                           "not_carried": total - carried}


def _progress(say: Callable[[str], None]) -> Callable[[dict], None]:
    """Reports a reindex task's progress when it moves (the task polls every few seconds for hours, maybe)."""
    last: list[int] = [-1]

    def report(status: dict) -> None:
        done, total = status.get("created", 0) + status.get("updated", 0), status.get("total", 0)
        if total and done != last[0]:
            last[0] = done
            say(f"  {done}/{total} document(s) done")
    return report


def _roll_back(cluster: Cluster, step: Step, made: list[str]) -> None:
    """Undo a replacement that did not finish: the old index takes writes again, nothing new is left behind."""
    d = step.data
    for index in reversed(made):
        with contextlib.suppress(ClusterError):  # gone already, or never fully created
            cluster.delete_index(index)
    if d["reanalyze"] and d["dead_letter"]:
        # dead letters of the failed re-analysis name the deleted version; their documents are still served
        with contextlib.suppress(ClusterError):
            cluster.delete_by_query(d["dead_letter"], {"term": {f"{contract.FAILURE_FIELD}.index": d["target"]}})
    cluster.block_writes(d["source"], False)


_APPLY: dict[tuple[str, str], Callable[[Cluster, Step, dict, Callable], None]] = {
    ("cluster_settings", "update"): _apply_settings,
    ("model_group", "create"): _create_group,
    ("model_group", "update"): _update_group,
    ("connector", "create"): _create_connector,
    ("connector", "update"): _update_connector,
    ("model", "create"): _create_model,
    ("model", "update"): _update_model,
    ("ingest_pipeline", "create"): _put_pipeline("put_ingest_pipeline"),
    ("ingest_pipeline", "update"): _put_pipeline("put_ingest_pipeline"),
    ("search_pipeline", "create"): _put_pipeline("put_search_pipeline"),
    ("search_pipeline", "update"): _put_pipeline("put_search_pipeline"),
    ("index_template", "create"): _put_template,
    ("index_template", "update"): _put_template,
    ("index", "create"): _create_index,
    ("index", "update"): _update_index,
    ("index", "replace"): _replace_index,
    ("ingest_pipeline", "delete"): _delete("delete_ingest_pipeline", by_id=False),
    ("search_pipeline", "delete"): _delete("delete_search_pipeline", by_id=False),
    ("model", "delete"): _delete_model,
    ("connector", "delete"): _delete("delete_connector"),
    ("model_group", "delete"): _delete("delete_model_group"),
    ("index_template", "delete"): _delete("delete_index_template", by_id=False),
}


# --- all three, as one call ----------------------------------------------------------------------------------------
class Reconciler:
    """observe → diff → apply for one config, the way the CLI, `make up` and the tests run the bootstrap.

    `dry_run` stops after the diff. `allow_reindex` lets the apply replace an index (see the module docstring);
    without it a plan that needs a replacement raises `ReplaceRefused` and changes nothing.
    """

    def __init__(self, cluster: Cluster, settings: Settings, dry_run: bool = False, allow_reindex: bool = False,
                 say: Callable[[str], None] | None = None) -> None:
        self.cluster = cluster
        self.settings = settings
        self.dry_run = dry_run
        self.allow_reindex = allow_reindex
        self.say = say

    def plan(self, clip: ClipFacts) -> Plan:
        return diff(desired_mod.desired_state(self.settings, clip), observe(self.cluster, self.settings),
                    rebuild_deferred=self.allow_reindex)

    def run(self, clip: ClipFacts) -> Plan:
        plan = self.plan(clip)
        if self.dry_run:
            return plan
        return apply(plan, self.cluster, allow_reindex=self.allow_reindex, say=self.say)
