"""A search's Optuna study: opened or resumed (the name, the space and the sampler checked),
the paper's configurations and a screening stage's front queued, and what a killed driver left
RUNNING failed and queued again.

    study = open_search_study(settings)       # refuses an existing study without --resume
    fail_interrupted(study, space)            # on resume: RUNNING -> FAIL, its rho re-queued
"""

from __future__ import annotations

import warnings
from pathlib import Path

import optuna
from optuna.trial import TrialState

from rhosearch.core.space import RhoConfig, SearchSpace, load_presets
from rhosearch.drivers.search_settings import SearchSettings
from rhosearch.errors import RhoSearchError
from rhosearch.execution.searcher import (
    STAGE,
)
from rhosearch.record.study import (
    OBJECTIVES,
    config_from_params,
    default_storage_url,
    make_sampler,
    open_storage,
    params_of,
    record_attrs,
    space_distributions,
    trial_params,
)
from rhosearch.vocab import Status

__all__ = [
    "check_resolvable", "check_resumed_space", "check_study_name", "close_waiting",
    "enqueue_front", "fail_interrupted", "open_search_study", "reruns_waiting",
    "space_grid",
]


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
        sampler=make_sampler(settings.sampler, settings.seed, settings.trials),
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


def fail_interrupted(study: optuna.Study, space: SearchSpace) -> int:
    """Marks trials a killed or interrupted driver left RUNNING as FAIL and enqueues each
    proxy trial's rho again, so a resumed search runs those very configurations (a paper
    configuration cut short is measured, not replaced by a new proposal); returns how many.

    Only the lease holder calls this: another driver's RUNNING trials are not stale.
    """
    stale = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    names = space_distributions(space).keys()  # a rho with some parameters unset is no rho
    for trial in stale:
        record_attrs(study, trial.number, {"status": Status.INTERRUPTED,
                                           "reason": "the search stopped while it ran"})
        study.tell(trial.number, state=TrialState.FAIL, skip_if_finished=True)
        # A trial killed inside Optuna's ask has no stage yet, and its params may not be set
        # yet either (then an enqueued one's are in its fixed_params; else none was chosen).
        params = trial_params(trial)
        if trial.user_attrs.get("stage", STAGE) == STAGE and params.keys() == names:
            source = trial.user_attrs.get("source", "sampler")
            study.enqueue_trial(params, user_attrs={
                "source": f"rerun of #{trial.number} ({source})", "rerun_of": trial.number})
    return len(stale)


def reruns_waiting(study: optuna.Study) -> int:
    """Interrupted trials queued to run again (by this driver or the one before it)."""
    return sum(1 for t in study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
               if "rerun_of" in t.user_attrs)  # data, not the `source` sentence


def close_waiting(study: optuna.Study, space: SearchSpace) -> int:
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


def check_resolvable(settings: SearchSettings) -> None:
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
