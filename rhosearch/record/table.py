"""The trials table: every trial of every stage of a study as one row (`TRIAL_COLUMNS`), each
top-1 with its uncertainty, and the per-stage views of it (runs, noise floor, family).

    frame = trials_frame(study)                       # what trials.csv and reports hold
    family, control = stage_family(frame, Stage.PROXY)

Every top-1 travels with its uncertainty: `trials_frame` adds each trained result's 95 %
interval (Wilson's from the validation-set size `n_val`, widened by the stage's measured seed
spread) and whether it differs from the baseline beyond that noise (`vs_baseline`).
"""

from __future__ import annotations

from typing import Any

import optuna
import pandas as pd

from rhosearch.core.space import baseline_config
from rhosearch.record.stats import (
    Family,
    Tau,
    compare_family,
    kendall_tau,
    t_interval,
    wilson_interval,
)
from rhosearch.record.storage import COMPANION_STAGES, stage_study
from rhosearch.vocab import TRIAL_COLUMNS as TRIAL_DTYPES
from rhosearch.vocab import Stage, Status, Verdict

__all__ = [
    "PROXY_FAMILY", "SEED_SUMMARY_COLUMNS", "TRIAL_COLUMNS", "noise_floor", "stage_agreement",
    "stage_family", "stage_noise", "stage_runs", "summarize_seeds", "trials_frame",
]


# One row per trial in `trials.csv` and in what reports read (dtypes: `vocab.TRIAL_COLUMNS`).
TRIAL_COLUMNS = list(TRIAL_DTYPES)


# Computed by `trials_frame` from the record, not stored per trial: the run's 95 % interval,
# and its configuration's comparison with the baseline over every seed of the stage
# (`stats.compare_family`): label (`Verdict`), mean difference, p and which test.
_DERIVED = ("top1_lo", "top1_hi", "vs_baseline", "top1_diff", "p_value", "test")


# The stages whose runs are compared with the proxy stage's baseline as one family.
PROXY_FAMILY = (Stage.PROXY, Stage.NOISE, Stage.RESOLVE)


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
