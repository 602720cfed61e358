"""The bootstrap's safety logic without a server: the lock (expiry, takeover, waiting), the choice among
duplicates, and the restart-safe deploy, each against a small in-memory double of what the cluster does."""

from __future__ import annotations

import random
import threading
from types import SimpleNamespace

import pytest

from bootstrap import opensearch_api
from bootstrap.lock import BootstrapLock, LockLost, LockTimeout
from bootstrap.opensearch_api import Cluster, ClusterError, is_transient, oldest


class MemoryLockStore:
    """One versioned document, with the cluster's semantics: create-if-absent, compare-and-set, delete-if."""

    def __init__(self) -> None:
        self.doc: dict | None = None
        self.version: tuple[int, int] | None = None
        self._seq = 0
        self._mutex = threading.Lock()

    def _next(self) -> tuple[int, int]:
        self._seq += 1
        return (self._seq, 1)

    def create(self, body: dict) -> tuple[int, int] | None:
        with self._mutex:
            if self.doc is not None:
                return None
            self.doc, self.version = dict(body), self._next()
            return self.version

    def get(self) -> tuple[dict, tuple[int, int]] | None:
        with self._mutex:
            return None if self.doc is None else (dict(self.doc), self.version)

    def replace(self, body: dict, version: tuple[int, int]) -> tuple[int, int] | None:
        with self._mutex:
            if self.doc is None or version != self.version:
                return None
            self.doc, self.version = dict(body), self._next()
            return self.version

    def delete(self, version: tuple[int, int]) -> bool:
        with self._mutex:
            if self.doc is None or version != self.version:
                return False
            self.doc = self.version = None
            return True


class Clock:
    """Wall-clock seconds that move only when someone sleeps."""

    def __init__(self, now: float = 1_000.0) -> None:
        self.now = now
        self.naps: list[float] = []
        self.on_sleep = None

    def time(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.naps.append(seconds)
        self.now += max(seconds, 0.001)
        if self.on_sleep:
            self.on_sleep()


def make_lock(store, clock, owner, **kw) -> BootstrapLock:
    return BootstrapLock(store, owner=owner, heartbeat=False, clock=clock.time, sleep=clock.sleep, **kw)


# --- the lock ----------------------------------------------------------------------------------------------

def test_free_lock_is_taken_at_once_and_released():
    store, clock = MemoryLockStore(), Clock()
    with make_lock(store, clock, "a", ttl_s=60) as lock:
        assert lock.held
        assert store.doc["owner"] == "a"
        assert store.doc["expires_at"] == clock.now + 60
    assert store.doc is None
    assert clock.naps == []


def test_held_lock_makes_a_second_runner_give_up_after_its_wait_naming_the_holder():
    store, clock = MemoryLockStore(), Clock()
    messages: list[str] = []
    make_lock(store, clock, "host-a:1", ttl_s=600).acquire()
    second = make_lock(store, clock, "host-b:2", ttl_s=600, wait_s=30, poll_s=2, on_wait=messages.append)
    with pytest.raises(LockTimeout, match="host-a:1"):
        second.acquire()
    assert 30 <= sum(clock.naps) < 33  # bounded by wait_s, in poll-sized naps
    assert len(messages) == 1 and "held by host-a:1" in messages[0]  # said once, not every poll
    assert store.doc["owner"] == "host-a:1"


def test_waiting_runner_gets_the_lock_when_the_holder_releases():
    store, clock = MemoryLockStore(), Clock()
    first = make_lock(store, clock, "a", ttl_s=600).acquire()
    clock.on_sleep = lambda: first.release() if clock.now > 1_010 else None
    second = make_lock(store, clock, "b", ttl_s=600, wait_s=60, poll_s=2).acquire()
    assert second.held and store.doc["owner"] == "b"
    assert second.took_over_from is None
    assert 10 <= sum(clock.naps) <= 14


def test_expired_lock_is_taken_over_and_the_old_holder_cannot_release_it():
    store, clock = MemoryLockStore(), Clock()
    messages: list[str] = []
    dead = make_lock(store, clock, "dead-runner", ttl_s=30).acquire()  # then never renews: it was killed
    clock.now += 31
    fresh = make_lock(store, clock, "fresh", ttl_s=30, wait_s=0, on_wait=messages.append).acquire()
    assert fresh.took_over_from == "dead-runner"
    assert store.doc["owner"] == "fresh"
    assert any("took over" in m and "dead-runner" in m for m in messages)
    dead.release()  # a runner that comes back late must not free someone else's lock
    assert store.doc["owner"] == "fresh"
    assert dead.lost


def test_runner_waits_out_an_unrenewed_lock_then_takes_it_over():
    store, clock = MemoryLockStore(), Clock()
    make_lock(store, clock, "stalled", ttl_s=20).acquire()
    waiter = make_lock(store, clock, "waiter", ttl_s=20, wait_s=120, poll_s=5).acquire()
    assert waiter.took_over_from == "stalled"
    assert 20 <= sum(clock.naps) <= 25


def test_only_one_of_two_racing_takeovers_wins():
    store, clock = MemoryLockStore(), Clock()
    make_lock(store, clock, "dead", ttl_s=10).acquire()
    clock.now += 11
    seen = store.get()  # both waiters read the same expired version ...
    first = make_lock(store, clock, "w1", ttl_s=10)
    second = make_lock(store, clock, "w2", ttl_s=10, wait_s=0)
    assert store.replace(first._body(), seen[1]) is not None  # ... w1's compare-and-set lands first
    first._version = store.version
    assert store.replace(second._body(), seen[1]) is None  # w2's, on the same version, is refused
    with pytest.raises(LockTimeout, match="w1"):
        second.acquire()  # and re-reading shows a live lock held by w1


def test_renewal_pushes_the_expiry_and_notices_a_takeover():
    store, clock = MemoryLockStore(), Clock()
    lock = make_lock(store, clock, "a", ttl_s=30).acquire()
    clock.now += 20
    assert lock.renew()
    assert store.doc["expires_at"] == clock.now + 30
    clock.now += 31  # renewals stopped (a paused process): someone takes over
    make_lock(store, clock, "b", ttl_s=30, wait_s=0).acquire()
    assert not lock.renew()
    assert lock.lost


def test_lost_lock_is_reported_when_the_run_ends():
    store, clock = MemoryLockStore(), Clock()
    with pytest.raises(LockLost), make_lock(store, clock, "a", ttl_s=30):
        clock.now += 31
        make_lock(store, clock, "b", ttl_s=30, wait_s=0).acquire()
    assert store.doc["owner"] == "b"


def test_lock_is_released_when_the_run_fails():
    store, clock = MemoryLockStore(), Clock()
    with pytest.raises(RuntimeError, match="boom"), make_lock(store, clock, "a"):
        raise RuntimeError("boom")
    assert store.doc is None


def test_heartbeat_keeps_a_long_run_locked():
    store = MemoryLockStore()
    lock = BootstrapLock(store, owner="a", ttl_s=0.3, wait_s=0)
    with lock:
        first_expiry = store.doc["expires_at"]
        threading.Event().wait(0.5)  # longer than the ttl: only the heartbeat keeps it
        assert store.doc["expires_at"] > first_expiry
        assert lock.held
    assert store.doc is None


def test_concurrent_runners_hold_the_lock_one_at_a_time():
    store = MemoryLockStore()
    inside = []
    overlap = []

    def run(name: str) -> None:
        with BootstrapLock(store, owner=name, ttl_s=5, wait_s=10, poll_s=0.01):
            inside.append(name)
            if len(inside) > 1:
                overlap.append(list(inside))
            threading.Event().wait(0.05)
            inside.remove(name)

    threads = [threading.Thread(target=run, args=(f"r{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert overlap == []
    assert store.doc is None


# --- duplicates: every runner picks the same one --------------------------------------------------------------

def test_oldest_picks_by_created_time_then_id_whatever_the_order():
    hits = [{"id": "b", "created_time": 200}, {"id": "z", "created_time": 100}, {"id": "a", "created_time": 100},
            {"id": "0"}]
    for _ in range(10):
        random.shuffle(hits)
        assert oldest(hits)["id"] == "a"
    assert oldest([{"id": "x"}, {"id": "w"}])["id"] == "w"  # no time: the smallest id
    assert oldest([]) is None


class MLObjectsDouble(Cluster):
    """ML Commons' search and get for connectors, models and model groups, over an in-memory list."""

    def __init__(self, objects: dict[str, list[dict]]) -> None:
        super().__init__(client=None, url="memory://")
        self.objects = objects

    def request(self, method, path, body=None, params=None):
        parts = path.strip("/").split("/")  # _plugins/_ml/<kind>/<id or _search>
        kind = parts[2]
        if parts[3] == "_search":
            name = body["query"]["bool"]["must"][0]["term"]["name.keyword"]
            hits = [o for o in self.objects[kind] if o["name"] == name]
            random.shuffle(hits)  # the search order is not ours to rely on
            hits = hits[: body["size"]]
            return {"hits": {"hits": [{"_id": o["id"], "_source": {k: v for k, v in o.items() if k != "id"}}
                                      for o in hits]}}
        found = next(o for o in self.objects[kind] if o["id"] == parts[3])
        return {k: v for k, v in found.items() if k != "id"}


def test_find_functions_agree_on_one_of_several_duplicates():
    def dupes(name: str) -> list[dict]:
        return [{"id": f"{name}-new", "name": name, "created_time": 3_000},
                {"id": f"{name}-old", "name": name, "created_time": 1_000},
                {"id": f"{name}-mid", "name": name, "created_time": 2_000},
                {"id": "other", "name": "someone-else", "created_time": 1}]

    cluster = MLObjectsDouble({"connectors": dupes("c"), "models": dupes("m"), "model_groups": dupes("g")})
    for _ in range(10):
        assert cluster.find_connector("c")["id"] == "c-old"
        assert cluster.find_model("m")["id"] == "m-old"
        assert cluster.find_model_group("g")["id"] == "g-old"
    assert cluster.find_connector("absent") is None


# --- what counts as transient ---------------------------------------------------------------------------------

@pytest.mark.parametrize(("error", "status", "transient"), [
    ("Fetching master key timed out.", None, True),
    ("The ML encryption master key has not been initialized yet. Please retry after waiting for 10 seconds.",
     None, True),
    ("exceed max running task limit", None, True),
    ("anything", 503, True),
    ("anything", 429, True),
    ("Duplicate deploy model task", 429, False),  # handled as "someone else deploys", not retried blindly
    ("Failed to find connector", 404, False),
    ("no eligible node found", 400, False),
])
def test_transient_classification(error, status, transient):
    assert is_transient(ClusterError(error, status=status)) is transient


# --- the restart-safe deploy, against a double that misbehaves like ML Commons 2.19.1 -------------------------

class FakeTime:
    """Stands in for the `time` module inside opensearch_api: waits cost nothing and move both clocks."""

    def __init__(self) -> None:
        self.t = 0.0

    def monotonic(self) -> float:
        return self.t

    def time(self) -> float:
        return 1_800_000_000 + self.t

    def sleep(self, seconds: float) -> None:
        self.t += max(seconds, 0.01)


class MLCommonsDouble(Cluster):
    """One remote model on one node, with ML Commons' quirks measured on 2.19.1:

    * a deploy that fails (e.g. `fail_next`: "Fetching master key timed out") marks the model DEPLOY_FAILED
      and leaves the node cache stuck in DEPLOYING;
    * while the node cache holds the model, a deploy fails with "Duplicate deploy model task" (and marks the
      model DEPLOY_FAILED, even when the other deploy succeeds);
    * an undeploy clears the node cache whatever its state;
    * `other_deploy_in` rounds from now, someone else's deploy (the automatic redeploy) finishes;
    * `joined`: nodes that joined after the model was deployed and hold nothing until the next deploy;
    * `stuck`: nodes that came back holding the model DEPLOYING for good while n1 serves it: every deploy fails
      as a duplicate until those nodes alone are undeployed (measured on a 3-node 2.19.1 cluster).
    """

    def __init__(self, clock: FakeTime, state: str, cache: str | None = None, fail_next: list[str] | None = None,
                 other_deploy_in: int | None = None, joined: tuple[str, ...] = (),
                 stuck: tuple[str, ...] = ()) -> None:
        super().__init__(client=None, url="memory://")
        self.nodes = ["n1", *joined, *stuck]
        self.behind = set(joined)
        self.stuck = set(stuck)
        self.clock = clock
        self.state = state
        self.cache = cache
        self.fail_next = list(fail_next or [])
        self.other_deploy_in = other_deploy_in
        self.updated = clock.time()
        self.calls: list[str] = []
        self.tasks: dict[str, dict] = {}

    def _set(self, state: str) -> None:
        self.state, self.updated = state, self.clock.time()

    def request(self, method, path, body=None, params=None):
        if path == "/_nodes":
            return {"nodes": {n: {"roles": ["cluster_manager", "data", "ingest"]} for n in self.nodes}}
        tail = path.split("/_ml/")[1]
        if self.other_deploy_in is not None:
            self.other_deploy_in -= 1
            if self.other_deploy_in <= 0:
                self.other_deploy_in = None
                self.cache = "DEPLOYED"
                self._set("DEPLOYED")
        if method == "GET" and tail == "models/m1":
            return {"model_state": self.state, "last_updated_time": int(self.updated * 1000)}
        if tail == "profile/models/m1":
            holding = [n for n in self.nodes if n not in self.behind | self.stuck] if self.cache else []
            return {"nodes": {**{n: {"models": {"m1": {"model_state": self.cache}}} for n in holding},
                              **{n: {"models": {"m1": {"model_state": "DEPLOYING"}}} for n in self.stuck}}}
        if tail == "tasks/_search":
            return {"hits": {"hits": []}}
        if tail.startswith("tasks/"):
            return self.tasks[tail.split("/")[1]]
        if tail == "models/m1/_undeploy" and body and body.get("node_ids"):
            self.calls.append(f"undeploy {','.join(body['node_ids'])}")
            self.stuck -= set(body["node_ids"])
            return {}
        if tail == "models/m1/_undeploy":
            self.calls.append("undeploy")
            self.cache = None
            self._set("UNDEPLOYED")
            return {}
        if tail == "models/m1/_deploy":
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
            return {"task_id": task_id, "status": "CREATED"}
        raise AssertionError(f"unexpected {method} {path}")


@pytest.fixture
def fake_time(monkeypatch):
    clock = FakeTime()
    monkeypatch.setattr(opensearch_api, "time", SimpleNamespace(monotonic=clock.monotonic, time=clock.time,
                                                               sleep=clock.sleep))
    return clock


def test_deployed_and_served_model_is_left_alone(fake_time):
    ml = MLCommonsDouble(fake_time, "DEPLOYED", cache="DEPLOYED")
    ml.deploy_model("m1", sleep=fake_time.sleep)
    assert ml.calls == []


def test_a_node_that_joined_after_the_deploy_gets_the_model(fake_time):
    """Served on n1 only while n2 and n3 run models too: deployed again (to all), not undeployed first."""
    ml = MLCommonsDouble(fake_time, "DEPLOYED", cache="DEPLOYED", joined=("n2", "n3"))
    assert not ml.model_deployed("m1")
    ml.deploy_model("m1", sleep=fake_time.sleep)
    assert ml.calls == ["deploy"]
    assert ml.served_on("m1") == ["n1", "n2", "n3"] and ml.model_deployed("m1")


def test_a_node_stuck_deploying_while_the_others_serve_is_cleared_alone(fake_time):
    ml = MLCommonsDouble(fake_time, "PARTIALLY_DEPLOYED", cache="DEPLOYED", stuck=("n2",))
    ml.deploy_model("m1", sleep=fake_time.sleep)
    assert ml.calls == ["deploy", "undeploy n2", "deploy"]  # never the model everywhere: n1 kept serving
    assert ml.served_on("m1") == ["n1", "n2"] and ml.model_deployed("m1")


def test_stale_deployed_record_after_a_restart_is_deployed_again(fake_time):
    ml = MLCommonsDouble(fake_time, "DEPLOYED", cache=None)
    ml.deploy_model("m1", sleep=fake_time.sleep)
    assert ml.calls == ["undeploy", "deploy"]
    assert (ml.state, ml.cache) == ("DEPLOYED", "DEPLOYED")


def test_failed_automatic_redeploy_with_its_stuck_cache_is_cleared_and_redeployed(fake_time):
    ml = MLCommonsDouble(fake_time, "DEPLOY_FAILED", cache="DEPLOYING")  # what a restart left, measured
    ml.deploy_model("m1", sleep=fake_time.sleep)
    assert ml.calls == ["undeploy", "deploy"]
    assert ml.state == "DEPLOYED"


def test_master_key_timeout_is_retried_with_backoff(fake_time):
    ml = MLCommonsDouble(fake_time, "REGISTERED", fail_next=["Fetching master key timed out."] * 2)
    ml.deploy_model("m1", sleep=fake_time.sleep, backoff_s=2)
    assert ml.calls == ["deploy", "undeploy", "deploy", "undeploy", "deploy"]
    assert ml.state == "DEPLOYED"
    assert fake_time.t >= 2 + 4  # two backoffs, doubling


def test_a_deploy_in_flight_is_waited_for_not_doubled(fake_time):
    ml = MLCommonsDouble(fake_time, "DEPLOYING", cache="DEPLOYING", other_deploy_in=6)
    ml.updated = fake_time.time()  # a fresh DEPLOYING: someone is at it
    ml.deploy_model("m1", sleep=fake_time.sleep)
    assert ml.calls == []
    assert ml.state == "DEPLOYED"


def test_duplicate_deploy_waits_for_the_other_deploy(fake_time):
    # the record does not say DEPLOYING (yet), but the node holds the model: our deploy is the duplicate
    ml = MLCommonsDouble(fake_time, "UNDEPLOYED", cache="DEPLOYING", other_deploy_in=8)
    ml.deploy_model("m1", sleep=fake_time.sleep)
    assert ml.calls[0] == "deploy" and "undeploy" not in ml.calls
    assert (ml.state, ml.cache) == ("DEPLOYED", "DEPLOYED")


def test_permanent_failure_ends_with_a_clear_error_after_bounded_attempts(fake_time):
    ml = MLCommonsDouble(fake_time, "REGISTERED", fail_next=["Fetching master key timed out."] * 10)
    with pytest.raises(ClusterError, match=r"embed \(m1\) is DEPLOY_FAILED, not DEPLOYED, after 3 deploy "
                                           r"attempt\(s\).*master key"):
        ml.deploy_model("m1", attempts=3, sleep=fake_time.sleep, name="embed")
    assert ml.calls.count("deploy") == 3


def test_non_transient_failure_is_not_retried(fake_time):
    ml = MLCommonsDouble(fake_time, "REGISTERED", fail_next=["Failed to find connector"])
    with pytest.raises(ClusterError, match=r"deploying model m1 failed: .*Failed to find connector"):
        ml.deploy_model("m1", sleep=fake_time.sleep)
    assert ml.calls == ["deploy"]
