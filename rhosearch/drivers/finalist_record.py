"""Recording a finished finalist run in the study, as a trial of stage "full" (once: a run
already recorded with as many epochs is not written again).

    number = record_run(study, config, reason, result, out_dir)
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna
from optuna.trial import TrialState

from rhosearch.core.space import RhoConfig, load_search_space
from rhosearch.errors import RhoSearchError
from rhosearch.record.study import (
    params_of,
    space_distributions,
    stage_study,
    study_objectives,
)
from rhosearch.vocab import LATENCY_COLUMNS, Stage, Status

if TYPE_CHECKING:
    pass

__all__ = ["STAGE", "already_recorded", "record_run"]


STAGE = Stage.FULL


def _latency_price(study: optuna.Study, config: RhoConfig) -> dict[str, Any]:
    """The latency columns the search recorded for `config` (its proxy or noise trials), or
    none when it never priced it."""
    for source in (study, stage_study(study, Stage.NOISE, create=False)):
        for trial in source.get_trials(deepcopy=False) if source is not None else ():
            attrs = trial.user_attrs
            if attrs.get("rho") == config.rho_text and attrs.get("overhead_ms") is not None:
                return {k: attrs[k] for k in LATENCY_COLUMNS if k in attrs}
    return {}


def record_run(study: optuna.Study, config: RhoConfig, reason: str, result: dict[str, Any],
            out_dir: Path) -> int:
    """Adds one finished finalist to the study as a stage "full" trial; returns its number.

    Its params follow the search space's distributions (a configuration outside the space gets
    none).
    """
    try:
        space = load_search_space(study.user_attrs["space"])
    except (KeyError, RhoSearchError):
        space = None
    in_space = space is not None and space.contains(config)
    attrs = {k: v for k, v in result.items() if isinstance(v, (int, float, str, bool))}
    attrs.update(stage=STAGE, **config.as_dict(), trained=True, pick=reason,
                 run_dir=str(out_dir))
    attrs.update(rho=config.rho_text)
    names = study_objectives(study)
    if "overhead_ms" in names:  # a latency search: the price its proxy trial was given
        attrs.update(_latency_price(study, config))
    ok = (result.get("status") == Status.OK and result.get("top1") is not None
          and all(name in attrs for name in names))
    trial = optuna.trial.create_trial(
        state=TrialState.COMPLETE if ok else TrialState.FAIL,
        values=[float(attrs[name]) for name in names] if ok else None,
        params=params_of(space, config) if in_space else {},
        distributions=space_distributions(space) if in_space else {},
        user_attrs=attrs,
    )
    study.add_trial(trial)
    return study.get_trials(deepcopy=False)[-1].number


def already_recorded(study: optuna.Study, out_dir: Path, epochs_done: int) -> int | None:
    """The number of a full trial already recording this run at this epoch (a resume)."""
    for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        attrs = trial.user_attrs
        if (attrs.get("stage") == STAGE and attrs.get("run_dir") == str(out_dir)
                and attrs.get("epochs_done") == epochs_done):
            return trial.number
    return None
