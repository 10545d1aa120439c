"""What one search needs (`SearchSettings`, checked when made) and about how long it takes.

    settings = SearchSettings(study="demo", space=load_search_space("exmobilevit_s"))
    expected_seconds(settings, load_recipe("proxy"), n_train=1437)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rhosearch import values
from rhosearch.core.space import SearchSpace
from rhosearch.deploy.latency import LatencySettings
from rhosearch.deploy.latency_model import LatencyPricer
from rhosearch.execution.jobstore import JobStore
from rhosearch.execution.resources import Budget, concurrent_trials, trial_resources
from rhosearch.record.study import (
    objective_names,
)
from rhosearch.training.datasets import head_recipe_for
from rhosearch.vocab import ALL_STAGES, SEARCH_STAGES, Stage

__all__ = ["SearchSettings", "expected_seconds"]


@dataclass
class SearchSettings:
    """Everything one search needs (the CLI fills it; tests build it directly)."""

    study: str
    space: SearchSpace
    trials: int = 12
    budget: Budget = field(default_factory=Budget)
    data: str = "digits"
    data_root: Path | None = None
    download: bool = False
    recipe: str | None = None  # None: `proxy_recipe_for(data)`
    recipe_overrides: dict[str, Any] = field(default_factory=dict)
    sampler: str = "gp"  # the best of benchmarks/sampler_table.py at 12, 24 and 48 trials
    seed: int = 0
    storage: str | None = None
    reports_dir: Path = Path("reports")
    resume: bool = False
    address: str | None = None
    gpus_per_trial: float | None = None
    cpus_per_trial: float | None = None
    gmacs_objective: bool = False
    # Latency overhead over the baseline (ms) as an objective: priced by `deploy.latency`'s
    # table where it has the configuration, else by its model (each trial says which).
    latency_objective: bool = False
    latency: LatencySettings = field(default_factory=lambda: LatencySettings(max_seconds=10.0))
    latency_pricer: LatencyPricer | None = None  # filled by the driver before trials run
    progress: bool = True
    stage: str = ALL_STAGES  # as the CLI's --stage: every stage in turn
    keep_checkpoints: bool = False  # proxy trials' checkpoint.pt (never resumed from) stays
    noise_seeds: int = 3  # extra seeds of the baseline: the noise floor (0: not measured)
    # The resolve stage (`stages/resolve.py`): at most this many further paired seeds per
    # contender (0: off). 2: at most 2 rounds (on 2 CPUs, 46-140 s of the default search).
    resolve_seeds: int = 2
    # Contenders raced, best first: with one-seed intervals (sigma ~2 pts, 3 df) nearly every
    # configuration overlaps the front, and racing all 12 would double the search's time.
    # None: as many as the budget trains at once, at least 2 (`contenders_raced`): a round then
    # takes one run's time (3 on 2 CPUs took two, one of them with a CPU idle).
    resolve_contenders: int | None = None
    # The one-shot front as the proxy stage's first proposals: off, since the one-shot ranking
    # does not agree with longer training beyond noise (benchmarks/fidelity.py).
    enqueue_oneshot_front: bool = False
    early_stop: str = "none"  # "asha": Ray Tune's ASHA stops trials at half the proxy epochs
    # Where jobs keep their files and Ray Tune its state (a folder every node can write, or a
    # bucket URI); None: reports/<study>/ray on this machine.
    storage_path: str | None = None
    # Warm workers: a Ray worker runs trial after trial (Tune's reuse_actors), paying imports
    # and data loading once; False starts a fresh worker per trial (benchmarks compare both).
    reuse_workers: bool = True
    # The head stage (drivers/head.py): head seeds per trunk, trunks beyond the noise floor's,
    # overrides of the `head` recipe, and whether its front is queued for the proxy stage
    # (None: off, since benchmarks/fidelity.py does not show it ranking better than the
    # one-shot stage; see docs/head-stage.md).
    head_seeds: int = 1
    head_trunks: int = 0
    head_overrides: dict[str, Any] = field(default_factory=dict)
    enqueue_head_front: bool | None = None

    def __post_init__(self) -> None:
        """The one set of value checks (also on `dataclasses.replace`); checks that read the
        space, the study or the cluster stay with the driver that needs them."""
        values.one_of(self.stage, SEARCH_STAGES, what="stage")
        values.one_of(self.sampler, values.SAMPLERS, what="sampler")
        values.one_of(self.early_stop, values.EARLY_STOP, what="--early-stop")
        values.at_least(self.noise_seeds, 0, flag="--noise-seeds",
                        hint="give 0 (no noise floor) or more seeds, e.g. 3")
        values.at_least(self.resolve_seeds, 0, flag="--resolve-seeds",
                        hint="give 0 (no resolve stage) or more seeds, e.g. 2")
        if self.resolve_contenders is not None:
            values.at_least(self.resolve_contenders, 1, flag="--resolve-contenders",
                            hint="give 1 or more contenders, e.g. 2")
        values.at_least(self.head_seeds, 1, flag="--head-seeds",
                        hint="give 1 or more head seeds per trunk, e.g. 2")
        values.at_least(self.head_trunks, 0, flag="--head-trunks",
                        hint="give 0 (the noise floor's trunks only) or more extra trunks, e.g. 1")

    def contenders_raced(self) -> int:
        """The resolve stage's contender cap: `resolve_contenders`, or as many proxy runs as
        the budget trains side by side (at least 2)."""
        if self.resolve_contenders is not None:
            return self.resolve_contenders
        resources = trial_resources(self.budget, gpus_per_trial=self.gpus_per_trial,
                                    cpus_per_trial=self.cpus_per_trial)
        return max(2, concurrent_trials(self.budget, resources))

    @property
    def objectives(self) -> list[str]:
        return objective_names(gmacs=self.gmacs_objective, latency=self.latency_objective)

    def job_store(self) -> JobStore:
        return JobStore.for_study(self.study, reports_dir=self.reports_dir,
                                  storage_path=self.storage_path)


# The default first search (MobileViT-S on digits, 2 CPUs: a 3-epoch supernet, 3 trunks, 12
# proxy trials and 2 resolve runs of 3 epochs each, 69 steps) took 577 s in stop 26's
# fresh-clone CI at 008b705, the slowest quiet run measured (524 s for the same work at 94945e3
# an hour before; stop 25's machine about 1.3x faster). Its split as measured at 94945e3 (377 s
# outside the heads, 147 s of heads) scaled to the 577 s: seconds per unit of work, one unit
# being one proxy step of one configuration on one CPU's share (a supernet step trains four
# configurations on them all).
_REFERENCE_S, _REFERENCE_UNITS = 377.0 * 577 / 524, 4 * 69 + 17 * 69 / 2


# The heads of that search (144 configurations x 3 head epochs over 1,437 cached images, on 3
# trunks, a Ray task each): seconds per head, epoch and training image on 2 CPUs.
_HEAD_S = 147.0 * 577 / 524 / (3 * 144 * 3 * 1437)


def expected_seconds(settings: SearchSettings, recipe: Any, n_train: int) -> float | None:
    """About how long the search's stages take on as many quiet CPUs as the budget holds (the
    resolve stage at its most: every contender raced to the seed cap), scaled from the default
    search's measured time by its work, plus the head stage's measured time per head, epoch and
    image; None on GPUs (no reference)."""
    if settings.budget.gpus or not settings.budget.cpus:
        return None
    steps = math.ceil(n_train / recipe.batch_size) * recipe.epochs
    steps *= (recipe.resolution / 32) ** 2  # pixels per image set a step's cost
    units = 0.0
    if settings.stage in (Stage.ONESHOT, ALL_STAGES):
        units += 4 * steps * 2 / settings.budget.cpus
    runs = 0
    if settings.stage in (Stage.PROXY, ALL_STAGES):
        runs += settings.trials + settings.noise_seeds
    if settings.stage == Stage.HEAD:  # its trunks: the noise seeds, trained by the stage itself
        runs += settings.noise_seeds + settings.head_trunks
    elif settings.stage == ALL_STAGES:
        runs += settings.head_trunks
    if settings.stage in (Stage.RESOLVE, ALL_STAGES):
        runs += settings.contenders_raced() * settings.resolve_seeds
    units += runs * steps / max(1.0, settings.budget.cpus // (settings.cpus_per_trial or 1))
    seconds = _REFERENCE_S * units / _REFERENCE_UNITS
    if settings.stage in (Stage.HEAD, ALL_STAGES):
        from rhosearch.training.train import load_recipe

        heads = len(list(settings.space.configs())) * settings.head_seeds
        trunks = settings.noise_seeds + settings.head_trunks
        seconds += (_HEAD_S * 2 / settings.budget.cpus * heads * trunks
                    * load_recipe(head_recipe_for(settings.data)).epochs * n_train)
    return seconds
