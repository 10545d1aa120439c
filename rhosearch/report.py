"""The Pareto report of a search: compute what to draw (pandas), then draw it (Plotly).

    rhosearch report --study digits                 # writes reports/digits/index.html
    rhosearch report --study digits --format csv    # the front as CSV on stdout

`front_info` turns the trials table (`study.trials_frame`) into a `FrontInfo` of plain frames
and numbers (fronts, tables, axis ranges, the noise band, rank agreements); `render_html` draws
a `FrontInfo` into one offline HTML file (plotly.js embedded, no network). Tests assert on the
`FrontInfo`, not on pixels (the split of Optuna's `visualization` code).

Objectives: maximise top-1, minimise x (`overhead_params` or `gmacs`). Only COMPLETE trials
with a top-1 and an x take part. Each stage (one-shot, proxy, full) has its own front and its
own panel and top-1 scale: their top-1s are not comparable (a 2-epoch full run near chance
would flatten a proxy front drawn on its axis). A trial is dominated when another trial of its
stage is at least as good in both objectives and strictly better in one, so exact ties stay on
the front together. The paper's configurations are reference points measured on ImageNet-1k:
they sit beside ours in "Table 5, extended" and never in a front.
"""

from __future__ import annotations

import functools
import html
import math
from numbers import Real
from pathlib import Path
from typing import Any, NamedTuple

import pandas as pd

from rhosearch.errors import RhoSearchError
from rhosearch.stats import Z95, Tau, kendall_tau
from rhosearch.study import dominated

__all__ = [
    "STAGES",
    "FrontInfo",
    "Panel",
    "front_info",
    "front_table",
    "hypervolume_2d",
    "hypervolume_history",
    "mark_fronts",
    "paper_points",
    "rank_agreement",
    "render_html",
    "table5_extended",
    "write_report",
]

STAGES = ("oneshot", "proxy", "full")
STAGE_LABELS = {"oneshot": "one-shot", "proxy": "proxy", "full": "full"}
X_COLUMNS = {"overhead": "overhead_params", "gmacs": "gmacs"}
PRICED = "priced at 256 px, 1000 classes"
X_LABELS = {"overhead_params": "overhead parameters", "gmacs": "GMACs"}
_NUMERIC = ["params", "overhead_params", "overhead_pct", "gmacs", "top1", "top5", "top1_lo",
            "top1_hi", "classifier_channels", "epochs_done", "wall_s", "number"]
_RECIPES = {"basic": "basic", "mss": "MSS", "mss+ema": "MSS+EMA"}
# Statuses of proxy trials that did not train: answered from the record, refused, or skipped.
_NOT_RUN = {"infeasible", "cached", "duplicate", "not run"}
# The hypervolume's reference x: the worst observed x plus this share of the observed range.
HV_MARGIN = 0.1
# The smallest span an axis shows: equal values get this much room instead of Plotly's
# autoscale to a 1e-7 range, where equal points look far apart.
MIN_SPAN = {"top1": 2.0, "overhead_params": 20_000.0, "gmacs": 0.01}
# How many of the best found configurations (not the paper's) "Table 5, extended" adds.
FOUND_ROWS = 3


class Panel(NamedTuple):
    """One stage's plot: its own top-1 range and, for the proxy stage, the baseline's noise.

    y_range: (low, high) top-1 of the panel, covering every point and error bar.
    baseline: the baseline's mean top-1 in this stage (None: not measured).
    band: (low, high) baseline mean ± 1.96 × seed std, where 95 % of the baseline's own runs
        land (None without a seed spread).
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
    panels: dict[str, Panel]
    x_ranges: dict[str, tuple[float, float]]
    hypervolume: pd.DataFrame
    hv_reference: tuple[float, float] | None
    agreements: dict[str, Tau]
    noise: dict[str, Any] | None
    paper: pd.DataFrame
    excluded: int
    data: str

    @property
    def rank_agreement(self) -> Tau | None:
        """Proxy-to-full Kendall's tau (None until a configuration has both)."""
        return self.agreements.get("proxy → full")


# ---------------------------------------------------------------------------------------------
# Computing.


def _with_optional(frame: pd.DataFrame) -> pd.DataFrame:
    """The trials table with the uncertainty columns present (NA where an older study, or a
    hand-made table, lacks them)."""
    for column in ("top1_lo", "top1_hi", "vs_baseline"):
        if column not in frame:
            frame[column] = float("nan") if column != "vs_baseline" else None
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
    costs = marked.sort_values("number").drop_duplicates(["backbone", "rho"])[
        ["backbone", "rho", "name", "classifier_channels", "params", "overhead_params",
         "overhead_pct", "gmacs"]
    ]
    table = stages.reset_index().merge(costs, on=["backbone", "rho"], how="left")
    table = table.merge(_best_per_stage(marked), on=["backbone", "rho"], how="left")
    per_stage = [f"{'trial' if v == 'number' else v}_{s}" for s in STAGES for v in _PER_STAGE]
    columns = ["name", "backbone", "rho", "classifier_channels", "params", "overhead_params",
               "overhead_pct", "gmacs", *per_stage, "front"]
    order = [f"top1_{s}" for s in reversed(STAGES)]
    table = table.sort_values([*order, "overhead_params"],
                              ascending=[False] * len(order) + [True], na_position="last")
    for column in ("classifier_channels", "params", "overhead_params",
                   *(f"trial_{s}" for s in STAGES)):
        table[column] = table[column].astype("Int64")
    return table[columns].reset_index(drop=True)


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
    trials: pd.DataFrame, *, x: str = "overhead_params", stage: str = "proxy"
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
        ["COMPLETE", "PRUNED", "FAIL"]) & ~trials["status"].isin(_NOT_RUN)]
    points, rows = [], []
    for run, number in enumerate(sorted(int(n) for n in ran["number"]), start=1):
        if number in done:
            points.append(done[number])
        rows.append({"run": run, "number": number,
                     "hypervolume": hypervolume_2d(points, reference)})
    return (pd.DataFrame(rows) if rows else empty), reference


def rank_agreement(trials: pd.DataFrame, first: str = "proxy",
                   second: str = "full") -> Tau | None:
    """Kendall's tau (`stats.kendall_tau`, with its bootstrap interval) of two stages' top-1
    over the configurations both measured; None when none has both.

    Uses each configuration's best trial per stage (as the front table does).
    """
    best = _best_per_stage(_usable(trials, "top1"))
    both = best.dropna(subset=[f"top1_{first}", f"top1_{second}"])
    if both.empty:
        return None
    return kendall_tau(both[f"top1_{first}"].tolist(), both[f"top1_{second}"].tolist())


@functools.lru_cache(maxsize=1)
def _paper_points() -> pd.DataFrame:
    from rhosearch.cost import CostModel
    from rhosearch.space import load_presets

    cost_model = CostModel("mobilevit_s", resolution=256, num_classes=1000)
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
                "source": f"paper {reported.get('table', '?')} ({recipe})",
            })
    return pd.DataFrame(rows)


def paper_points() -> pd.DataFrame:
    """The paper's configurations: our closed-form cost (256 px, 1000 classes) beside each
    reported ImageNet-1k top-1/top-5, one row per table and recipe, with a `source` label."""
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
    front = marked[(marked["stage"] == "proxy") & ~marked["dominated"]]
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
    table = table[TABLE5_COLUMNS]
    for column in ("classifier_channels", "params", "overhead_params", "paper_params"):
        table[column] = pd.to_numeric(table[column]).astype("Int64")
    return table


def _check_x(x: str) -> None:
    if x not in X_LABELS:
        raise RhoSearchError(f"unknown x {x!r}; choose one of: overhead_params, gmacs")


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
        from rhosearch.study import stage_noise
    except ImportError:  # an older rhosearch.study
        return None
    return stage_noise(_with_optional(trials.copy()), "proxy")


def _panels(marked: pd.DataFrame, noise: dict[str, Any] | None) -> dict[str, Panel]:
    panels = {}
    for stage in STAGES:
        points = marked[marked["stage"] == stage]
        if points.empty:
            continue
        values = [*points["top1"], *points["top1_lo"].dropna(), *points["top1_hi"].dropna()]
        baseline = band = None
        if stage == "proxy" and noise and noise.get("mean") is not None:
            baseline = float(noise["mean"])
            if noise.get("std"):
                spread = Z95 * float(noise["std"])
                band = (baseline - spread, baseline + spread)
                values += list(band)
            values.append(baseline)
        panels[stage] = Panel(_span(values, MIN_SPAN["top1"], bounds=(0.0, 100.0)), baseline,
                              band)
    return panels


def front_info(trials: pd.DataFrame, *, x: str = "overhead_params",
               noise: dict[str, Any] | None = None, data: str = "") -> FrontInfo:
    """Computes the report of a trials table (`study.trials_frame`); see `FrontInfo`.

    Args:
        trials: the trials table; `top1_lo`, `top1_hi` and `vs_baseline` are used when present.
        x: the cost of the front: `overhead_params` or `gmacs`.
        noise: the study's `noise_floor` user attr (computed from `trials` when not given).
        data: the data set the search trained on, for labels.
    """
    _check_x(x)
    trials = _with_optional(trials.copy())
    marked = mark_fronts(trials, x=x)
    other = "gmacs" if x == "overhead_params" else "overhead_params"
    by_other = mark_fronts(trials, x=other)[["stage", "number", "dominated"]].rename(
        columns={"dominated": f"dominated_{other}"})
    marked[f"dominated_{x}"] = marked["dominated"]
    marked = marked.merge(by_other, on=["stage", "number"], how="left")
    marked[f"dominated_{other}"] = marked[f"dominated_{other}"].fillna(True).astype(bool)
    per_stage = _best_per_stage(marked).drop(columns=[f"trial_{s}" for s in STAGES])
    per_stage = per_stage[["backbone", "rho", *(f"{v}_{s}" for s in STAGES
                                                for v in ("top1", "top5"))]]
    with_stages = marked.merge(per_stage, on=["backbone", "rho"], how="left")
    history, reference = hypervolume_history(trials, x=x)
    noise = _noise_of(trials, noise)
    agreements = {f"{STAGE_LABELS[a]} → {STAGE_LABELS[b]}": tau for a, b in
                  (("oneshot", "proxy"), ("proxy", "full"))
                  if (tau := rank_agreement(trials, a, b)) is not None}
    paper = paper_points()
    x_ranges = {column: _span(marked[column].dropna().tolist(), MIN_SPAN[column])
                for column in X_LABELS}
    in_stages = trials["stage"].isin(STAGES)
    return FrontInfo(
        x=x,
        trials=with_stages,
        front=front_table(marked, x=x),
        table5=table5_extended(marked, paper),
        panels=_panels(marked, noise),
        x_ranges=x_ranges,
        hypervolume=history,
        hv_reference=reference,
        agreements=agreements,
        noise=noise,
        paper=paper,
        excluded=int(in_stages.sum()) - len(marked),
        data=data,
    )


# ---------------------------------------------------------------------------------------------
# Drawing.

_STAGE_STYLE = {
    "oneshot": {"symbol": "circle", "color": "#1f77b4"},
    "proxy": {"symbol": "diamond", "color": "#ff7f0e"},
    "full": {"symbol": "star", "color": "#2ca02c"},
}
_RECIPE_COLORS = {"basic": "#7f7f7f", "MSS": "#9467bd", "MSS+EMA": "#d62728"}
_BAND_COLOR = "rgba(120, 120, 120, 0.16)"
_PER_STAGE_HOVER = "".join(
    f"<br>{STAGE_LABELS[s]}: top-1 %{{customdata[{6 + i}]}}" for i, s in enumerate(STAGES)
)
_TRIAL_HOVER = (
    "<b>%{customdata[0]}</b> (trial %{customdata[1]}, %{customdata[2]})<br>ρ = %{customdata[3]}"
    "<br>params %{customdata[4]}; overhead %{customdata[9]}, GMACs %{customdata[10]}"
    "<br>top-1 %{customdata[11]} (95%: %{customdata[12]}), %{customdata[5]}"
    + _PER_STAGE_HOVER + "<extra></extra>"
)
_PAPER_HOVER = (
    "<b>%{customdata[0]}</b> — %{customdata[1]}<br>ρ = %{customdata[2]}"
    "<br>params %{customdata[3]} (ours, 1000 classes)<br>overhead %{customdata[4]}, "
    "GMACs %{customdata[5]}<br>ImageNet top-1 %{customdata[6]}, top-5 %{customdata[7]}"
    "<extra></extra>"
)


def _missing(value: object) -> bool:
    return value is None or value is pd.NA or (isinstance(value, Real) and math.isnan(value))


def _fmt(value: object, digits: int = 2) -> str:
    if _missing(value):
        return "–"
    if isinstance(value, Real) and not float(value).is_integer():
        return f"{float(value):.{digits}f}"
    if isinstance(value, Real) and abs(value) >= 1000:
        return f"{int(value):,}"
    return str(value)


def _interval(lo: object, hi: object) -> str:
    return "–" if _missing(lo) or _missing(hi) else f"{float(lo):.1f}–{float(hi):.1f}"


def _trial_customdata(frame: pd.DataFrame) -> list[list[str]]:
    rows = []
    for row in frame.itertuples(index=False):
        per_stage = [_fmt(getattr(row, f"top1_{s}")) for s in STAGES]
        rows.append([
            _fmt(row.name), str(int(row.number)), STAGE_LABELS[row.stage], _fmt(row.rho),
            _fmt(row.params), "–" if _missing(row.vs_baseline) else str(row.vs_baseline),
            *per_stage, _fmt(row.overhead_params), _fmt(row.gmacs, 4), _fmt(row.top1),
            _interval(row.top1_lo, row.top1_hi),
        ])
    return rows


def _error_bars(points: pd.DataFrame) -> dict[str, Any]:
    above = (points["top1_hi"] - points["top1"]).clip(lower=0).fillna(0)
    below = (points["top1"] - points["top1_lo"]).clip(lower=0).fillna(0)
    return {"type": "data", "symmetric": False, "array": above.tolist(),
            "arrayminus": below.tolist(), "thickness": 1, "width": 3,
            "visible": bool(points["top1_lo"].notna().any())}


def _add_stage_traces(figure, info: FrontInfo, stage: str, x: str, row: int, col: int) -> None:
    import plotly.graph_objects as go

    points = info.trials[info.trials["stage"] == stage]
    style = _STAGE_STYLE[stage]
    dominated = points[f"dominated_{x}"]
    front = points[~dominated].sort_values(x)
    figure.add_trace(go.Scatter(
        x=front[x], y=front["top1"], mode="lines", line={"shape": "hv", "width": 1.5,
        "color": style["color"]}, legendgroup=stage, showlegend=False, hoverinfo="skip",
    ), row=row, col=col)
    # Front and dominated points as two traces: a faded trace fades its error bars too, and
    # the legend shows the front's marker.
    for faded, group in ((False, points[~dominated]), (True, points[dominated])):
        if group.empty:
            continue
        figure.add_trace(go.Scatter(
            x=group[x], y=group["top1"], mode="markers", opacity=0.35 if faded else 1.0,
            name=f"{STAGE_LABELS[stage]} trials (bars: 95% interval)", legendgroup=stage,
            showlegend=col == 1 and not faded,
            error_y={**_error_bars(group), "color": style["color"]},
            marker={"symbol": style["symbol"], "color": style["color"], "size": 9,
                    "line": {"width": 0.5, "color": "white"}},
            customdata=_trial_customdata(group), hovertemplate=_TRIAL_HOVER,
        ), row=row, col=col)


def _add_noise_band(figure, panel: Panel, row: int, baseline_name: str) -> None:
    import plotly.graph_objects as go

    if panel.band is not None:
        for col in (1, 2):
            figure.add_hrect(y0=panel.band[0], y1=panel.band[1], fillcolor=_BAND_COLOR,
                             line_width=0, layer="below", row=row, col=col)
        # A legend entry for the band (shapes have none).
        figure.add_trace(go.Scatter(
            x=[None], y=[None], mode="markers", name=f"{baseline_name} noise band (±1.96σ)",
            marker={"symbol": "square", "size": 12, "color": _BAND_COLOR}, hoverinfo="skip",
        ), row=row, col=1)
    if panel.baseline is not None:
        for col in (1, 2):
            figure.add_hline(y=panel.baseline, line={"dash": "dot", "width": 1,
                                                     "color": "#555"}, row=row, col=col)


def _stages_figure(info: FrontInfo):
    from plotly.subplots import make_subplots

    stages = [s for s in STAGES if s in info.panels] or ["proxy"]
    titles = []
    for stage in stages:
        titles += [f"{STAGE_LABELS[stage]} stage: top-1 vs {X_LABELS[x]}"
                   for x in ("overhead_params", "gmacs")]
    figure = make_subplots(rows=len(stages), cols=2, horizontal_spacing=0.07,
                           vertical_spacing=0.32 / len(stages), subplot_titles=titles)
    data = f" on {info.data}" if info.data else ""
    for row, stage in enumerate(stages, start=1):
        panel = info.panels.get(stage)
        for col, x in ((1, "overhead_params"), (2, "gmacs")):
            if panel is not None:
                _add_stage_traces(figure, info, stage, x, row, col)
            figure.update_xaxes(title_text=f"{X_LABELS[x]} ({PRICED})", range=info.x_ranges[x],
                                row=row, col=col)
        if panel is not None:
            if stage == "proxy":
                _add_noise_band(figure, panel, row, _baseline_name())
            figure.update_yaxes(range=panel.y_range, row=row)
        figure.update_yaxes(title_text=f"{STAGE_LABELS[stage]} top-1 %{data}", row=row, col=1)
    figure.update_layout(
        height=130 + 330 * len(stages), template="plotly_white",
        margin={"t": 80, "b": 40, "l": 70, "r": 20},
        legend={"orientation": "h", "y": 0.995, "yanchor": "top", "x": 0, "xanchor": "left",
                "yref": "container"},
    )
    return figure


@functools.lru_cache(maxsize=1)
def _baseline_name() -> str:
    from rhosearch.space import baseline_config

    return baseline_config().name


def _paper_figure(info: FrontInfo):
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    figure = make_subplots(rows=1, cols=2, horizontal_spacing=0.07, subplot_titles=(
        "Paper (ImageNet-1k, reported): top-1 vs overhead parameters",
        "Paper (ImageNet-1k, reported): top-1 vs GMACs"))
    paper = info.paper
    for col, x in ((1, "overhead_params"), (2, "gmacs")):
        for recipe, rows in paper.groupby("recipe", sort=False):
            tables = " & ".join(sorted({s.split(" (")[0].removeprefix("paper ")
                                        for s in rows.source}))
            customdata = [[r.name, r.source, r.rho, _fmt(r.params), _fmt(r.overhead_params),
                           _fmt(r.gmacs, 4), _fmt(r.top1), _fmt(r.top5)]
                          for r in rows.itertuples(index=False)]
            figure.add_trace(go.Scatter(
                x=rows[x], y=rows["top1"], mode="markers+text" if recipe == "MSS" else "markers",
                text=[n.removeprefix("ExMViT-") for n in rows["name"]],
                textposition=["bottom center" if n.startswith("MobileViT") else "top center"
                              for n in rows["name"]],
                textfont={"size": 9, "color": _RECIPE_COLORS.get(recipe, "#333")},
                name=f"paper {tables} ({recipe})", legendgroup=f"paper-{recipe}",
                showlegend=col == 1,
                marker={"symbol": "square-open", "size": 9, "line": {"width": 2},
                        "color": _RECIPE_COLORS.get(recipe, "#333")},
                customdata=customdata, hovertemplate=_PAPER_HOVER,
            ), row=1, col=col)
        figure.update_xaxes(title_text=f"{X_LABELS[x]} (ours, closed form, {PRICED})",
                            row=1, col=col)
    figure.update_yaxes(title_text="ImageNet-1k top-1 % (paper)", row=1, col=1)
    figure.update_layout(height=380, template="plotly_white",
                         margin={"t": 40, "b": 40, "l": 70, "r": 20},
                         legend={"orientation": "h", "y": -0.25, "x": 0})
    return figure


def _hypervolume_figure(info: FrontInfo):
    import plotly.graph_objects as go

    history = info.hypervolume
    figure = go.Figure(go.Scatter(
        x=history["run"], y=history["hypervolume"], mode="lines+markers",
        line={"shape": "hv", "color": _STAGE_STYLE["proxy"]["color"]},
        customdata=history[["number"]].to_numpy(),
        hovertemplate="after %{x} trials run (trial #%{customdata[0]}): %{y:.4g}<extra></extra>",
    ))
    figure.update_layout(
        height=300, template="plotly_white", margin={"t": 40, "b": 40, "l": 70, "r": 20},
        title=f"Proxy-stage hypervolume (top-1 × {X_LABELS[info.x]}) as trials run",
        xaxis={"title": "proxy trials run (trials answered from the record are not counted)",
               "dtick": 1 if len(history) <= 30 else None, "rangemode": "tozero"},
        yaxis_title="hypervolume",
    )
    return figure


def _top1_cell(top1: object, lo: object, hi: object) -> tuple[str, str]:
    """(html, sort key) of a top-1 with its 95 % interval beneath it."""
    if _missing(top1):
        return "–", ""
    interval = _interval(lo, hi)
    small = "" if interval == "–" else f"<br><small>{interval}</small>"
    return f"{float(top1):.1f}{small}", f" data-v=\"{float(top1)!r}\""


def _cell(value: object, digits: int = 2) -> tuple[str, str]:
    number = None if _missing(value) or isinstance(value, str) else float(value)
    key = "" if number is None else f" data-v=\"{number!r}\""
    return html.escape(_fmt(value, digits)), key


def _vs_baseline(row: Any) -> str:
    """The full stage's verdict when there is one, else the proxy's."""
    for stage in ("full", "proxy"):
        label = getattr(row, f"vs_baseline_{stage}", None)
        if not _missing(label):
            return f"{label}" if stage == "proxy" else f"{label} (full)"
    return "–"


def _front_html_table(front: pd.DataFrame) -> str:
    heads = ["configuration", "ρ", "classifier ch.", "params", "overhead", "GMACs",
             *(f"{STAGE_LABELS[s]} top-1 %" for s in STAGES), "vs baseline", "on front of"]
    head = "".join(f"<th onclick=\"sortBy(this)\">{html.escape(h)}</th>" for h in heads)
    body = []
    for row in front.itertuples(index=False):
        cells = [_cell(row.name), _cell(row.rho), _cell(row.classifier_channels),
                 _cell(row.params), _cell(row.overhead_params), _cell(row.gmacs, 4)]
        cells += [_top1_cell(getattr(row, f"top1_{s}"), getattr(row, f"top1_lo_{s}"),
                             getattr(row, f"top1_hi_{s}")) for s in STAGES]
        verdict = _vs_baseline(row)
        cells += [(html.escape(verdict), ""),
                  (html.escape(row.front.replace("oneshot", "one-shot").replace(",", ", ")), "")]
        body.append("<tr>" + "".join(f"<td{key}>{text}</td>" for text, key in cells) + "</tr>")
    return (f"<table id=\"front\" class=\"fit\"><thead><tr>{head}</tr></thead>"
            f"<tbody>{''.join(body)}</tbody></table>")


def _table5_html(table: pd.DataFrame, data: str) -> str:
    ours = f"this search ({html.escape(data) or 'its data'}): top-1 %"
    head = (
        "<tr><th rowspan=\"2\">configuration</th><th rowspan=\"2\">ρ</th>"
        "<th rowspan=\"2\">classifier ch.</th><th rowspan=\"2\">params (ours)</th>"
        "<th colspan=\"4\" class=\"paper\">paper (ImageNet-1k, 300 epochs, reported)</th>"
        f"<th colspan=\"4\" class=\"ours\">{ours}</th></tr>"
        "<tr><th class=\"paper\">params</th><th class=\"paper\">top-1 basic</th>"
        "<th class=\"paper\">MSS</th><th class=\"paper\">MSS+EMA</th>"
        "<th class=\"ours\">one-shot</th><th class=\"ours\">proxy</th>"
        "<th class=\"ours\">vs baseline (proxy)</th><th class=\"ours\">full</th></tr>")
    body = []
    for row in table.itertuples(index=False):
        cells = [_cell(row.name), _cell(row.rho), _cell(row.classifier_channels),
                 _cell(row.params), _cell(row.paper_params), _cell(row.paper_basic),
                 _cell(row.paper_mss), _cell(row.paper_mss_ema),
                 _top1_cell(row.top1_oneshot, None, None),
                 _top1_cell(row.top1_proxy, row.top1_lo_proxy, row.top1_hi_proxy),
                 (html.escape("–" if _missing(row.vs_baseline_proxy)
                              else str(row.vs_baseline_proxy)), ""),
                 _top1_cell(row.top1_full, row.top1_lo_full, row.top1_hi_full)]
        kind = "found" if row.kind == "found" else "paper"
        body.append(f"<tr class=\"{kind}\">"
                    + "".join(f"<td{key}>{text}</td>" for text, key in cells) + "</tr>")
    return (f"<table id=\"table5\" class=\"fit\"><thead>{head}</thead>"
            f"<tbody>{''.join(body)}</tbody></table>")


_SORT_JS = """
function sortBy(th) {
  const table = th.closest('table'), body = table.tBodies[0];
  const col = th.cellIndex, up = th.dataset.dir !== 'asc';
  th.dataset.dir = up ? 'asc' : 'desc';
  const key = td => td.dataset.v !== undefined ? parseFloat(td.dataset.v) : td.textContent;
  const rows = Array.from(body.rows).sort((a, b) => {
    const x = key(a.cells[col]), y = key(b.cells[col]);
    const c = typeof x === 'number' && typeof y === 'number' ? x - y : String(x).localeCompare(y);
    return up ? c : -c;
  });
  rows.forEach(r => body.appendChild(r));
}
// Each table records the width it was laid out at, so a test can check it fits the page.
window.addEventListener('load', () => {
  document.querySelectorAll('table.fit').forEach(t => { t.dataset.width = t.scrollWidth; });
});
"""
_CSS = """
body { font-family: system-ui, sans-serif; margin: 24px; color: #222; max-width: 1352px; }
table { border-collapse: collapse; font-size: 12.5px; margin: 6px 0 4px; }
th, td { border: 1px solid #ddd; padding: 3px 6px; text-align: right; white-space: nowrap; }
th { background: #f4f4f4; cursor: pointer; vertical-align: bottom; }
td small { color: #777; font-size: 11px; }
td:nth-child(-n+2), tr:first-child > th:nth-child(-n+2) { text-align: left; }
th.paper { background: #efe9f6; } th.ours { background: #fdf0e2; }
tr.found td { background: #fffaf3; } tr.found td:first-child { font-weight: 600; }
.note { color: #555; font-size: 13px; max-width: 1100px; }
"""


def _noise_text(info: FrontInfo) -> str:
    noise = info.noise
    name = _baseline_name()
    if not noise or noise.get("mean") is None:
        return (f"Noise floor: not measured ({name} has no proxy run); intervals are the "
                "validation set's alone.")
    n_val = noise.get("n_val")
    per_image = f" (1 image = {100 / n_val:.2f} pts)" if n_val else ""
    runs = ", ".join(f"{v:.1f}" for v in noise.get("top1", []))
    if noise.get("std") is None:
        return (f"Noise floor: {name} proxy top-1 {noise['mean']:.2f} % from one run; no seed "
                f"spread measured. Validation set: {n_val or '?'} images{per_image}.")
    band = ("the grey band is mean ± 1.96σ, where 95 % of its own reruns land" if noise["std"]
            else "every seed gave the same top-1, so the band is the dotted line")
    return (f"Noise floor: {name} proxy top-1 {noise['mean']:.2f} % ± {noise['std']:.2f} pts "
            f"(std over {len(noise.get('top1', []))} seeds: {runs}); {band}. Validation set: "
            f"{n_val or '?'} images{per_image}. Bars are 95 % intervals (Wilson, widened by the "
            "seed spread).")


def render_html(info: FrontInfo, path: Path | str, *, title: str) -> Path:
    """Draws `info` into one self-contained HTML file (plotly.js embedded, works offline)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    stages = _stages_figure(info).to_html(include_plotlyjs=True, full_html=False,
                                          div_id="front-plot")
    paper = _paper_figure(info).to_html(include_plotlyjs=False, full_html=False,
                                        div_id="paper-plot")
    hv = _hypervolume_figure(info).to_html(include_plotlyjs=False, full_html=False,
                                           div_id="hypervolume-plot")
    taus = "".join(f"<li>{html.escape(name)}: Kendall's τ {html.escape(tau.text())}</li>"
                   for name, tau in info.agreements.items()) or (
        "<li>No configuration was measured in two stages yet.</li>")
    reference = "–" if info.hv_reference is None else (
        f"top-1 = {info.hv_reference[0]:g}, {X_LABELS[info.x]} = "
        + (f"{info.hv_reference[1]:,.0f}" if info.x == "overhead_params"
           else f"{info.hv_reference[1]:.4g}"))
    counts = info.trials["stage"].value_counts().to_dict()
    summary = ", ".join(f"{STAGE_LABELS[s]}: {counts.get(s, 0)}" for s in STAGES)
    data = html.escape(info.data) or "this search's data"
    page = f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>{_CSS}</style><script>{_SORT_JS}</script></head><body>
<h1>{html.escape(title)}</h1>
<p class="note">Completed trials per stage — {summary}; {info.excluded} left out (failed,
pruned, running or not run). One row per stage, each on its own top-1 scale: one-shot scores,
proxy and full runs are not comparable with each other. Within a stage, the line is its front
(maximise top-1, minimise cost) and dominated trials are faded. Costs are {PRICED} (the paper's
ImageNet setting) whatever {data} the search trained on, so they compare with the paper's.</p>
<p class="note" id="noise">{html.escape(_noise_text(info))}</p>
{stages}
<h2>Table 5, extended: the paper's configurations beside ours</h2>
<p class="note">The paper's six configurations (its Tables 1–2, ImageNet-1k) next to our
measurements of the same ρ on {data}, then the best configurations this search found. The two
sides differ in data, epochs and classes: compare orderings, not values. "–": not measured.</p>
{_table5_html(info.table5, info.data)}
<h2>Front ({html.escape(X_LABELS[info.x])}): click a column to sort</h2>
{_front_html_table(info.front)}
<h2>Rank agreement between stages</h2>
<ul class="note" id="tau">{taus}</ul>
<h2>Hypervolume</h2>
<p class="note">Reference point: {html.escape(reference)} (worst observed cost plus
{HV_MARGIN:.0%} of its range).</p>
{hv}
<h2>The paper's reported figures</h2>
{paper}
</body></html>
"""
    path.write_text(page, encoding="utf-8")
    return path


def write_report(
    study_name: str, *, storage: str | None = None, reports_dir: Path | str = "reports",
    x: str = "overhead_params",
) -> Path:
    """Loads a study and writes `reports/<study>/index.html`; returns its path."""
    from rhosearch.study import load_study, study_dir, trials_frame

    study = load_study(study_name, storage=storage, reports_dir=reports_dir)
    info = front_info(trials_frame(study), x=x, noise=study.user_attrs.get("noise_floor"),
                      data=str(study.user_attrs.get("data", "")))
    path = study_dir(study_name, reports_dir) / "index.html"
    return render_html(info, path, title=f"rhosearch: study {study_name}")
