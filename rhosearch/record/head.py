"""The head stage's record: per configuration, its heads summarised and paired with the
baseline's head on the same trunks, written to the companion study `<study>::head`.

A configuration's top-1 is the mean over trunks x head seeds. Its difference from the
baseline's head is paired on each trunk (same trunk, same head seeds, same images), and the
trunk is the unit of the test: head seeds on one trunk share that trunk, so the differences
are averaged per trunk first and the trunk is the "seed" of the one calibrated rule
(`stats.compare_family`: the paired test with its variance pooled over the space, Holm over
the space's configurations).
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import optuna
import pandas as pd

from rhosearch.core.cost import CostModel
from rhosearch.core.space import RhoConfig, SearchSpace
from rhosearch.record.stats import Tau, compare_family, kendall_tau, pooled_variance, t_interval
from rhosearch.record.study import params_of, space_distributions, study_objectives
from rhosearch.vocab import Stage, Status, Verdict

__all__ = ["HEAD_SUMMARY_COLUMNS", "HeadAgreement", "better_count", "head_agreement",
           "paired_sd", "record_head", "summarize_head"]

STAGE = Stage.HEAD
HEAD_SUMMARY_COLUMNS = [
    "rho", "backbone", "top1", "top1_lo", "top1_hi", "runs", "trunks", "top1_diff",
    "diff_lo", "diff_hi", "p_value", "test", "vs_baseline", "n_val",
]


def summarize_head(runs: pd.DataFrame, baseline_rho: str) -> pd.DataFrame:
    """One row per configuration (`HEAD_SUMMARY_COLUMNS`) from one row per head (`trunk`,
    `head_seed`, `rho`, `top1`, `n_val`): the mean top-1 over trunks x head seeds, the t
    interval of its per-trunk means, and the comparison with the baseline's head by the one
    rule (`stats.compare_family` with trunks as the paired seeds, Holm over the space)."""
    per_trunk = runs.groupby(["rho", "trunk"], sort=False)["top1"].mean()
    by_rho: dict[str, dict[int, float]] = {}
    for (rho, trunk), top1 in per_trunk.items():
        by_rho.setdefault(rho, {})[int(trunk)] = float(top1)
    family = compare_family(by_rho, baseline_rho) if baseline_rho in by_rho else None
    rows = []
    for rho, trunks in by_rho.items():
        mine = runs[runs["rho"] == rho]
        lo, hi = (t_interval(list(trunks.values()), var=family.run_var, df=family.run_df)
                  if family is not None else t_interval(list(trunks.values())))
        row: dict[str, Any] = {
            "rho": rho, "top1": float(mine["top1"].mean()), "top1_lo": lo, "top1_hi": hi,
            "runs": len(mine), "trunks": len(trunks), "n_val": int(mine["n_val"].iloc[0])}
        if rho == baseline_rho:
            row["vs_baseline"] = Verdict.CONTROL
        elif family is None:
            row["vs_baseline"] = Verdict.NO_TEST
        else:
            comparison = family.comparisons[rho]
            row.update(top1_diff=comparison.diff, diff_lo=comparison.lo, diff_hi=comparison.hi,
                       p_value=comparison.p_value, test=comparison.method,
                       vs_baseline=family.labels[rho])
        rows.append(row)
    summary = pd.DataFrame(rows).reindex(columns=HEAD_SUMMARY_COLUMNS)
    summary.attrs["paired_sd"] = math.sqrt(family.paired_var) if family and family.paired_var \
        else math.nan
    return summary


def record_head(study: optuna.Study, space: SearchSpace, summary: pd.DataFrame) -> int:
    """Writes one COMPLETE trial per configuration to `study` (the `<study>::head`
    companion), replacing nothing: configurations it holds already are skipped. Returns how
    many were written."""
    recorded = {t.user_attrs.get("rho") for t in study.get_trials(deepcopy=False)}
    cost = CostModel(space.backbone)  # priced at the paper's point (vocab.PRICED)
    distributions = space_distributions(space)
    trials = []
    for row in summary.to_dict("records"):
        config = RhoConfig.parse(row["rho"], backbone=space.backbone)
        if config.rho_text in recorded:
            continue
        price = cost.price(config).as_dict()
        measured = {"top1": row["top1"], **price}
        values = [float(measured[name]) for name in study_objectives(study)]
        attrs = {**config.as_dict(), **price, "stage": str(STAGE), "status": str(Status.OK),
                 **{k: (None if isinstance(v, float) and math.isnan(v) else
                        str(v) if isinstance(v, Verdict) else v)
                    for k, v in row.items() if k not in ("rho", "backbone")}}
        trials.append(optuna.trial.create_trial(
            values=values, distributions=distributions, params=params_of(space, config),
            user_attrs=attrs))
    study.add_trials(trials)
    return len(trials)


def better_count(summary: pd.DataFrame) -> int:
    """How many configurations the rule labels better than the baseline's head (the summary
    line's count: read from the label, never from a sentence made for people)."""
    return int((summary["vs_baseline"] == Verdict.BETTER).sum())


def paired_sd(runs: dict[str, dict[Any, float]], control: str) -> tuple[float, int]:
    """The pooled standard deviation of one paired difference (a configuration minus `control`
    on the same key: a seed, a trunk, or a (trunk, head seed)) and its degrees of freedom; NaN
    and 0 when no configuration has two paired differences."""
    base = runs.get(control, {})
    diffs = [[v - base[k] for k, v in keyed.items() if k in base]
             for rho, keyed in runs.items() if rho != control]
    var, df = pooled_variance(diffs)
    return (math.sqrt(var) if var is not None else math.nan), df


class HeadAgreement(NamedTuple):
    """How a head stage agrees with itself (`head_agreement`): the configurations measured on
    every trunk, and per split of the trunks (each against the others; even against odd with
    four or more) Kendall's tau of the configurations' mean top-1 on the two sides; the paired
    difference from the baseline's head, per (trunk, head seed) and per trunk mean."""

    configurations: int
    trunks: list[int]
    mean_range: tuple[float, float]
    mean_std: float
    splits: list[tuple[list[int], list[int], Tau]]
    paired_sd: tuple[float, int]
    paired_sd_trunk: tuple[float, int]
    mean_diff: float


def head_agreement(runs: pd.DataFrame, baseline_rho: str) -> HeadAgreement:
    """Computes `HeadAgreement` from one row per head (`trunk`, `head_seed`, `rho`, `top1`):
    the whole space's self-agreement, which `benchmarks/head_agreement.py` prints for a search
    and `benchmarks/head_epochs.py` for each head recipe."""
    runs = runs.drop_duplicates(["trunk", "head_seed", "rho"])
    table = runs.pivot_table(index="rho", columns="trunk", values="top1")
    by_trunk = table.dropna()  # the configurations measured on every trunk
    trunks = [int(t) for t in by_trunk.columns]
    means = by_trunk.mean(axis=1)
    sides = [([t], [u for u in trunks if u != t]) for t in trunks]
    if len(trunks) >= 4:
        sides.append((trunks[0::2], trunks[1::2]))
    splits = [(left, right, kendall_tau(by_trunk[left].mean(axis=1),
                                        by_trunk[right].mean(axis=1)))
              for left, right in sides]
    keyed = {rho: {(int(r.trunk), int(r.head_seed)): float(r.top1) for r in group.itertuples()}
             for rho, group in runs.groupby("rho")}
    per_trunk = {rho: {int(t): float(v) for t, v in row.dropna().items()}
                 for rho, row in table.iterrows()}
    base = per_trunk.get(baseline_rho, {})
    diffs = [sum(paired) / len(paired) for rho, by in per_trunk.items() if rho != baseline_rho
             if (paired := [v - base[t] for t, v in by.items() if t in base])]
    return HeadAgreement(
        configurations=len(by_trunk), trunks=trunks,
        mean_range=(float(means.min()), float(means.max())) if len(means) else (math.nan,) * 2,
        mean_std=float(means.std()), splits=splits,
        paired_sd=paired_sd(keyed, baseline_rho),
        paired_sd_trunk=paired_sd(per_trunk, baseline_rho),
        mean_diff=float(sum(diffs) / len(diffs)) if diffs else math.nan)
