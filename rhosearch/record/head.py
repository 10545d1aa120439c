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
from typing import Any

import optuna
import pandas as pd

from rhosearch.core.cost import CostModel
from rhosearch.core.space import RhoConfig, SearchSpace
from rhosearch.record.stats import compare_family, t_interval
from rhosearch.record.study import params_of, space_distributions, study_objectives
from rhosearch.vocab import Stage, Status, Verdict

__all__ = ["HEAD_SUMMARY_COLUMNS", "better_count", "record_head", "summarize_head"]

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
