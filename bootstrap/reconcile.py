"""The bootstrap as a reconciler: read what the cluster has, diff it against what the config wants, apply the plan.

Three stages, the way Terraform plans and applies, each a module of its own:

* `bootstrap.observe.observe(cluster, settings)` reads everything once: cluster settings, model groups,
  connectors, models (with the state the model index records and whether they are deployed for real), pipelines,
  index templates, and the managed indices (what their name resolves to, mapping, settings, document counts,
  older versions).
* `bootstrap.diff.diff(desired, observed)` is pure: it returns a `bootstrap.plan.Plan` of typed steps, each
  `create`, `update`, `replace`, `delete` or `unchanged`, each saying why, in dependency order (comparisons of
  definitions, mappings and settings in `bootstrap.compare`). It is tested without a cluster.
* `bootstrap.apply.apply(plan, cluster)` executes the steps in order; a `replace` step (a new version of an index,
  its documents re-analyzed) is `bootstrap.replace`, and is refused unless `allow_reindex` is given. A dry run is
  `diff` without `apply`.

`Reconciler` runs the three for one config, as the CLI, `make up` and the tests do.
"""

from __future__ import annotations

from collections.abc import Callable

from bootstrap import desired as desired_mod
from bootstrap.apply import apply
from bootstrap.diff import diff
from bootstrap.observe import observe
from bootstrap.opensearch_api import Cluster
from bootstrap.plan import Plan, ReplaceRefused
from common.config import Settings
from common.model_facts import ClipFacts

__all__ = ["Plan", "Reconciler", "ReplaceRefused"]


class Reconciler:
    """observe → diff → apply for one config.

    `dry_run` stops after the diff. `allow_reindex` lets the apply replace an index (`bootstrap.replace`); without
    it a plan that needs a replacement raises `ReplaceRefused` and changes nothing.
    """

    def __init__(self, cluster: Cluster, settings: Settings, dry_run: bool = False, allow_reindex: bool = False,
                 say: Callable[[str], None] | None = None) -> None:
        self.cluster = cluster
        self.settings = settings
        self.dry_run = dry_run
        self.allow_reindex = allow_reindex
        self.say = say

    def plan(self, clip: ClipFacts) -> Plan:
        return diff(desired_mod.desired_state(self.settings, clip), observe(self.cluster, self.settings),
                    rebuild_deferred=self.allow_reindex)

    def run(self, clip: ClipFacts) -> Plan:
        plan = self.plan(clip)
        if self.dry_run:
            return plan
        return apply(plan, self.cluster, allow_reindex=self.allow_reindex, say=self.say)
