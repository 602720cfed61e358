"""The bootstrap as a reconciler: render what should exist, read what exists, apply only the difference.

Every managed object carries a fingerprint of its rendered definition (in its description or `_meta`), so
"changed?" is one string comparison and objects are updated in place, keeping their ids. `dry_run` only
reports the plan.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from bootstrap import desired
from bootstrap.opensearch_api import DEPLOYED, IDLE_STATES, Cluster
from common.config import Settings
from common.model_facts import ClipFacts

PENDING = "<pending>"


def fingerprint(body: Any) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]


def _stamp(description: str, fp: str) -> str:
    return f"{description} [fp:{fp}]"


def _stamped(existing: str | None, fp: str) -> bool:
    return bool(existing) and f"[fp:{fp}]" in existing


@dataclass
class Step:
    kind: str
    name: str
    action: str  # create | update | unchanged
    id: str | None = None
    detail: str = ""

    def __str__(self) -> str:
        ident = f" ({self.id})" if self.id and self.id != PENDING else ""
        return f"{self.action:>9}  {self.kind:<16} {self.name}{ident}{'  ' + self.detail if self.detail else ''}"


@dataclass
class Plan:
    steps: list[Step] = field(default_factory=list)
    ids: dict[str, str] = field(default_factory=dict)

    def add(self, step: Step) -> Step:
        self.steps.append(step)
        if step.id:
            self.ids[f"{step.kind}:{step.name}"] = step.id
        return step

    @property
    def changes(self) -> list[Step]:
        return [s for s in self.steps if s.action != "unchanged"]


class Reconciler:
    def __init__(self, cluster: Cluster, settings: Settings, dry_run: bool = False) -> None:
        self.cluster = cluster
        self.settings = settings
        self.dry_run = dry_run
        self.plan = Plan()

    # --- one method per kind ------------------------------------------------------------------------
    def cluster_settings(self) -> Step:
        wanted = desired.cluster_settings(self.settings)
        current = self.cluster.persistent_settings()
        differs = {k: v for k, v in wanted.items() if current.get(k) != v}
        if differs and not self.dry_run:
            self.cluster.put_persistent_settings(differs)
        return self.plan.add(Step("cluster_settings", "ml_commons", "update" if differs else "unchanged",
                                  detail=", ".join(sorted(differs))))

    def model_group(self) -> Step:
        name = self.settings.ml_commons.model_group
        found = self.cluster.find_model_group(name)
        if found:
            return self.plan.add(Step("model_group", name, "unchanged", found["id"]))
        new_id = PENDING if self.dry_run else self.cluster.create_model_group(name, desired.MANAGED)
        return self.plan.add(Step("model_group", name, "create", new_id))

    def connector(self, body: dict) -> Step:
        fp = fingerprint(body)
        body = {**body, "description": _stamp(body["description"], fp)}
        name = body["name"]
        found = self.cluster.find_connector(name)
        if found is None:
            new_id = PENDING if self.dry_run else self.cluster.create_connector(body)
            return self.plan.add(Step("connector", name, "create", new_id))
        if _stamped(found.get("description"), fp):
            return self.plan.add(Step("connector", name, "unchanged", found["id"]))
        step = self.plan.add(Step("connector", name, "update", found["id"], "definition changed"))
        if not self.dry_run:
            model = self.cluster.find_model(name)
            # ML Commons only updates a connector no node holds a model of: a model stuck deploying counts
            if model and self.cluster.model_state(model["id"]) not in IDLE_STATES:
                self.cluster.undeploy_model(model["id"])
            self.cluster.update_connector(found["id"], body)
        return step

    def model(self, name: str, connector: Step, group: Step, description: str) -> Step:
        body = {"name": name, "function_name": "remote", "model_group_id": group.id,
                "connector_id": connector.id, "description": description}
        found = self.cluster.find_model(name)
        if found is None:
            if self.dry_run:
                return self.plan.add(Step("model", name, "create", PENDING, "register + deploy"))
            model_id = self.cluster.register_model(body)
            self.cluster.deploy_model(model_id, name=name)
            return self.plan.add(Step("model", name, "create", model_id, "registered + deployed"))
        model_id = found["id"]
        needs_update = found.get("connector_id") != connector.id
        # Deployed means recorded DEPLOYED *and* held by a node: after a restart the record still says DEPLOYED
        # while no node serves the model. A connector updated in place leaves its model undeployed: deploying
        # again is the change.
        state = self.cluster.model_state(model_id)
        deployed = state == DEPLOYED and bool(self.cluster.served_on(model_id))
        if not needs_update and deployed:
            return self.plan.add(Step("model", name, "unchanged", model_id))
        if needs_update:
            detail = "connector changed"
        elif state == DEPLOYED:
            detail = "deploy (recorded DEPLOYED, but no node serves it)"
        else:
            detail = f"deploy (was {state or 'unknown'})"
        if not self.dry_run:
            if needs_update:
                if state not in IDLE_STATES:
                    self.cluster.undeploy_model(model_id)
                self.cluster.update_model(model_id, {"connector_id": connector.id})
            # waits for a deploy already in flight (ML Commons redeploys by itself after a restart) instead of
            # racing it, and retries what ML Commons reports as transient
            self.cluster.deploy_model(model_id, name=name)
        return self.plan.add(Step("model", name, "update", model_id, detail))

    def ingest_pipeline(self, body: dict) -> Step:
        return self._put_if_changed("ingest_pipeline", self.settings.index.ingest_pipeline, body,
                                    self.cluster.get_ingest_pipeline, self.cluster.put_ingest_pipeline)

    def search_pipeline(self, body: dict) -> Step:
        return self._put_if_changed("search_pipeline", self.settings.index.search_pipeline, body,
                                    self.cluster.get_search_pipeline, self.cluster.put_search_pipeline)

    def index_template(self, name: str, body: dict) -> Step:
        fp = fingerprint(body)
        body = {**body, "_meta": {**body.get("_meta", {}), "fingerprint": fp}}
        found = self.cluster.get_index_template(name)
        if found and found.get("_meta", {}).get("fingerprint") == fp:
            return self.plan.add(Step("index_template", name, "unchanged"))
        if not self.dry_run:
            self.cluster.put_index_template(name, body)
        return self.plan.add(Step("index_template", name, "update" if found else "create"))

    def index(self, name: str, template: dict) -> Step:
        if not self.cluster.index_exists(name):
            if not self.dry_run:
                self.cluster.create_index(name)
            return self.plan.add(Step("index", name, "create"))
        # an existing index keeps its mapping; only the pipeline defaults can follow the template
        wanted = {f"index.{k}": v for k, v in template["template"]["settings"]["index"].items()
                  if k in ("search.default_pipeline", "default_pipeline")}
        current = self.cluster.index_settings(name)
        differs = {k: v for k, v in wanted.items() if current.get(k) != v}
        if differs and not self.dry_run:
            self.cluster.put_index_settings(name, differs)
        return self.plan.add(Step("index", name, "update" if differs else "unchanged",
                                  detail=", ".join(sorted(differs))))

    def _put_if_changed(self, kind: str, name: str, body: dict, get, put) -> Step:
        fp = fingerprint(body)
        body = {**body, "description": _stamp(body.get("description", ""), fp)}
        found = get(name)
        if found and _stamped(found.get("description"), fp):
            return self.plan.add(Step(kind, name, "unchanged"))
        if not self.dry_run:
            put(name, body)
        return self.plan.add(Step(kind, name, "update" if found else "create"))

    # --- the whole desired state, in dependency order -----------------------------------------------
    def run(self, clip: ClipFacts) -> Plan:
        s = self.settings
        self.cluster_settings()
        group = self.model_group()
        embed_connector = self.connector(desired.embed_connector(s, clip))
        embed_model = self.model(s.ml_commons.embed_model, embed_connector, group,
                                 f"{clip.variant} embeddings (text or image); {desired.MANAGED}")
        analyze_connector = self.connector(desired.analyze_connector(s, clip))
        analyze_model = self.model(s.ml_commons.analyze_model, analyze_connector, group,
                                   f"{clip.variant} + detector image analysis; {desired.MANAGED}")
        self.ingest_pipeline(desired.ingest_pipeline(s, analyze_model.id or PENDING))
        self.search_pipeline(desired.search_pipeline(s, embed_model.id or PENDING))
        dead_letter = desired.dead_letter_index_template(s)
        self.index_template(s.index.dead_letter, dead_letter)
        self.index(s.index.dead_letter, dead_letter)
        template = desired.images_index_template(s, clip, ingest_pipeline=s.index.ingest_pipeline)
        self.index_template(s.index.name, template)
        self.index(s.index.name, template)
        return self.plan
