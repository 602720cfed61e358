"""The bootstrap's safety logic without a server: the lock (expiry, takeover, waiting), the choice among
duplicates and what counts as transient, each against a small in-memory double of what the cluster does (the
restart-safe deploy: test_model_deploy.py)."""

from __future__ import annotations

import random
import threading

import pytest

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
