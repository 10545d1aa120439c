"""The multi-objective rho search: Optuna decides what to try, Ray Tune runs the trials.

    rhosearch search --budget 2cpus --trials 12 --study demo
    rhosearch search --budget 6gpus --gpus-per-trial 0.5 --data /data/imagenet --study in1k

Design. The Optuna study (see `study.py`) is the record; Ray Tune is the executor. A Tune
`Searcher` (`StudySearcher`) asks the study for a rho vector whenever Tune has room for a trial
and tells it the outcome when the trial ends, so every write to the storage happens in this
driver process. Before a rho vector costs a trial it is priced with the closed-form cost model:
an infeasible one (over the space's constraints) or one already measured is answered without
training and does not count against `--trials`. Tune's ASHA scheduler stops weak trials after
their first proxy epochs; those are recorded as PRUNED with the epochs they ran. The paper's
baseline and Table 5 configurations are enqueued first, so they are measured under the same
recipe as everything the search finds.

Resume: the study holds every finished trial. `--resume` reopens it, marks trials left RUNNING
by a killed driver as FAIL ("interrupted"), and asks only for the trials still missing.

Just over ~400 lines: the stage sequencing, the noise floor, resume and the verdict; the
searcher, trainable, budget and Ray start-up live in `searcher.py` and `resources.py`.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
import ray
from optuna.trial import TrialState
from ray import tune
from ray.tune.schedulers import ASHAScheduler
from ray.util.queue import Queue

from rhosearch import values
from rhosearch.core.space import RhoConfig, SearchSpace, baseline_config, load_presets
from rhosearch.deploy.latency import LatencySettings, LatencyTable
from rhosearch.deploy.latency_model import LatencyPricer, space_pricer
from rhosearch.drivers.head import check_head_settings, run_head_stage, trunk_seeds
from rhosearch.errors import RhoSearchError, Terminated
from rhosearch.execution.jobstore import CHECKPOINTS, JobStore
from rhosearch.execution.resources import (
    Budget,
    budget_cpus,
    check_local_gpus,
    check_ray_address,
    check_trial_fits,
    cluster_address,
    concurrent_trials,
    one_node_share,
    start_ray,
    trial_resources,
)
from rhosearch.execution.searcher import (
    STAGE,
    Progress,
    ResolveSearcher,
    StudySearcher,
    proxy_trial,
)
from rhosearch.output import write_csv
from rhosearch.record.lease import DriverLease
from rhosearch.record.stats import Family, noise_band, verdict_sentence
from rhosearch.record.study import (
    OBJECTIVES,
    config_from_params,
    default_storage_url,
    objective_names,
    open_storage,
    params_of,
    pareto_front,
    record_attrs,
    record_scores,
    space_distributions,
    stage_agreement,
    stage_family,
    stage_noise,
    stage_runs,
    stage_study,
    study_dir,
    trial_params,
    trials_frame,
)
from rhosearch.stages.resolve import pick_contenders, resolve_round
from rhosearch.training.data import BaseData, adopt_base, load_base
from rhosearch.training.datasets import proxy_recipe_for
from rhosearch.vocab import ALL_STAGES, SEARCH_STAGES, RunFile, Stage, Status

__all__ = ["SearchSettings", "all_failed", "next_steps", "open_search_study", "run_search"]



# ---------------------------------------------------------------------------------------------
# Settings and the study.


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
    # contender (0: off). 2 keeps the default digits search near 5 minutes on 2 cores.
    resolve_seeds: int = 2
    # Contenders raced, best first: with one-seed intervals (sigma ~2 pts, 3 df) nearly every
    # configuration overlaps the front, and racing all 12 would double the search's time.
    resolve_contenders: int = 3
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
        values.at_least(self.head_seeds, 1, flag="--head-seeds",
                        hint="give 1 or more head seeds per trunk, e.g. 2")
        values.at_least(self.head_trunks, 0, flag="--head-trunks",
                        hint="give 0 (the noise floor's trunks only) or more extra trunks, e.g. 1")

    @property
    def objectives(self) -> list[str]:
        return objective_names(gmacs=self.gmacs_objective, latency=self.latency_objective)

    def job_store(self) -> JobStore:
        return JobStore.for_study(self.study, reports_dir=self.reports_dir,
                                  storage_path=self.storage_path)


def _make_sampler(name: str, seed: int, trials: int) -> optuna.samplers.BaseSampler:
    if name == "nsga2":
        # A population near a third of the budget lets a small search reach its second
        # generation; Optuna's default of 50 would make any search under 50 trials random.
        population = max(4, min(50, trials // 3))
        return optuna.samplers.NSGAIISampler(population_size=population, seed=seed)
    if name == "tpe":
        # constant_liar: trials still running count as bad results, so 6 slots at once are not
        # handed the same promising rho six times (without it a 40-trial search on 6 slots
        # proposed running configurations hundreds of times).
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=max(4, trials // 4),
                                          constant_liar=True)
    if name == "gp":
        return optuna.samplers.GPSampler(seed=seed, n_startup_trials=max(4, trials // 4))
    values.one_of(name, values.SAMPLERS, what="sampler")
    return optuna.samplers.RandomSampler(seed=seed)


def check_study_name(settings: SearchSettings) -> bool:
    """Refuses a new search on an existing study, or a resume of a missing one; True if the
    study exists."""
    url = settings.storage or default_storage_url(settings.study, settings.reports_dir)
    storage = open_storage(url)
    exists = settings.study in {s.study_name for s in optuna.get_all_study_summaries(storage)}
    if exists and not settings.resume:
        raise RhoSearchError(
            f"study {settings.study!r} already exists in {url}; add --resume to continue it "
            "or choose another --study name (nothing was changed)"
        )
    if settings.resume and not exists:
        raise RhoSearchError(f"no study {settings.study!r} to resume in {url}; drop --resume")
    return exists


def space_grid(space: SearchSpace) -> str:
    """What a space searches, as text that compares equal for the same grid whatever file it
    came from: `mobilevit_s rho_3 0,1/3,1 | rho_4 ... | max_overhead_pct 10`."""
    blocks = [f"rho_{k} {','.join(map(str, c))}" for k, c in enumerate(space.choices, 1)
              if c != (0,)]
    limits = [f"{name} {value:g}" for name, value in
              (("max_overhead_pct", space.max_overhead_pct), ("max_gmacs", space.max_gmacs))
              if value is not None]
    return f"{space.backbone} " + " | ".join(blocks + limits)


def check_resumed_space(settings: SearchSettings) -> None:
    """Refuses `--resume` with a `--space` other than the one the study searched, before the
    study is written to (a sampler fed another grid's trials would propose from the wrong
    space, and its trials would not fit)."""
    if not settings.resume:
        return
    url = settings.storage or default_storage_url(settings.study, settings.reports_dir)
    storage = open_storage(url, create=False)
    try:
        attrs = optuna.load_study(study_name=settings.study, storage=storage).user_attrs
    except KeyError:
        return  # no such study: check_study_name says so in its words
    searched = attrs.get("space_grid")
    if searched is not None and searched != space_grid(settings.space):
        raise RhoSearchError(
            f"study {settings.study!r} searched another space ({attrs.get('space')}: "
            f"{searched}); --space {settings.space.source} is {space_grid(settings.space)}. "
            "Resume with the study's space, or search this one as a new --study "
            "(nothing was changed)")


def open_search_study(settings: SearchSettings) -> optuna.Study:
    """Creates the study (or reopens it with `resume`), enqueuing the paper's configurations."""
    exists = check_study_name(settings)
    storage = open_storage(settings.storage or default_storage_url(settings.study,
                                                                   settings.reports_dir))
    directions = [OBJECTIVES[name] for name in settings.objectives]
    study = optuna.create_study(
        study_name=settings.study, storage=storage, directions=directions, load_if_exists=True,
        sampler=_make_sampler(settings.sampler, settings.seed, settings.trials),
    )
    if not exists:
        with warnings.catch_warnings():  # experimental in Optuna, stable in use since 3.2
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names(settings.objectives)
        study.set_user_attr("space", settings.space.source)
        study.set_user_attr("space_grid", space_grid(settings.space))
        study.set_user_attr("data", settings.data)
        study.set_user_attr("recipe", settings.recipe)
        for preset in load_presets().values():
            if settings.space.contains(preset.config):
                study.enqueue_trial(params_of(settings.space, preset.config),
                                    user_attrs={"source": f"paper:{preset.name}"})
    return study


def _fail_interrupted(study: optuna.Study) -> int:
    """Marks trials a killed or interrupted driver left RUNNING as FAIL and enqueues each
    proxy trial's rho again, so a resumed search runs those very configurations (a paper
    configuration cut short is measured, not replaced by a new proposal); returns how many.

    Only the lease holder calls this: another driver's RUNNING trials are not stale.
    """
    stale = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    for trial in stale:
        record_attrs(study, trial.number, {"status": Status.INTERRUPTED,
                                           "reason": "the search stopped while it ran"})
        study.tell(trial.number, state=TrialState.FAIL, skip_if_finished=True)
        # A trial killed inside Optuna's ask has no stage yet, and its params may not be set
        # yet either (then an enqueued one's are in its fixed_params; else none was chosen).
        params = trial_params(trial)
        if trial.user_attrs.get("stage", STAGE) == STAGE and params:
            source = trial.user_attrs.get("source", "sampler")
            study.enqueue_trial(params, user_attrs={
                "source": f"rerun of #{trial.number} ({source})", "rerun_of": trial.number})
    return len(stale)


def _reruns_waiting(study: optuna.Study) -> int:
    """Interrupted trials queued to run again (by this driver or the one before it)."""
    return sum(1 for t in study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
               if "rerun_of" in t.user_attrs)  # data, not the `source` sentence


def _close_waiting(study: optuna.Study, space: SearchSpace) -> int:
    """Marks enqueued trials the finished proxy stage did not run as FAIL, status "not run"
    (Optuna cannot delete a trial; `ask` hands each WAITING one out once); returns how many."""
    waiting = study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
    for _ in waiting:
        trial = study.ask(space_distributions(space))
        config = config_from_params(space, trial.params)
        record_attrs(study, trial, {
            "stage": STAGE, **config.as_dict(), "rho": config.rho_text, "status": Status.NOT_RUN,
            "reason": f"enqueued ({trial.user_attrs.get('source', '?')}); --trials reached first"})
        study.tell(trial, state=TrialState.FAIL)
    return len(waiting)


# ---------------------------------------------------------------------------------------------
# Running a search.


def say(line: str) -> None:
    """The default progress line writer. Not `print` itself: Tune pickles its callbacks, and a
    builtin pickles by reference, which fails once anything (Ray Train, a test) swaps
    `builtins.print`."""
    print(line, flush=True)


def run_search(
    settings: SearchSettings, *, trial_fn: Callable[..., None] | None = None,
    log: Callable[[str], None] = say,
) -> dict[str, Any]:
    """Runs (or resumes) a search; returns the study, its trials table, front and fidelity.

    Args:
        settings: what to search, which stages, and with which resources.
        trial_fn: the Tune trainable (default: `proxy_trial`); gets `(config, settings=...)`.
        log: where progress lines go.
    """
    from rhosearch.training.data import dataset_info
    from rhosearch.training.train import load_recipe

    # Trials run in Ray workers with their own working directories: paths must be absolute.
    settings = dataclasses.replace(settings, reports_dir=Path(settings.reports_dir).resolve())
    if settings.stage == Stage.RESOLVE:  # on an existing study: reopened, as --resume does
        _check_resolvable(settings)
        settings = dataclasses.replace(settings, resume=True)
    check_head_settings(settings)
    settings = dataclasses.replace(settings, recipe=settings.recipe or proxy_recipe_for(
        settings.data))
    if settings.early_stop == "asha":  # ASHA decides on each epoch's top-1: validate them all
        settings = dataclasses.replace(
            settings, recipe_overrides={**settings.recipe_overrides, "val_every": 1})
    recipe = load_recipe(settings.recipe, settings.recipe_overrides)
    dataset_info(settings.data, root=settings.data_root)
    # Loaded here once, which checks it; every Ray job of the search gets this copy.
    data = load_base(settings.data, root=settings.data_root, download=settings.download,
                     subset=recipe.subset, val_subset=recipe.val_subset)
    log(f"data: {settings.data}, {len(data.train):,} training and {len(data.val):,} validation "
        "images, checked")
    expected = expected_seconds(settings, recipe, len(data.train))
    if expected is not None and not settings.resume:
        log(f"expected: at most about {max(1, round(expected / 60))} min on "
            f"{settings.budget.cpus:g} quiet CPUs (longer on a busy machine: the progress lines "
            "give the pace)")
    resources = trial_resources(settings.budget, gpus_per_trial=settings.gpus_per_trial,
                                cpus_per_trial=settings.cpus_per_trial)
    check_local_gpus(settings.budget, address=settings.address)
    check_ray_address(settings.address)
    settings.job_store().check_writable()
    check_resumed_space(settings)
    url = settings.storage or default_storage_url(settings.study, settings.reports_dir)
    # Quiet Tune's own console tables (our _Progress prints the search's state), and let Ctrl-C
    # reach us as KeyboardInterrupt so interrupted trials are marked and a resume is printed.
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("TUNE_DISABLE_SIGINT_HANDLER", "1")
    # A cluster is joined before the lease (which writes the study's file), so one short of the
    # budget's GPUs, with a node that does not see the job store, or with no node that holds a
    # proxy trial, is refused with nothing created; a local Ray (one node, holding the budget)
    # starts once the lease is held, so a study refused by its lease costs no Ray start.
    joined = False
    try:
        if cluster_address(settings.address) or ray.is_initialized():
            joined = start_ray(settings.budget, address=settings.address)
            settings.job_store().check_shared()
            if settings.stage != Stage.ONESHOT:  # the supernet takes what one node has
                check_trial_fits(resources)
        with DriverLease.acquire(url, settings.study, command="search") as lease:
            return _run_search_leased(settings, recipe, resources, trial_fn, log, data=data,
                                      joined=joined, lease=lease)
    finally:
        if joined:
            ray.shutdown()


def _run_search_leased(
    settings: SearchSettings, recipe: Any, resources: dict[str, float],
    trial_fn: Callable[..., None] | None, log: Callable[[str], None], *, data: BaseData,
    joined: bool, lease: DriverLease,
) -> dict[str, Any]:
    """`run_search` once this process holds the study's lease: nothing else writes to it.
    `joined`: this search has already joined a cluster, and leaves it when its jobs end.
    Once `lease` is lost (taken over), its RUNNING trials are the new driver's: left alone."""
    folder = study_dir(settings.study, settings.reports_dir)
    check_study_name(settings)
    if settings.latency_objective:  # before Ray: timings want the CPUs to themselves
        settings = _with_latency_pricer(settings, log)
    started_ray = start_ray(settings.budget, address=settings.address) or joined
    try:
        study = open_search_study(settings)
    except BaseException:
        if started_ray:
            ray.shutdown()
        raise
    study.set_user_attr("n_val", len(data.val))
    if settings.latency_pricer is not None:
        study.set_user_attr("latency", settings.latency_pricer.describe())
    if settings.resume:
        _fail_interrupted(study)  # what a killed (kill -9) driver left RUNNING
        if reruns := _reruns_waiting(study):
            log(f"resume: {reruns} interrupted trial(s) will be run again (same rho)")
    started = time.time()
    deadline = started + settings.budget.wall_s if settings.budget.wall_s else None
    interrupted = terminated = False
    try:
        if settings.stage in (Stage.ONESHOT, ALL_STAGES):
            _run_oneshot_stage(study, settings, recipe, resources, log, data=data)
        if settings.stage == ALL_STAGES and not trunk_seeds(settings):
            log("head: skipped (no trunk: --noise-seeds 0 and --head-trunks 0)")
        elif settings.stage in (Stage.HEAD, ALL_STAGES):
            front = run_head_stage(study, settings, recipe, resources, log, data=data)
            if settings.stage == ALL_STAGES and settings.enqueue_head_front:
                queued = enqueue_front(study, settings.space, front, source="head-front")
                log(f"head: {queued} front configuration(s) queued as the proxy stage's first "
                    "proposals (--enqueue-head-front)")
        if settings.stage in (Stage.PROXY, ALL_STAGES):
            interrupted = _run_proxy_stage(study, settings, recipe, resources, trial_fn, log,
                                           data=data, deadline=deadline)
            if not interrupted:  # an interrupted search keeps its queue for --resume
                _close_waiting(study, settings.space)
        if settings.stage in (Stage.RESOLVE, ALL_STAGES) and not interrupted:
            interrupted = _run_resolve_stage(study, settings, recipe, resources, trial_fn, log,
                                             data=data, deadline=deadline)
    except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM as the CLI raises it
        interrupted, terminated = True, isinstance(exc, Terminated)
    finally:
        if lease.writes_allowed:
            _fail_interrupted(study)
        if started_ray:
            ray.shutdown()
    lease.check()
    frame = trials_frame(study)
    noise = stage_noise(frame, STAGE)
    found = stage_family(frame, STAGE)
    family = found[0] if found else None
    if noise is not None:
        if family is not None and (band := noise_band(family)) is not None:
            noise["band"] = [round(band[0], 3), round(band[1], 3)]
            noise["band_m"] = family.m
        study.set_user_attr("noise_floor", noise)
    fidelity = _record_fidelity(study, frame)
    folder.mkdir(parents=True, exist_ok=True)
    write_csv(frame, folder / RunFile.TRIALS)  # counts as integers, not 640.0
    front = pareto_front(frame)
    return {"study": study, "trials": frame, "front": front, "fidelity": fidelity,
            "noise": noise, "family": family, "resolve": study.user_attrs.get("resolve"),
            "verdict": verdict(frame, family, settings.space.backbone),
            "interrupted": interrupted, "terminated": terminated,
            "wall_s": time.time() - started, "folder": folder}


def _with_latency_pricer(settings: SearchSettings, log: Callable[[str], None]
                         ) -> SearchSettings:
    """`settings` with the space's latency pricer: the table under `reports_dir`, with the
    configurations its model needs measured first (once per machine: the table keeps them)."""
    table = LatencyTable.for_folder(settings.reports_dir)
    pricer = space_pricer(settings.space, table=table, settings=settings.latency,
                          progress=lambda line: log(f"latency: {line}"))
    log(f"{pricer.describe()} ({table.path})")
    return dataclasses.replace(settings, latency_pricer=pricer)


def with_latency_columns(scores: pd.DataFrame, settings: SearchSettings) -> pd.DataFrame:
    """`scores` (one row per configuration) with its latency overhead when the search prices
    latency."""
    if settings.latency_pricer is None:
        return scores
    prices = [settings.latency_pricer.price(RhoConfig.parse(rho, backbone=backbone))
              for rho, backbone in scores[["rho", "backbone"]].itertuples(index=False)]
    return scores.assign(**pd.DataFrame(prices, index=scores.index))


def verdict(frame: pd.DataFrame, family: Family | None, backbone: str) -> str:
    """The sentences a search summary ends with (`stats.verdict_sentence`): which proxy
    configurations differ from the baseline at 5 % over those compared (Holm), the pairing
    correlation, and what the search could have seen at its measured trial time."""
    trained = frame[frame["stage"].isin([STAGE, Stage.RESOLVE])
                    & (frame["status"] == Status.OK)]
    wall = pd.to_numeric(trained["wall_s"], errors="coerce").dropna()
    return verdict_sentence(family, baseline_name=baseline_config(backbone).name,
                            trial_s=float(wall.median()) if len(wall) else None)


# The default first search (a 3-epoch supernet, then 12 proxy trials and 3 noise seeds of 3
# epochs each, MobileViT-S on digits, 2 CPUs) took 272 s on a quiet 2-core machine (README at
# 26b4b3e, 4 min 32 s): its seconds per unit of work, one unit being one proxy step of one
# configuration on one CPU's share (a supernet step trains four configurations on them all).
_REFERENCE_S, _REFERENCE_UNITS = 272.0, 4 * 69 + 15 * 69 / 2
# The head stage of that search (144 heads x 5 head epochs over 1,437 cached images per trunk)
# took 68 s per trunk on 2 quiet CPUs (06:08 UTC, 2026-12-02, at e9b4cab): seconds per head,
# epoch and training image on 2 CPUs.
_HEAD_S = 68.0 / (144 * 5 * 1437)


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
    if settings.stage in (Stage.RESOLVE, ALL_STAGES):
        runs += settings.resolve_contenders * settings.resolve_seeds
    units += runs * steps / max(1.0, settings.budget.cpus // (settings.cpus_per_trial or 1))
    seconds = _REFERENCE_S * units / _REFERENCE_UNITS
    if settings.stage in (Stage.HEAD, ALL_STAGES):
        from rhosearch.training.train import load_recipe

        heads = len(list(settings.space.configs())) * settings.head_seeds
        trunks = settings.noise_seeds + settings.head_trunks
        seconds += (_HEAD_S * 2 / settings.budget.cpus * heads * trunks
                    * load_recipe("head").epochs * n_train)
    return seconds


def all_failed(frame: pd.DataFrame) -> str | None:
    """Why every proxy trial failed, in one line (the reasons counted), or None when one did
    not: a search with nothing measured must say so and exit non-zero, not print an empty front.
    """
    proxy = frame[(frame["stage"] == STAGE) & frame["status"].notna()
                  & (frame["status"] != Status.NOT_RUN)]
    if proxy.empty or (proxy["state"] == "COMPLETE").any():
        return None
    reasons = proxy["reason"].fillna(proxy["status"]).astype(str).value_counts()
    return (f"every proxy trial failed ({len(proxy)}): "
            + "; ".join(f"{reason} ({count}x)" if count > 1 else reason
                        for reason, count in reasons.items()))


def next_steps(settings: SearchSettings, outcome: dict[str, Any], *,
               command: Callable[[list[str]], str]) -> list[str]:
    """What a finished search prints last: the command that trains its finalists (the study's
    own flags, real paths) and what would settle the differences it could not.

    `command` turns flags into the line to type (the CLI knows the program's name)."""
    flags = ["train-best", "--study", settings.study]
    if settings.storage:
        flags += ["--storage", settings.storage]
    if Path(settings.reports_dir).resolve() != Path("reports").resolve():
        flags += ["--reports-dir", str(settings.reports_dir)]
    if settings.address:
        flags += ["--address", settings.address]
    budget = settings.budget
    flags += ["--epochs", "2", "--budget", (f"{budget.gpus:g}gpus" if budget.gpus else
                                             f"{int(budget.cpus or 1)}cpus")]
    done = outcome["trials"]
    done = done[(done["stage"] == STAGE) & (done["state"] == "COMPLETE")]
    lines = [f"next: {command(flags)}   (the knee and the best of the front and the baseline "
             "control, with the full recipe; a first look in minutes, drop --epochs for the "
             "recipe's own)" if len(done) else
             "next: nothing to train: no proxy trial completed (see the reasons above)"]
    resolve = outcome.get("resolve") or {}
    undecided = [rho for rho, (status, *_) in resolve.get("decisions", {}).items()
                 if status in ("open", "capped")]
    if not len(done):
        return lines
    noise = outcome["noise"] or {}
    again = ["search", *flags[1:flags.index("--epochs")], "--stage", str(Stage.RESOLVE)]
    if settings.space.name != "exmobilevit_s":
        again += ["--space", settings.space.source]
    if settings.data != "digits":
        again += ["--data", settings.data]
    if noise.get("std") is None:
        lines.append("open: no noise floor was measured (--noise-seeds 0), so no difference "
                     "can be judged; search again with --noise-seeds 3")
    elif undecided:
        more = 2 * max(1, resolve.get("max_seeds", 1) - 1)
        lines.append(
            f"open: {len(undecided)} contender(s) still within noise of the baseline after "
            f"{resolve.get('max_seeds')} paired seeds ({', '.join(undecided)}); race them "
            f"further with: {command([*again, '--resolve-seeds', str(more)])}")
    elif not resolve:
        lines.append("open: the contenders were not raced with paired seeds; "
                     f"{command(again)} does")
    else:
        lines.append("open: none the proxy can settle: every contender raced is separated "
                     "from the baseline or not worth more seeds (see the verdict above)")
    return lines


def _run_proxy_stage(
    study: optuna.Study, settings: SearchSettings, recipe: Any, resources: dict[str, float],
    trial_fn: Callable[..., None] | None, log: Callable[[str], None], *, data: BaseData,
    deadline: float | None = None,
) -> bool:
    """Runs the missing proxy trials (and the baseline's noise seeds) through Ray Tune; True if
    it was interrupted. After `deadline` (the budget's wall time) no trial starts."""
    searcher = StudySearcher(study, settings, epochs=recipe.epochs, n_val=len(data.val),
                             deadline=deadline)
    if searcher.total <= 0:
        return False
    if searcher.noise_pending:
        log(f"noise floor: training the baseline with {len(searcher.noise_pending)} more "
            f"seed(s) ({', '.join(map(str, searcher.noise_pending))}) beside the search")
    _tune_fit(searcher, settings, recipe, resources, trial_fn, log, data=data)
    return bool(searcher.live)


def _tune_fit(searcher: StudySearcher, settings: SearchSettings, recipe: Any,
              resources: dict[str, float], trial_fn: Callable[..., None] | None,
              log: Callable[[str], None], *, data: BaseData) -> None:
    """Runs what `searcher` hands out through Ray Tune, `resources` per trial."""
    trainable = tune.with_resources(
        tune.with_parameters(trial_fn or proxy_trial, settings=settings, data=data), resources)
    tuner = tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            search_alg=searcher, num_samples=searcher.total,
            scheduler=_scheduler(settings.early_stop, recipe.epochs),
            reuse_actors=settings.reuse_workers,
            # Without it Tune holds a custom searcher to one pending trial: a trial waits for
            # the one before it to start running, and warm workers run one trial at a time.
            max_concurrent_trials=concurrent_trials(settings.budget, resources),
        ),
        run_config=tune.RunConfig(
            name="tune", storage_path=settings.job_store().tune_path, verbose=0,
            callbacks=[Progress(searcher, settings, log)],
        ),
    )
    tuner.fit()


def _check_resolvable(settings: SearchSettings) -> None:
    """`--stage resolve` needs an existing study with finished proxy trials; refused before
    anything is opened for writing."""
    url = settings.storage or default_storage_url(settings.study, settings.reports_dir)
    if settings.storage is None and not Path(url.removeprefix("sqlite:///")).is_file():
        raise RhoSearchError(f"--stage resolve: no study {settings.study!r} under "
                             f"{settings.reports_dir}; run the proxy stage first")
    try:
        study = optuna.load_study(study_name=settings.study, storage=open_storage(url))
    except KeyError:
        raise RhoSearchError(f"--stage resolve: no study {settings.study!r} in {url}; run the "
                             "proxy stage first") from None
    if not any(t.user_attrs.get("stage") == STAGE and t.user_attrs.get("status") == Status.OK
               for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))):
        raise RhoSearchError(f"--stage resolve: study {settings.study!r} has no finished proxy "
                             "trials to resolve (nothing was changed)")


def _contenders(frame: pd.DataFrame, control: str, limit: int) -> list[str]:
    """The proxy front and the configurations whose interval overlaps it (`pick_contenders`),
    from each configuration's first proxy run."""
    proxy = frame[(frame["stage"] == STAGE) & (frame["state"] == "COMPLETE")
                  & (frame["status"] == Status.OK)].drop_duplicates("rho")
    points = [(row.rho, float(row.top1), float(row.top1_lo), float(row.top1_hi),
               float(row.overhead_params)) for row in proxy.itertuples()
              if pd.notna(row.top1_lo)]
    return pick_contenders(points, control=control, limit=limit)


def _run_resolve_stage(
    study: optuna.Study, settings: SearchSettings, recipe: Any, resources: dict[str, float],
    trial_fn: Callable[..., None] | None, log: Callable[[str], None], *, data: BaseData,
    deadline: float | None = None,
) -> bool:
    """Races the contenders against the baseline with further paired seeds, one round at a
    time (`stages.resolve.resolve_round`), until every contender is decided, the seed cap is
    reached or the budget's wall time is spent; records what it spent and decided in the study
    (user attr "resolve"). True if interrupted."""
    if settings.resolve_seeds <= 0:
        return False
    started, spent, rounds = time.time(), 0, 0
    max_seeds = 1 + settings.resolve_seeds
    contenders: list[str] | None = None
    plan = None
    while True:
        frame = trials_frame(study)
        found = stage_family(frame, STAGE)
        if found is None:
            log("resolve: no baseline measured in the proxy stage: nothing to race against")
            return False
        family, control = found
        if contenders is None:
            contenders = _contenders(frame, control, settings.resolve_contenders)
            log(f"resolve: racing {len(contenders)} contender(s) against the baseline with up "
                f"to {settings.resolve_seeds} more paired seed(s) each: "
                + (", ".join(contenders) or "none"))
        runs: dict[str, dict[int, float]] = {}
        for row in stage_runs(frame, STAGE).itertuples(index=False):
            runs.setdefault(row.rho, {})[int(row.seed_key)] = float(row.top1)
        plan = resolve_round(family, runs, control=control, contenders=contenders,
                             first_seed=settings.seed, max_seeds=max_seeds)
        if plan.done:
            break
        if deadline is not None and time.time() >= deadline:
            log(f"resolve: wall-time budget ({settings.budget.describe()}) spent; "
                f"{len(plan.jobs)} run(s) not started")
            break
        rounds += 1
        searcher = ResolveSearcher(study, settings, epochs=recipe.epochs, n_val=len(data.val),
                                   jobs=plan.jobs)
        _tune_fit(searcher, settings, recipe, resources, trial_fn, log, data=data)
        spent += len(plan.jobs) - len(searcher.pending)
        if searcher.live_jobs:  # interrupted mid-round
            return True
    decisions = {rho: list(d) for rho, d in (plan.decisions if plan else {}).items()}
    summary = {"runs": spent, "rounds": rounds, "wall_s": round(time.time() - started, 1),
               "max_seeds": max_seeds, "decisions": decisions}
    study.set_user_attr("resolve", summary)
    counts = pd.Series([d[0] for d in decisions.values()]).value_counts().to_dict()
    log(f"resolve: {spent} run(s) in {rounds} round(s), {summary['wall_s']:.0f} s; decided: "
        + (", ".join(f"{n} {status}" for status, n in counts.items()) or "nothing to race"))
    return False


def _scheduler(early_stop: str, epochs: int) -> ASHAScheduler | None:
    """ASHA when asked, else none (Tune's FIFO): every trial runs its full proxy epochs.

    Off by default: `benchmarks/fidelity.py` measures how well the top-1 at ASHA's first rung
    predicts the final one on the proxy, and on a 3-epoch proxy it does not beyond noise
    (docs/measurements.md), so stopping there would stop trials on noise.
    """
    if early_stop != "asha":
        return None
    return ASHAScheduler(time_attr="epoch", metric="top1", mode="max", max_t=max(1, epochs),
                         grace_period=_grace_period(epochs), reduction_factor=2)


def _grace_period(epochs: int) -> int:
    """ASHA's first rung: half the proxy epochs. Earlier, a short proxy's accuracies are still
    near chance for every configuration, and stopping on them is stopping at random."""
    return max(1, math.ceil(epochs / 2))


def _run_oneshot_stage(
    study: optuna.Study, settings: SearchSettings, recipe: Any, resources: dict[str, float],
    log: Callable[[str], None], *, data: BaseData,
) -> None:
    """Trains the supernet as one Ray task on the budget, scores the space, and (when asked)
    enqueues its front."""

    out_dir = study_dir(settings.study, settings.reports_dir) / "supernet"
    scored = _oneshot_scores(study, out_dir)
    if scored is not None:  # a resumed search: the stage finished, its checkpoint may be gone
        scores = scored
    else:
        # The supernet gets the whole budget (it is the only thing running in this stage), or
        # as much of it as one node holds: on a cluster the budget is summed over nodes.
        gpus = 1.0 if settings.budget.gpus else 0.0
        cpus = one_node_share(budget_cpus(settings.budget), gpus)
        log(f"one-shot: training the supernet over {settings.space.size} rho vectors "
            f"({recipe.epochs} epochs, {cpus:g} CPU{', 1 GPU' if gpus else ''})")
        task = ray.remote(_supernet_task).options(num_cpus=cpus, num_gpus=gpus, max_retries=0)
        store = settings.job_store()
        try:
            news = Queue(actor_options={"num_cpus": 0})  # the task's progress, for the console
            _wait_saying(task.remote(settings, recipe, data, news), news, recipe.epochs, log)
        except ray.exceptions.RayTaskError as exc:  # e.g. a diverged supernet: its one line
            if isinstance(exc.cause, RhoSearchError):
                raise exc.cause from None
            raise
        finally:  # its metrics, even when it failed
            store.pull("supernet", out_dir,
                       skip=() if settings.keep_checkpoints else CHECKPOINTS)
        scores = with_latency_columns(pd.read_csv(out_dir / RunFile.SCORES), settings)
        record_scores(stage_study(study, Stage.ONESHOT), settings.space, scores,
                      objectives=settings.objectives)
        if not settings.keep_checkpoints:  # ~60 MB; every score is in the study and scores.csv
            store.drop("supernet")
    frame = scores.assign(stage=Stage.ONESHOT, state="COMPLETE")
    front = [RhoConfig.parse(rho, backbone=backbone) for rho, backbone in
             pareto_front(frame, stage=Stage.ONESHOT)[["rho", "backbone"]].itertuples(index=False)]
    log(f"one-shot: scored {len(scores)} configurations; front of {len(front)}: "
        + ", ".join(c.name for c in front))
    if settings.stage == ALL_STAGES and not settings.enqueue_oneshot_front:
        log("one-shot: its front is not queued for the proxy stage (--enqueue-oneshot-front "
            "does): benchmarks/fidelity.py measures one-shot rankings as not agreeing with "
            "longer training beyond noise (docs/measurements.md); the stage is "
            "kept to measure that agreement on every search")
    if settings.stage == ALL_STAGES and settings.enqueue_oneshot_front:
        enqueue_front(study, settings.space, front)


def enqueue_front(study: optuna.Study, space: SearchSpace, front: list[RhoConfig], *,
                  source: str = "oneshot-front") -> int:
    """Queues a screening stage's front (one-shot or head) for the proxy stage, each once: not
    when a proxy trial measured it already or it waits in the queue; returns how many were
    queued."""
    queued = {t.user_attrs.get("rho") for t in study.get_trials(deepcopy=False)
              if t.user_attrs.get("stage") == STAGE}
    # A waiting trial's `params` are empty until it runs: its queued parameters count.
    waiting = [trial_params(t) for t in study.get_trials(deepcopy=False,
                                                         states=(TrialState.WAITING,))]
    added = 0
    for config in front:
        params = params_of(space, config)
        if config.rho_text not in queued and params not in waiting:
            study.enqueue_trial(params, user_attrs={"source": source})
            waiting.append(params)
            added += 1
    return added


def _oneshot_scores(study: optuna.Study, out_dir: Path) -> pd.DataFrame | None:
    """The one-shot stage's scores when an earlier run finished it (every row of `scores.csv`
    recorded in the study), else None."""
    path, recorded = out_dir / RunFile.SCORES, stage_study(study, Stage.ONESHOT, create=False)
    if not path.is_file() or recorded is None:
        return None
    scores = pd.read_csv(path)
    return scores if len(recorded.get_trials(deepcopy=False)) >= len(scores) else None


def _wait_saying(ref: ray.ObjectRef, news: Queue, epochs: int,
                 log: Callable[[str], None]) -> None:
    """Waits for the supernet task, logging what it reports: where it is every ~15 s, with
    the time left at its pace so far, and each epoch's loss."""
    started, first = time.monotonic(), None  # the pace counts from the first report
    while True:
        done, _ = ray.wait([ref], timeout=1.0)
        for kind, *what in news.get_nowait_batch(news.qsize()) if news.qsize() else []:
            if kind == "epoch":
                epoch, loss, seconds = what
                log(f"one-shot: supernet epoch {epoch}/{epochs} done, loss {loss:.3f}, "
                    f"{seconds:.0f} s")
                continue
            epoch, batch, batches = what
            share, now = ((epoch - 1) * batches + batch) / (epochs * batches), time.monotonic()
            left = ("" if first is None or share <= first[1] else
                    f", about {_minutes((now - first[0]) / (share - first[1]) * (1 - share))}"
                    " left")
            first = first or (now, share)
            log(f"one-shot: supernet epoch {epoch}/{epochs}, batch {batch}/{batches} "
                f"({100 * share:.0f} %), {_minutes(now - started)} so far{left}")
        if done:
            ray.get(ref)
            return


def _minutes(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.1f} min"


def _supernet_task(settings: SearchSettings, recipe: Any, data: BaseData,
                   news: Queue | None = None, every_s: float = 15.0) -> None:
    """A Ray task, on any node: trains the supernet (resuming its checkpoint in the job store)
    and scores the space on the driver's `data`, pushing its folder to the store after every
    epoch and at the end; where it is goes to `news` every `every_s` seconds."""
    import torch

    from rhosearch.stages.oneshot import score_supernet

    adopt_base(data)

    torch.set_num_threads(max(1, int(ray.get_runtime_context().get_assigned_resources()
                                     .get("CPU", 1))))
    store = settings.job_store()
    said = [time.monotonic()]

    def on_batch(epoch: int, batch: int, batches: int) -> None:
        if news is not None and (time.monotonic() - said[0] >= every_s):
            said[0] = time.monotonic()
            news.put_nowait(("batch", epoch, batch, batches))

    def on_epoch(metrics: dict[str, Any]) -> None:
        store.push(out_dir, "supernet")
        if news is not None:
            news.put_nowait(("epoch", metrics["epoch"], metrics["loss"], metrics["epoch_s"]))

    with store.workdir("supernet", resume=True) as out_dir:
        score_supernet(settings.space, data=settings.data, recipe=recipe, out_dir=out_dir,
                       seed=settings.seed, data_root=settings.data_root, progress=False,
                       on_epoch=on_epoch, on_batch=on_batch)
        store.push(out_dir, "supernet")


def _record_fidelity(study: optuna.Study, frame: pd.DataFrame) -> dict[str, Any] | None:
    """Kendall's tau between one-shot and proxy top-1, with its interval and count, stored in
    the study."""
    tau = stage_agreement(frame, Stage.ONESHOT, STAGE)
    if tau.n < 2:
        return None
    fidelity = {**tau.as_dict(), "text": tau.text()}
    study.set_user_attr("oneshot_proxy_kendall_tau", fidelity)
    return fidelity


