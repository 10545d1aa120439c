"""The Pareto report of a search: compute what to draw (pandas), then draw it (Plotly).

    rhosearch report --study digits                 # writes reports/digits/index.html
    rhosearch report --study digits --format csv    # the front as CSV on stdout

`front_info` turns the trials table (`study.trials_frame`) into a `FrontInfo` of plain frames;
`render_html` draws a `FrontInfo` into one offline HTML file (plotly.js embedded, no network).
Tests assert on the `FrontInfo`, not on pixels (the split of Optuna's `visualization` code).

Objectives: maximise top-1, minimise x (`overhead_params` or `gmacs`). Only COMPLETE trials
with a top-1 and an x take part; each stage (one-shot, proxy, full) has its own front, since
their top-1s are not comparable. A trial is dominated when another trial of its stage is at least
as good in both objectives and strictly better in one, so exact ties stay on the front together.
The paper's configurations are reference points measured on ImageNet-1k, never part of a front.
"""

from __future__ import annotations

import functools
import html
import math
from numbers import Real
from pathlib import Path
from typing import NamedTuple

import pandas as pd

from rhosearch.errors import RhoSearchError
from rhosearch.study import dominated

__all__ = [
    "STAGES",
    "FrontInfo",
    "RankAgreement",
    "front_info",
    "front_table",
    "hypervolume_2d",
    "hypervolume_history",
    "mark_fronts",
    "paper_points",
    "rank_agreement",
    "render_html",
    "write_report",
]

STAGES = ("oneshot", "proxy", "full")
STAGE_LABELS = {"oneshot": "one-shot", "proxy": "proxy", "full": "full"}
X_COLUMNS = {"overhead": "overhead_params", "gmacs": "gmacs"}
X_LABELS = {"overhead_params": "overhead parameters", "gmacs": "GMACs"}
_NUMERIC = ["params", "overhead_params", "overhead_pct", "gmacs", "top1", "top5",
            "classifier_channels", "epochs_done", "wall_s"]
_RECIPES = {"basic": "basic", "mss": "MSS", "mss+ema": "MSS+EMA"}
# The hypervolume's reference x: the worst observed x plus this share of the observed range.
HV_MARGIN = 0.1


class RankAgreement(NamedTuple):
    """Kendall's tau between proxy and full top-1 over the configurations that have both."""

    tau: float  # NaN when n < 2 or a ranking is constant
    pvalue: float
    n: int

    def text(self) -> str:
        if math.isnan(self.tau):
            return f"Kendall's τ undefined (n = {self.n}; needs 2+ finalists with distinct top-1)"
        return f"Kendall's τ = {self.tau:.3f} (n = {self.n}, p = {self.pvalue:.3g})"


class FrontInfo(NamedTuple):
    """Everything the report draws, computed from the trials table.

    trials: usable trials (COMPLETE, with top-1 and x) plus `dominated` (for `x`),
        `dominated_<x>` for both x columns, and the configuration's per-stage top-1/top-5.
    front: one row per configuration on some stage's front (see `front_table`).
    hypervolume: proxy-stage hypervolume after each proxy trial (`number`, `hypervolume`).
    hv_reference: (top1, x) reference point of that hypervolume.
    rank_agreement: proxy-to-full Kendall's tau, None until a configuration has both.
    paper: the paper's configurations and reported ImageNet figures (`paper_points`).
    excluded: how many trials were left out (failed, pruned, running, or missing values).
    """

    x: str
    trials: pd.DataFrame
    front: pd.DataFrame
    hypervolume: pd.DataFrame
    hv_reference: tuple[float, float] | None
    rank_agreement: RankAgreement | None
    paper: pd.DataFrame
    excluded: int


# ---------------------------------------------------------------------------------------------
# Computing.


def _usable(trials: pd.DataFrame, x: str) -> pd.DataFrame:
    """COMPLETE trials of a known stage that have a top-1 and an x, numbers as floats."""
    frame = trials.copy()
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


def _best_per_stage(usable: pd.DataFrame) -> pd.DataFrame:
    """Per configuration (backbone, rho): each stage's best trial (top-1, then lowest number)."""
    ordered = usable.sort_values(["top1", "number"], ascending=[False, True])
    best = ordered.drop_duplicates(["backbone", "rho", "stage"])
    wide = best.pivot(index=["backbone", "rho"], columns="stage",
                      values=["top1", "top5", "number"])
    wide.columns = [f"{'trial' if v == 'number' else v}_{s}" for v, s in wide.columns]
    for stage in STAGES:
        for value in ("top1", "top5", "trial"):
            if f"{value}_{stage}" not in wide:
                wide[f"{value}_{stage}"] = float("nan")
    return wide.reset_index()


def front_table(trials: pd.DataFrame, *, x: str = "overhead_params") -> pd.DataFrame:
    """One row per configuration on the front of at least one stage, best top-1 first.

    Columns: name, backbone, rho, classifier_channels, params, overhead_params, overhead_pct,
    gmacs, top1/top5/trial per stage (that stage's best trial of the configuration), and
    `front` (the stages whose front it is on).
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
    per_stage = [f"{v}_{s}" for s in STAGES for v in ("top1", "top5", "trial")]
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
    """A stage's hypervolume after each of its trials, in trial-number order.

    Reference point: top-1 = 0 and x = the largest x of the stage's usable trials plus
    `HV_MARGIN` (10%) of their x range (plus 1 when all x are equal), so every observed
    configuration counts. Failed and pruned trials appear with the hypervolume unchanged.

    Returns:
        Frame with `number` and `hypervolume`, and the reference point (None: no usable trial).
    """
    usable = _usable(trials, x)
    usable = usable[usable["stage"] == stage]
    if usable.empty:
        return pd.DataFrame({"number": [], "hypervolume": []}), None
    spread = usable[x].max() - usable[x].min()
    reference = (0.0, float(usable[x].max() + (HV_MARGIN * spread if spread > 0 else 1.0)))
    columns = (usable["number"], usable["top1"], usable[x])
    done = {int(n): (t, c) for n, t, c in zip(*columns, strict=True)}
    numbers = sorted(int(n) for n in trials.loc[trials["stage"] == stage, "number"])
    points, rows = [], []
    for number in numbers:
        if number in done:
            points.append(done[number])
        rows.append({"number": number, "hypervolume": hypervolume_2d(points, reference)})
    return pd.DataFrame(rows), reference


def rank_agreement(trials: pd.DataFrame) -> RankAgreement | None:
    """Kendall's tau of proxy vs full top-1 over configurations with both; None if there are none.

    Uses each configuration's best trial per stage (as the front table does).
    """
    from scipy.stats import kendalltau

    usable = _usable(trials, "top1")
    best = _best_per_stage(usable)
    both = best.dropna(subset=["top1_proxy", "top1_full"])
    if both.empty:
        return None
    if len(both) < 2:
        return RankAgreement(float("nan"), float("nan"), 1)
    result = kendalltau(both["top1_proxy"], both["top1_full"])
    return RankAgreement(float(result.statistic), float(result.pvalue), len(both))


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
                "classifier_channels": preset.config.classifier_channels,
                "params": cost.params, "overhead_params": cost.overhead_params,
                "overhead_pct": round(cost.overhead_pct, 3), "gmacs": round(cost.macs / 1e9, 4),
                "recipe": recipe, "top1": reported.get("top1"), "top5": reported.get("top5"),
                "source": f"paper {reported.get('table', '?')} ({recipe})",
            })
    return pd.DataFrame(rows)


def paper_points() -> pd.DataFrame:
    """The paper's configurations: our closed-form cost (256 px, 1000 classes) beside each
    reported ImageNet-1k top-1/top-5, one row per table and recipe, with a `source` label."""
    return _paper_points().copy()


def _check_x(x: str) -> None:
    if x not in X_LABELS:
        raise RhoSearchError(f"unknown x {x!r}; choose one of: overhead_params, gmacs")


def front_info(trials: pd.DataFrame, *, x: str = "overhead_params") -> FrontInfo:
    """Computes the report of a trials table (`study.trials_frame`); see `FrontInfo`."""
    _check_x(x)
    marked = mark_fronts(trials, x=x)
    other = "gmacs" if x == "overhead_params" else "overhead_params"
    by_other = mark_fronts(trials, x=other).set_index("number")["dominated"]
    marked[f"dominated_{x}"] = marked["dominated"]
    marked[f"dominated_{other}"] = marked["number"].map(by_other).fillna(True).astype(bool)
    per_stage = _best_per_stage(marked).drop(columns=[f"trial_{s}" for s in STAGES])
    with_stages = marked.merge(per_stage, on=["backbone", "rho"], how="left")
    history, reference = hypervolume_history(trials, x=x)
    return FrontInfo(
        x=x,
        trials=with_stages,
        front=front_table(marked, x=x),
        hypervolume=history,
        hv_reference=reference,
        rank_agreement=rank_agreement(trials),
        paper=paper_points(),
        excluded=len(trials) - len(marked),
    )


# ---------------------------------------------------------------------------------------------
# Drawing.

_STAGE_STYLE = {
    "oneshot": {"symbol": "circle", "color": "#1f77b4"},
    "proxy": {"symbol": "diamond", "color": "#ff7f0e"},
    "full": {"symbol": "star", "color": "#2ca02c"},
}
_RECIPE_COLORS = {"basic": "#7f7f7f", "MSS": "#9467bd", "MSS+EMA": "#d62728"}
_PER_STAGE_HOVER = "".join(
    f"<br>{STAGE_LABELS[s]}: top-1 %{{customdata[{5 + 2 * i}]}}, "
    f"top-5 %{{customdata[{6 + 2 * i}]}}" for i, s in enumerate(STAGES)
)
_TRIAL_HOVER = (
    "<b>%{customdata[0]}</b> (trial %{customdata[1]}, %{customdata[2]})<br>ρ = %{customdata[3]}"
    "<br>params %{customdata[4]}<br>overhead %{customdata[11]}, GMACs %{customdata[12]}"
    + _PER_STAGE_HOVER + "<extra></extra>"
)
_PAPER_HOVER = (
    "<b>%{customdata[0]}</b> — %{customdata[1]}<br>ρ = %{customdata[2]}"
    "<br>params %{customdata[3]} (ours, 1000 classes)<br>overhead %{customdata[4]}, "
    "GMACs %{customdata[5]}<br>ImageNet top-1 %{customdata[6]}, top-5 %{customdata[7]}"
    "<extra></extra>"
)


def _fmt(value: object, digits: int = 2) -> str:
    if value is None or value is pd.NA or (isinstance(value, Real) and math.isnan(value)):
        return "–"
    if isinstance(value, Real) and not float(value).is_integer():
        return f"{float(value):.{digits}f}"
    if isinstance(value, Real) and abs(value) >= 1000:
        return f"{int(value):,}"
    return str(value)


def _trial_customdata(frame: pd.DataFrame) -> list[list[str]]:
    rows = []
    for row in frame.itertuples(index=False):
        per_stage = [_fmt(getattr(row, f"{v}_{s}")) for s in STAGES for v in ("top1", "top5")]
        rows.append([
            _fmt(row.name), str(row.number), STAGE_LABELS[row.stage], _fmt(row.rho),
            _fmt(row.params), *per_stage, _fmt(row.overhead_params), _fmt(row.gmacs, 4),
        ])
    return rows


def _add_stage_traces(figure, info: FrontInfo, x: str, col: int) -> None:
    import plotly.graph_objects as go

    for stage in STAGES:
        points = info.trials[info.trials["stage"] == stage]
        if points.empty:
            continue
        style = _STAGE_STYLE[stage]
        dominated = points[f"dominated_{x}"]
        front = points[~dominated].sort_values(x)
        figure.add_trace(go.Scatter(
            x=front[x], y=front["top1"], mode="lines", line={"shape": "hv", "width": 1.5,
            "color": style["color"]}, legendgroup=stage, showlegend=False, hoverinfo="skip",
        ), row=1, col=col)
        figure.add_trace(go.Scatter(
            x=points[x], y=points["top1"], mode="markers", name=f"{STAGE_LABELS[stage]} trials",
            legendgroup=stage, showlegend=col == 1,
            marker={"symbol": style["symbol"], "color": style["color"], "size": 10,
                    "opacity": [0.25 if d else 1.0 for d in dominated],
                    "line": {"width": 0.5, "color": "white"}},
            customdata=_trial_customdata(points), hovertemplate=_TRIAL_HOVER,
        ), row=1, col=col)


def _add_paper_traces(figure, paper: pd.DataFrame, x: str, col: int) -> None:
    import plotly.graph_objects as go

    for recipe, rows in paper.groupby("recipe", sort=False):
        tables = " & ".join(sorted({s.split(" (")[0].removeprefix("paper ") for s in rows.source}))
        customdata = [
            [r.name, r.source, r.rho, _fmt(r.params), _fmt(r.overhead_params), _fmt(r.gmacs, 4),
             _fmt(r.top1), _fmt(r.top5)] for r in rows.itertuples(index=False)
        ]
        figure.add_trace(go.Scatter(
            x=rows[x], y=rows["top1"], mode="markers+text" if recipe == "MSS" else "markers",
            text=[n.removeprefix("ExMViT-") for n in rows["name"]],
            textposition=["bottom center" if n.startswith("MobileViT") else "top center"
                          for n in rows["name"]],
            textfont={"size": 9, "color": _RECIPE_COLORS.get(recipe, "#333")},
            name=f"paper {tables} ({recipe}), ImageNet", legendgroup=f"paper-{recipe}",
            showlegend=col == 1,
            marker={"symbol": "square-open", "size": 9, "line": {"width": 2},
                    "color": _RECIPE_COLORS.get(recipe, "#333")},
            customdata=customdata, hovertemplate=_PAPER_HOVER,
        ), row=2, col=col)


def _front_figure(info: FrontInfo):
    from plotly.subplots import make_subplots

    figure = make_subplots(
        rows=2, cols=2, horizontal_spacing=0.08, vertical_spacing=0.14,
        subplot_titles=(
            "This search: top-1 vs overhead parameters", "This search: top-1 vs GMACs",
            "Paper reference (ImageNet-1k, reported): top-1 vs overhead parameters",
            "Paper reference (ImageNet-1k, reported): top-1 vs GMACs",
        ),
    )
    for col, x in ((1, "overhead_params"), (2, "gmacs")):
        _add_stage_traces(figure, info, x, col)
        _add_paper_traces(figure, info.paper, x, col)
        figure.update_xaxes(title_text=X_LABELS[x] + " (this search's setting)", row=1, col=col)
        figure.update_xaxes(title_text=X_LABELS[x] + " (ours, closed form, 256 px, 1000 classes)",
                            row=2, col=col)
    figure.update_yaxes(title_text="top-1 (this search's data)", row=1, col=1)
    figure.update_yaxes(title_text="ImageNet-1k top-1 % (paper)", row=2, col=1)
    figure.update_layout(
        height=900, template="plotly_white", margin={"t": 60, "b": 40, "l": 60, "r": 20},
        legend={"orientation": "h", "y": -0.08, "x": 0},
    )
    return figure


def _hypervolume_figure(info: FrontInfo):
    import plotly.graph_objects as go

    figure = go.Figure(go.Scatter(
        x=info.hypervolume["number"], y=info.hypervolume["hypervolume"], mode="lines+markers",
        line={"shape": "hv", "color": _STAGE_STYLE["proxy"]["color"]},
        hovertemplate="after trial %{x}: %{y:.4g}<extra></extra>",
    ))
    figure.update_layout(
        height=320, template="plotly_white", margin={"t": 40, "b": 40, "l": 60, "r": 20},
        title=f"Proxy-stage hypervolume (top-1 × {X_LABELS[info.x]}) as trials accumulate",
        xaxis_title="trial number", yaxis_title="hypervolume",
    )
    return figure


def _front_html_table(front: pd.DataFrame) -> str:
    head = "".join(f"<th onclick=\"sortBy(this)\">{html.escape(c)}</th>" for c in front.columns)
    digits = [4 if c == "gmacs" else 2 for c in front.columns]
    body = []
    for row in front.itertuples(index=False):
        cells = []
        for value, places in zip(row, digits, strict=True):
            number = None if pd.isna(value) or isinstance(value, str) else float(value)
            key = "" if number is None else f" data-v=\"{number!r}\""
            cells.append(f"<td{key}>{html.escape(_fmt(value, places))}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return (f"<div class=\"scroll\"><table id=\"front\"><thead><tr>{head}</tr></thead>"
            f"<tbody>{''.join(body)}</tbody></table></div>")


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
"""
_CSS = """
body { font-family: system-ui, sans-serif; margin: 24px; color: #222; }
table { border-collapse: collapse; font-size: 13px; }
th, td { border: 1px solid #ddd; padding: 3px 8px; text-align: right; white-space: nowrap; }
.scroll { overflow-x: auto; max-width: 100%; }
th { background: #f4f4f4; cursor: pointer; }
td:nth-child(-n+3) { text-align: left; }
.note { color: #555; font-size: 13px; max-width: 1100px; }
"""


def render_html(info: FrontInfo, path: Path | str, *, title: str) -> Path:
    """Draws `info` into one self-contained HTML file (plotly.js embedded, works offline)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    front = _front_figure(info).to_html(include_plotlyjs=True, full_html=False,
                                        div_id="front-plot")
    hv = _hypervolume_figure(info).to_html(include_plotlyjs=False, full_html=False,
                                           div_id="hypervolume-plot")
    tau = info.rank_agreement.text() if info.rank_agreement else (
        "Proxy-to-full rank agreement: no configuration has both a proxy and a full top-1 yet.")
    reference = "–" if info.hv_reference is None else (
        f"top-1 = {info.hv_reference[0]:g}, {X_LABELS[info.x]} = "
        + (f"{info.hv_reference[1]:,.0f}" if info.x == "overhead_params"
           else f"{info.hv_reference[1]:.4g}"))
    counts = info.trials["stage"].value_counts().to_dict()
    summary = ", ".join(f"{STAGE_LABELS[s]}: {counts.get(s, 0)}" for s in STAGES)
    page = f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>{_CSS}</style><script>{_SORT_JS}</script></head><body>
<h1>{html.escape(title)}</h1>
<p class="note">Completed trials per stage — {summary}; {info.excluded} trials left out (failed,
pruned, running or without top-1). Each stage has its own front (maximise top-1, minimise cost);
dominated trials are faded. The lower row is the paper's reported ImageNet-1k top-1 for its six
configurations, priced by our closed form at 256 px and 1000 classes: a different data set and
class count, so it has its own axes and is never part of this search's front.</p>
{front}
<h2>Front ({html.escape(X_LABELS[info.x])}): click a column to sort</h2>
{_front_html_table(info.front)}
<h2>Hypervolume</h2>
<p class="note">Reference point: {html.escape(reference)} (worst observed cost plus
{HV_MARGIN:.0%} of its range).</p>
{hv}
<h2>Proxy-to-full rank agreement</h2>
<p class="note" id="tau">{html.escape(tau)}</p>
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
    info = front_info(trials_frame(study), x=x)
    path = study_dir(study_name, reports_dir) / "index.html"
    return render_html(info, path, title=f"rhosearch: study {study_name}")
