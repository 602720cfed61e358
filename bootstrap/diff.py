"""The diff: the steps that take what the cluster has (`Observed`) to what the config wants (`Desired`). Pure.

Steps come in the order the apply must run them, which is dependency order: cluster settings → model group →
connector → model → pipelines → index templates → indices → prunes. Each says why. A change an existing index
cannot take (`bootstrap.compare`) is a `replace` step; one to a deferred setting or parameter replaces the index
only with `rebuild_deferred` (the bootstrap's `allow_reindex`), otherwise the index keeps its value and the step
says so.

**Prune.** Managed objects that are no longer desired (a connector or model left from an old name, a pipeline or
template renamed in the config) are `delete` steps, as are duplicates of a desired name left by an interrupted
run (the oldest is the one kept). Managed means the description carries the marker of *this* deployment (the
images index name); objects of another deployment on the same cluster, or without the marker, are never deleted.
A connector or model group still used by a model that stays is kept. Retired index versions are never deleted:
they may hold the only copy of base64 documents not yet re-sent; the plan lists each one (as `unchanged`, with its
document count) until someone deletes it.
"""

from __future__ import annotations

from bootstrap.compare import (
    CLOSED_SETTINGS,
    canon,
    compare_mapping,
    compare_settings,
    fingerprint,
    in_place_mapping,
    stamp,
    stamped,
)
from bootstrap.desired import Desired, DesiredIndex, DesiredModel, deployment_of, ref
from bootstrap.observe import MLObject, Observed, ObservedIndex, oldest_named, version_of
from bootstrap.opensearch_api import DEPLOYED, IDLE_STATES
from bootstrap.plan import (
    ClusterSettingsChange,
    ConnectorBody,
    Definition,
    GroupAccess,
    IndexChanges,
    ModelChanges,
    NewIndex,
    NewModel,
    NewModelGroup,
    Plan,
    Replacement,
    Step,
    has_refs,
    resolve,
)
from common import contract


def diff(desired: Desired, observed: Observed, rebuild_deferred: bool = False) -> Plan:
    """The steps that take `observed` to `desired`, in the order `apply` must run them. Reads nothing.

    `rebuild_deferred`: a difference in a deferred setting alone replaces the index (else it waits for a rebuild).
    """
    plan = Plan()
    _settings_step(plan, desired, observed)
    group_id = _group_step(plan, desired, observed)
    connectors = {body["name"]: body for body in desired.connectors}
    for model in desired.models:
        connector = _connector_step(plan, connectors[model.connector], observed)
        _model_step(plan, model, connector, group_id, observed)
    for kind, wanted_pipelines, found_pipelines in (
            ("ingest_pipeline", desired.ingest_pipelines, observed.ingest_pipelines),
            ("search_pipeline", desired.search_pipelines, observed.search_pipelines)):
        for name, body in wanted_pipelines.items():
            _pipeline_step(plan, kind, name, resolve(body, plan.ids, strict=False), found_pipelines.get(name))
    for index in desired.indices:
        _template_step(plan, index.name, index.template, observed.index_templates.get(index.name))
        found = observed.indices.get(index.name) or ObservedIndex(index.name)
        plan.add(_index_step(index, found, rebuild_deferred))
        _retired_steps(plan, index, found)
    _prune_steps(plan, desired, observed)
    return plan


def _settings_step(plan: Plan, desired: Desired, observed: Observed) -> None:
    wanted = {k: v for k, v in desired.cluster_settings.items()
              if canon(observed.cluster_settings.get(k)) != canon(v)}
    plan.add(Step("cluster_settings", "ml_commons", "update" if wanted else "unchanged",
                  detail=f"differs: {', '.join(sorted(wanted))}" if wanted else "",
                  data=ClusterSettingsChange(wanted)))


def _group_step(plan: Plan, desired: Desired, observed: Observed) -> str:
    """The model group's step; its id, or the placeholder for the one this plan creates."""
    group = oldest_named(observed.model_groups, desired.model_group)
    access = desired.model_group_access
    if group is None:
        plan.add(Step("model_group", desired.model_group, "create", detail="not found",
                      data=NewModelGroup(desired.model_group_description, access)))
        return ref("model_group", desired.model_group)
    if access and (group.access != access["access_mode"]
                   or sorted(group.backend_roles) != sorted(access["backend_roles"])):
        plan.add(Step("model_group", desired.model_group, "update", group.id,
                      detail=f"access {group.access or 'unset'} {list(group.backend_roles)} → {access['access_mode']} "
                             f"{access['backend_roles']}", data=GroupAccess(access)))
    else:
        plan.add(Step("model_group", desired.model_group, "unchanged", group.id))
    return group.id


def _connector_step(plan: Plan, body: dict, observed: Observed) -> Step:
    fp = fingerprint(body)
    stamped_body = {**body, "description": stamp(body["description"], fp)}
    name = body["name"]
    found = oldest_named(observed.connectors, name)
    if found is None:
        return plan.add(Step("connector", name, "create", detail="not found", data=ConnectorBody(stamped_body)))
    if stamped(found.description, fp):
        return plan.add(Step("connector", name, "unchanged", found.id))
    # ML Commons only updates a connector no node holds a model of: a model stuck deploying counts
    holders = tuple(m.id for m in observed.models if m.connector_id == found.id and m.state not in IDLE_STATES)
    why = "definition changed" + (f"; its model(s) {', '.join(holders)} are undeployed first" if holders else "")
    return plan.add(Step("connector", name, "update", found.id, why, data=ConnectorBody(stamped_body, holders)))


def _model_step(plan: Plan, want: DesiredModel, connector: Step, group_id: str, observed: Observed) -> Step:
    connector_id = connector.id or ref("connector", connector.name)
    found = oldest_named(observed.models, want.name)
    if found is None:
        body = {"name": want.name, "function_name": "remote", "model_group_id": group_id,
                "connector_id": connector_id, "description": want.description}
        return plan.add(Step("model", want.name, "create", detail="not found: register + deploy",
                             data=NewModel(body)))
    changes: dict[str, str] = {}
    why = []
    if found.connector_id != connector_id:
        changes["connector_id"] = connector_id
        why.append("connector changed")
    if found.description != want.description:
        changes["description"] = want.description
        why.append("description changed")
    # A connector updated in place leaves its model undeployed: deploying is the change.
    if connector.action == "update":
        why.append("redeploy (its connector is updated in place)")
    elif not found.deployed:
        why.append("deploy (recorded DEPLOYED, but no node serves it)" if found.state == DEPLOYED
                   else f"deploy (was {found.state or 'unknown'})")
    if not why:
        return plan.add(Step("model", want.name, "unchanged", found.id))
    return plan.add(Step("model", want.name, "update", found.id, "; ".join(why), data=ModelChanges(changes)))


def _pipeline_step(plan: Plan, kind: str, name: str, body: dict, found: dict | None) -> Step:
    if has_refs(body):  # it names a model this apply creates: it cannot match what exists
        return plan.add(Step(kind, name, "update" if found else "create",
                             detail="refers to a model created by this plan" if found else "not found",
                             data=Definition(body)))
    if found and stamped(found.get("description"), fingerprint(body)):
        return plan.add(Step(kind, name, "unchanged"))
    return plan.add(Step(kind, name, "update" if found else "create",
                         detail="definition changed" if found else "not found", data=Definition(body)))


def _template_step(plan: Plan, name: str, body: dict, found: dict | None) -> Step:
    fp = fingerprint(body)
    stamped_body = {**body, "_meta": {**body.get("_meta", {}), "fingerprint": fp}}
    if found and found.get("_meta", {}).get("fingerprint") == fp:
        return plan.add(Step("index_template", name, "unchanged"))
    return plan.add(Step("index_template", name, "update" if found else "create",
                         detail="definition changed" if found else "not found", data=Definition(stamped_body)))


def _index_step(want: DesiredIndex, found: ObservedIndex, rebuild_deferred: bool) -> Step:
    template = want.template["template"]
    body = {"settings": template.get("settings", {}), "mappings": template.get("mappings", {})}
    if found.concrete is None:
        return Step("index", want.name, "create", detail="not found", data=NewIndex(want.name, body))
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
        return _replace_step(want, found, body, replace)
    if not (mapping_changes or dynamic or found.closed):
        return Step("index", want.name, "unchanged", detail=where.strip())
    why = ", ".join(mapping_changes + [f"setting {k}" for k in sorted(dynamic)])
    if found.closed:
        why = ", ".join(filter(None, ["reopened (left closed by an interrupted change)", why]))
        why += f"; bootstrap again for: {'; '.join(replace)}" if replace else ""
    elif CLOSED_SETTINGS & dynamic.keys():
        why += " (closed for a moment: searches and writes to it fail until it reopens)"
    mapping = in_place_mapping(body["mappings"], found.mapping) if mapping_changes else None
    return Step("index", want.name, "update", detail=f"in place{where}: {why}",
                data=IndexChanges(found.concrete, dynamic, mapping, found.closed))


def _retired_steps(plan: Plan, want: DesiredIndex, found: ObservedIndex) -> None:
    for version, docs in sorted(found.versions.items(), key=lambda item: version_of(item[0], want.name) or 0):
        if version != found.concrete:
            plan.add(Step("index", version, "unchanged",
                          detail=f"retired version of {want.name}, read-only, {docs} document(s): documents sent as "
                                 "base64 stay here until re-sent; delete it by hand when no longer needed"))


def _replace_step(want: DesiredIndex, found: ObservedIndex, body: dict, reasons: list[str]) -> Step:
    assert found.concrete is not None
    n = max((version_of(v, want.name) or 0 for v in found.versions), default=0) + 1
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
    return Step("index", want.name, "replace", detail=detail, data=Replacement(
        source=found.concrete, target=target, retire_as=retire_as, body=body, reasons=tuple(reasons),
        pipeline=want.pipeline if want.reanalyze else None, dimension=want.dimension, dead_letter=want.dead_letter))


# --- prune -----------------------------------------------------------------------------------------------------------
def _prune_steps(plan: Plan, desired: Desired, observed: Observed) -> None:
    """Deletes managed objects of this deployment that are no longer desired, and duplicates of desired names."""
    ours = desired.deployment
    for kind, found, wanted in (("ingest_pipeline", observed.ingest_pipelines, desired.ingest_pipelines),
                                ("search_pipeline", observed.search_pipelines, desired.search_pipelines)):
        for name, body in sorted(found.items()):
            if name not in wanted and deployment_of(body.get("description")) == ours:
                plan.add(Step(kind, name, "delete", detail=f"no longer desired by deployment {ours}"))
    gone = _prune_models(plan, desired, observed)
    future_connector, future_group = _future_users(plan, desired, observed, gone)
    for kind, objects, names, users in (
            ("connector", observed.connectors, {c["name"] for c in desired.connectors}, future_connector),
            ("model_group", observed.model_groups, {desired.model_group}, future_group)):
        for obj, why in _doomed(objects, names, ours):
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


def _doomed(objects: tuple[MLObject, ...], names: set[str], ours: str) -> list[tuple[MLObject, str]]:
    """Managed objects to delete, with why: duplicates of a desired name, and this deployment's undesired ones."""
    out = []
    for obj in objects:
        deployment = deployment_of(obj.description)
        if deployment is None:
            continue  # not managed by the bootstrap
        if obj.name in names:
            kept = oldest_named(objects, obj.name)
            if kept is not None and kept.id != obj.id:
                out.append((obj, f"duplicate of {obj.name} (the oldest, {kept.id}, is kept)"))
        elif deployment == ours:
            out.append((obj, f"no longer desired by deployment {ours}"))
    return out


def _prune_models(plan: Plan, desired: Desired, observed: Observed) -> set[str]:
    """The delete steps of models; the ids of the models they delete."""
    doomed = _doomed(observed.models, {m.name for m in desired.models}, desired.deployment)
    for model, why in doomed:
        plan.add(Step("model", model.name, "delete", model.id, why + (
            "; undeployed first" if model.state not in IDLE_STATES else "")))
    return {m.id for m, _ in doomed}


def _future_users(plan: Plan, desired: Desired, observed: Observed,
                  gone: set[str]) -> tuple[dict[str, str | None], dict[str, str | None]]:
    """Which connector and which model group each model that stays will use once the plan is applied."""
    staying = [m for m in observed.models if m.id not in gone]
    connector: dict[str, str | None] = {m.id: m.connector_id for m in staying}
    group: dict[str, str | None] = {m.id: m.model_group_id for m in staying}
    for m in desired.models:
        step = plan.step("model", m.name)
        if step is not None and step.id:
            connector[step.id] = plan.ids.get(f"connector:{m.connector}")
            group[step.id] = plan.ids.get(f"model_group:{desired.model_group}", group.get(step.id))
    return connector, group
