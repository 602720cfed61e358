"""One bootstrap at a time per cluster: a lock document that the cluster itself arbitrates.

The reconciler finds objects by name, then creates the missing ones; two runs at once could both find
nothing and both create, leaving duplicate connectors and models. So a run first takes a lock: a document
created with `op_type=create` (of concurrent creators exactly one succeeds) that names its owner and an
expiry. A runner that finds the lock held waits, bounded and saying by whom; one that finds it expired (its
holder died without releasing it) takes it over with a compare-and-set on the document's version, so two
waiters cannot both take over. While the lock is held a heartbeat pushes the expiry forward, so a long run
keeps it and a killed run loses it within one `ttl_s`. It is released in `finally`.

Expiry is compared on each runner's own clock: runners whose clocks differ by more than `ttl_s` could take
over a live lock. Within one machine or NTP-synced ones that does not happen.
"""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from types import TracebackType
from typing import Protocol, Self

from bootstrap.opensearch_api import Cluster, ClusterError

LOCK_INDEX = "visual-search-bootstrap-lock"
LOCK_ID = "bootstrap"
# Hidden, one shard, a replica when there is a node for it: small and out of the way of `_cat/indices`.
LOCK_INDEX_SETTINGS = {"index": {"number_of_shards": 1, "auto_expand_replicas": "0-1", "hidden": True}}

Version = tuple[int, int]


class LockTimeout(ClusterError):
    """Another bootstrap held the lock for longer than this one was willing to wait."""


class LockLost(ClusterError):
    """The lock expired and was taken over while this run still worked: runs may have overlapped."""


class LockStore(Protocol):
    """One lock document with optimistic concurrency: every write names the version it replaces."""

    def create(self, body: dict) -> Version | None:
        """Write the document unless one exists; its version, or None when it already exists."""

    def get(self) -> tuple[dict, Version] | None:
        """The document and its version, or None when there is none."""

    def replace(self, body: dict, version: Version) -> Version | None:
        """Overwrite the document if still at `version`; the new version, or None if it moved on."""

    def delete(self, version: Version) -> bool:
        """Delete the document if still at `version`."""


class OpenSearchLockStore:
    """The lock document in a small hidden index of the cluster being bootstrapped."""

    def __init__(self, cluster: Cluster, index: str = LOCK_INDEX, doc_id: str = LOCK_ID) -> None:
        self.cluster = cluster
        self.index = index
        self.doc_id = doc_id
        self._index_ready = False

    def create(self, body: dict) -> Version | None:
        if not self._index_ready:
            # explicit, so that the cluster's auto-create defaults (and dynamic mappings) do not decide
            self.cluster.ensure_index(self.index, LOCK_INDEX_SETTINGS)
            self._index_ready = True
        return self.cluster.create_document(self.index, self.doc_id, body)

    def get(self) -> tuple[dict, Version] | None:
        return self.cluster.get_document(self.index, self.doc_id)

    def replace(self, body: dict, version: Version) -> Version | None:
        return self.cluster.replace_document(self.index, self.doc_id, body, version)

    def delete(self, version: Version) -> bool:
        return self.cluster.delete_document(self.index, self.doc_id, version)


def default_owner() -> str:
    """Who holds the lock, in words a waiting operator can act on: host, process id, and a per-run tag."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class BootstrapLock:
    """The lock as a context manager: `with BootstrapLock(store): reconcile()`.

    `wait_s` bounds the wait for another holder; `ttl_s` is how long a holder that stopped renewing keeps
    it; `on_wait` receives the sentences worth showing (who holds the lock, a takeover). `clock` and `sleep`
    are wall-clock seconds and a pause, replaceable so that expiry can be tested without waiting.
    """

    def __init__(self, store: LockStore, owner: str | None = None, ttl_s: float = 120, wait_s: float = 600,
                 poll_s: float = 2, heartbeat: bool = True, on_wait: Callable[[str], None] | None = None,
                 clock: Callable[[], float] = time.time, sleep: Callable[[float], None] = time.sleep) -> None:
        if ttl_s <= 0 or wait_s < 0 or poll_s <= 0:
            raise ValueError("ttl_s and poll_s must be positive, wait_s not negative")
        self.store = store
        self.owner = owner or default_owner()
        self.ttl_s = ttl_s
        self.wait_s = wait_s
        self.poll_s = poll_s
        self.heartbeat = heartbeat
        self.on_wait = on_wait or (lambda message: None)
        self.clock = clock
        self.sleep = sleep
        self.took_over_from: str | None = None
        self.lost = False
        self._version: Version | None = None
        self._guard = threading.Lock()  # the heartbeat and release never write at the same time
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None

    @property
    def held(self) -> bool:
        return self._version is not None and not self.lost

    def _body(self) -> dict:
        now = self.clock()
        return {"owner": self.owner, "acquired_at": now, "expires_at": now + self.ttl_s}

    def acquire(self) -> Self:
        """Take the lock: at once if free, by takeover if expired, else after waiting at most `wait_s`."""
        deadline = self.clock() + self.wait_s
        announced: str | None = None
        while True:
            version = self.store.create(self._body())
            if version is not None:
                return self._got(version)
            current = self.store.get()
            if current is None:
                continue  # released between our create and our read: try to create again
            doc, version = current
            holder = str(doc.get("owner", "unknown"))
            expires_at = float(doc.get("expires_at", 0))
            now = self.clock()
            if expires_at <= now:
                taken = self.store.replace(self._body(), version)
                if taken is not None:
                    self.took_over_from = holder
                    self.on_wait(f"took over the bootstrap lock of {holder}, expired {now - expires_at:.0f}s ago")
                    return self._got(taken)
                continue  # another waiter took it over first: read who holds it now
            if now >= deadline:
                raise LockTimeout(f"another bootstrap ({holder}) holds the lock {LOCK_INDEX}/{LOCK_ID} for "
                                  f"{expires_at - now:.0f}s more; gave up waiting after {self.wait_s:.0f}s. "
                                  "A holder that died frees it at expiry; try again then.")
            if announced != holder:
                self.on_wait(f"waiting for the bootstrap lock held by {holder} (expires in {expires_at - now:.0f}s "
                             f"unless renewed; waiting at most {deadline - now:.0f}s)")
                announced = holder
            self.sleep(max(0.0, min(self.poll_s, deadline - now, expires_at - now)))

    def _got(self, version: Version) -> Self:
        self._version = version
        self.lost = False
        if self.heartbeat:
            self._stop.clear()
            self._beat = threading.Thread(target=self._beat_loop, name="bootstrap-lock-heartbeat", daemon=True)
            self._beat.start()
        return self

    def renew(self) -> bool:
        """Push the expiry one `ttl_s` ahead; False (and `lost`) if the lock is no longer ours."""
        with self._guard:
            if self._version is None or self.lost:
                return False
            version = self.store.replace(self._body(), self._version)
            if version is None:
                self.lost = True
                return False
            self._version = version
            return True

    def _beat_loop(self) -> None:
        while not self._stop.wait(self.ttl_s / 3):
            try:
                if not self.renew():
                    return
            except ClusterError:
                continue  # a cluster hiccup: the next beat, well within the expiry, tries again

    def release(self) -> None:
        """Give the lock back if still ours; a lock taken over meanwhile belongs to its new holder."""
        self._stop.set()
        if self._beat is not None:
            self._beat.join()
            self._beat = None
        with self._guard:
            version, self._version = self._version, None
            if version is not None and not self.lost and not self.store.delete(version):
                self.lost = True

    def __enter__(self) -> Self:
        return self.acquire()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()
        if self.lost and exc_type is None:
            raise LockLost(f"the bootstrap lock expired during this run and was taken over ({LOCK_INDEX}); "
                           "another bootstrap may have run at the same time: run bootstrap again to check")


def bootstrap_lock(cluster: Cluster, **options) -> BootstrapLock:
    """The lock of this cluster (`with bootstrap_lock(cluster, on_wait=print): ...`); options as `BootstrapLock`."""
    return BootstrapLock(OpenSearchLockStore(cluster), **options)
