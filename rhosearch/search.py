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
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import shlex
import sys
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
from ray.tune.result import AUTO_RESULT_KEYS
from ray.tune.schedulers import ASHAScheduler
from ray.tune.search import Searcher

from rhosearch.cost import CostModel
from rhosearch.errors import RhoSearchError
from rhosearch.space import RhoConfig, SearchSpace, load_presets
from rhosearch.study import (
    config_from_params,
    default_storage_url,
    dominated,
    open_storage,
    params_of,
    record_attrs,
    space_distributions,
    study_dir,
    trials_frame,
)

__all__ = ["Budget", "SearchSettings", "parse_budget", "run_search", "pareto_front"]

STAGE = "proxy"
STAGES = ("oneshot", "proxy", "all")


# ---------------------------------------------------------------------------------------------
# Budget: what the search may use.


@dataclass(frozen=True)
class Budget:
    """Resources for a search: CPUs and/or GPUs, and an optional wall-time limit."""

    cpus: float | None = None
    gpus: float = 0
    wall_s: float | None = None

    def describe(self) -> str:
        parts = [f"{self.gpus:g} GPU" if self.gpus else "",
                 f"{self.cpus:g} CPU" if self.cpus else ""]
        if self.wall_s:
            parts.append(f"{self.wall_s / 3600:g} h")
        return ", ".join(p for p in parts if p)


_BUDGET_PART = re.compile(r"^(\d+(?:\.\d+)?)(gpus?|cpus?|h|m|s)$")
_TIME_UNITS = {"h": 3600, "m": 60, "s": 1}


def parse_budget(text: str | None) -> Budget:
    """Parses `6gpus`, `2cpus`, `4gpus,12h`, `8cpus,1gpu,30m`; None means all local CPUs."""
    if text is None:
        return Budget(cpus=float(os.cpu_count() or 1))
    values: dict[str, float] = {}
    for part in (p.strip().lower() for p in text.split(",")):
        match = _BUDGET_PART.match(part)
        if not match:
            raise RhoSearchError(
                f"budget {text!r}: cannot read {part!r}; write e.g. 6gpus, 2cpus or 4gpus,12h"
            )
        number, unit = float(match.group(1)), match.group(2)
        kind = "wall_s" if unit in _TIME_UNITS else unit.rstrip("s")
        if kind in values:
            raise RhoSearchError(f"budget {text!r}: {kind.replace('_s', '')} given twice")
        values[kind] = number * _TIME_UNITS[unit] if unit in _TIME_UNITS else number
    if not values.get("cpu") and not values.get("gpu"):
        raise RhoSearchError(f"budget {text!r} names no CPUs or GPUs; write e.g. 2cpus or 6gpus")
    return Budget(cpus=values.get("cpu"), gpus=values.get("gpu", 0), wall_s=values.get("wall_s"))


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
    recipe: str = "proxy"
    recipe_overrides: dict[str, Any] = field(default_factory=dict)
    sampler: str = "nsga2"
    seed: int = 0
    storage: str | None = None
    reports_dir: Path = Path("reports")
    resume: bool = False
    address: str | None = None
    gpus_per_trial: float | None = None
    cpus_per_trial: float | None = None
    gmacs_objective: bool = False
    progress: bool = True
    stage: str = "proxy"

    @property
    def objectives(self) -> list[str]:
        return ["top1", "overhead_params"] + (["gmacs"] if self.gmacs_objective else [])


def _make_sampler(name: str, seed: int, trials: int) -> optuna.samplers.BaseSampler:
    if name == "nsga2":
        # A population near a third of the budget lets a small search reach its second
        # generation; Optuna's default of 50 would make any search under 50 trials random.
        population = max(4, min(50, trials // 3))
        return optuna.samplers.NSGAIISampler(population_size=population, seed=seed)
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=max(4, trials // 4))
    if name == "gp":
        return optuna.samplers.GPSampler(seed=seed, n_startup_trials=max(4, trials // 4))
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    raise RhoSearchError(f"unknown sampler {name!r}; choose one of: nsga2, tpe, gp, random")


def open_search_study(settings: SearchSettings) -> optuna.Study:
    """Creates the study (or reopens it with `resume`), enqueuing the paper's configurations."""
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
    directions = [{"top1": "maximize"}.get(o, "minimize") for o in settings.objectives]
    study = optuna.create_study(
        study_name=settings.study, storage=storage, directions=directions, load_if_exists=True,
        sampler=_make_sampler(settings.sampler, settings.seed, settings.trials),
    )
    if not exists:
        with warnings.catch_warnings():  # experimental in Optuna, stable in use since 3.2
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names(settings.objectives)
        study.set_user_attr("space", settings.space.source)
        study.set_user_attr("data", settings.data)
        study.set_user_attr("recipe", settings.recipe)
        for preset in load_presets().values():
            if settings.space.contains(preset.config):
                study.enqueue_trial(params_of(settings.space, preset.config),
                                    user_attrs={"source": f"paper:{preset.name}"})
    return study


def _fail_interrupted(study: optuna.Study) -> int:
    """Marks trials a killed or interrupted driver left RUNNING as FAIL; returns how many."""
    stale = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    for trial in stale:
        record_attrs(study, trial._trial_id, {"status": "interrupted",
                                              "reason": "the search stopped while it ran"})
        study.tell(trial.number, state=TrialState.FAIL, skip_if_finished=True)
    return len(stale)


def trials_done(study: optuna.Study) -> int:
    """Trials that cost training in the proxy stage (finished, pruned or failed while training)."""
    return sum(
        1 for t in study.get_trials(deepcopy=False)
        if t.user_attrs.get("stage") == STAGE and t.user_attrs.get("trained")
        and t.state.is_finished()
    )


# ---------------------------------------------------------------------------------------------
# The searcher: Optuna's ask/tell behind Ray Tune's Searcher interface.


class StudySearcher(Searcher):
    """Asks the Optuna study for rho vectors and tells it each trial's outcome.

    Ray Tune's own `OptunaSearch` keeps no per-trial attributes, cannot skip a suggestion
    without running it, and restores through Tune's experiment state rather than the study;
    this searcher keeps the study as the only record, which is what makes `--resume` after a
    `kill -9` exact.
    """

    def __init__(self, study: optuna.Study, settings: SearchSettings, *, epochs: int) -> None:
        super().__init__(metric="top1", mode="max")
        self.study = study
        self.settings = settings
        self.epochs = epochs
        self.space = settings.space
        self.distributions = space_distributions(settings.space)
        self.cost = CostModel(settings.space.backbone, resolution=256, num_classes=1000)
        self.remaining = settings.trials - trials_done(study)
        self.live: dict[str, optuna.trial.Trial] = {}
        self.live_rho: set[str] = set()
        self.events: list[str] = []

    def save(self, checkpoint_path: str) -> None:
        """Nothing to save: the study in its storage is the searcher's whole state."""

    def restore(self, checkpoint_path: str) -> None:
        """Nothing to restore: `--resume` reopens the study."""

    def _measured(self) -> dict[str, optuna.trial.FrozenTrial]:
        return {
            t.user_attrs["rho"]: t
            for t in self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if t.user_attrs.get("stage") == STAGE and "rho" in t.user_attrs and t.values
        }

    def _infeasible(self, config: RhoConfig) -> str | None:
        """Why a configuration breaks the space's constraints, priced without building it."""
        cost = self.cost.price(config)
        limit = self.space.max_overhead_pct
        if limit is not None and cost.overhead_pct > limit:
            return f"overhead {cost.overhead_pct:.2f}% > max_overhead_pct {limit:g}"
        if self.space.max_gmacs is not None and cost.gmacs > self.space.max_gmacs:
            return f"{cost.gmacs:.3f} GMACs > max_gmacs {self.space.max_gmacs:g}"
        return None

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        if self.remaining <= 0:
            return self.FINISHED if not self.live else None
        measured = self._measured()
        for _ in range(1000):
            trial = self.study.ask(self.distributions)
            config = config_from_params(self.space, trial.params)
            base = {"stage": STAGE, **config.as_dict(), "rho": config.rho_text}
            reason = self._infeasible(config)
            if reason:
                record_attrs(self.study, trial._trial_id, {**base, "status": "infeasible",
                                                            "reason": reason})
                self.study.tell(trial, state=TrialState.FAIL)
                continue
            if config.rho_text in measured:  # answered from the record, no training
                earlier = measured[config.rho_text]
                record_attrs(self.study, trial._trial_id, {
                    **earlier.user_attrs, "status": "cached", "trained": False,
                    "reason": f"same rho as trial {earlier.number}"})
                self.study.tell(trial, earlier.values)
                continue
            if config.rho_text in self.live_rho:
                record_attrs(self.study, trial._trial_id, {
                    **base, "status": "duplicate", "reason": "same rho as a running trial"})
                self.study.tell(trial, state=TrialState.FAIL)
                continue
            cost = self.cost.price(config).as_dict()
            record_attrs(self.study, trial._trial_id, {**base, **cost})
            self.live[trial_id] = trial
            self.live_rho.add(config.rho_text)
            self.remaining -= 1
            return {"rho": config.rho_text, "backbone": config.backbone, "number": trial.number}
        self.remaining = 0  # the space holds nothing feasible and new
        return self.FINISHED if not self.live else None

    def on_trial_complete(self, trial_id: str, result: dict | None = None,
                          error: bool = False) -> None:
        trial = self.live.pop(trial_id, None)
        if trial is None:
            return
        self.live_rho.discard(trial.user_attrs.get("rho", ""))
        result = result or {}
        # Cost figures stay the ones priced at suggestion time (256 px, 1000 classes: the
        # paper's setting), whatever data set the proxy trains on.
        attrs = {k: v for k, v in result.items()
                 if k not in _TUNE_KEYS and isinstance(v, (int, float, str, bool))}
        priced = trial.study._storage.get_trial(trial._trial_id).user_attrs
        attrs.update({k: priced[k] for k in ("params", "overhead_params", "overhead_pct",
                                             "gmacs")})
        attrs["trained"] = True
        status = result.get("status", "error" if error else "ok")
        epochs_done = int(result.get("epochs_done") or result.get("epoch") or 0)
        attrs["epochs_done"] = epochs_done
        if error or status in ("failed", "diverged", "error"):
            attrs["status"] = status
            attrs.setdefault("reason", "the trial's worker died (see the Ray logs)")
            state, values = TrialState.FAIL, None
        elif attrs.get("top1") is None:
            attrs.update(status="error", reason="the trial reported no top1")
            state, values = TrialState.FAIL, None
        elif epochs_done < self.epochs:
            attrs["status"] = "stopped"
            attrs["reason"] = f"ASHA stopped it after {epochs_done} of {self.epochs} epochs"
            state, values = TrialState.PRUNED, None
        else:
            attrs["status"] = "ok"
            state = TrialState.COMPLETE
            values = [float(attrs[name]) for name in self.settings.objectives]
        record_attrs(self.study, trial._trial_id, attrs)
        self.study.tell(trial, values, state=state)
        self.events.append(f"#{trial.number} {priced.get('name')} rho={priced.get('rho')}: "
                           f"{attrs['status']}" + (f" top1={values[0]:.2f}" if values else ""))


# What Tune adds to every result; everything else a trial reports is recorded in the study.
_TUNE_KEYS = set(AUTO_RESULT_KEYS) | {"done", "trial_id", "experiment_tag", "should_checkpoint",
                                      "epoch"}


# ---------------------------------------------------------------------------------------------
# The trainable: one proxy trial inside a Ray worker.


def proxy_trial(config: dict[str, Any], *, settings: SearchSettings) -> None:
    """Trains one configuration and reports every epoch to Tune (ASHA reads `top1`)."""
    import torch

    from rhosearch.train import load_recipe, train_config

    assigned = ray.get_runtime_context().get_assigned_resources()
    given = {"cpus": assigned.get("CPU", 0.0), "gpus": assigned.get("GPU", 0.0),
             "started_at": time.time()}
    torch.set_num_threads(max(1, int(given["cpus"])))
    rho = RhoConfig.parse(config["rho"], backbone=config["backbone"])
    out_dir = study_dir(settings.study, settings.reports_dir) / "trials" / (
        f"{config['number']:04d}_{rho.key}")
    try:
        recipe = load_recipe(settings.recipe, settings.recipe_overrides)
        result = train_config(
            rho, data=settings.data, recipe=recipe, out_dir=out_dir, seed=settings.seed,
            data_root=settings.data_root, download=settings.download, progress=False,
            # Every epoch's report carries what the record needs: ASHA may stop the trial
            # (or max_t end it) at any of them, and Tune keeps the last one.
            on_epoch=lambda metrics: tune.report({
                **metrics, **given, "epochs_done": metrics["epoch"],
                "wall_s": round(time.time() - given["started_at"], 2)}),
        )
    except Exception as exc:  # recorded as the trial's failure reason; the search goes on
        tune.report({**given, "status": "failed", "reason": f"{type(exc).__name__}: {exc}"[:500]})
        return
    tune.report({**result, **given, "ended_at": time.time(), "epoch": result["epochs_done"]})


# ---------------------------------------------------------------------------------------------
# Running a search.


def pareto_front(frame: pd.DataFrame, *, stage: str = STAGE) -> pd.DataFrame:
    """Non-dominated COMPLETE trials of one stage (max top1, min overhead_params)."""
    done = frame[(frame["stage"] == stage) & (frame["state"] == "COMPLETE")]
    done = done.dropna(subset=["top1", "overhead_params"]).drop_duplicates("rho")
    numbers = done[["top1", "overhead_params"]].astype(float)
    front = done[~dominated(numbers["top1"], numbers["overhead_params"])]
    return front.astype({"overhead_params": int, "params": int}).sort_values("overhead_params")


def _start_ray(settings: SearchSettings) -> bool:
    """Starts a local Ray with exactly the budget (or joins --address); True if we started it."""
    budget = settings.budget
    if ray.is_initialized():  # a caller (e.g. a test declaring logical GPUs) owns Ray
        return False
    if settings.address:
        ray.init(address=settings.address, include_dashboard=False, log_to_driver=False)
        have = ray.cluster_resources().get("GPU", 0)
        if budget.gpus > have:
            ray.shutdown()
            raise RhoSearchError(f"budget asks for {budget.gpus:g} GPUs but the cluster at "
                                 f"{settings.address} has {have:g}; lower --budget")
        return True
    cpus = budget.cpus or float(os.cpu_count() or 1)
    ray.init(num_cpus=cpus, num_gpus=budget.gpus, include_dashboard=False,
             log_to_driver=False, configure_logging=False)
    return True


def check_local_gpus(settings: SearchSettings) -> None:
    """Refuses a budget with more GPUs than this machine has, before anything starts."""
    import torch

    if settings.address or ray.is_initialized():
        return  # a cluster or a caller's Ray: checked against its resources when joined
    have_gpus = torch.cuda.device_count()
    if settings.budget.gpus > have_gpus:
        raise RhoSearchError(f"budget asks for {settings.budget.gpus:g} GPUs but this machine "
                             f"has {have_gpus}; lower --budget (e.g. --budget 2cpus)")


def _trial_resources(settings: SearchSettings) -> dict[str, float]:
    gpus = settings.gpus_per_trial
    if gpus is None:
        gpus = 1.0 if settings.budget.gpus else 0.0
    cpus = settings.cpus_per_trial or 1.0
    if gpus and settings.budget.gpus and gpus > settings.budget.gpus:
        raise RhoSearchError(
            f"--gpus-per-trial {gpus:g} exceeds the budget's {settings.budget.gpus:g} GPUs")
    return {"cpu": cpus, "gpu": gpus}


def resume_command(settings: SearchSettings) -> str:
    argv = [a for a in sys.argv[1:] if a != "--resume"]
    return shlex.join(["rhosearch", *argv, "--resume"])


def run_search(
    settings: SearchSettings, *, trial_fn: Callable[..., None] | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Runs (or resumes) a search; returns the study, its trials table, front and fidelity.

    Args:
        settings: what to search, which stages, and with which resources.
        trial_fn: the Tune trainable (default: `proxy_trial`); gets `(config, settings=...)`.
        log: where progress lines go.
    """
    from rhosearch.data import dataset_info
    from rhosearch.train import load_recipe

    # Trials run in Ray workers with their own working directories: paths must be absolute.
    settings = dataclasses.replace(settings, reports_dir=Path(settings.reports_dir).resolve())
    if settings.stage not in STAGES:
        raise RhoSearchError(
            f"unknown stage {settings.stage!r}; choose one of: {', '.join(STAGES)}")
    recipe = load_recipe(settings.recipe, settings.recipe_overrides)
    dataset_info(settings.data, root=settings.data_root)
    resources = _trial_resources(settings)
    check_local_gpus(settings)
    folder = study_dir(settings.study, settings.reports_dir)
    study = open_search_study(settings)
    interrupted_before = _fail_interrupted(study) if settings.resume else 0
    if interrupted_before:
        log(f"resume: {interrupted_before} interrupted trial(s) will be run again")
    # Quiet Tune's own console tables (our _Progress prints the search's state), and let Ctrl-C
    # reach us as KeyboardInterrupt so interrupted trials are marked and a resume is printed.
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("TUNE_DISABLE_SIGINT_HANDLER", "1")
    started_ray = _start_ray(settings)
    started = time.time()
    interrupted = False
    try:
        if settings.stage in ("oneshot", "all"):
            _run_oneshot_stage(study, settings, recipe, resources, log)
        if settings.stage in ("proxy", "all"):
            interrupted = _run_proxy_stage(study, settings, recipe, resources, trial_fn, log)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        _fail_interrupted(study)
        if started_ray:
            ray.shutdown()
    frame = trials_frame(study)
    fidelity = _record_fidelity(study, frame)
    folder.mkdir(parents=True, exist_ok=True)
    frame.to_csv(folder / "trials.csv", index=False)
    return {"study": study, "trials": frame, "front": pareto_front(frame), "fidelity": fidelity,
            "interrupted": interrupted, "wall_s": time.time() - started, "folder": folder}


def _run_proxy_stage(
    study: optuna.Study, settings: SearchSettings, recipe: Any, resources: dict[str, float],
    trial_fn: Callable[..., None] | None, log: Callable[[str], None],
) -> bool:
    """Runs the missing proxy trials through Ray Tune; True if it was interrupted."""
    searcher = StudySearcher(study, settings, epochs=recipe.epochs)
    if searcher.remaining <= 0:
        return False
    folder = study_dir(settings.study, settings.reports_dir)
    trainable = tune.with_resources(
        tune.with_parameters(trial_fn or proxy_trial, settings=settings), resources)
    tuner = tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            search_alg=searcher, num_samples=searcher.remaining,
            scheduler=ASHAScheduler(time_attr="epoch", metric="top1", mode="max",
                                    max_t=max(1, recipe.epochs),
                                    grace_period=_grace_period(recipe.epochs),
                                    reduction_factor=2),
            time_budget_s=settings.budget.wall_s,
        ),
        run_config=tune.RunConfig(
            name=settings.study, storage_path=str(folder / "ray"), verbose=0,
            callbacks=[_Progress(searcher, settings, log)],
        ),
    )
    tuner.fit()
    return bool(searcher.live)


def _grace_period(epochs: int) -> int:
    """ASHA's first rung: half the proxy epochs. Earlier, a short proxy's accuracies are still
    near chance for every configuration, and stopping on them is stopping at random."""
    return max(1, math.ceil(epochs / 2))


def _run_oneshot_stage(
    study: optuna.Study, settings: SearchSettings, recipe: Any, resources: dict[str, float],
    log: Callable[[str], None],
) -> None:
    """Trains the supernet as one Ray task on the budget, scores the space, enqueues its front."""
    from rhosearch import oneshot

    out_dir = study_dir(settings.study, settings.reports_dir) / "supernet"
    # The supernet gets the whole budget: it is the only thing running in this stage.
    cpus = settings.budget.cpus or float(os.cpu_count() or 1)
    gpus = 1.0 if settings.budget.gpus else 0.0
    log(f"one-shot: training the supernet over {settings.space.size} rho vectors "
        f"({recipe.epochs} epochs, {cpus:g} CPU{', 1 GPU' if gpus else ''})")
    task = ray.remote(_train_supernet_task).options(num_cpus=cpus, num_gpus=gpus)
    ray.get(task.remote(settings, recipe, out_dir))
    scores = oneshot.run_oneshot_stage(
        study, settings.space, data=settings.data, recipe=recipe, out_dir=out_dir,
        seed=settings.seed, data_root=settings.data_root, progress=False,
    )
    front = oneshot.oneshot_front(scores)
    log(f"one-shot: scored {len(scores)} configurations; front of {len(front)}: "
        + ", ".join(c.name for c in front))
    if settings.stage == "all":
        queued = {t.user_attrs.get("rho") for t in study.get_trials(deepcopy=False)
                  if t.user_attrs.get("stage") == STAGE}
        waiting = [t.params for t in study.get_trials(deepcopy=False,
                                                      states=(TrialState.WAITING,))]
        for config in front:
            params = params_of(settings.space, config)
            if config.rho_text not in queued and params not in waiting:
                study.enqueue_trial(params, user_attrs={"source": "oneshot-front"})


def _train_supernet_task(settings: SearchSettings, recipe: Any, out_dir: Path) -> None:
    import torch

    from rhosearch.oneshot import train_supernet

    torch.set_num_threads(max(1, int(ray.get_runtime_context().get_assigned_resources()
                                     .get("CPU", 1))))
    train_supernet(settings.space, data=settings.data, recipe=recipe, out_dir=out_dir,
                   seed=settings.seed, resume=True, progress=False, data_root=settings.data_root)


def _record_fidelity(study: optuna.Study, frame: pd.DataFrame) -> dict[str, float] | None:
    """Kendall's tau between one-shot and proxy top-1 (with its count), stored in the study."""
    from rhosearch.oneshot import oneshot_fidelity

    tau, count = oneshot_fidelity(frame)
    if count < 2:
        return None
    fidelity = {"tau": float(tau), "n": int(count)}
    study.set_user_attr("oneshot_proxy_kendall_tau", fidelity)
    return fidelity


class _Progress(tune.Callback):
    """Tune callback printing trials done/running/failed and the front after each trial."""

    def __init__(self, searcher: StudySearcher, settings: SearchSettings,
                 log: Callable[[str], None]) -> None:
        self.searcher = searcher
        self.settings = settings
        self.log = log

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._report(trials)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._report(trials)

    def _report(self, trials: list) -> None:
        while self.searcher.events:
            event = self.searcher.events.pop(0)
            frame = trials_frame(self.searcher.study)
            proxy = frame[(frame["stage"] == STAGE) & frame["status"].notna()]
            trained = proxy[proxy["status"].isin(["ok", "stopped", "failed", "diverged", "error"])]
            failed = int(trained["status"].isin(["failed", "diverged", "error"]).sum())
            running = sum(1 for t in trials if t.status == "RUNNING")
            front = pareto_front(frame)
            front_text = ", ".join(f"{r.name}({r.top1:.1f}%)" for r in front.itertuples())
            self.log(f"[{len(trained)}/{self.settings.trials} done, {running} running, "
                     f"{failed} failed] {event} | front: {front_text or '-'}")
