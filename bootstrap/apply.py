"""The apply: a plan's steps executed in order, each created object's id filling the placeholders of the steps after.

It reads the cluster only where acting needs the current truth: a model's state right before undeploying it, a
replacement's document counts and its pre-flight analysis (`bootstrap.replace`). Connectors are updated in place
and keep their ids (their models are undeployed first: ML Commons refuses to update a connector a node holds a
model of), and models are deployed with the restart-safe `bootstrap.deploy.ModelDeployer`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from bootstrap.compare import CLOSED_SETTINGS, fingerprint, stamp
from bootstrap.deploy import ModelDeployer
from bootstrap.desired import deployment_of
from bootstrap.opensearch_api import Cluster, ClusterError
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
    ReplaceRefused,
    Step,
    refusal,
    resolve,
)
from bootstrap.replace import replace_index


@dataclass
class _Run:
    """What every step's handler works with."""

    cluster: Cluster
    models: ModelDeployer
    ids: dict[str, str]  # `kind:name` → id, growing as steps create objects
    say: Callable[[str], None]


def apply(plan: Plan, cluster: Cluster, *, allow_reindex: bool = False,
          say: Callable[[str], None] | None = None) -> Plan:
    """Execute the plan's steps in order; each created object's id fills the placeholders of the steps after it.

    A plan with a `replace` step is refused before anything is done unless `allow_reindex`. Returns the plan, its
    steps now carrying the ids of what was created and, for a replacement, what was carried over.
    """
    if plan.replacements and not allow_reindex:
        raise ReplaceRefused(refusal(plan), plan)
    run = _Run(cluster, ModelDeployer(cluster), plan.ids, say or (lambda message: None))
    for step in plan.steps:
        if step.action == "unchanged":
            continue
        _HANDLERS[(step.kind, step.action)](run, step)
        if step.id and step.action != "delete":
            run.ids[step.key] = step.id
    return plan


def _id(step: Step) -> str:
    assert step.id, f"{step.key} ({step.action}) has no id"
    return step.id


def _put_settings(run: _Run, step: Step) -> None:
    run.cluster.put_persistent_settings(step.payload(ClusterSettingsChange).values)


def _create_group(run: _Run, step: Step) -> None:
    data = step.payload(NewModelGroup)
    step.id = run.cluster.create_model_group(step.name, data.description, data.access or None)


def _update_group(run: _Run, step: Step) -> None:
    run.cluster.update_model_group(_id(step), step.payload(GroupAccess).access)


def _create_connector(run: _Run, step: Step) -> None:
    step.id = run.cluster.create_connector(step.payload(ConnectorBody).body)


# ML Commons' refusals (update, delete) name the models it counts as using the connector
_BLOCKERS = re.compile(r"models are still using this connector[^\[]*\[([^\]]*)\]")


def connector_blockers(error: ClusterError) -> list[str]:
    """The model ids ML Commons names when it refuses to change a connector "still used" by them; [] for another
    error."""
    found = _BLOCKERS.search(str(error))
    return [i.strip() for i in found.group(1).split(",") if i.strip()] if found else []


def _update_connector(run: _Run, step: Step) -> None:
    """Its own models are undeployed first. ML Commons 2.19 may still refuse: it counts as "using" the connector
    every deployed model whose connector id shares a word with this one's (a match query on the id as analyzed text,
    so ids that contain "-" share tokens; all ids a node generates share its middle part). Models managed by this
    bootstrap that it names are undeployed too, the update retried, and they are deployed again; another
    application's models are never touched: the error then says which to undeploy by hand."""
    data = step.payload(ConnectorBody)
    for model_id in data.undeploy:
        run.models.undeploy_if_held(model_id)
    try:
        run.cluster.update_connector(_id(step), data.body)
        return
    except ClusterError as exc:
        blockers = connector_blockers(exc)
        if not blockers:
            raise
        foreign = [m for m in blockers if deployment_of(run.cluster.get_model(m).get("description")) is None]
        if foreign:
            raise ClusterError(f"ML Commons refuses to update connector {step.name} ({_id(step)}) while models "
                               f"{', '.join(foreign)} are deployed: its check matches connector ids as text, so "
                               "models of other connectors can block it. Undeploy them, bootstrap again, and deploy "
                               "them again.") from exc
    run.say(f"connector {step.name}: ML Commons counted models {', '.join(blockers)} as its users (ids that share a "
            "word); undeployed for the update and deployed again")
    for model_id in blockers:
        run.models.undeploy_if_held(model_id)
    run.cluster.update_connector(_id(step), data.body)
    for model_id in blockers:
        if model_id not in data.undeploy:  # the connector's own models are deployed by their own steps
            run.models.deploy(model_id)


def delete_connector(cluster: Cluster, connector_id: str) -> str | None:
    """Deletes the connector; None when done, else why ML Commons 2.19 kept it. Its deletion check matches connector
    ids as text against every model, deployed or not (see `_update_connector`), so on some nodes a connector no model
    uses cannot be deleted while any other model exists: that is reported, not raised. A real user raises."""
    try:
        cluster.delete_connector(connector_id)
        return None
    except ClusterError as exc:
        blockers = connector_blockers(exc)
        if not blockers or any(cluster.get_model(m).get("connector_id") == connector_id for m in blockers):
            raise
        return (f"ML Commons kept it: it counts models {', '.join(blockers)} as its users (their ids share a word "
                "with its id); no model uses it")


def _delete_connector(run: _Run, step: Step) -> None:
    kept = delete_connector(run.cluster, _id(step))
    if kept:
        step.detail += f"; {kept}"
        run.say(f"connector {step.name} ({step.id}): {kept}")


def _create_model(run: _Run, step: Step) -> None:
    step.id = run.cluster.register_model(resolve(step.payload(NewModel).body, run.ids))
    run.models.deploy(step.id, name=step.name)
    step.detail = "registered + deployed"


def _update_model(run: _Run, step: Step) -> None:
    model_id = _id(step)
    changes = resolve(step.payload(ModelChanges).changes, run.ids)
    if changes:
        run.models.undeploy_if_held(model_id)
        run.cluster.update_model(model_id, changes)
    # waits for a deploy already in flight (ML Commons redeploys by itself after a restart) instead of racing it,
    # and retries what ML Commons reports as transient
    run.models.deploy(model_id, name=step.name)


def _put_pipeline(run: _Run, step: Step) -> None:
    body = resolve(step.payload(Definition).body, run.ids)
    body = {**body, "description": stamp(body.get("description", ""), fingerprint(body))}
    put = run.cluster.put_ingest_pipeline if step.kind == "ingest_pipeline" else run.cluster.put_search_pipeline
    put(step.name, body)


def _put_template(run: _Run, step: Step) -> None:
    run.cluster.put_index_template(step.name, step.payload(Definition).body)


def _create_index(run: _Run, step: Step) -> None:
    data = step.payload(NewIndex)
    run.cluster.create_index(data.index, data.body)


def _update_index(run: _Run, step: Step) -> None:
    data = step.payload(IndexChanges)
    closed = {k: v for k, v in data.settings.items() if k in CLOSED_SETTINGS}
    if data.reopen:
        run.say(f"reopening {data.index}, left closed by an interrupted change")
        if closed:
            run.cluster.put_index_settings(data.index, closed)
        run.cluster.open_index(data.index)
    elif closed:
        run.say(f"closing {data.index} for a moment to change {', '.join(sorted(closed))}")
        run.cluster.put_closed_index_settings(data.index, closed)
    if len(closed) < len(data.settings):
        run.cluster.put_index_settings(data.index, {k: v for k, v in data.settings.items() if k not in closed})
    if data.mapping:
        run.cluster.put_mapping(data.index, data.mapping)


def _replace_index(run: _Run, step: Step) -> None:
    replace_index(run.cluster, step, run.say)


def _delete_model(run: _Run, step: Step) -> None:
    run.models.undeploy_if_held(_id(step))
    run.cluster.delete_model(_id(step))


_HANDLERS: dict[tuple[str, str], Callable[[_Run, Step], None]] = {
    ("cluster_settings", "update"): _put_settings,
    ("model_group", "create"): _create_group,
    ("model_group", "update"): _update_group,
    ("connector", "create"): _create_connector,
    ("connector", "update"): _update_connector,
    ("model", "create"): _create_model,
    ("model", "update"): _update_model,
    ("ingest_pipeline", "create"): _put_pipeline,
    ("ingest_pipeline", "update"): _put_pipeline,
    ("search_pipeline", "create"): _put_pipeline,
    ("search_pipeline", "update"): _put_pipeline,
    ("index_template", "create"): _put_template,
    ("index_template", "update"): _put_template,
    ("index", "create"): _create_index,
    ("index", "update"): _update_index,
    ("index", "replace"): _replace_index,
    ("ingest_pipeline", "delete"): lambda run, step: run.cluster.delete_ingest_pipeline(step.name),
    ("search_pipeline", "delete"): lambda run, step: run.cluster.delete_search_pipeline(step.name),
    ("model", "delete"): _delete_model,
    ("connector", "delete"): _delete_connector,
    ("model_group", "delete"): lambda run, step: run.cluster.delete_model_group(_id(step)),
    ("index_template", "delete"): lambda run, step: run.cluster.delete_index_template(step.name),
}
