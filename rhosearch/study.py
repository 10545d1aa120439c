"""The record of a search: an Optuna study, its storage, and the table of its trials.

Every stage (one-shot, proxy, full) writes into the same study; each trial's user attrs say
which stage measured it and what it measured, so `optuna.load_study` in any other process sees
the whole search. Objective values are `[top1, overhead_params]` (+ `gmacs` when asked).

Storage: a SQLite file `reports/<study>/study.db` by default, or any Optuna storage URL. Only
the search driver process writes to it (Ray workers report to the driver, which tells Optuna),
so SQLite never sees concurrent writers and "database is locked" cannot happen; the busy
timeout covers readers such as a report opened while a search runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna
import pandas as pd

from rhosearch.errors import RhoSearchError
from rhosearch.space import RhoConfig, SearchSpace

__all__ = [
    "TRIAL_COLUMNS",
    "OBJECTIVES",
    "default_storage_url",
    "open_storage",
    "load_study",
    "study_dir",
    "trials_frame",
    "record_attrs",
    "dominated",
    "pareto_front",
    "trials_done",
    "STAGES",
    "space_distributions",
    "params_of",
    "config_from_params",
]

# The stages that write trials, in the order a search runs them.
STAGES = ("oneshot", "proxy", "full")

OBJECTIVES = {"top1": "maximize", "overhead_params": "minimize", "gmacs": "minimize"}

# One row per trial in `trials.csv` and in what reports read.
TRIAL_COLUMNS = [
    "number", "stage", "state", "name", "backbone", "rho", "classifier_channels", "params",
    "overhead_params", "overhead_pct", "gmacs", "top1", "top5", "epochs_done", "wall_s",
    "status", "reason",
]


def study_dir(study_name: str, reports_dir: Path | str = "reports") -> Path:
    """Where a study's files live: `reports/<study>/`."""
    if not study_name or any(c in study_name for c in "/\\:") or study_name.startswith("."):
        raise RhoSearchError(
            f"study name {study_name!r} is not usable as a folder name; "
            "use letters, digits, - or _"
        )
    return Path(reports_dir) / study_name


def default_storage_url(study_name: str, reports_dir: Path | str = "reports") -> str:
    return f"sqlite:///{(study_dir(study_name, reports_dir) / 'study.db').resolve()}"


def open_storage(url: str) -> optuna.storages.BaseStorage:
    """An Optuna storage for `url`; SQLite gets a busy timeout for concurrent readers."""
    try:
        if url.startswith("sqlite:///"):
            Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
            return optuna.storages.RDBStorage(
                url, engine_kwargs={"connect_args": {"timeout": 60}}
            )
        return optuna.storages.get_storage(url)
    except (ImportError, ValueError, optuna.exceptions.OptunaError) as exc:
        raise RhoSearchError(f"cannot open storage {url!r}: {exc}") from None
    except Exception as exc:  # sqlalchemy raises its own errors for bad URLs and servers
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise RhoSearchError(f"cannot open storage {url!r}: {first}") from None


def load_study(
    study_name: str, *, storage: str | None = None, reports_dir: Path | str = "reports"
) -> optuna.Study:
    """Loads an existing study; a missing one is an error listing what the storage holds."""
    url = storage or default_storage_url(study_name, reports_dir)
    if storage is None and not Path(url.removeprefix("sqlite:///")).is_file():
        raise RhoSearchError(
            f"no study {study_name!r} under {study_dir(study_name, reports_dir)}; "
            "run `rhosearch search --study NAME` first or pass --storage URL"
        )
    backend = open_storage(url)
    try:
        return optuna.load_study(study_name=study_name, storage=backend)
    except KeyError:
        names = [s.study_name for s in optuna.get_all_study_summaries(backend)]
        raise RhoSearchError(
            f"storage {url} has no study {study_name!r}; it has: {', '.join(names) or 'none'}"
        ) from None


def record_attrs(study: optuna.Study, trial: optuna.Trial | int, attrs: dict[str, Any]) -> None:
    """Writes a trial's measurements as user attrs (JSON-safe values only).

    Written through `optuna.Trial.set_user_attr`, so the live trial's own `user_attrs` see them.

    Args:
        study: the study holding the trial.
        trial: a live trial (`study.ask`), or the id of a RUNNING trial another process left
            behind, opened with Optuna's public constructor `optuna.Trial(study, trial_id)`.
        attrs: what to record (numpy scalars become Python numbers).
    """
    if not isinstance(trial, optuna.Trial):
        trial = optuna.Trial(study, trial)
    for key, value in attrs.items():
        trial.set_user_attr(key, value.item() if hasattr(value, "item") else value)


def trials_frame(study: optuna.Study) -> pd.DataFrame:
    """Every trial of every stage as one row with `TRIAL_COLUMNS` (missing values as NA)."""
    rows = []
    for trial in study.get_trials(deepcopy=False):
        attrs = trial.user_attrs
        row = {column: attrs.get(column) for column in TRIAL_COLUMNS}
        row["number"] = trial.number
        row["state"] = trial.state.name
        rows.append(row)
    return pd.DataFrame(rows, columns=TRIAL_COLUMNS)


def dominated(top1: pd.Series, cost: pd.Series) -> pd.Series:
    """True where another point has top1 >= and cost <=, one of them strictly.

    The one dominance rule of rhosearch (maximise top-1, minimise a cost): the search's
    printed front, finalist picking and the report all use it.
    """
    values = list(zip(top1, cost, strict=True))
    flags = [
        any(t >= t0 and c <= c0 and (t > t0 or c < c0) for t, c in values) for t0, c0 in values
    ]
    return pd.Series(flags, index=top1.index, dtype=bool)


def pareto_front(frame: pd.DataFrame, *, stage: str = "proxy") -> pd.DataFrame:
    """Non-dominated COMPLETE trials of one stage (max top1, min overhead_params)."""
    done = frame[(frame["stage"] == stage) & (frame["state"] == "COMPLETE")]
    done = done.dropna(subset=["top1", "overhead_params"]).drop_duplicates("rho")
    numbers = done[["top1", "overhead_params"]].astype(float)
    front = done[~dominated(numbers["top1"], numbers["overhead_params"])]
    return front.astype({"overhead_params": int, "params": int}).sort_values("overhead_params")


def trials_done(study: optuna.Study, *, stage: str = "proxy") -> int:
    """Trials that cost training in a stage (finished, pruned or failed while training)."""
    return sum(
        1 for t in study.get_trials(deepcopy=False)
        if t.user_attrs.get("stage") == stage and t.user_attrs.get("trained")
        and t.state.is_finished()
    )


# How a search space maps onto Optuna parameters (shared by every stage that writes trials).


def space_distributions(space: SearchSpace) -> dict[str, optuna.distributions.BaseDistribution]:
    """One categorical per block with a choice (ratios as exact strings like '4/3')."""
    return {
        f"rho_{k}": optuna.distributions.CategoricalDistribution([str(c) for c in choices])
        for k, choices in enumerate(space.choices, start=1)
        if len(choices) > 1
    }


def config_from_params(space: SearchSpace, params: dict[str, str]) -> RhoConfig:
    rho = [params.get(f"rho_{k}", str(c[0])) for k, c in enumerate(space.choices, start=1)]
    return RhoConfig(space.backbone, tuple(rho))


def params_of(space: SearchSpace, config: RhoConfig) -> dict[str, str]:
    return {name: str(config.rho[int(name[4:]) - 1]) for name in space_distributions(space)}
