"""The Pareto report of a search: compute what to draw (pandas), then draw it (Plotly).

    rhosearch report --study digits                 # writes reports/digits/index.html
    rhosearch report --study digits --format csv    # the front as CSV on stdout

`front_info` turns the trials table (`study.trials_frame`) into a `FrontInfo` of plain frames
and numbers (fronts, tables, axis ranges, the noise band, rank agreements, the finalists over
seeds);
`report_html.render_html` draws a `FrontInfo` into one offline HTML file (plotly.js embedded, no
network). Tests assert on the `FrontInfo`, not on pixels (the split of Optuna's `visualization`
code).

Objectives: maximise top-1, minimise x (`overhead_params` or `gmacs`). Only COMPLETE trials
with a top-1 and an x take part. Each stage (one-shot, proxy, full) has its own front and its
own panel and top-1 scale: their top-1s are not comparable (a 2-epoch full run near chance
would flatten a proxy front drawn on its axis). A trial is dominated when another trial of its
stage is at least as good in both objectives and strictly better in one, so exact ties stay on
the front together. The paper's configurations are reference points measured on ImageNet-1k:
they sit beside ours in "Table 5, extended" and never in a front.

Over ~400 lines: the fronts, the tables (front, Table 5 extended, finalists over seeds), axis
spans, the noise band, hypervolume and rank agreements are all computed here; drawing is in
`report_html.py`. The finalists' seed summary itself is `study.summarize_seeds`, the one that
`train-best` writes to `finalists.csv`.
"""

from __future__ import annotations

import functools
import math
from typing import Any, NamedTuple

import pandas as pd

from rhosearch.core.space import baseline_config
from rhosearch.errors import RhoSearchError
from rhosearch.output import cast_counts
from rhosearch.record.stats import Z95, Tau
from rhosearch.record.study import (
    FRONT_STAGES,
    SEED_SUMMARY_COLUMNS,
    dominated,
    stage_agreement,
    summarize_seeds,
)
from rhosearch.vocab import LATENCY_COLUMNS, NOT_TRAINED_STATUSES, Stage, Status

__all__ = [
    "FINALIST_TABLE_COLUMNS",
    "STAGES",
    "FrontInfo",
    "Panel",
    "finalists_over_seeds",
    "front_info",
    "front_table",
    "hypervolume_2d",
    "hypervolume_history",
    "latency_trials",
    "mark_fronts",
    "paper_points",
    "rank_agreement",
    "table5_extended",
]

STAGES = FRONT_STAGES
STAGE_LABELS = {Stage.ONESHOT: "one-shot", Stage.HEAD: "head (frozen trunks)",
                Stage.PROXY: "proxy", Stage.FULL: "full"}
X_COLUMNS = {"overhead": "overhead_params", "gmacs": "gmacs", "latency": "overhead_ms"}
X_LABELS = {"overhead_params": "overhead parameters", "gmacs": "GMACs",
            "overhead_ms": "latency overhead (ms)"}
_NUMERIC = ["params", "overhead_params", "overhead_pct", "gmacs", "overhead_ms",
            "overhead_ms_lo", "overhead_ms_hi", "top1", "top5", "top1_lo",
            "top1_hi", "classifier_channels", "epochs_done", "wall_s", "number"]
_RECIPES = {"basic": "basic", "mss": "MSS", "mss+ema": "MSS+EMA"}
# The hypervolume's reference x: the worst observed x plus this share of the observed range.
HV_MARGIN = 0.1
# The smallest span an axis shows: equal values get this much room instead of Plotly's
# autoscale to a 1e-7 range, where equal points look far apart.
MIN_SPAN = {"top1": 2.0, "overhead_params": 20_000.0, "gmacs": 0.01, "overhead_ms": 1.0}
# How many of the best found configurations (not the paper's) "Table 5, extended" adds.
FOUND_ROWS = 3


class Panel(NamedTuple):
    """One stage's plot: its own top-1 range and, for the proxy stage, the baseline's noise.

    y_range: (low, high) top-1 of the panel, covering every point and error bar.
    baseline: the baseline's mean top-1 in this stage (None: not measured).
    band: (low, high) where a one-seed configuration is within noise by the labels' own rule
        (`stats.noise_band`; mean ± 1.96 × seed std for a study recorded before it), None
        without a seed spread.
    """

    y_range: tuple[float, float]
    baseline: float | None
    band: tuple[float, float] | None


class FrontInfo(NamedTuple):
    """Everything the report draws, computed from the trials table.

    trials: usable trials (COMPLETE, with top-1 and x) plus `dominated` (for `x`),
        `dominated_<x>` for both x columns, and the configuration's per-stage top-1/top-5.
    front: one row per configuration on some stage's front (see `front_table`).
    table5: the paper's six configurations and the best found ones (`table5_extended`).
    finalists: the full stage over seeds, paired with the baseline control
        (`finalists_over_seeds`); empty when there is no full stage.
    panels: per stage with usable trials, its `Panel` (own top-1 scale, noise band).
    x_ranges: per cost column, the (low, high) every panel shares.
    hypervolume: proxy-stage hypervolume after each proxy trial run (`run`, `number`,
        `hypervolume`); trials answered without training (cached, infeasible) do not count.
    hv_reference: (top1, x) reference point of that hypervolume.
    agreements: Kendall's tau with its interval, "one-shot → proxy" and "proxy → full".
    noise: the proxy stage's noise floor (`mean`, `std`, `seeds`, `top1`, `n_val`) or None.
    paper: the paper's configurations and reported ImageNet figures (`paper_points`).
    excluded: trials of the three stages left out (failed, pruned, running, not run).
    data: the data set the search trained on ("" when unknown).
    """

    x: str
    trials: pd.DataFrame
    front: pd.DataFrame
    table5: pd.DataFrame
    finalists: pd.DataFrame
    panels: dict[str, Panel]
    x_ranges: dict[str, tuple[float, float]]
    hypervolume: pd.DataFrame
    hv_reference: tuple[float, float] | None
    agreements: dict[str, Tau]
    noise: dict[str, Any] | None
    paper: pd.DataFrame
    excluded: int
    data: str
    # The proxy stage's trials priced for latency (`latency_trials`), and where their latency
    # came from; None and "" when the search did not price latency.
    latency: pd.DataFrame | None = None
    latency_note: str = ""

    @property
    def rank_agreement(self) -> Tau | None:
        """Proxy-to-full Kendall's tau (None until a configuration has both)."""
        return self.agreements.get("proxy → full")


# ---------------------------------------------------------------------------------------------
# Computing.


def _with_optional(frame: pd.DataFrame) -> pd.DataFrame:
    """The trials table with the uncertainty and latency columns present (NA where an older
    study, or a hand-made table, lacks them)."""
    for column in ("top1_lo", "top1_hi", "vs_baseline", *LATENCY_COLUMNS):
        if column not in frame:
            frame[column] = float("nan") if column not in ("vs_baseline",
                                                           "latency_source") else None
    return frame


def _usable(trials: pd.DataFrame, x: str) -> pd.DataFrame:
    """COMPLETE trials of a known stage that have a top-1 and an x, numbers as floats."""
    frame = _with_optional(trials.copy())
    for column in _NUMERIC:
        if column in frame:
            frame[column] = pd.to_numeric(frame[column], errors="coerce").astype(float)
    frame[["backbone", "rho"]] = frame[["backbone", "rho"]].fillna("")
    keep = (frame["state"] == "COMPLETE") & frame["stage"].isin(STAGES)
    keep &= frame["top1"].notna() & frame[x].notna()
    return frame[keep].reset_index(drop=True)


def mark_fronts(trials: pd.DataFrame, *, x: str = "overhead_params") -> pd.DataFrame:
    """Usable trials with a `dominated` column: dominance within each stage on (top1, x)."""
    _check_x(x)
    frame = _usable(trials, x)
    frame["dominated"] = False
    for _, group in frame.groupby("stage"):
        frame.loc[group.index, "dominated"] = dominated(group["top1"], group[x])
    return frame


_PER_STAGE = ("top1", "top1_lo", "top1_hi", "top5", "vs_baseline", "number")


def _best_per_stage(usable: pd.DataFrame) -> pd.DataFrame:
    """Per configuration (backbone, rho): each stage's best trial (top-1, then lowest number),
    as `top1_<stage>`, `top1_lo_<stage>`, `top1_hi_<stage>`, `top5_<stage>`,
    `vs_baseline_<stage>` and `trial_<stage>`."""
    ordered = usable.sort_values(["top1", "number"], ascending=[False, True])
    best = ordered.drop_duplicates(["backbone", "rho", "stage"])
    wide = best.pivot(index=["backbone", "rho"], columns="stage", values=list(_PER_STAGE))
    wide.columns = [f"{'trial' if v == 'number' else v}_{s}" for v, s in wide.columns]
    for stage in STAGES:
        for value in _PER_STAGE:
            column = f"{'trial' if value == 'number' else value}_{stage}"
            if column not in wide:
                wide[column] = None if value == "vs_baseline" else float("nan")
            elif value != "vs_baseline":
                wide[column] = wide[column].astype(float)
    return wide.reset_index()


def front_table(trials: pd.DataFrame, *, x: str = "overhead_params") -> pd.DataFrame:
    """One row per configuration on the front of at least one stage, best top-1 first.

    Columns: name, backbone, rho, classifier_channels, params, overhead_params, overhead_pct,
    gmacs; per stage top1, top1_lo, top1_hi (its 95 % interval), top5, vs_baseline and trial
    (that stage's best trial of the configuration); and `front` (the stages whose front it is
    on).
    """
    marked = trials if "dominated" in trials else mark_fronts(trials, x=x)
    on_front = marked[~marked["dominated"]]
    stages = on_front.groupby(["backbone", "rho"])["stage"].agg(
        lambda s: ",".join(st for st in STAGES if st in set(s))
    ).rename("front")
    latency = [c for c in LATENCY_COLUMNS if c in marked and marked[c].notna().any()]
    costs = marked.sort_values("number").drop_duplicates(["backbone", "rho"])[
        ["backbone", "rho", "name", "classifier_channels", "params", "overhead_params",
         "overhead_pct", "gmacs", *latency]
    ]
    table = stages.reset_index().merge(costs, on=["backbone", "rho"], how="left")
    table = table.merge(_best_per_stage(marked), on=["backbone", "rho"], how="left")
    per_stage = [f"{'trial' if v == 'number' else v}_{s}" for s in STAGES for v in _PER_STAGE]
    columns = ["name", "backbone", "rho", "classifier_channels", "params", "overhead_params",
               "overhead_pct", "gmacs", *latency, *per_stage, "front"]
    order = [f"top1_{s}" for s in reversed(STAGES)]
    table = table.sort_values([*order, "overhead_params"],
                              ascending=[False] * len(order) + [True], na_position="last")
    return cast_counts(table[columns]).reset_index(drop=True)


def hypervolume_2d(points: list[tuple[float, float]], reference: tuple[float, float]) -> float:
    """Exact area dominated by (top1, x) points (max top1, min x) above/left of `reference`.

    Sweeping x upwards, the dominated height on [x_i, x_(i+1)) is the best top-1 of the points
    with x <= x_i; points worse than the reference in either objective add nothing.
    """
    top1_ref, x_ref = reference
    inside = sorted((x, t) for t, x in points if t > top1_ref and x < x_ref)
    area, height = 0.0, top1_ref
    for i, (x, t) in enumerate(inside):
        height = max(height, t)
        right = inside[i + 1][0] if i + 1 < len(inside) else x_ref
        area += (right - x) * (height - top1_ref)
    return area


def hypervolume_history(
    trials: pd.DataFrame, *, x: str = "overhead_params", stage: str = Stage.PROXY
) -> tuple[pd.DataFrame, tuple[float, float] | None]:
    """A stage's hypervolume after each trial it ran, in trial-number order.

    Only trials that trained count (`run` = 1, 2, ...): cached, infeasible, duplicate and
    not-run trials cost nothing and are left out, so the x-axis is the budget spent. Failed
    and pruned trials count, with the hypervolume unchanged. Reference point: top-1 = 0 and
    x = the largest x of the stage's usable trials plus `HV_MARGIN` (10%) of their x range
    (plus 1 when all x are equal), so every observed configuration counts.

    Returns:
        Frame with `run`, `number` and `hypervolume`, and the reference point (None: no
        usable trial).
    """
    usable = _usable(trials, x)
    usable = usable[usable["stage"] == stage]
    empty = pd.DataFrame({"run": [], "number": [], "hypervolume": []})
    if usable.empty:
        return empty, None
    spread = usable[x].max() - usable[x].min()
    reference = (0.0, float(usable[x].max() + (HV_MARGIN * spread if spread > 0 else 1.0)))
    columns = (usable["number"], usable["top1"], usable[x])
    done = {int(n): (t, c) for n, t, c in zip(*columns, strict=True)}
    ran = trials[(trials["stage"] == stage) & trials["state"].isin(
        ["COMPLETE", "PRUNED", "FAIL"]) & ~trials["status"].isin(NOT_TRAINED_STATUSES)]
    points, rows = [], []
    for run, number in enumerate(sorted(int(n) for n in ran["number"]), start=1):
        if number in done:
            points.append(done[number])
        rows.append({"run": run, "number": number,
                     "hypervolume": hypervolume_2d(points, reference)})
    return (pd.DataFrame(rows) if rows else empty), reference


def rank_agreement(trials: pd.DataFrame, first: str = Stage.PROXY,
                   second: str = Stage.FULL) -> Tau | None:
    """`study.stage_agreement` of two stages (each configuration's mean top-1 per stage, tau
    with its bootstrap interval); None when no configuration was measured in both."""
    both = set(trials.loc[trials["stage"] == first, "rho"]) & set(
        trials.loc[trials["stage"] == second, "rho"])
    if not both:
        return None
    return stage_agreement(trials, first, second)


@functools.lru_cache(maxsize=1)
def _paper_points() -> pd.DataFrame:
    from rhosearch.core.cost import CostModel
    from rhosearch.core.space import load_presets

    cost_model = CostModel("mobilevit_s")  # at the pricing point, `vocab.PRICED`
    rows = []
    for preset in load_presets().values():
        cost = cost_model.price(preset.config)
        for reported in preset.reported:
            recipe = _RECIPES.get(str(reported.get("recipe", "")), str(reported.get("recipe")))
            rows.append({
                "name": preset.label, "preset": preset.name, "rho": preset.config.rho_text,
                "backbone": preset.config.backbone,
                "classifier_channels": preset.config.classifier_channels,
                "params": cost.params, "overhead_params": cost.overhead_params,
                "overhead_pct": round(cost.overhead_pct, 3), "gmacs": round(cost.macs / 1e9, 4),
                "recipe": recipe, "top1": reported.get("top1"), "top5": reported.get("top5"),
                "paper_params": round(reported["params_m"] * 1e6)
                if "params_m" in reported else None,
                "table": str(reported.get("table", "?")),
                "source": f"paper {reported.get('table', '?')} ({recipe})",
            })
    return pd.DataFrame(rows)


def paper_points() -> pd.DataFrame:
    """The paper's configurations: our closed-form cost (256 px, 1000 classes) beside each
    reported ImageNet-1k top-1/top-5, one row per table and recipe, with the paper's `table`
    and a `source` label for people."""
    return _paper_points().copy()


def _configs_in(frame: pd.DataFrame, other: pd.DataFrame) -> pd.Series:
    """Whether each row's configuration (backbone, rho) is one of `other`'s."""
    keys = set(zip(other["backbone"], other["rho"], strict=True))
    return pd.Series([k in keys for k in zip(frame["backbone"], frame["rho"], strict=True)],
                     index=frame.index, dtype=bool)


TABLE5_COLUMNS = [
    "kind", "name", "backbone", "rho", "classifier_channels", "params", "overhead_params",
    "paper_params", "paper_basic", "paper_mss", "paper_mss_ema", "top1_oneshot", "top1_proxy",
    "top1_lo_proxy", "top1_hi_proxy", "vs_baseline_proxy", "top1_full", "top1_lo_full",
    "top1_hi_full",
]


def table5_extended(marked: pd.DataFrame, paper: pd.DataFrame) -> pd.DataFrame:
    """"Table 5, extended": the paper's six configurations, then the best found ones.

    Each paper row holds what the paper reports (ImageNet-1k top-1 per recipe, its parameter
    count) beside our measurements of the same ρ in each stage. Found rows (`kind` "found")
    are the `FOUND_ROWS` best proxy-front configurations that are not the paper's, by proxy
    top-1, plus any other configuration trained in the full stage.

    Args:
        marked: `mark_fronts` output.
        paper: `paper_points()`.
    """
    best = _best_per_stage(marked)  # every top1_<stage> column, also when no trial has one
    costs = marked.sort_values("number").drop_duplicates(["backbone", "rho"])[
        ["backbone", "rho", "name", "classifier_channels", "params", "overhead_params"]]
    ours = best.merge(costs, on=["backbone", "rho"], how="left")
    reported = paper.pivot_table(index=["backbone", "rho"], columns="recipe", values="top1",
                                 aggfunc="first")
    reported.columns = [f"paper_{c.lower().replace('+', '_')}" for c in reported.columns]
    rows = paper.drop_duplicates("preset")[
        ["backbone", "rho", "name", "classifier_channels", "params", "overhead_params",
         "paper_params"]].merge(reported.reset_index(), on=["backbone", "rho"], how="left")
    rows = rows.merge(ours.drop(columns=["name", "classifier_channels", "params",
                                         "overhead_params"]),
                      on=["backbone", "rho"], how="left")
    rows.insert(0, "kind", "paper")
    found = ours[~_configs_in(ours, rows)]
    front = marked[(marked["stage"] == Stage.PROXY) & ~marked["dominated"]]
    proxy_best = found[_configs_in(found, front)]
    proxy_best = proxy_best.sort_values("top1_proxy", ascending=False).head(FOUND_ROWS)
    full = found[found["top1_full"].notna()]
    picked = pd.concat([proxy_best, full]).drop_duplicates(["backbone", "rho"])
    picked = picked.sort_values(["top1_full", "top1_proxy"], ascending=False,
                                na_position="last").assign(kind="found")
    table = pd.concat([rows, picked], ignore_index=True)
    for column in TABLE5_COLUMNS:
        if column not in table:
            table[column] = float("nan")
    return cast_counts(table[TABLE5_COLUMNS])


# The seed summary's columns, then the seeds run (failed included) and the seeds of its runs.
FINALIST_TABLE_COLUMNS = [*SEED_SUMMARY_COLUMNS, "seeds_run", "seed_list"]


def finalists_over_seeds(trials: pd.DataFrame) -> pd.DataFrame:
    """The full stage (`train-best --seeds N`) over seeds, one row per configuration.

    `study.summarize_seeds` of the full-stage runs (top-1 mean, std, the runs in seed order,
    the paired comparison with the baseline control trained with the same seeds), plus
    `seeds_run` (runs recorded, failed ones included) and `seed_list` (the seeds behind
    `top1_runs`, in that order). Best mean top-1 first, the baseline control last. A run
    recorded twice (resumed with more epochs, or failed then resumed) counts with its last
    record. Empty, with `FINALIST_TABLE_COLUMNS`, when there is no full stage.
    """
    full = trials[(trials["stage"] == Stage.FULL) & trials["state"].isin(["COMPLETE", "FAIL"])]
    if full.empty:
        return pd.DataFrame(columns=FINALIST_TABLE_COLUMNS)
    full = full.assign(seed=pd.to_numeric(full["seed"], errors="coerce"),
                       top1=pd.to_numeric(full["top1"], errors="coerce"))
    runs = full.sort_values("number").drop_duplicates(["backbone", "rho", "seed"], keep="last")
    runs = runs.sort_values(["seed", "number"], na_position="last")
    backbone = runs["backbone"].dropna()
    control = (baseline_config(backbone.iloc[0]) if len(backbone) else baseline_config()).rho_text
    summary = summarize_seeds(runs, control)
    ok = runs[(runs["status"] == Status.OK) & runs["top1"].notna()]
    seed_lists = ok.groupby("rho", sort=False)["seed"].agg(
        lambda seeds: ", ".join("?" if pd.isna(s) else str(int(s)) for s in seeds))
    summary["seeds_run"] = summary["rho"].map(runs.groupby("rho").size())
    summary["seed_list"] = summary["rho"].map(seed_lists).fillna("")
    is_control = summary["rho"] == control
    summary = pd.concat([summary[~is_control].sort_values("top1", ascending=False,
                                                           na_position="last"),
                         summary[is_control]])
    summary = cast_counts(summary, ["epochs_done"])
    return summary.reset_index(drop=True)[FINALIST_TABLE_COLUMNS]


def _check_x(x: str) -> None:
    if x not in X_LABELS:
        raise RhoSearchError(f"unknown x {x!r}; choose one of: {', '.join(X_LABELS)}")


def _span(values: list[float], minimum: float, *, bounds: tuple[float, float] | None = None,
          pad: float = 0.06) -> tuple[float, float]:
    """(low, high) covering `values` with `pad` of their span on each side and at least
    `minimum` wide (centred on them), kept inside `bounds`."""
    values = [v for v in values if v is not None and not math.isnan(v)]
    if not values:
        low, high = (bounds or (0.0, minimum))
        return (float(low), float(high))
    low, high = min(values), max(values)
    margin = pad * (high - low)
    low, high = low - margin, high + margin
    if high - low < minimum:
        centre = (low + high) / 2
        low, high = centre - minimum / 2, centre + minimum / 2
    if bounds is not None:
        if low < bounds[0]:
            low, high = bounds[0], max(high, bounds[0] + minimum)
        if high > bounds[1]:
            low, high = min(low, bounds[1] - minimum), bounds[1]
    return (float(low), float(high))


def _noise_of(trials: pd.DataFrame, noise: dict[str, Any] | None) -> dict[str, Any] | None:
    """The recorded noise floor, or one computed from the table when the study has none."""
    if noise:
        return noise
    try:
        from rhosearch.record.study import stage_noise
    except ImportError:  # an older rhosearch.record.study
        return None
    return stage_noise(_with_optional(trials.copy()), Stage.PROXY)


def _panels(marked: pd.DataFrame, noise: dict[str, Any] | None) -> dict[str, Panel]:
    panels = {}
    for stage in STAGES:
        points = marked[marked["stage"] == stage]
        if points.empty:
            continue
        values = [*points["top1"], *points["top1_lo"].dropna(), *points["top1_hi"].dropna()]
        baseline = band = None
        if stage == Stage.PROXY and noise and noise.get("mean") is not None:
            baseline = float(noise["mean"])
            if noise.get("band"):  # the labels' own threshold (`stats.noise_band`)
                band = (float(noise["band"][0]), float(noise["band"][1]))
                values += list(band)
            elif noise.get("std"):  # a study recorded before the band was
                spread = Z95 * float(noise["std"])
                band = (baseline - spread, baseline + spread)
                values += list(band)
            values.append(baseline)
        panels[stage] = Panel(_span(values, MIN_SPAN["top1"], bounds=(0.0, 100.0)), baseline,
                              band)
    return panels


def front_info(trials: pd.DataFrame, *, x: str = "overhead_params",
               noise: dict[str, Any] | None = None, data: str = "",
               latency_note: str = "") -> FrontInfo:
    """Computes the report of a trials table (`study.trials_frame`); see `FrontInfo`.

    Args:
        trials: the trials table; `top1_lo`, `top1_hi` and `vs_baseline` are used when present.
        x: the cost of the front: `overhead_params` or `gmacs`.
        noise: the study's `noise_floor` user attr (computed from `trials` when not given).
        data: the data set the search trained on, for labels.
        latency_note: where the trials' latency came from (the study's `latency` attr).
    """
    _check_x(x)
    trials = _with_optional(trials.copy())
    if x == "overhead_ms" and trials["overhead_ms"].isna().all():
        raise RhoSearchError("this study has no latency overhead: it was searched without "
                             "--latency-objective")
    marked = mark_fronts(trials, x=x)
    marked[f"dominated_{x}"] = marked["dominated"]
    # Each cost the trials carry has its own front (latency only in a latency search).
    for other in (c for c in X_LABELS if c != x and trials[c].notna().any()):
        by_other = mark_fronts(trials, x=other)[["stage", "number", "dominated"]].rename(
            columns={"dominated": f"dominated_{other}"})
        marked = marked.merge(by_other, on=["stage", "number"], how="left")
        marked[f"dominated_{other}"] = marked[f"dominated_{other}"].fillna(True).astype(bool)
    per_stage = _best_per_stage(marked).drop(columns=[f"trial_{s}" for s in STAGES])
    per_stage = per_stage[["backbone", "rho", *(f"{v}_{s}" for s in STAGES
                                                for v in ("top1", "top5"))]]
    with_stages = marked.merge(per_stage, on=["backbone", "rho"], how="left")
    history, reference = hypervolume_history(trials, x=x)
    noise = _noise_of(trials, noise)
    agreements = {f"{STAGE_LABELS[a]} → {STAGE_LABELS[b]}": tau for a, b in
                  ((Stage.ONESHOT, Stage.PROXY), (Stage.HEAD, Stage.PROXY),
                   (Stage.PROXY, Stage.FULL))
                  if (tau := rank_agreement(trials, a, b)) is not None}
    paper = paper_points()
    x_ranges = {column: _span(marked[column].dropna().tolist(), MIN_SPAN[column])
                for column in X_LABELS if column in marked}
    in_stages = trials["stage"].isin(STAGES)
    return FrontInfo(
        x=x,
        trials=with_stages,
        front=front_table(marked, x=x),
        table5=table5_extended(marked, paper),
        finalists=finalists_over_seeds(trials),
        panels=_panels(marked, noise),
        x_ranges=x_ranges,
        hypervolume=history,
        hv_reference=reference,
        agreements=agreements,
        noise=noise,
        paper=paper,
        excluded=int(in_stages.sum()) - len(marked),
        data=data,
        latency=latency_trials(trials),
        latency_note=latency_note,
    )


def latency_trials(trials: pd.DataFrame, *, stage: str = Stage.PROXY) -> pd.DataFrame | None:
    """A stage's usable trials that carry a latency overhead, one per configuration, with
    `dominated_overhead_params` and `dominated_overhead_ms` (each front on its own) and
    `paper`: the paper configuration's label (`ExMViT-928`, `MobileViT-S`) or "".

    None when no trial of the stage was priced for latency."""
    from rhosearch.core.space import load_presets

    usable = _usable(_with_optional(trials.copy()), "overhead_ms")
    usable = usable[usable["stage"] == stage].drop_duplicates(["backbone", "rho"])
    if usable.empty:
        return None
    usable = usable.reset_index(drop=True)
    for x in ("overhead_params", "overhead_ms"):
        usable[f"dominated_{x}"] = dominated(usable["top1"], usable[x])
    labels = {(p.config.backbone, p.config.rho_text): p.label for p in load_presets().values()}
    usable["paper"] = [labels.get(key, "") for key in zip(usable["backbone"], usable["rho"],
                                                          strict=True)]
    return usable
