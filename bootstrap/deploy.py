"""Leaving an ML Commons model deployed for real, whoever does the deploying, and taking it down again.

ML Commons 2.19 redeploys models by itself after a restart, and that redeploy can fail ("Fetching master key timed
out": the first decryption after the JVM starts may outlast its 3 s latch) and leave the model's node cache stuck
in DEPLOYING, so that every later deploy answers "Duplicate deploy model task" until an undeploy clears it. The
model index is not the truth either: after a restart it still says DEPLOYED for a model no node serves. So
*deployed* (`deployed`, the one definition) means the index records DEPLOYED *and* every node that runs models
holds it deployed in memory: a node that joined (or came back) after the deploy holds nothing until the model is
deployed again, and a request routed to it fails.

`ModelDeployer.deploy` is a small state machine over the calls of `MLCommons` (which `Cluster` makes): each round
reads the model; deployed → done; a deploy in flight (ML Commons' own, or another client's) → wait for it instead
of doubling it; otherwise clear what a failed deploy left and start one of our own, retrying transient refusals
with a doubling backoff, a bounded number of times.

Guarantee: `deploy` returns only once the model is deployed as above; it raises a `ClusterError` that says why
otherwise, within `timeout_s` plus one call. It starts at most `attempts` deploys of its own, and none while it
sees another in flight. Limit: "in flight" is judged on `clock`, compared with the times the cluster writes (the
model's last update, the deploy task's creation): clocks that differ by more than `RECENT_S` can make a stale
DEPLOYING look live (then it waits until `timeout_s`) or a live one look stale (then its deploy doubles the other,
ML Commons refuses it as a duplicate, and it waits for the other). Within one machine or NTP-synced ones that does
not happen. `clock` and `sleep` are wall-clock seconds and a pause, replaceable so that the waits can be tested
without waiting.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

from bootstrap.opensearch_api import DEPLOYED, DEPLOYING, DUPLICATE_DEPLOY, IDLE_STATES, ClusterError, is_transient
from bootstrap.opensearch_api import retrying as retry_transient

T = TypeVar("T")

# A DEPLOYING record, or a deploy task, older than this is stale: a node stopped mid-deploy (ML Commons' own
# correction of it, the sync-up job, does not even start after a failed automatic redeploy).
RECENT_S = 60.0
# States an undeploy may end in: a model whose deploy failed serves nothing, and ML Commons leaves it DEPLOY_FAILED
# after an undeploy (seen in CI when a test removed a deployment whose model had failed to deploy).
UNDEPLOYED_STATES = frozenset({"UNDEPLOYED", "REGISTERED", "CREATED", "DEPLOY_FAILED"})


class MLCommons(Protocol):
    """The ML Commons calls a deploy makes: reads of the model and where it runs, and the deploy and undeploy
    requests. None of them waits for the model index to follow."""

    def get_model(self, model_id: str) -> dict:
        """The model's record: `model_state` and `last_updated_time` (epoch ms) as the model index has them."""

    def nodes_holding(self, model_id: str) -> list[str]:
        """The nodes whose memory holds the model deployed."""

    def nodes_stuck(self, model_id: str) -> list[str]:
        """The nodes whose memory holds the model in another state than DEPLOYED."""

    def model_nodes(self) -> list[str]:
        """The nodes ML Commons runs models on."""

    def deploy_task_running(self, model_id: str, since_ms: int) -> bool:
        """Whether a deploy task of the model created at or after `since_ms` has not ended."""

    def start_deploy(self, model_id: str) -> str | None:
        """Ask for a deploy: its task id, or None when it is done without one."""

    def wait_ml_task(self, task_id: str, timeout_s: float) -> dict:
        """The task once ended (its `state`, `error`); a ClusterError when it has not within `timeout_s`."""

    def request_undeploy(self, model_id: str, node_ids: list[str] | None = None) -> None:
        """Ask for an undeploy, from every node or from `node_ids` only."""


def deployed(state: str, holders: Collection[str], model_nodes: Callable[[], Collection[str]]) -> bool:
    """Deployed for real: recorded DEPLOYED and held by every node that runs models. `model_nodes` is asked only
    when the rest holds (one request fewer for a model that is plainly not deployed)."""
    return state == DEPLOYED and bool(holders) and set(holders) >= set(model_nodes())


def is_deployed(ml: MLCommons, model_id: str, state: str | None = None) -> bool:
    """`deployed`, read from the cluster now (`state` when the caller has just read the record)."""
    if state is None:
        state = ml.get_model(model_id).get("model_state", "")
    return deployed(state, ml.nodes_holding(model_id), ml.model_nodes)


@dataclass
class _Deploy:
    """One `deploy` call: its bounds and what happened so far."""

    model_id: str
    label: str
    timeout_s: float
    deadline: float
    attempts: int
    backoff_s: float
    backoff_max_s: float
    started: int = 0
    errors: list[str] = field(default_factory=list)
    clear_first: bool = False  # the last deploy left something to clear before the next


class ModelDeployer:
    """Deploys and undeploys the models of one cluster, waiting on `clock` with `sleep` (see the module docstring)."""

    def __init__(self, ml: MLCommons, clock: Callable[[], float] = time.time,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.ml = ml
        self.clock = clock
        self.sleep = sleep

    def deploy(self, model_id: str, name: str | None = None, timeout_s: float = 300, attempts: int = 4,
               backoff_s: float = 2, backoff_max_s: float = 20) -> None:
        """Leave the model deployed, whoever does the deploying; raise a `ClusterError` that says why if not.

        Before deploying a model nobody serves that is not idle, it is undeployed first: that clears a node cache
        left stuck by a failed deploy, which would otherwise refuse every deploy as a duplicate (when other nodes
        serve it, only the stuck nodes are cleared, after a duplicate refusal: a node that rejoined a cluster can
        hold it DEPLOYING for good). "Duplicate deploy model task" means someone else is deploying: wait for it.
        Transient refusals ("Fetching master key timed out", 429/5xx, "not ready") are retried after a backoff that
        doubles from `backoff_s` up to `backoff_max_s`; anything else is final.
        """
        run = _Deploy(model_id, f"{name} ({model_id})" if name else model_id, timeout_s, self.clock() + timeout_s,
                      attempts, backoff_s, backoff_max_s)
        while not self._round(run):
            pass

    def _round(self, run: _Deploy) -> bool:
        """One look at the model and what it calls for; True once it is deployed."""
        model = self._retrying(lambda: self.ml.get_model(run.model_id), run)
        state = model.get("model_state", "")
        holders = self._retrying(lambda: self.ml.nodes_holding(run.model_id), run)
        if deployed(state, holders, lambda: self._retrying(self.ml.model_nodes, run)):
            return True
        if self._someone_deploying(model, run):
            if self.clock() >= run.deadline:
                raise ClusterError(f"model {run.label} is still {state or 'deploying'} after {run.timeout_s:.0f}s "
                                   "(a deploy started by ML Commons or another client did not finish)")
            self.sleep(1)
            return False
        if run.started >= run.attempts or self.clock() >= run.deadline:
            why = "; ".join(run.errors[-3:]) or "no error reported"
            raise ClusterError(f"model {run.label} is {state or 'unknown'}, not DEPLOYED, after {run.started} deploy "
                               f"attempt(s) in {run.timeout_s - self._left(run):.0f}s: {why}")
        self._clear(state, holders, run)
        run.started += 1
        self._settle(self._start_deploy(run), run)
        return False

    def _someone_deploying(self, model: dict, run: _Deploy) -> bool:
        """A deploy in flight: the record says DEPLOYING and was written lately, or a recent deploy task runs."""
        updated = model.get("last_updated_time")
        since = self.clock() - RECENT_S
        if model.get("model_state") == DEPLOYING and (not isinstance(updated, int | float) or updated / 1000 > since):
            return True
        return self._retrying(lambda: self.ml.deploy_task_running(run.model_id, int(since * 1000)), run)

    def _clear(self, state: str, holders: list[str], run: _Deploy) -> None:
        """Undo what would make our deploy a duplicate: everywhere when no node serves the model, else only on the
        nodes stuck with it (the others go on serving)."""
        if not holders and (run.clear_first or state not in IDLE_STATES):
            self._retrying(lambda: self.ml.request_undeploy(run.model_id), run)
        elif holders and run.clear_first:
            stuck = self._retrying(lambda: self.ml.nodes_stuck(run.model_id), run)
            if stuck:
                self._retrying(lambda: self.ml.request_undeploy(run.model_id, stuck), run)

    def _start_deploy(self, run: _Deploy) -> str | None:
        """One deploy request and its task; the error text if it failed, None if it completed."""
        try:
            task_id = self.ml.start_deploy(run.model_id)
            if task_id is None:
                return None
            task = self.ml.wait_ml_task(task_id, max(1.0, self._left(run)))
        except ClusterError as exc:
            return str(exc)
        if task.get("state") == "COMPLETED":
            return None
        return f"task {task_id} {task.get('state', '').lower()}: {task.get('error', task)}"

    def _settle(self, error: str | None, run: _Deploy) -> None:
        """After our deploy: let the model index catch up, give a duplicate's other deploy time, back off a
        transient failure; a permanent one ends the deploy."""
        if error is None:  # the task is done; the model index follows a moment later
            self._wait_until_deployed(run.model_id, min(15.0, self._left(run)))
            run.clear_first = False
            return
        run.errors.append(error)
        if DUPLICATE_DEPLOY in error.lower():
            # a node already holds the model: deployed or deploying by someone else, or stuck; give the other
            # deploy time to finish, and clear the cache before our next try if it did not
            self._wait_until_deployed(run.model_id, min(30.0, self._left(run)))
            run.clear_first = True
            return
        if not is_transient(error):
            raise ClusterError(f"deploying model {run.label} failed: {error}")
        run.clear_first = True
        self.sleep(min(run.backoff_max_s, run.backoff_s * 2 ** (run.started - 1), self._left(run)))

    def _wait_until_deployed(self, model_id: str, timeout_s: float) -> bool:
        deadline = self.clock() + timeout_s
        while True:
            try:
                if is_deployed(self.ml, model_id):
                    return True
            except ClusterError as exc:
                if not is_transient(exc):
                    raise
            if self.clock() >= deadline:
                return False
            self.sleep(0.5)

    def _retrying(self, call: Callable[[], T], run: _Deploy) -> T:
        return retry_transient(call, run.deadline, self.clock, self.sleep)

    def _left(self, run: _Deploy) -> float:
        return max(0.0, run.deadline - self.clock())

    def undeploy(self, model_id: str, timeout_s: float = 60) -> None:
        """Undeploy from every node and wait until the model index says so (`UNDEPLOYED_STATES`)."""
        self.ml.request_undeploy(model_id)
        deadline = self.clock() + timeout_s
        state = ""
        while self.clock() < deadline:
            state = self.ml.get_model(model_id).get("model_state", "")
            if state in UNDEPLOYED_STATES:
                return
            self.sleep(0.5)
        raise ClusterError(f"model {model_id} is {state or 'unknown'}, not UNDEPLOYED, after {timeout_s:.0f}s")

    def undeploy_if_held(self, model_id: str) -> None:
        """`undeploy` unless the record says no node should hold the model: before a change ML Commons refuses on a
        deployed model (its connector's update, its deletion)."""
        if self.ml.get_model(model_id).get("model_state", "") not in IDLE_STATES:
            self.undeploy(model_id)
