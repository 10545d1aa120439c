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

from rhosearch.errors import RhoSearchError
from rhosearch.resources import Budget, check_local_gpus, start_ray, trial_resources
from rhosearch.searcher import STAGE, Progress, StudySearcher, proxy_trial
from rhosearch.space import SearchSpace, load_presets
from rhosearch.study import (
    config_from_params,
    default_storage_url,
    open_storage,
    params_of,
    pareto_front,
    record_attrs,
    space_distributions,
    study_dir,
    trials_frame,
)

__all__ = ["SearchSettings", "open_search_study", "run_search"]

# What `--stage` may name: the one-shot stage alone, the proxy stage alone, or one then the other.
SEARCH_STAGES = ("oneshot", "proxy", "all")


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
    keep_checkpoints: bool = False  # proxy trials' checkpoint.pt (never resumed from) stays

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


def _close_waiting(study: optuna.Study, space: SearchSpace) -> int:
    """Marks enqueued trials the finished proxy stage did not run as FAIL, status "not run"
    (Optuna cannot delete a trial; `ask` hands each WAITING one out once); returns how many."""
    waiting = study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
    for _ in waiting:
        trial = study.ask(space_distributions(space))
        config = config_from_params(space, trial.params)
        record_attrs(study, trial, {
            "stage": STAGE, **config.as_dict(), "rho": config.rho_text, "status": "not run",
            "reason": f"enqueued ({trial.user_attrs.get('source', '?')}); --trials reached first"})
        study.tell(trial, state=TrialState.FAIL)
    return len(waiting)


# ---------------------------------------------------------------------------------------------
# Running a search.


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
    if settings.stage not in SEARCH_STAGES:
        raise RhoSearchError(
            f"unknown stage {settings.stage!r}; choose one of: {', '.join(SEARCH_STAGES)}")
    recipe = load_recipe(settings.recipe, settings.recipe_overrides)
    dataset_info(settings.data, root=settings.data_root)
    resources = trial_resources(settings.budget, gpus_per_trial=settings.gpus_per_trial,
                                cpus_per_trial=settings.cpus_per_trial)
    check_local_gpus(settings.budget, address=settings.address)
    folder = study_dir(settings.study, settings.reports_dir)
    study = open_search_study(settings)
    interrupted_before = _fail_interrupted(study) if settings.resume else 0
    if interrupted_before:
        log(f"resume: {interrupted_before} interrupted trial(s) will be run again")
    # Quiet Tune's own console tables (our _Progress prints the search's state), and let Ctrl-C
    # reach us as KeyboardInterrupt so interrupted trials are marked and a resume is printed.
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("TUNE_DISABLE_SIGINT_HANDLER", "1")
    started_ray = start_ray(settings.budget, address=settings.address)
    started = time.time()
    interrupted = False
    try:
        if settings.stage in ("oneshot", "all"):
            _run_oneshot_stage(study, settings, recipe, resources, log)
        if settings.stage in ("proxy", "all"):
            interrupted = _run_proxy_stage(study, settings, recipe, resources, trial_fn, log)
            if not interrupted:  # an interrupted search keeps its queue for --resume
                _close_waiting(study, settings.space)
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
            callbacks=[Progress(searcher, settings, log)],
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


