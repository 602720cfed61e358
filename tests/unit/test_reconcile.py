"""The reconciler's plan and apply against an in-memory cluster: no servers, a few seconds.

`MemoryCluster` stands in for `bootstrap.opensearch_api.Cluster` with the rules of OpenSearch and ML Commons that
the reconciler must respect (a connector is not updated while a model of it is deployed; a clone needs a write
block; a write to a blocked index is refused; a vector of the wrong dimension fails its document), so an apply that
breaks one of them fails here. The real cluster's behaviour is tested in tests/integration/test_reindex.py and
tests/integration/test_bootstrap_safety.py.
"""

from __future__ import annotations

import copy
import fnmatch
import itertools
import json
from typing import Any, cast

import pytest

from bootstrap.apply import apply, delete_connector
from bootstrap.compare import MappingDiff, compare_mapping
from bootstrap.desired import MANAGED, desired_state
from bootstrap.diff import diff
from bootstrap.observe import observe
from bootstrap.opensearch_api import Cluster, ClusterError
from bootstrap.plan import Plan, Replacement, ReplaceRefused, ReplaceResult, Step
from bootstrap.reconcile import Reconciler
from common import contract
from common.config import Settings, load_config
from common.model_facts import ClipFacts

S2 = ClipFacts(weights="test", exported_at="2026-01-01T00:00:00Z", variant="MobileCLIP2-S2", embedding_dim=512,
               image_size=256, mean=(0, 0, 0), std=(1, 1, 1), interpolation="bilinear", context_length=77,
               vocab_size=49408)
S3 = S2.model_copy(update={"variant": "MobileCLIP2-S3", "embedding_dim": 768,
                           "mean": (0.48145466, 0.4578275, 0.40821073),
                           "std": (0.26862954, 0.26130258, 0.27577711)})
WRITES = ("put_", "create_", "update_", "register_", "deploy_", "undeploy_", "delete_", "block_", "clone_", "reindex")


def _flat(settings: dict, prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in settings.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = str(value).lower() if isinstance(value, bool) else str(value)
    return out


def _get(doc: dict, path: str) -> Any:
    for part in path.split("."):
        if not isinstance(doc, dict) or part not in doc:
            return None
        doc = doc[part]
    return doc


class MemoryCluster:
    """The `Cluster` methods the reconciler uses, over dictionaries. `calls` records every write, in order."""

    def __init__(self, served_dim: int = 512, dead_letter: str = "images-failed", id_word: str = "") -> None:
        self.served_dim = served_dim  # what the "model behind the adapter" produces
        # ML Commons 2.19 finds a connector's users with a match query on the id as analyzed text: with `id_word`
        # every id this cluster makes holds that word between hyphens (as every id of a node shares its middle part),
        # so every deployed model counts as a user of every connector
        self.id_word = id_word
        self.dead_letter = dead_letter  # where the "ingest pipeline" sends what it cannot analyze
        self.unreachable_urls: set[str] = set()  # image_url documents whose image no longer answers
        self.fail_reindex = False
        self.recovering = False  # as a node is after a restart, until `wait_primaries_active`
        self.calls: list[tuple[str, Any]] = []
        self._ids = itertools.count(1)
        self._clock = itertools.count(1000)
        self.settings: dict[str, Any] = {}
        self.ml: dict[str, dict[str, dict]] = {"model_groups": {}, "connectors": {}, "models": {}}
        self.ingest: dict[str, dict] = {}
        self.search: dict[str, dict] = {}
        self.templates: dict[str, dict] = {}
        self.indices: dict[str, dict] = {}  # name → {mappings, settings (flat), docs}
        self.aliases: dict[str, str] = {}
        self.closed: set[str] = set()

    def _write(self, name: str, arg: Any = None) -> None:
        self.calls.append((name, arg))

    def _new(self, kind: str, record: dict) -> str:
        new_id = f"{kind[:-1]}-{self.id_word}-{next(self._ids)}" if self.id_word else f"{kind[:-1]}-{next(self._ids)}"
        self.ml[kind][new_id] = {**record, "created_time": next(self._clock)}
        return new_id

    # --- ML Commons --------------------------------------------------------------------------------------------
    def persistent_settings(self) -> dict:
        return dict(self.settings)

    def put_persistent_settings(self, values: dict) -> None:
        self._write("put_persistent_settings", values)
        self.settings.update(values)

    def search_ml(self, kind: str) -> list[dict]:
        records = sorted(self.ml[kind].items(), key=lambda item: item[1]["created_time"])
        return [{"id": k, **copy.deepcopy(v)} for k, v in records]

    def get_connector(self, connector_id: str) -> dict:
        return {"id": connector_id, **copy.deepcopy(self.ml["connectors"][connector_id])}

    def get_model(self, model_id: str) -> dict:
        return {"id": model_id, **copy.deepcopy(self.ml["models"][model_id])}

    def create_model_group(self, name: str, description: str, access: dict | None = None) -> str:
        self._write("create_model_group", name)
        return self._new("model_groups", {"name": name, "description": description})

    def create_connector(self, body: dict) -> str:
        self._write("create_connector", body["name"])
        return self._new("connectors", copy.deepcopy(body))

    def update_connector(self, connector_id: str, body: dict) -> None:
        self._write("update_connector", connector_id)
        users = [model_id for model_id, m in self.ml["models"].items() if self._uses(m, connector_id)
                 and m["model_state"] == "DEPLOYED"]
        if users:
            raise ClusterError(f"{len(users)} models are still using this connector, please undeploy the models "
                               f"first: [{', '.join(users)}]", 400)
        self.ml["connectors"][connector_id].update(copy.deepcopy(body))

    @staticmethod
    def _words(object_id: str) -> set[str]:
        return set(object_id.lower().split("-"))

    def _uses(self, model: dict, connector_id: str) -> bool:
        """Whether ML Commons 2.19 counts `model` as a user of the connector: any word of the ids in common (the
        ids of this double are one word each unless `id_word`)."""
        if not self.id_word:
            return model["connector_id"] == connector_id
        return bool(self._words(model["connector_id"]) & self._words(connector_id))

    def register_model(self, body: dict) -> str:
        self._write("register_model", body["name"])
        assert body["connector_id"] in self.ml["connectors"], body
        assert body["model_group_id"] in self.ml["model_groups"], body
        return self._new("models", {**copy.deepcopy(body), "model_state": "REGISTERED", "held": False})

    def update_model(self, model_id: str, body: dict) -> None:
        self._write("update_model", (model_id, body))
        model = self.ml["models"][model_id]
        if "connector_id" in body and model["model_state"] == "DEPLOYED":
            raise ClusterError("the model is deployed: undeploy it before changing its connector", 400)
        model.update(body)

    # the calls of `bootstrap.deploy.MLCommons`: one node, deploys and undeploys done at once
    def nodes_holding(self, model_id: str) -> list[str]:
        return ["node-1"] if self.ml["models"][model_id]["held"] else []

    def nodes_stuck(self, model_id: str) -> list[str]:
        return []

    def model_nodes(self) -> list[str]:
        return ["node-1"]

    def deploy_task_running(self, model_id: str, since_ms: int) -> bool:
        return False

    def start_deploy(self, model_id: str) -> str | None:
        self._write("deploy_model", model_id)
        self.ml["models"][model_id].update(model_state="DEPLOYED", held=True)
        return None

    def wait_ml_task(self, task_id: str, timeout_s: float) -> dict:
        raise AssertionError("the memory cluster's deploys need no task")

    def request_undeploy(self, model_id: str, node_ids: list[str] | None = None) -> None:
        assert node_ids is None, "one node: nothing is stuck on some nodes only"
        self._write("undeploy_model", model_id)
        self.ml["models"][model_id].update(model_state="UNDEPLOYED", held=False)

    def delete_model(self, model_id: str) -> None:
        self._write("delete_model", model_id)
        if self.ml["models"][model_id]["model_state"] == "DEPLOYED":
            raise ClusterError("model is deployed; undeploy it first", 400)
        del self.ml["models"][model_id]

    def delete_connector(self, connector_id: str) -> None:
        self._write("delete_connector", connector_id)
        users = [model_id for model_id, m in self.ml["models"].items() if self._uses(m, connector_id)]
        if users:
            raise ClusterError(f"{len(users)} models are still using this connector, please delete or update the "
                               f"models first: [{', '.join(users)}]", 409)
        del self.ml["connectors"][connector_id]

    def delete_model_group(self, group_id: str) -> None:
        self._write("delete_model_group", group_id)
        if any(m["model_group_id"] == group_id for m in self.ml["models"].values()):
            raise ClusterError("model group has models", 409)
        del self.ml["model_groups"][group_id]

    # --- pipelines and templates ---------------------------------------------------------------------------------
    def ingest_pipelines(self) -> dict:
        return copy.deepcopy(self.ingest)

    def search_pipelines(self) -> dict:
        return copy.deepcopy(self.search)

    def put_ingest_pipeline(self, name: str, body: dict) -> None:
        self._write("put_ingest_pipeline", name)
        self.ingest[name] = copy.deepcopy(body)

    def put_search_pipeline(self, name: str, body: dict) -> None:
        self._write("put_search_pipeline", name)
        self.search[name] = copy.deepcopy(body)

    def delete_ingest_pipeline(self, name: str) -> None:
        self._write("delete_ingest_pipeline", name)
        del self.ingest[name]

    def delete_search_pipeline(self, name: str) -> None:
        self._write("delete_search_pipeline", name)
        del self.search[name]

    def index_templates(self) -> dict:
        return copy.deepcopy(self.templates)

    def put_index_template(self, name: str, body: dict) -> None:
        self._write("put_index_template", name)
        self.templates[name] = copy.deepcopy(body)

    def delete_index_template(self, name: str) -> None:
        self._write("delete_index_template", name)
        del self.templates[name]

    # --- indices -----------------------------------------------------------------------------------------------------
    def _concrete(self, name: str) -> str:
        name = self.aliases.get(name, name)
        if name not in self.indices:
            raise ClusterError(f"no such index [{name}]", 404)
        return name

    def resolve_index(self, name: str) -> tuple[str, bool] | None:
        if name in self.aliases:
            return self.aliases[name], True
        return (name, False) if name in self.indices else None

    def index_mapping(self, index: str) -> dict:
        return copy.deepcopy(self.indices[index]["mappings"])

    def index_settings(self, index: str) -> dict:
        return dict(self.indices[index]["settings"])

    def index_names(self, pattern: str) -> list[str]:
        return sorted(name for name in self.indices if fnmatch.fnmatchcase(name, pattern))

    def wait_primaries_active(self, patterns: list[str], timeout_s: float) -> None:
        if not any(fnmatch.fnmatchcase(name, p) for name in self.indices for p in patterns):
            return
        self.recovering = False

    def count(self, index: str, query: dict | None = None) -> int:
        if self.recovering:
            raise ClusterError("search_phase_execution_exception: all shards failed", 503)
        if self._concrete(index) in self.closed:
            raise ClusterError(f"index_closed_exception [{index}]", 400)
        return len(self._matching(self._concrete(index), query))

    def _matching(self, index: str, query: dict | None) -> dict[str, dict]:
        docs = self.indices[index]["docs"]
        if query is None:
            return dict(docs)
        if "exists" in query:
            return {k: d for k, d in docs.items() if _get(d, query["exists"]["field"]) is not None}
        (path, value), = query["term"].items()
        return {k: d for k, d in docs.items() if _get(d, path) == value}

    def create_index(self, name: str, body: dict | None = None) -> None:
        self._write("create_index", name)
        if name in self.indices or name in self.aliases:
            raise ClusterError(f"resource_already_exists_exception [{name}]", 400)
        body = body or {}
        self.indices[name] = {"mappings": copy.deepcopy(body.get("mappings", {})),
                              "settings": _flat(body.get("settings", {}), ""), "docs": {}}
        self.indices[name]["settings"] = {k if k.startswith("index.") else f"index.{k}": v
                                          for k, v in self.indices[name]["settings"].items()}

    def put_index_settings(self, index: str, values: dict) -> None:
        self._write("put_index_settings", (index, values))
        if "index.codec" in values and index not in self.closed:
            raise ClusterError(f"illegal_argument_exception: Can't update non dynamic settings [[index.codec]] for "
                               f"open indices [[{index}]]", 400)
        for key, value in values.items():
            if value is None:
                self.indices[index]["settings"].pop(key, None)
            else:
                self.indices[index]["settings"][key] = str(value).lower() if isinstance(value, bool) else str(value)

    def close_index(self, index: str) -> None:
        """As OpenSearch: a closed index carries `index.verified_before_close` until it reopens."""
        self._write("close_index", index)
        self.closed.add(index)
        self.indices[index]["settings"]["index.verified_before_close"] = "true"

    def open_index(self, index: str) -> None:
        self._write("open_index", index)
        self.closed.discard(index)
        self.indices[index]["settings"].pop("index.verified_before_close", None)

    def put_closed_index_settings(self, index: str, values: dict) -> None:
        self.close_index(index)
        try:
            self.put_index_settings(index, values)
        finally:
            self.open_index(index)

    def put_mapping(self, index: str, body: dict) -> None:
        self._write("put_mapping", index)
        mapping = self.indices[index]["mappings"]
        _refuse_doc_values_change(body.get("properties", {}), mapping.get("properties", {}))
        for key, value in body.items():
            if key == "properties":
                mapping.setdefault("properties", {}).update(copy.deepcopy(value))
            else:
                mapping[key] = copy.deepcopy(value)

    def block_writes(self, index: str, blocked: bool = True) -> None:
        self.put_index_settings(index, {"index.blocks.write": True if blocked else None})

    def _blocked(self, index: str) -> bool:
        return self.indices[index]["settings"].get("index.blocks.write") == "true"

    def clone_index(self, source: str, target: str) -> None:
        self._write("clone_index", (source, target))
        assert self._blocked(source), "a clone needs the source write-blocked"
        self.indices[target] = copy.deepcopy(self.indices[source])

    def delete_index(self, name: str) -> None:
        self._write("delete_index", name)
        del self.indices[name]

    def update_aliases(self, actions: list[dict]) -> None:
        self._write("update_aliases", actions)
        for action in actions:
            (verb, args), = action.items()
            if verb == "remove_index":
                del self.indices[args["index"]]
            elif verb == "remove":
                assert self.aliases.pop(args["alias"]) == args["index"]
            elif verb == "add":
                assert args["alias"] not in self.indices, "an alias cannot have the name of an index"
                self.aliases[args["alias"]] = args["index"]

    def refresh(self, index: str) -> None:
        pass

    def delete_by_query(self, index: str, query: dict) -> None:
        self._write("delete_by_query", index)
        for doc_id in self._matching(self._concrete(index), query):
            del self.indices[self._concrete(index)]["docs"][doc_id]

    # --- documents -----------------------------------------------------------------------------------------------
    def index_doc(self, index: str, doc_id: str, source: dict, pipeline: str | None = "default") -> str:
        """A write as a client sends it: the index's default pipeline analyzes it, the mapping checks it."""
        concrete = self._concrete(index)
        if self._blocked(concrete):
            raise ClusterError(f"index [{concrete}] blocked by: [FORBIDDEN/8/index write (api)]", 403)
        source = copy.deepcopy(source)
        if pipeline == "default":
            pipeline = self.indices[concrete]["settings"].get("index.default_pipeline")
        if pipeline:
            concrete, source = self._analyze(concrete, doc_id, source)
        self._check_vectors(concrete, source)
        self.indices[concrete]["docs"][doc_id] = source
        return concrete

    def _analyze(self, index: str, doc_id: str, source: dict) -> tuple[str, dict]:
        url = source.get(contract.IMAGE_URL_FIELD)
        image = source.pop(contract.IMAGE_FIELD, None)
        if url is None and image is None:
            return index, source
        if url in self.unreachable_urls:
            for name in contract.ANALYSIS_FIELDS:
                source.pop(name, None)
            source[contract.FAILURE_FIELD] = {"reason": "unreachable", "index": index, "doc_id": doc_id,
                                              "retryable": True}
            return self.dead_letter, source
        vector = [0.1] * self.served_dim
        source.update(global_image_embedding=vector, width=10, height=10,
                      detected_objects=[{"class_name": "circle", "object_embedding": vector}])
        return index, source

    def _check_vectors(self, index: str, source: dict) -> None:
        wanted = self.indices[index]["mappings"].get("properties", {}).get("global_image_embedding", {})
        got = source.get("global_image_embedding")
        if got is not None and wanted and len(got) != wanted["dimension"]:
            raise ClusterError(f"mapper_parsing_exception: vector dimension {len(got)} != {wanted['dimension']}", 400)

    def simulate_pipeline(self, name: str, docs: list[dict]) -> list[dict]:
        out = []
        for doc in docs:
            index, source = self._analyze(doc["_index"], doc["_id"], dict(doc["_source"]))
            out.append({"doc": {"_index": index, "_source": source}})
        return out

    def reindex(self, body: dict, on_progress=None, **_: Any) -> dict:
        self._write("reindex", body["dest"]["index"])
        source, dest = body["source"]["index"], body["dest"]["index"]
        failures = []
        for doc_id, doc in self._matching(source, body["source"].get("query")).items():
            doc = copy.deepcopy(doc)
            for name in body.get("script", {}).get("params", {}).get("fields", []):
                doc.pop(name, None)
            try:
                if self.fail_reindex:
                    raise ClusterError("simulated failure")
                target, doc = self._analyze(dest, doc_id, doc) if body["dest"].get("pipeline") else (dest, doc)
                self._check_vectors(target, doc)
                self.indices[target]["docs"][doc_id] = doc
            except ClusterError as exc:
                failures.append({"id": doc_id, "cause": str(exc)})
                break  # a reindex stops at the first bulk with failures
        return {"failures": failures}


# --- helpers -------------------------------------------------------------------------------------------------------
@pytest.fixture()
def settings() -> Settings:
    return load_config(opensearch={"url": "http://memory:9200"})


def as_cluster(memory: MemoryCluster) -> Cluster:
    """The memory cluster where a `Cluster` is expected: it has every method the reconciler calls."""
    return cast(Cluster, memory)


def _refuse_doc_values_change(want: dict, have: dict) -> None:
    """As OpenSearch: a put-mapping may not change a knn_vector field's doc values (absent means on)."""
    for name, field in want.items():
        found = have.get(name, {})
        changed = field.get("doc_values", True) != found.get("doc_values", True)
        if field.get("type") == "knn_vector" and found and changed:
            raise ClusterError(f"Cannot update parameter [doc_values] of [{name}]", 400)
        _refuse_doc_values_change(field.get("properties", {}), found.get("properties", {}))


def plan_for(cluster: MemoryCluster, settings: Settings, clip: ClipFacts = S2) -> Plan:
    return diff(desired_state(settings, clip), observe(as_cluster(cluster), settings))


def run_apply(plan: Plan, cluster: MemoryCluster, **options: Any) -> Plan:
    return apply(plan, as_cluster(cluster), **options)


def bootstrap(cluster: MemoryCluster, settings: Settings, clip: ClipFacts = S2, **options: Any) -> Plan:
    return run_apply(plan_for(cluster, settings, clip), cluster, **options)


def get_step(plan: Plan, kind: str, name: str) -> Step:
    step = plan.step(kind, name)
    assert step is not None, plan.lines()
    return step


def actions(plan: Plan) -> dict[str, str]:
    return {s.key: s.action for s in plan.steps}


def writes(cluster: MemoryCluster) -> list[str]:
    return [name for name, _ in cluster.calls if name.startswith(WRITES)]


def renamed(settings: Settings, **index: Any) -> Settings:
    return settings.model_copy(update={"index": settings.index.model_copy(update=index)})


# --- the tests -----------------------------------------------------------------------------------------------------
def test_first_run_creates_everything_in_dependency_order(settings: Settings):
    cluster = MemoryCluster()
    plan = plan_for(cluster, settings)
    assert {s.action for s in plan.steps if s.kind != "cluster_settings"} == {"create"}, plan.lines()
    assert all(s.detail for s in plan.changes), "every change says why"
    run_apply(plan, cluster)

    assert writes(cluster) == [
        "put_persistent_settings", "create_model_group",
        "create_connector", "register_model", "deploy_model",  # embed: connector → model
        "create_connector", "register_model", "deploy_model",  # analyze
        "put_ingest_pipeline", "put_search_pipeline",
        "put_index_template", "create_index", "put_index_template", "create_index"]
    ids = plan.ids
    mlc = settings.ml_commons
    # ids created by earlier steps flowed into the later ones
    analyze = cluster.ml["models"][ids[f"model:{mlc.analyze_model}"]]
    assert analyze["connector_id"] == ids[f"connector:{mlc.analyze_model}"]
    assert analyze["model_group_id"] == ids[f"model_group:{mlc.model_group}"]
    ingest = cluster.ingest[settings.index.ingest_pipeline]
    assert f'"model_id": "{ids[f"model:{mlc.analyze_model}"]}"' in json.dumps(ingest)
    assert "<pending" not in json.dumps(ingest) + json.dumps(cluster.search)
    assert cluster.indices[settings.index.name]["mappings"]["properties"]["global_image_embedding"]["dimension"] == 512
    assert all(m["model_state"] == "DEPLOYED" for m in cluster.ml["models"].values())


def test_second_run_plans_no_change(settings: Settings):
    cluster = MemoryCluster()
    first = bootstrap(cluster, settings)
    cluster.calls.clear()
    again = plan_for(cluster, settings)
    assert not again.changes, again.lines()
    assert again.ids == first.ids
    assert again.summary().startswith("0 change(s)")
    run_apply(again, cluster)
    assert writes(cluster) == []


def test_a_restarted_node_recovering_its_indices_is_waited_for_before_they_are_counted(settings: Settings):
    cluster = MemoryCluster()
    bootstrap(cluster, settings)
    cluster.recovering = True
    assert not plan_for(cluster, settings).changes
    assert not cluster.recovering


def test_dry_run_applies_nothing(settings: Settings):
    cluster = MemoryCluster()
    plan = Reconciler(as_cluster(cluster), settings, dry_run=True).run(S2)
    assert plan.changes and writes(cluster) == []
    bootstrap(cluster, settings)
    cluster.calls.clear()
    plan = Reconciler(as_cluster(cluster), settings, dry_run=True).run(S3)
    assert plan.replacements and writes(cluster) == []


def test_changed_connector_is_updated_in_place_keeping_its_id(settings: Settings):
    cluster = MemoryCluster()
    first = bootstrap(cluster, settings)
    changed = settings.model_copy(update={"ml_commons": settings.ml_commons.model_copy(
        update={"read_timeout_s": settings.ml_commons.read_timeout_s + 1})})
    cluster.calls.clear()
    plan = plan_for(cluster, changed)
    name = changed.ml_commons.embed_model
    assert actions(plan)[f"connector:{name}"] == "update"
    assert actions(plan)[f"model:{name}"] == "update"
    assert "redeploy" in get_step(plan, "model", name).detail
    run_apply(plan, cluster)  # the memory cluster refuses a connector update while its model is deployed
    assert plan.ids == first.ids
    assert writes(cluster)[:3] == ["undeploy_model", "update_connector", "deploy_model"]
    assert "create_connector" not in writes(cluster) and "register_model" not in writes(cluster)
    assert not plan_for(cluster, changed).changes


def test_connector_update_refused_for_models_sharing_an_id_word_still_happens(settings: Settings):
    """ML Commons counts the other model of the deployment as the connector's user (their ids share a word): it is
    undeployed for the update and deployed again, and both models end deployed."""
    cluster = MemoryCluster(id_word="t")
    first = bootstrap(cluster, settings)
    changed = settings.model_copy(update={"ml_commons": settings.ml_commons.model_copy(
        update={"read_timeout_s": settings.ml_commons.read_timeout_s + 1})})
    cluster.calls.clear()
    said: list[str] = []
    plan = run_apply(plan_for(cluster, changed), cluster, say=said.append)
    assert plan.ids == first.ids
    assert writes(cluster).count("update_connector") == 4  # two connectors, each refused once
    assert any("counted models" in line for line in said), said
    assert all(m["model_state"] == "DEPLOYED" and m["held"] for m in cluster.ml["models"].values())
    assert not plan_for(cluster, changed).changes


def test_connector_update_blocked_by_another_applications_model_says_which(settings: Settings):
    cluster = MemoryCluster(id_word="t")
    bootstrap(cluster, settings)
    foreign = cluster._new("models", {"name": "someone-elses", "description": "not ours", "connector_id": "c-t-99",
                                      "model_group_id": "g", "model_state": "DEPLOYED", "held": True})
    changed = settings.model_copy(update={"ml_commons": settings.ml_commons.model_copy(
        update={"read_timeout_s": settings.ml_commons.read_timeout_s + 1})})
    with pytest.raises(ClusterError, match=f"while models {foreign} are deployed"):
        bootstrap(cluster, changed)
    assert cluster.ml["models"][foreign]["model_state"] == "DEPLOYED"  # never touched


def test_unused_connector_ml_commons_keeps_is_reported_not_raised():
    cluster = MemoryCluster(id_word="t")
    unused = cluster._new("connectors", {"name": "old", "description": "x"})
    cluster._new("models", {"name": "m", "description": "x", "connector_id": "connector-t-77", "model_group_id": "g",
                            "model_state": "REGISTERED", "held": False})
    kept = delete_connector(as_cluster(cluster), unused)
    assert kept is not None and "no model uses it" in kept and unused in cluster.ml["connectors"]
    used = cluster._new("connectors", {"name": "new", "description": "x"})
    cluster._new("models", {"name": "n", "description": "x", "connector_id": used, "model_group_id": "g",
                            "model_state": "REGISTERED", "held": False})
    with pytest.raises(ClusterError, match="still using"):
        delete_connector(as_cluster(cluster), used)


def test_model_that_no_node_serves_is_deployed_again(settings: Settings):
    cluster = MemoryCluster()
    first = bootstrap(cluster, settings)
    model_id = first.ids[f"model:{settings.ml_commons.embed_model}"]
    cluster.ml["models"][model_id]["held"] = False  # a restart: the record says DEPLOYED, no node holds it
    plan = plan_for(cluster, settings)
    assert [s.key for s in plan.changes] == [f"model:{settings.ml_commons.embed_model}"]
    assert "no node serves it" in plan.changes[0].detail


def index_corpus(cluster: MemoryCluster, name: str) -> None:
    cluster.index_doc(name, "by-url-1", {"image_id": "by-url-1", "image_url": "http://images/1.jpg"})
    cluster.index_doc(name, "by-url-2", {"image_id": "by-url-2", "image_url": "http://images/2.jpg"})
    cluster.index_doc(name, "by-b64", {"image_id": "by-b64", "image_b64": "aGVsbG8="})


def test_dimension_change_is_a_replace_refused_without_the_flag(settings: Settings):
    cluster = MemoryCluster()
    bootstrap(cluster, settings)
    index_corpus(cluster, settings.index.name)
    cluster.calls.clear()

    plan = plan_for(cluster, settings, S3)
    step = get_step(plan, "index", settings.index.name)
    assert step is not None and step.action == "replace"
    assert "global_image_embedding: dimension 512 → 768" in step.detail
    assert "detected_objects.object_embedding: dimension 512 → 768" in step.detail
    assert "2 of 3 document(s) carry image_url" in step.detail and "1 sent as base64" in step.detail
    assert actions(plan)[f"index_template:{settings.index.name}"] == "update"
    assert actions(plan)[f"index:{settings.index.dead_letter}"] == "unchanged"
    with pytest.raises(ReplaceRefused) as refused:
        run_apply(plan, cluster)
    message = str(refused.value)
    assert "--allow-reindex" in message and "dimension 512 → 768" in message and settings.index.name in message
    assert writes(cluster) == [], "a refused plan changes nothing, not even the steps before the replace"


def test_codec_change_is_made_in_place_on_the_closed_index(settings: Settings):
    """The stored-fields codec is static but needs no rebuild: the index is closed, changed, reopened, and every
    document (base64 ones too, which a rebuild could not carry) stays where it is."""
    cluster = MemoryCluster()
    bootstrap(cluster, settings)
    name = settings.index.name
    index_corpus(cluster, name)
    docs = copy.deepcopy(cluster.indices[name]["docs"])
    cluster.calls.clear()
    other = "best_compression" if settings.index.codec == "default" else "default"

    plan = plan_for(cluster, renamed(settings, codec=other))
    step = get_step(plan, "index", name)
    assert step.action == "update" and "setting index.codec" in step.detail and "closed for a moment" in step.detail
    assert not plan.replacements
    run_apply(plan, cluster)
    assert [c for c in cluster.calls if c[0] in ("close_index", "put_index_settings", "open_index")] == [
        ("close_index", name), ("put_index_settings", (name, {"index.codec": other})), ("open_index", name)]
    assert cluster.indices[name]["settings"]["index.codec"] == other and not cluster.closed
    assert cluster.indices[name]["docs"] == docs
    assert not plan_for(cluster, renamed(settings, codec=other)).changes


def test_derived_source_waits_for_a_rebuild_an_admin_allows(settings: Settings):
    """An index created before the template named `index.knn.derived_source.enabled` reports no such setting (its
    value is OpenSearch's default, off). A product upgrade that turns it on must not stop `make up` with a refused
    replacement: the index keeps its value, the plan says so, and `--allow-reindex` rebuilds it with the new one."""
    cluster = MemoryCluster()
    bootstrap(cluster, renamed(settings, derived_source=False))
    name = settings.index.name
    index_corpus(cluster, name)
    del cluster.indices[name]["settings"]["index.knn.derived_source.enabled"]  # as an older bootstrap left it
    cluster.calls.clear()

    assert get_step(plan_for(cluster, renamed(settings, derived_source=False)), "index", name).action == "unchanged"
    wanted = renamed(settings, derived_source=True)
    plan = plan_for(cluster, wanted)
    step = get_step(plan, "index", name)
    assert step.action == "unchanged" and not plan.replacements
    assert "keeps setting index.knn.derived_source.enabled false → true until it is rebuilt" in step.detail
    run_apply(plan, cluster)
    assert writes(cluster) == ["put_index_template"], "the index itself is left alone"

    rebuild = diff(desired_state(wanted, S2), observe(as_cluster(cluster), wanted), rebuild_deferred=True)
    step = get_step(rebuild, "index", name)
    assert step.action == "replace" and "setting index.knn.derived_source.enabled false → true" in step.detail


def test_storage_mapping_parameters_wait_for_a_rebuild_and_in_place_changes_keep_them(settings: Settings):
    """An index made before the template turned off the vectors' doc values and the recovery source reports neither
    (OpenSearch's defaults: both on). Like a deferred setting, it keeps them until a rebuild an admin allows; a
    put-mapping for another change (here a field the older template lacked) carries the index's own doc values, which
    OpenSearch refuses to change on it."""
    cluster = MemoryCluster()
    bootstrap(cluster, settings)
    name = settings.index.name
    index_corpus(cluster, name)
    mapping = cluster.indices[name]["mappings"]
    del mapping["_source"]["recovery_source_enabled"]
    props = mapping["properties"]
    for vector in (props["global_image_embedding"], props["detected_objects"]["properties"]["object_embedding"]):
        del vector["doc_values"]
    del props["caption"]
    cluster.calls.clear()

    plan = plan_for(cluster, settings)
    step = get_step(plan, "index", name)
    assert step.action == "update" and not plan.replacements, plan.lines()
    assert ("keeps _source recovery_source_enabled true → false; global_image_embedding: doc_values true → false; "
            "detected_objects.object_embedding: doc_values true → false until it is rebuilt") in step.detail
    run_apply(plan, cluster)
    assert writes(cluster) == ["put_mapping"]
    props = cluster.indices[name]["mappings"]["properties"]
    assert "caption" in props and props["global_image_embedding"]["doc_values"] is True

    rebuild = diff(desired_state(settings, S2), observe(as_cluster(cluster), settings), rebuild_deferred=True)
    step = get_step(rebuild, "index", name)
    assert step.action == "replace" and "global_image_embedding: doc_values true → false" in step.detail


def test_index_left_closed_by_an_interrupted_change_is_reopened(settings: Settings):
    """A bootstrap killed between close and open leaves the index closed (it answers no count, no search): the next
    one reopens it, with the codec it wants, instead of failing on it."""
    cluster = MemoryCluster()
    bootstrap(cluster, settings)
    name = settings.index.name
    index_corpus(cluster, name)
    docs = copy.deepcopy(cluster.indices[name]["docs"])
    other = "best_compression" if settings.index.codec == "default" else "default"
    cluster.close_index(name)  # the interrupted change: closed, codec not yet put
    cluster.calls.clear()

    plan = plan_for(cluster, renamed(settings, codec=other))
    step = get_step(plan, "index", name)
    assert step.action == "update" and "reopened" in step.detail and "index.codec" in step.detail, plan.lines()
    run_apply(plan, cluster)
    assert [c[0] for c in cluster.calls if c[0] in ("put_index_settings", "open_index")] == [
        "put_index_settings", "open_index"]
    assert not cluster.closed and cluster.indices[name]["settings"]["index.codec"] == other
    assert cluster.indices[name]["docs"] == docs and cluster.count(name) == len(docs)
    assert not plan_for(cluster, renamed(settings, codec=other)).changes


def test_dimension_change_with_the_flag_rebuilds_the_index_and_moves_the_alias(settings: Settings):
    cluster = MemoryCluster()
    bootstrap(cluster, settings)
    name = settings.index.name
    index_corpus(cluster, name)
    cluster.served_dim = 768  # the adapter's Triton now serves S3
    said: list[str] = []

    plan = bootstrap(cluster, settings, S3, allow_reindex=True, say=said.append)

    step = get_step(plan, "index", name)
    assert step.payload(Replacement).result == ReplaceResult(target=f"{name}-v2", retired=f"{name}-v1", indexed=2,
                                                             dead_lettered=0, not_carried=1)
    assert cluster.resolve_index(name) == (f"{name}-v2", True)
    new = cluster.indices[f"{name}-v2"]
    assert sorted(new["docs"]) == ["by-url-1", "by-url-2"]
    assert all(len(d["global_image_embedding"]) == 768 for d in new["docs"].values())
    assert new["mappings"]["properties"]["global_image_embedding"]["dimension"] == 768
    assert "index.blocks.write" not in new["settings"]
    # the old documents, the base64 one included, are kept read-only under the first version's name
    old = cluster.indices[f"{name}-v1"]
    assert sorted(old["docs"]) == ["by-b64", "by-url-1", "by-url-2"] and old["settings"]["index.blocks.write"] == "true"
    assert any("refused until" in line for line in said)
    # writes and counts by the name go to the new version
    assert cluster.index_doc(name, "after", {"image_id": "after", "image_url": "http://images/3.jpg"}) == f"{name}-v2"
    with pytest.raises(ClusterError, match="blocked"):
        cluster.index_doc(f"{name}-v1", "late", {"image_id": "late"})

    again = plan_for(cluster, settings, S3)
    assert not again.changes, again.lines()
    retired = get_step(again, "index", f"{name}-v1")
    assert retired.action == "unchanged" and "3 document(s)" in retired.detail

    # a second replacement starts from the alias: the next version, the alias moved, the previous one retired
    wider = renamed(settings, hnsw_m=settings.index.hnsw_m * 2)
    plan = bootstrap(cluster, wider, S3, allow_reindex=True)
    assert "HNSW parameters" in get_step(plan, "index", name).detail
    assert cluster.resolve_index(name) == (f"{name}-v3", True)
    assert sorted(cluster.indices[f"{name}-v3"]["docs"]) == ["after", "by-url-1", "by-url-2"]
    assert cluster.indices[f"{name}-v2"]["settings"]["index.blocks.write"] == "true"
    assert not plan_for(cluster, wider, S3).changes


def test_unreachable_image_url_is_dead_lettered_during_a_replace(settings: Settings):
    cluster = MemoryCluster()
    bootstrap(cluster, settings)
    index_corpus(cluster, settings.index.name)
    cluster.served_dim = 768
    cluster.unreachable_urls.add("http://images/2.jpg")
    plan = bootstrap(cluster, settings, S3, allow_reindex=True)
    result = get_step(plan, "index", settings.index.name).payload(Replacement).result
    assert result is not None and (result.indexed, result.dead_lettered, result.not_carried) == (1, 1, 1)
    letter = cluster.indices[settings.index.dead_letter]["docs"]["by-url-2"]
    assert letter["image_url"] == "http://images/2.jpg" and "global_image_embedding" not in letter


def test_replace_is_not_started_when_the_model_still_produces_the_old_dimension(settings: Settings):
    cluster = MemoryCluster()
    bootstrap(cluster, settings)
    index_corpus(cluster, settings.index.name)  # served_dim stays 512: Triton was not switched to S3
    with pytest.raises(ClusterError, match=r"produces 512-d vectors but .* needs 768-d"):
        bootstrap(cluster, settings, S3, allow_reindex=True)
    assert cluster.resolve_index(settings.index.name) == (settings.index.name, False)
    assert not cluster.index_names(f"{settings.index.name}-v*")
    assert "block_writes" not in writes(cluster) and "index.blocks.write" not in (
        cluster.indices[settings.index.name]["settings"])


def test_failed_replace_is_rolled_back(settings: Settings):
    cluster = MemoryCluster()
    bootstrap(cluster, settings)
    name = settings.index.name
    index_corpus(cluster, name)
    cluster.served_dim = 768
    cluster.fail_reindex = True
    with pytest.raises(ClusterError, match="rolled back"):
        bootstrap(cluster, settings, S3, allow_reindex=True)
    assert cluster.resolve_index(name) == (name, False)
    assert not cluster.index_names(f"{name}-v*")
    assert cluster.index_doc(name, "still-writable", {"image_id": "x"}) == name
    assert cluster.count(name) == 4


def test_prune_deletes_what_this_deployment_no_longer_wants_and_nothing_else(settings: Settings):
    cluster = MemoryCluster()
    old = settings.model_copy(update={
        "ml_commons": settings.ml_commons.model_copy(update={"embed_model": "old-embed"}),
        "index": settings.index.model_copy(update={"search_pipeline": "old-search"})})
    bootstrap(cluster, old)
    other = load_config(opensearch={"url": "http://memory:9200"},
                        ml_commons={"model_group": "other-group", "embed_model": "other-embed",
                                    "analyze_model": "other-analyze"},
                        index={"name": "other-images", "dead_letter": "other-failed", "ingest_pipeline": "other-ingest",
                               "search_pipeline": "other-search"})
    bootstrap(cluster, other)  # another deployment on the same cluster
    hand_made = cluster.create_connector({"name": "hand-made", "description": "made by a person"})
    legacy = cluster.create_connector({"name": "legacy", "description": f"old; {MANAGED}"})  # no deployment named
    old_embed = next(k for k, v in cluster.ml["models"].items() if v["name"] == "old-embed")

    plan = plan_for(cluster, settings)
    deletes = {s.key for s in plan.steps if s.action == "delete"}
    assert deletes == {"model:old-embed", "connector:old-embed", "search_pipeline:old-search"}, plan.lines()
    assert actions(plan)[f"connector:{settings.ml_commons.embed_model}"] == "create"
    cluster.calls.clear()
    run_apply(plan, cluster)
    order = writes(cluster)
    # the replacement is in place before the old one goes; a deployed model is undeployed before it is deleted
    assert order.index("put_search_pipeline") < order.index("delete_search_pipeline")
    assert order.index("undeploy_model") < order.index("delete_model") < order.index("delete_connector")
    assert old_embed not in cluster.ml["models"]
    assert {hand_made, legacy} <= set(cluster.ml["connectors"])
    assert {"other-embed", "other-analyze"} <= {v["name"] for v in cluster.ml["models"].values()}
    assert "other-search" in cluster.search and "old-search" not in cluster.search
    assert not plan_for(cluster, settings).changes
    assert not plan_for(cluster, other).changes


def test_duplicate_of_a_desired_name_is_pruned_and_the_oldest_kept(settings: Settings):
    cluster = MemoryCluster()
    first = bootstrap(cluster, settings)
    name = settings.ml_commons.embed_model
    kept = first.ids[f"connector:{name}"]
    body = {k: v for k, v in cluster.get_connector(kept).items() if k not in ("id", "created_time")}
    duplicate = cluster.create_connector(body)  # as an interrupted run, before the lock existed, could leave
    plan = plan_for(cluster, settings)
    assert [(s.key, s.id) for s in plan.changes] == [(f"connector:{name}", duplicate)]
    assert plan.changes[0].action == "delete" and kept in plan.changes[0].detail
    run_apply(plan, cluster)
    assert set(cluster.ml["connectors"]) == {kept, first.ids[f"connector:{settings.ml_commons.analyze_model}"]}


def test_connector_still_used_by_a_model_that_stays_is_kept(settings: Settings):
    cluster = MemoryCluster()
    first = bootstrap(cluster, settings)
    hand_model = cluster.register_model({"name": "hand-model", "function_name": "remote", "description": "a person's",
                                         "connector_id": first.ids[f"connector:{settings.ml_commons.embed_model}"],
                                         "model_group_id": first.ids[f"model_group:{settings.ml_commons.model_group}"]})
    renamed_ml = settings.model_copy(update={"ml_commons": settings.ml_commons.model_copy(
        update={"embed_model": "new-embed"})})
    plan = plan_for(cluster, renamed_ml)
    step = get_step(plan, "connector", settings.ml_commons.embed_model)
    assert step.action == "unchanged" and hand_model in step.detail
    assert actions(plan)[f"model:{settings.ml_commons.embed_model}"] == "delete"
    run_apply(plan, cluster)


def test_mapping_comparison():
    base: dict[str, Any] = {"_source": {"excludes": ["image_b64"]}, "properties": {
        "name": {"type": "keyword", "ignore_above": 2048},
        "vec": {"type": "knn_vector", "dimension": 512,
                "method": {"name": "hnsw", "engine": "lucene", "space_type": "cosinesimil",
                           "parameters": {"m": 16, "ef_construction": 512}}},
        "objects": {"type": "nested", "properties": {"label": {"type": "keyword"}}}}}
    assert compare_mapping(base, copy.deepcopy(base)) == MappingDiff()
    # what the cluster returns may spell numbers and booleans as text
    spelled = copy.deepcopy(base)
    spelled["properties"]["vec"]["dimension"] = "512"
    assert compare_mapping(base, spelled) == MappingDiff()

    want = copy.deepcopy(base)
    want["properties"]["name"]["ignore_above"] = 4096
    want["properties"]["extra"] = {"type": "integer"}
    want["properties"]["objects"]["properties"]["score"] = {"type": "float"}
    found = compare_mapping(want, base)
    assert found.replace == found.deferred == []
    assert set(found.inplace) == {"name: ignore_above 2048 → 4096", "new field extra", "new field objects.score"}

    want = copy.deepcopy(base)
    want["_source"]["excludes"].append("*b64*")
    want["properties"]["name"]["type"] = "text"
    want["properties"]["vec"]["method"]["engine"] = "faiss"
    want["properties"]["objects"]["properties"]["label"]["type"] = "integer"
    replace = compare_mapping(want, base).replace
    assert len(replace) == 4 and "name: type keyword → text" in replace
    assert "vec: k-NN engine lucene → faiss" in replace and "objects.label: type keyword → integer" in replace
