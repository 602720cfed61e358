"""The plan: steps in dependency order, each an action on one object, saying why, carrying what applying it needs.

A step is `create`, `update`, `replace`, `delete` or `unchanged`. What the apply needs is the step's `data`, one
typed value per kind of change (`NewModel`, `IndexChanges`, `Replacement`, ...); deletes and unchanged steps carry
none. Ids that only the apply will know (a model this run creates) are `bootstrap.desired.ref` placeholders in
the data, resolved against `Plan.ids` as the apply goes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, TypeVar

from common.errors import VisualSearchError

ACTIONS = ("create", "update", "replace", "delete", "unchanged")
# A placeholder as `bootstrap.desired.ref` writes it.
_REF = re.compile(r"^<pending:([a-z_]+):(.+)>$")

D = TypeVar("D")


@dataclass(frozen=True)
class ClusterSettingsChange:
    values: dict[str, Any]  # only the persistent settings that differ


@dataclass(frozen=True)
class NewModelGroup:
    description: str
    access: dict[str, Any]  # access_mode + backend_roles; {}: not managed


@dataclass(frozen=True)
class GroupAccess:
    access: dict[str, Any]


@dataclass(frozen=True)
class ConnectorBody:
    body: dict  # stamped with its fingerprint
    undeploy: tuple[str, ...] = ()  # models of the connector that nodes hold: ML Commons updates it only without


@dataclass(frozen=True)
class NewModel:
    body: dict  # placeholders allowed (its connector and group may be created by the same apply)


@dataclass(frozen=True)
class ModelChanges:
    changes: dict[str, str]  # fields to update, placeholders allowed; {}: only deploy it


@dataclass(frozen=True)
class Definition:
    body: dict  # a pipeline's or index template's, placeholders allowed


@dataclass(frozen=True)
class NewIndex:
    index: str
    body: dict  # settings and mappings


@dataclass(frozen=True)
class IndexChanges:
    index: str  # the concrete index
    settings: dict[str, Any]  # to put in place (a closed-only one closes it for a moment); None values remove
    mapping: dict | None  # a put-mapping body, or None
    reopen: bool  # left closed by an interrupted change


@dataclass(frozen=True)
class ReplaceResult:
    target: str  # the version now behind the name
    retired: str  # the version kept read-only
    indexed: int
    dead_lettered: int
    not_carried: int  # documents sent as base64: they stay in `retired` until re-sent


@dataclass
class Replacement:
    """A new version of an index. `pipeline`: its documents are re-analyzed through it (new vectors, from their
    `image_url`); None: copied as they are."""

    source: str  # the concrete index serving now
    target: str  # `<name>-v<N>`
    retire_as: str | None  # a concrete index named `<name>` is first cloned to this (OpenSearch cannot rename)
    body: dict
    reasons: tuple[str, ...]
    pipeline: str | None = None
    dimension: int | None = None  # what a re-analysis must produce
    dead_letter: str | None = None  # where the pipeline sends documents it cannot analyze
    result: ReplaceResult | None = None  # set by the apply

    @property
    def retired(self) -> str:
        return self.retire_as or self.source


StepData = (ClusterSettingsChange | NewModelGroup | GroupAccess | ConnectorBody | NewModel | ModelChanges | Definition
            | NewIndex | IndexChanges | Replacement)


@dataclass
class Step:
    kind: str
    name: str
    action: str  # create | update | replace | delete | unchanged
    id: str | None = None
    detail: str = ""  # why
    data: StepData | None = field(default=None, repr=False, compare=False)  # what apply needs

    @property
    def key(self) -> str:
        return f"{self.kind}:{self.name}"

    def payload(self, kind: type[D]) -> D:
        """The step's data, which must be a `kind`: a handler's claim about the diff, checked."""
        if not isinstance(self.data, kind):
            raise TypeError(f"{self.key} ({self.action}) carries {type(self.data).__name__}, not {kind.__name__}")
        return self.data

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


class ReplaceRefused(VisualSearchError):
    """The plan replaces an index (re-indexing its documents) and the caller did not allow it; nothing was done.

    Its message names the index, the reason and the flag that allows it; `plan` is the refused plan."""

    def __init__(self, message: str, plan: Plan) -> None:
        super().__init__(message)
        self.plan = plan


def refusal(plan: Plan) -> str:
    """Why a plan with replacements is not applied without `allow_reindex`, and what allowing it would do."""
    lines = ["refused: this plan replaces an index, which re-indexes its documents and refuses writes to it while "
             "that runs:"]
    for step in plan.replacements:
        lines.append(f"  {step.name}: {step.detail}")
    lines.append("Run the bootstrap again with --allow-reindex to replace it (see `bootstrap --dry-run` for the "
                 "whole plan). Nothing was changed.")
    return "\n".join(lines)


def resolve(value: Any, ids: dict[str, str], strict: bool = True) -> Any:
    """`value` with every placeholder whose object has an id swapped for it (all of them when `strict`)."""
    if isinstance(value, dict):
        return {k: resolve(v, ids, strict) for k, v in value.items()}
    if isinstance(value, list):
        return [resolve(v, ids, strict) for v in value]
    if isinstance(value, str) and (found := _REF.match(value)):
        key = f"{found[1]}:{found[2]}"
        if key in ids:
            return ids[key]
        if strict:
            raise RuntimeError(f"the plan refers to {key}, which no earlier step created")
    return value


def has_refs(value: Any) -> bool:
    if isinstance(value, dict):
        return any(has_refs(v) for v in value.values())
    if isinstance(value, list):
        return any(has_refs(v) for v in value)
    return isinstance(value, str) and bool(_REF.match(value))
