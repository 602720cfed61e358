"""The restart-safe deploy (`bootstrap.deploy`) against a double that misbehaves like ML Commons 2.19.1, on a fake
clock: every wait costs nothing, and the waits' bounds are checked in the clock's seconds. Also the profile parsing
of `Cluster` that the deploy relies on."""

from __future__ import annotations

import time

import pytest

from bootstrap.deploy import RECENT_S, ModelDeployer, deployed, is_deployed
from bootstrap.opensearch_api import Cluster, ClusterError


class FakeClock:
    """Wall-clock seconds that move only when someone sleeps."""

    def __init__(self) -> None:
        self.t = 0.0
        self.slept = 0

    def time(self) -> float:
        return 1_800_000_000 + self.t

    def sleep(self, seconds: float) -> None:
        self.slept += 1
        self.t += max(seconds, 0.01)


class MLCommonsDouble:
    """One remote model (`m1`), the calls of `bootstrap.deploy.MLCommons`, with ML Commons' quirks measured on 2.19.1:

    * a deploy that fails (e.g. `fail_next`: "Fetching master key timed out") marks the model DEPLOY_FAILED
      and leaves the node cache stuck in DEPLOYING;
    * while the node cache holds the model, a deploy fails with "Duplicate deploy model task" (and marks the
      model DEPLOY_FAILED, even when the other deploy succeeds);
    * an undeploy clears the node cache whatever its state; the record follows after `undeploy_lag` reads;
    * `other_deploy_in` calls from now, someone else's deploy (the automatic redeploy) finishes;
    * `joined`: nodes that joined after the model was deployed and hold nothing until the next deploy;
    * `stuck`: nodes that came back holding the model DEPLOYING for good while n1 serves it: every deploy fails
      as a duplicate until those nodes alone are undeployed (measured on a 3-node 2.19.1 cluster).
    """

    def __init__(self, clock: FakeClock, state: str, cache: str | None = None, fail_next: list[str] | None = None,
                 other_deploy_in: int | None = None, joined: tuple[str, ...] = (), stuck: tuple[str, ...] = (),
                 undeploy_lag: int = 0) -> None:
        self.nodes = ["n1", *joined, *stuck]
        self.behind = set(joined)
        self.stuck = set(stuck)
        self.clock = clock
        self.state = state
        self.cache = cache
        self.fail_next = list(fail_next or [])
        self.other_deploy_in = other_deploy_in
        self.undeploy_lag = undeploy_lag
        self.pending_state: str | None = None
        self.updated = clock.time()
        self.calls: list[str] = []
        self.tasks: dict[str, dict] = {}

    def _set(self, state: str) -> None:
        self.state, self.updated = state, self.clock.time()

    def _tick(self) -> None:
        """Time passes for the cluster with every call: another deploy may finish, an undeploy reach the record."""
        if self.other_deploy_in is not None:
            self.other_deploy_in -= 1
            if self.other_deploy_in <= 0:
                self.other_deploy_in = None
                self.cache = "DEPLOYED"
                self._set("DEPLOYED")

    def _holding(self) -> list[str]:
        return [n for n in self.nodes if n not in self.behind | self.stuck] if self.cache else []

    def get_model(self, model_id: str) -> dict:
        self._tick()
        if self.pending_state is not None:
            if self.undeploy_lag <= 0:
                self._set(self.pending_state)
                self.pending_state = None
            self.undeploy_lag -= 1
        return {"id": model_id, "model_state": self.state, "last_updated_time": int(self.updated * 1000)}

    def nodes_holding(self, model_id: str) -> list[str]:
        self._tick()
        return self._holding() if self.cache == "DEPLOYED" else []

    def nodes_stuck(self, model_id: str) -> list[str]:
        self._tick()
        return sorted(self.stuck | (set(self._holding()) if self.cache not in (None, "DEPLOYED") else set()))

    def model_nodes(self) -> list[str]:
        self._tick()
        return list(self.nodes)

    def deploy_task_running(self, model_id: str, since_ms: int) -> bool:
        self._tick()
        return False

    def wait_ml_task(self, task_id: str, timeout_s: float) -> dict:
        return self.tasks[task_id]

    def request_undeploy(self, model_id: str, node_ids: list[str] | None = None) -> None:
        self._tick()
        if node_ids:
            self.calls.append(f"undeploy {','.join(node_ids)}")
            self.stuck -= set(node_ids)
            return
        self.calls.append("undeploy")
        self.cache = None
        self.pending_state = "UNDEPLOYED"
        if self.undeploy_lag <= 0:
            self._set("UNDEPLOYED")
            self.pending_state = None

    def start_deploy(self, model_id: str) -> str | None:
        self._tick()
        self.calls.append("deploy")
        task_id = f"t{len(self.tasks)}"
        if self.stuck:
            stuck = next(iter(self.stuck))
            self.tasks[task_id] = {"state": "COMPLETED_WITH_ERROR",
                                   "error": f'{{"{stuck}":"Duplicate deploy model task"}}'}
            self._set("PARTIALLY_DEPLOYED")
        elif self.cache == "DEPLOYED":
            self.tasks[task_id] = {"state": "COMPLETED"}
            self.behind.clear()
            self._set("DEPLOYED")
        elif self.cache == "DEPLOYING":
            self.tasks[task_id] = {"state": "FAILED", "error": '{"n1":"Duplicate deploy model task"}'}
            self._set("DEPLOY_FAILED")
        elif self.fail_next:
            self.tasks[task_id] = {"state": "FAILED", "error": f'{{"n1":"{self.fail_next.pop(0)}"}}'}
            self.cache = "DEPLOYING"  # the stuck cache entry
            self._set("DEPLOY_FAILED")
        else:
            self.tasks[task_id] = {"state": "COMPLETED"}
            self.cache = "DEPLOYED"
            self.behind.clear()
            self._set("DEPLOYED")
        return task_id


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def deployer(ml: MLCommonsDouble) -> ModelDeployer:
    return ModelDeployer(ml, clock=ml.clock.time, sleep=ml.clock.sleep)


# --- what counts as deployed --------------------------------------------------------------------------------------

def test_deployed_needs_the_record_and_every_model_node():
    assert deployed("DEPLOYED", ["n1", "n2"], lambda: ["n2", "n1"])
    assert not deployed("DEPLOYED", ["n1"], lambda: ["n1", "n2"])  # a node joined after the deploy
    assert not deployed("DEPLOYED", [], lambda: [])  # a stale record after a restart: nobody holds it
    assert not deployed("DEPLOY_FAILED", ["n1"], lambda: ["n1"])


def test_deployed_asks_for_the_model_nodes_only_when_it_matters():
    asked: list[int] = []

    def nodes() -> list[str]:
        asked.append(1)
        return ["n1"]

    assert not deployed("UNDEPLOYED", ["n1"], nodes) and not deployed("DEPLOYED", [], nodes)
    assert asked == []
    assert deployed("DEPLOYED", ["n1"], nodes) and asked == [1]


# --- the deploy -------------------------------------------------------------------------------------------------

def test_deployed_and_served_model_is_left_alone(clock):
    ml = MLCommonsDouble(clock, "DEPLOYED", cache="DEPLOYED")
    deployer(ml).deploy("m1")
    assert ml.calls == [] and clock.slept == 0


def test_a_node_that_joined_after_the_deploy_gets_the_model(clock):
    """Served on n1 only while n2 and n3 run models too: deployed again (to all), not undeployed first."""
    ml = MLCommonsDouble(clock, "DEPLOYED", cache="DEPLOYED", joined=("n2", "n3"))
    assert not is_deployed(ml, "m1")
    deployer(ml).deploy("m1")
    assert ml.calls == ["deploy"]
    assert ml.nodes_holding("m1") == ["n1", "n2", "n3"] and is_deployed(ml, "m1")


def test_a_node_stuck_deploying_while_the_others_serve_is_cleared_alone(clock):
    ml = MLCommonsDouble(clock, "PARTIALLY_DEPLOYED", cache="DEPLOYED", stuck=("n2",))
    deployer(ml).deploy("m1")
    assert ml.calls == ["deploy", "undeploy n2", "deploy"]  # never the model everywhere: n1 kept serving
    assert ml.nodes_holding("m1") == ["n1", "n2"] and is_deployed(ml, "m1")


def test_stale_deployed_record_after_a_restart_is_deployed_again(clock):
    ml = MLCommonsDouble(clock, "DEPLOYED", cache=None)
    deployer(ml).deploy("m1")
    assert ml.calls == ["undeploy", "deploy"]
    assert (ml.state, ml.cache) == ("DEPLOYED", "DEPLOYED")


def test_failed_automatic_redeploy_with_its_stuck_cache_is_cleared_and_redeployed(clock):
    ml = MLCommonsDouble(clock, "DEPLOY_FAILED", cache="DEPLOYING")  # what a restart left, measured
    deployer(ml).deploy("m1")
    assert ml.calls == ["undeploy", "deploy"]
    assert ml.state == "DEPLOYED"


def test_master_key_timeout_is_retried_with_backoff(clock):
    ml = MLCommonsDouble(clock, "REGISTERED", fail_next=["Fetching master key timed out."] * 2)
    deployer(ml).deploy("m1", backoff_s=2)
    assert ml.calls == ["deploy", "undeploy", "deploy", "undeploy", "deploy"]
    assert ml.state == "DEPLOYED"
    assert 2 + 4 <= clock.t < 2 + 4 + 1  # two backoffs, doubling, and no other wait


def test_a_deploy_in_flight_is_waited_for_not_doubled(clock):
    ml = MLCommonsDouble(clock, "DEPLOYING", cache="DEPLOYING", other_deploy_in=6)
    ml.updated = clock.time()  # a fresh DEPLOYING: someone is at it
    deployer(ml).deploy("m1")
    assert ml.calls == []
    assert ml.state == "DEPLOYED"


def test_a_stale_deploying_record_is_not_waited_for(clock):
    """DEPLOYING written longer ago than RECENT_S, no task running: a node stopped mid-deploy; deploy at once."""
    ml = MLCommonsDouble(clock, "DEPLOYING", cache=None)
    clock.t += RECENT_S + 1
    deployer(ml).deploy("m1")
    assert ml.calls == ["undeploy", "deploy"] and ml.state == "DEPLOYED"
    assert clock.t < RECENT_S + 2


def test_a_deploy_in_flight_that_never_ends_times_out_on_the_clock(clock):
    ml = MLCommonsDouble(clock, "DEPLOYING", cache="DEPLOYING")
    started = time.perf_counter()

    def fresh(model_id: str) -> dict:  # someone keeps writing DEPLOYING
        return {"model_state": "DEPLOYING", "last_updated_time": int(clock.time() * 1000)}

    ml.get_model = fresh  # type: ignore[method-assign]
    with pytest.raises(ClusterError, match=r"embed \(m1\) is still DEPLOYING after 120s"):
        deployer(ml).deploy("m1", name="embed", timeout_s=120)
    assert ml.calls == []
    assert 120 <= clock.t < 122
    assert time.perf_counter() - started < 2, "the waits slept for real"


def test_duplicate_deploy_waits_for_the_other_deploy(clock):
    # the record does not say DEPLOYING (yet), but the node holds the model: our deploy is the duplicate
    ml = MLCommonsDouble(clock, "UNDEPLOYED", cache="DEPLOYING", other_deploy_in=8)
    deployer(ml).deploy("m1")
    assert ml.calls[0] == "deploy" and "undeploy" not in ml.calls
    assert (ml.state, ml.cache) == ("DEPLOYED", "DEPLOYED")


def test_permanent_failure_ends_with_a_clear_error_after_bounded_attempts(clock):
    ml = MLCommonsDouble(clock, "REGISTERED", fail_next=["Fetching master key timed out."] * 10)
    with pytest.raises(ClusterError, match=r"embed \(m1\) is DEPLOY_FAILED, not DEPLOYED, after 3 deploy "
                                           r"attempt\(s\).*master key"):
        deployer(ml).deploy("m1", attempts=3, name="embed")
    assert ml.calls.count("deploy") == 3


def test_non_transient_failure_is_not_retried(clock):
    ml = MLCommonsDouble(clock, "REGISTERED", fail_next=["Failed to find connector"])
    with pytest.raises(ClusterError, match=r"deploying model m1 failed: .*Failed to find connector"):
        deployer(ml).deploy("m1")
    assert ml.calls == ["deploy"]


# --- the undeploy -------------------------------------------------------------------------------------------------

def test_undeploy_waits_for_the_record_to_follow(clock):
    ml = MLCommonsDouble(clock, "DEPLOYED", cache="DEPLOYED", undeploy_lag=4)
    deployer(ml).undeploy("m1")
    assert ml.calls == ["undeploy"] and ml.state == "UNDEPLOYED"
    assert clock.slept == 4 and clock.t == pytest.approx(2.0)


def test_undeploy_whose_record_never_follows_fails_on_the_clock(clock):
    ml = MLCommonsDouble(clock, "DEPLOYED", cache="DEPLOYED", undeploy_lag=10_000)
    with pytest.raises(ClusterError, match=r"model m1 is DEPLOYED, not UNDEPLOYED, after 60s"):
        deployer(ml).undeploy("m1")
    assert 60 <= clock.t < 61


def test_undeploy_if_held_leaves_an_idle_model_alone(clock):
    ml = MLCommonsDouble(clock, "REGISTERED")
    deployer(ml).undeploy_if_held("m1")
    assert ml.calls == []
    ml = MLCommonsDouble(clock, "DEPLOY_FAILED", cache="DEPLOYING")  # not idle: a node may hold it
    deployer(ml).undeploy_if_held("m1")
    assert ml.calls == ["undeploy"]


# --- the cluster's side: profiles and model nodes -------------------------------------------------------------------

class ProfileCluster(Cluster):
    """A `Cluster` whose requests answer a node profile of `m1` and a node list."""

    def __init__(self, profile: dict[str, str | None], roles: dict[str, list[str]]) -> None:
        super().__init__(client=None, url="memory://")  # type: ignore[arg-type]
        self.profile, self.roles = profile, roles

    def request(self, method, path, body=None, params=None, **_):
        if path == "/_nodes":
            return {"nodes": {n: {"roles": r} for n, r in self.roles.items()}}
        assert path == "/_plugins/_ml/profile/models/m1", path
        return {"nodes": {n: {"models": {"m1": {"model_state": s}} if s else {}} for n, s in self.profile.items()}}


def test_profile_says_which_nodes_hold_the_model_and_which_are_stuck():
    cluster = ProfileCluster({"n3": "DEPLOYED", "n1": "DEPLOYED", "n2": "DEPLOYING", "n4": None},
                             {"n1": ["data"], "n2": ["data"], "n3": ["data"], "n4": ["data"]})
    assert cluster.nodes_holding("m1") == ["n1", "n3"]
    assert cluster.nodes_stuck("m1") == ["n2"]
    assert cluster.model_nodes() == ["n1", "n2", "n3", "n4"]
    assert not is_deployed(cluster, "m1", state="DEPLOYED")  # n2 and n4 run models too


def test_model_nodes_are_the_ml_nodes_when_there_are_any():
    cluster = ProfileCluster({"n1": "DEPLOYED"}, {"n1": ["ml"], "n2": ["data", "ingest"]})
    assert cluster.model_nodes() == ["n1"]
    assert is_deployed(cluster, "m1", state="DEPLOYED")
