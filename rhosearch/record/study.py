"""The record of a search: an Optuna study, its storage, and the table of its trials.

A search is one Optuna study (`<study>`: the proxy and full stages, what the sampler learns
from) and two companion studies in the same storage that the sampler must not learn from:
`<study>::oneshot` (one-shot scores: cheap and much noisier than a proxy measurement, so they
would drown TPE/GP's history) and `<study>::noise` (the baseline retrained with other seeds:
repeated measurements of one configuration). Each trial's user attrs say which stage measured
it and what it measured; `trials_frame` reads all three, so `optuna.load_study` in any other
process sees the whole search. Objective values are `[top1, overhead_params]` (+ `gmacs`).

Every top-1 travels with its uncertainty: `trials_frame` adds each trained result's 95 %
interval (Wilson's from the validation-set size `n_val`, widened by the stage's measured seed
spread) and whether it differs from the baseline beyond that noise (`vs_baseline`).

Storage: a SQLite file `reports/<study>/study.db` by default, or any Optuna storage URL. Only
the search driver process writes to it (Ray workers report to the driver, which tells Optuna),
so SQLite never sees concurrent writers and "database is locked" cannot happen; the busy
timeout covers readers such as a report opened while a search runs.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import optuna
import pandas as pd

from rhosearch import values
from rhosearch.core.space import RhoConfig, SearchSpace, baseline_config
from rhosearch.errors import RhoSearchError
from rhosearch.record.stats import (
    Family,
    Tau,
    compare_family,
    kendall_tau,
    t_interval,
    wilson_interval,
)
from rhosearch.vocab import LATENCY_COLUMNS, OBJECTIVES, Stage, Status, Verdict
from rhosearch.vocab import TRIAL_COLUMNS as TRIAL_DTYPES

__all__ = [
    "TRIAL_COLUMNS",
    "OBJECTIVES",
    "objective_names",
    "study_objectives",
    "default_storage_url",
    "open_storage",
    "load_study",
    "study_dir",
    "trials_frame",
    "record_attrs",
    "storage_of",
    "dominated",
    "pareto_front",
    "trials_done",
    "STAGES",
    "stage_study",
    "stage_noise",
    "stage_family",
    "stage_runs",
    "noise_floor",
    "stage_agreement",
    "SEED_SUMMARY_COLUMNS",
    "summarize_seeds",
    "space_distributions",
    "params_of",
    "config_from_params",
    "trial_params",
]

# The stages that write trials, in the order a search runs them ("noise": the baseline's extra
# seeds, measured beside the proxy stage).
STAGES = tuple(Stage)
# The stages with a front of their own (the noise stage only repeats the baseline).
FRONT_STAGES = (Stage.ONESHOT, Stage.HEAD, Stage.PROXY, Stage.FULL)
# Stages kept in their own study, out of the sampler's history (see the module docstring):
# the resolve stage's further seeds are repeated measurements of configurations the sampler has
# already seen once, so they live beside it too (the sampler sees one point per rho).
COMPANION_STAGES = (Stage.ONESHOT, Stage.HEAD, Stage.NOISE, Stage.RESOLVE)
# The stages whose runs are compared with the proxy stage's baseline as one family.
PROXY_FAMILY = (Stage.PROXY, Stage.NOISE, Stage.RESOLVE)

def objective_names(*, gmacs: bool = False, latency: bool = False) -> list[str]:
    """The search's objectives in value order (`vocab.OBJECTIVES`): top-1, overhead params (and
    GMACs, latency overhead in ms, when asked)."""
    asked = {"gmacs": gmacs, "overhead_ms": latency}
    return [name for name in OBJECTIVES if asked.get(name, True)]


def study_objectives(study: optuna.Study) -> list[str]:
    """A study's objectives in value order: the metric names the search gave it, else (a
    companion study, or one written before metric names) the first `len(study.directions)` of
    `vocab.OBJECTIVES`."""
    return list(study.metric_names or list(OBJECTIVES)[:len(study.directions)])


# One row per trial in `trials.csv` and in what reports read (dtypes: `vocab.TRIAL_COLUMNS`).
TRIAL_COLUMNS = list(TRIAL_DTYPES)
# Computed by `trials_frame` from the record, not stored per trial: the run's 95 % interval,
# and its configuration's comparison with the baseline over every seed of the stage
# (`stats.compare_family`): label (`Verdict`), mean difference, p and which test.
_DERIVED = ("top1_lo", "top1_hi", "vs_baseline", "top1_diff", "p_value", "test")


def study_dir(study_name: str, reports_dir: Path | str = "reports") -> Path:
    """Where a study's files live: `reports/<study>/`."""
    try:
        values.study_name(study_name)  # the rule every command's --study is checked by
    except argparse.ArgumentTypeError as exc:
        raise RhoSearchError(f"study name: {exc}") from None
    return Path(reports_dir) / study_name


def default_storage_url(study_name: str, reports_dir: Path | str = "reports") -> str:
    return f"sqlite:///{(study_dir(study_name, reports_dir) / 'study.db').resolve()}"


def open_storage(url: str, *, create: bool = True) -> optuna.storages.BaseStorage:
    """An Optuna storage for `url`; SQLite gets a busy timeout for concurrent readers.

    A SQLite file is first checked without writing to it: a damaged one, a database of someone
    else's (no Optuna tables) and an empty (0-byte) file are refused, never turned into a
    study; without `create` (commands that only read a study) a missing file is refused too,
    where Optuna would create it."""
    if url.startswith("sqlite:///"):
        path = Path(url.removeprefix("sqlite:///"))
        _refuse_damaged_sqlite(path)
        _refuse_foreign_sqlite(path, url, create=create)
    try:
        if url.startswith("sqlite:///"):
            Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
            return _sqlite_storage(url)
        return optuna.storages.get_storage(url)
    except (ImportError, ValueError, optuna.exceptions.OptunaError) as exc:
        raise RhoSearchError(f"cannot open storage {url!r}: {exc}") from None
    except Exception as exc:  # sqlalchemy raises its own errors for bad URLs and servers
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise RhoSearchError(f"cannot open storage {url!r}: {first}") from None


def _sqlite_storage(url: str, *, attempts: int = 5) -> optuna.storages.RDBStorage:
    """Optuna's RDBStorage on SQLite with a busy timeout. Opening a new file writes its schema;
    two processes doing that at once (a search starting while `rhosearch report` or a test
    polls the same file) can collide, so a failed open is retried before it counts."""
    import time

    from sqlalchemy.exc import SQLAlchemyError

    for attempt in range(attempts):
        try:
            return optuna.storages.RDBStorage(url, engine_kwargs={"connect_args": {"timeout": 60}})
        except (SQLAlchemyError, optuna.exceptions.StorageInternalError):  # the other writer
            if attempt == attempts - 1:
                raise
            time.sleep(0.2 * (attempt + 1))
    raise AssertionError("unreachable")


def _refuse_damaged_sqlite(path: Path) -> None:
    """Refuses a SQLite file that fails SQLite's own check (truncated, garbage written into
    it, not a database), before Optuna meets it mid-search as a `StorageInternalError`."""
    import sqlite3

    if not path.is_file() or path.stat().st_size == 0:
        return
    try:
        # Read-write, as every opener of the file: a driver killed mid-write leaves a hot
        # journal, which SQLite rolls back on open (read-only it fails "attempt to write a
        # readonly database"). The check itself only reads.
        with sqlite3.connect(path, timeout=60) as connection:
            problems = [row[0] for row in connection.execute("PRAGMA quick_check(1)")]
        connection.close()
    except sqlite3.Error as exc:
        problems = [str(exc)]
    if problems == ["ok"]:
        return
    kept = path.parent / "trials.csv"
    raise RhoSearchError(
        f"study database {path} is damaged ({problems[0]}); it was left as it is: start "
        f"afresh with --storage sqlite:///NEW.db or another --study"
        + (f" (the trials it held when last written are in {kept})" if kept.is_file() else ""))


def _refuse_foreign_sqlite(path: Path, url: str, *, create: bool) -> None:
    import time

    kind = values.read_only_sqlite(path)
    for _ in range(4):  # a driver creating the file writes its schema within moments
        if kind != "empty" or path.stat().st_size:
            break
        time.sleep(0.5)
        kind = values.read_only_sqlite(path)
    if kind == "other":
        raise RhoSearchError(f"{path} is a SQLite database without Optuna's tables, not a "
                             "study; rhosearch leaves it as it is (give another --storage)")
    if kind == "empty":
        raise RhoSearchError(f"{path} is empty, not a study; rhosearch does not adopt it "
                             "(delete it, or give another --storage or --study)")
    if kind == "missing" and not create:
        raise RhoSearchError(f"no study database at {url}; run `rhosearch search` first or "
                             "give the --storage a search wrote")


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
    backend = open_storage(url, create=False)
    try:
        return optuna.load_study(study_name=study_name, storage=backend)
    except KeyError:
        names = [s.study_name for s in optuna.get_all_study_summaries(backend)]
        raise RhoSearchError(
            f"storage {url} has no study {study_name!r}; it has: {', '.join(names) or 'none'}"
        ) from None


def storage_of(study: optuna.Study) -> optuna.storages.BaseStorage:
    """The storage a study reads and writes: the one place rhosearch reads `Study._storage`.

    Optuna (5.0) has no public accessor for it, and a study loaded by name (`load_study`, a
    companion study, a test's in-memory study) does not hand back the storage object it was
    opened with; companion studies must live in the same storage as their study."""
    return study._storage


def record_attrs(study: optuna.Study, trial: optuna.Trial | int, attrs: dict[str, Any]) -> None:
    """Writes a trial's measurements as user attrs (JSON-safe values only).

    Written through `optuna.Trial.set_user_attr`, so the live trial's own `user_attrs` see them.

    Args:
        study: the study holding the trial.
        trial: a live trial (`study.ask`), or the number of a RUNNING trial another process
            left behind, opened with Optuna's public constructor `optuna.Trial(study, id)`
            (the id from the storage's public `get_trial_id_from_study_id_trial_number`).
        attrs: what to record (numpy scalars become Python numbers).
    """
    if not isinstance(trial, optuna.Trial):
        storage = storage_of(study)
        study_id = storage.get_study_id_from_name(study.study_name)
        trial = optuna.Trial(study, storage.get_trial_id_from_study_id_trial_number(study_id,
                                                                                     trial))
    for key, value in attrs.items():
        trial.set_user_attr(key, value.item() if hasattr(value, "item") else value)


def stage_study(study: optuna.Study, stage: str, *, create: bool = True) -> optuna.Study | None:
    """The companion study of `stage` (a `COMPANION_STAGES` member) beside `study`, in its
    storage."""
    if stage not in COMPANION_STAGES:
        raise ValueError(f"{stage!r} trials live in the main study")
    name = f"{study.study_name}::{stage}"
    if not create:
        try:
            return optuna.load_study(study_name=name, storage=storage_of(study))
        except KeyError:
            return None
    return optuna.create_study(study_name=name, storage=storage_of(study),
                               directions=study.directions, load_if_exists=True)


def _frame_rows(study: optuna.Study, n_val: int | None) -> list[dict[str, Any]]:
    rows = []
    for trial in study.get_trials(deepcopy=False):
        attrs = trial.user_attrs
        # The head stage stores its comparison with it: it is paired over trunks and summed
        # over head seeds before it is recorded (record/head.py).
        derived = () if attrs.get("stage") == Stage.HEAD else _DERIVED
        row = {column: attrs.get(column) for column in TRIAL_COLUMNS if column not in derived}
        row["number"] = trial.number
        row["state"] = trial.state.name
        if row["n_val"] is None and row["top1"] is not None:
            row["n_val"] = n_val
        rows.append(row)
    return rows


def stage_runs(frame: pd.DataFrame, stage: str) -> pd.DataFrame:
    """The runs that measured something in a stage: COMPLETE, trained ("ok"; never a "cached"
    copy of an earlier trial), one per (rho, seed) (the first recorded). The proxy stage's runs
    include the noise and resolve stages' (the baseline's extra seeds, the contenders' further
    seeds): one family compared with one baseline."""
    stages = list(PROXY_FAMILY) if stage == Stage.PROXY else [stage]
    done = frame[frame["stage"].isin(stages) & (frame["state"] == "COMPLETE")
                 & frame["top1"].notna() & frame["status"].isin([Status.OK, None])
                 & frame["status"].ne(Status.CACHED)]
    seeds = done["seed"].astype("Int64")
    # A run without a recorded seed pairs with nothing: a key of its own.
    keys = seeds.where(seeds.notna(), -1 - done["number"].astype("Int64"))
    return (done.assign(seed_key=keys.astype(int)).sort_values("number", kind="stable")
            .drop_duplicates(["rho", "seed_key"]))


def stage_noise(frame: pd.DataFrame, stage: str) -> dict[str, Any] | None:
    """The baseline's measurements in one stage: its mean top-1 and, with two or more seeds,
    their spread (std, points). The proxy stage's baseline runs include the noise and resolve
    stages'. Each seed counts once: a "cached" copy of a run is not another seed."""
    done = stage_runs(frame, stage)
    baselines = {baseline_config(b).rho_text for b in done["backbone"].dropna().unique()}
    # In seed order (the search's own run first), whatever order the runs finished in.
    runs = done[done["rho"].isin(baselines)].sort_values("seed", na_position="first",
                                                         kind="stable")
    if runs.empty:
        return None
    values = runs["top1"].astype(float)
    return {"mean": float(values.mean()),
            "std": float(values.std(ddof=1)) if len(values) > 1 else None,
            "seeds": sorted(int(s) for s in runs["seed"].dropna()),
            "top1": [round(float(v), 4) for v in values],
            "n_val": int(runs["n_val"].dropna().iloc[0]) if runs["n_val"].notna().any() else None}


def stage_family(frame: pd.DataFrame, stage: str) -> tuple[Family, str] | None:
    """Every configuration of a stage against the baseline, by the one rule
    (`stats.compare_family` over `stage_runs`), and the baseline's rho; None without runs."""
    done = stage_runs(frame, stage)
    if done.empty:
        return None
    control = baseline_config(done["backbone"].dropna().iloc[0]).rho_text
    runs: dict[str, dict[int, float]] = {}
    for row in done.itertuples(index=False):
        runs.setdefault(row.rho, {})[int(row.seed_key)] = float(row.top1)
    return compare_family(runs, control), control


def stage_agreement(frame: pd.DataFrame, stage_a: str, stage_b: str) -> Tau:
    """Kendall's tau (with its bootstrap interval) between two stages' top-1 over the
    configurations (`rho`) both measured: the one way rhosearch pairs trials across stages.
    A configuration measured several times in a stage (seeds) counts with its mean top-1."""
    done = frame[(frame["state"] == "COMPLETE") & frame["top1"].notna()]
    means = [done[done["stage"] == stage].astype({"top1": float}).groupby("rho")["top1"].mean()
             for stage in (stage_a, stage_b)]
    both = pd.concat(means, axis=1, join="inner", keys=["a", "b"])
    return kendall_tau(both["a"].tolist(), both["b"].tolist())


# One row per finalist over its seeds: `finalists.csv` and the report's finalists table.
SEED_SUMMARY_COLUMNS = [
    "pick", "name", "rho", "backbone", "params", "overhead_params", "gmacs", "seeds", "top1",
    "top1_std", "top1_runs", "vs_baseline", "top1_diff", "p_value", "epochs_done", "status",
    "weights", "reason",
]
# What a finalist's row takes from its first run (the same for every seed, or the first's).
_FIRST_RUN = ("pick", "name", "rho", "backbone", "params", "overhead_params", "gmacs",
              "epochs_done", "status", "weights", "reason")


def summarize_seeds(runs: pd.DataFrame, baseline_rho: str) -> pd.DataFrame:
    """One row per configuration (`rho`, in order of first appearance) with
    `SEED_SUMMARY_COLUMNS`: top-1 mean and std over its seeds, the runs in their order, and its
    comparison with the baseline control trained with the same seeds, labelled by the one rule
    (`stats.compare_family`: paired over shared seeds, variance from every run, Holm
    over the finalists compared).

    Args:
        runs: one row per run with `rho`, `seed`, `top1` and `status` ("ok" counts); the other
            `_FIRST_RUN` columns are taken from each configuration's first row when present.
        baseline_rho: the control's ρ (`baseline_config(backbone).rho_text`).
    """
    ok = runs[(runs["status"] == Status.OK) & runs["top1"].notna()]
    by_seed = {rho: {int(s): float(v) for s, v in zip(group["seed"], group["top1"],
                                                       strict=True)}
               for rho, group in ok.groupby("rho", sort=False)}
    family = compare_family(by_seed, baseline_rho) if baseline_rho in by_seed else None
    rows = []
    for rho, group in runs.groupby("rho", sort=False):
        done = ok[ok["rho"] == rho].set_index("seed")["top1"].astype(float)
        first = group.iloc[0].to_dict()
        row = {key: first.get(key) for key in _FIRST_RUN}
        row.update(seeds=len(done), top1=round(float(done.mean()), 3) if len(done) else None,
                   top1_std=round(float(done.std(ddof=1)), 3) if len(done) > 1 else None,
                   top1_runs="; ".join(f"{v:.2f}" for v in done),
                   status=Status.OK if len(done) == len(group) else first.get("status"))
        if rho == baseline_rho:
            row["vs_baseline"] = Verdict.CONTROL
        elif family is not None and rho in family.comparisons:
            comparison = family.comparisons[rho]
            row.update(vs_baseline=family.labels[rho], top1_diff=round(comparison.diff, 3),
                       p_value=None if not comparison.tested else round(comparison.p_value, 4))
        else:
            row["vs_baseline"] = Verdict.NO_TEST
        rows.append(row)
    return pd.DataFrame(rows).reindex(columns=SEED_SUMMARY_COLUMNS)


def noise_floor(study: optuna.Study) -> dict[str, Any] | None:
    """The proxy stage's noise floor as recorded by the search (study user attr)."""
    return study.user_attrs.get("noise_floor")


def _add_uncertainty(frame: pd.DataFrame) -> pd.DataFrame:
    """Adds to every row with a top-1 its 95 % interval (`top1_lo`, `top1_hi`) and, per
    configuration, its comparison with the baseline (`vs_baseline`, `top1_diff`, `p_value`,
    `test`) by the one rule (`stage_family`).

    A trained run's interval is a t interval with the stage's pooled seed spread (which holds
    the validation set's binomial noise already); without a measured spread, Wilson's from the
    validation-set size alone. One-shot scores are screening scores: no interval and no test
    (a supernet's sub-network scores share one set of weights: no seed spread, and their
    errors are not independent draws, so a binomial interval would claim what it cannot)."""
    for stage in frame["stage"].dropna().unique():
        if stage == Stage.HEAD:  # recorded with its comparison (see `_frame_rows`)
            continue
        rows = frame.index[(frame["stage"] == stage) & frame["top1"].notna()]
        if stage == Stage.ONESHOT:
            frame.loc[rows, "vs_baseline"] = Verdict.SCREENING
            continue
        found = stage_family(frame, Stage.PROXY if stage in PROXY_FAMILY else stage)
        family, control = found if found else (None, None)
        for index in rows:
            top1 = float(frame.at[index, "top1"])
            if family is not None and family.run_var:
                lo, hi = t_interval([top1], var=family.run_var, df=family.run_df)
            elif pd.notna(frame.at[index, "n_val"]):
                lo, hi = wilson_interval(top1, int(frame.at[index, "n_val"]))
            else:
                continue
            frame.at[index, "top1_lo"] = round(max(0.0, lo), 3)
            frame.at[index, "top1_hi"] = round(min(100.0, hi), 3)
            if family is None or frame.at[index, "state"] != "COMPLETE":
                continue
            rho = frame.at[index, "rho"]
            if rho == control:
                frame.at[index, "vs_baseline"] = Verdict.CONTROL
            elif rho in family.comparisons:
                comparison = family.comparisons[rho]
                frame.at[index, "vs_baseline"] = family.labels[rho]
                frame.at[index, "top1_diff"] = round(comparison.diff, 3)
                frame.at[index, "p_value"] = (round(comparison.p_value, 5)
                                              if comparison.tested else float("nan"))
                frame.at[index, "test"] = comparison.method
    return frame


def trials_frame(study: optuna.Study) -> pd.DataFrame:
    """Every trial of every stage (the study and its companions) as one row with
    `TRIAL_COLUMNS`: missing values as NA, each top-1 with its interval and significance."""
    n_val = study.user_attrs.get("n_val")
    rows = _frame_rows(study, n_val)
    for stage in COMPANION_STAGES:
        companion = stage_study(study, stage, create=False)
        if companion is not None:
            rows += _frame_rows(companion, n_val)
    frame = pd.DataFrame(rows, columns=TRIAL_COLUMNS).astype(
        {column: TRIAL_DTYPES[column] for column in _DERIVED})
    return _add_uncertainty(frame)


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


def pareto_front(frame: pd.DataFrame, *, stage: str = Stage.PROXY) -> pd.DataFrame:
    """Non-dominated COMPLETE trials of one stage (max top1, min overhead_params)."""
    done = frame[(frame["stage"] == stage) & (frame["state"] == "COMPLETE")]
    done = done.dropna(subset=["top1", "overhead_params"]).drop_duplicates("rho")
    numbers = done[["top1", "overhead_params"]].astype(float)
    front = done[~dominated(numbers["top1"], numbers["overhead_params"])]
    return front.astype({"overhead_params": int, "params": int}).sort_values("overhead_params")


def trials_done(study: optuna.Study, *, stage: str = Stage.PROXY) -> int:
    """Trials that cost training in a stage (finished, pruned or failed while training).

    An interrupted trial is not one: it runs again, and counts then. (A driver killed between
    recording a finished trial's result and telling Optuna leaves it `trained` and RUNNING;
    the resume marks it interrupted and queues its rho again.)
    """
    return sum(
        1 for t in study.get_trials(deepcopy=False)
        if t.user_attrs.get("stage") == stage and t.user_attrs.get("trained")
        and t.state.is_finished() and t.user_attrs.get("status") != Status.INTERRUPTED
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


def trial_params(trial: optuna.trial.FrozenTrial) -> dict[str, Any]:
    """A trial's parameters, also while it waits in the queue (or was killed inside Optuna's
    ask): `enqueue_trial` keeps them in the system attr `fixed_params` until the trial runs,
    and `trial.params` stays empty. The one place that reads that Optuna internal."""
    return dict(trial.params or trial.system_attrs.get("fixed_params") or {})


def params_of(space: SearchSpace, config: RhoConfig) -> dict[str, str]:
    return {name: str(config.rho[int(name[4:]) - 1]) for name in space_distributions(space)}


def record_scores(study: optuna.Study, space: SearchSpace, scores: pd.DataFrame, *,
                  objectives: list[str] | None = None) -> None:
    """Records each scored configuration as a COMPLETE trial of the one-shot stage.

    Configurations the study already holds from this stage are not written again, so a rerun
    after an interruption completes the record. `objectives`: the study's objective names (by
    default the first of top-1, overhead params, GMACs); each is a column of `scores`.
    """
    recorded = {t.user_attrs.get("rho") for t in study.get_trials(deepcopy=False)
                if t.user_attrs.get("stage") == Stage.ONESHOT}
    distributions = space_distributions(space)
    names = objectives or study_objectives(study)
    latency = [k for k in LATENCY_COLUMNS if k in scores]
    trials = []
    for row in scores.itertuples(index=False):
        config = RhoConfig.parse(row.rho, backbone=row.backbone)
        if config.rho_text in recorded:
            continue
        values = [float(getattr(row, name)) for name in names]
        attrs = {"stage": str(Stage.ONESHOT), "name": config.name, "rho": config.rho_text,
                 "backbone": config.backbone, "classifier_channels": config.classifier_channels,
                 "params": int(row.params), "overhead_params": int(row.overhead_params),
                 "overhead_pct": float(row.overhead_pct), "gmacs": float(row.gmacs),
                 "top1": float(row.top1), "top5": float(row.top5), "status": str(Status.OK),
                 **{k: getattr(row, k) for k in latency}}
        trials.append(optuna.trial.create_trial(
            values=values, distributions=distributions, user_attrs=attrs,
            params=params_of(space, config),
        ))
    study.add_trials(trials)
