"""The report drawn: a `report.FrontInfo` into one offline HTML page (Plotly, plotly.js embedded).

    path = render_html(front_info(trials), Path("reports/demo/index.html"), title="demo")

Everything here only draws what `rhosearch.report.front.front_info` computed (Optuna's split of
computing from drawing): one row of panels per stage, each with its own top-1 scale, 95 % error
bars and the baseline's noise band; the paper's points; the hypervolume curve; the finalists
over seeds, the front table and "Table 5, extended". Tests assert on the `FrontInfo`;
`tests/render_report.py` looks at the pixels in headless Chromium.

Over ~400 lines of drawing only: four figures and three HTML tables.
"""

from __future__ import annotations

import functools
import html
import math
from numbers import Real
from pathlib import Path
from typing import Any

import pandas as pd

from rhosearch import values
from rhosearch.record.study import load_study, study_dir, trials_frame
from rhosearch.report.front import (
    HV_MARGIN,
    STAGE_LABELS,
    STAGES,
    X_LABELS,
    FrontInfo,
    Panel,
    front_info,
)
from rhosearch.report.latency_plot import latency_section
from rhosearch.training.checkpoint import write_atomic
from rhosearch.vocab import PRICED, Stage, Verdict

__all__ = ["render_html", "write_report"]


_STAGE_STYLE = {
    Stage.ONESHOT: {"symbol": "circle", "color": "#1f77b4"},
    Stage.HEAD: {"symbol": "square", "color": "#17becf"},
    Stage.PROXY: {"symbol": "diamond", "color": "#ff7f0e"},
    Stage.FULL: {"symbol": "star", "color": "#2ca02c"},
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
            name=f"{STAGE_LABELS[stage]} trials" + (
                " (screening scores: no interval)" if stage == Stage.ONESHOT
                else " (bars: 95% interval)"), legendgroup=stage,
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
            x=[None], y=[None], mode="markers", name=f"{baseline_name} noise band",
            marker={"symbol": "square", "size": 12, "color": _BAND_COLOR}, hoverinfo="skip",
        ), row=row, col=1)
    if panel.baseline is not None:
        for col in (1, 2):
            figure.add_hline(y=panel.baseline, line={"dash": "dot", "width": 1,
                                                     "color": "#555"}, row=row, col=col)


def _stages_figure(info: FrontInfo):
    from plotly.subplots import make_subplots

    stages = [s for s in STAGES if s in info.panels] or [Stage.PROXY]
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
            if stage == Stage.PROXY:
                _add_noise_band(figure, panel, row, _baseline_name())
            figure.update_yaxes(range=panel.y_range, row=row)
        figure.update_yaxes(title_text=f"{STAGE_LABELS[stage]} top-1 %{data}", row=row, col=1)
    figure.update_layout(
        height=130 + 330 * len(stages), template="plotly_white",
        margin={"t": 80, "b": 40, "l": 70, "r": 20},
        legend={"orientation": "h", "y": 0.995, "yanchor": "top", "x": 0, "xanchor": "left",
                "yref": "container"},
        modebar={"orientation": "v"},  # a long legend ran under the horizontal tool bar
    )
    return figure


@functools.lru_cache(maxsize=1)
def _baseline_name() -> str:
    from rhosearch.core.space import baseline_config

    return baseline_config().name


def _paper_figure(info: FrontInfo):
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    from rhosearch.core.space import baseline_config

    figure = make_subplots(rows=1, cols=2, horizontal_spacing=0.07, subplot_titles=(
        "Paper (ImageNet-1k, reported): top-1 vs overhead parameters",
        "Paper (ImageNet-1k, reported): top-1 vs GMACs"))
    paper = info.paper
    for col, x in ((1, "overhead_params"), (2, "gmacs")):
        for recipe, rows in paper.groupby("recipe", sort=False):
            tables = " & ".join(sorted(set(rows["table"])))
            customdata = [[r.name, r.source, r.rho, _fmt(r.params), _fmt(r.overhead_params),
                           _fmt(r.gmacs, 4), _fmt(r.top1), _fmt(r.top5)]
                          for r in rows.itertuples(index=False)]
            figure.add_trace(go.Scatter(
                x=rows[x], y=rows["top1"], mode="markers+text" if recipe == "MSS" else "markers",
                text=[n.removeprefix("ExMViT-") for n in rows["name"]],
                # The baseline's label below its point, the others' above (they crowd it).
                textposition=["bottom center" if rho == baseline_config(backbone).rho_text
                              else "top center"
                              for rho, backbone in zip(rows["rho"], rows["backbone"],
                                                       strict=True)],
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
        line={"shape": "hv", "color": _STAGE_STYLE[Stage.PROXY]["color"]},
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


def _sort_key(value: object) -> str:
    """The `data-v` attribute `sortBy` sorts a numeric cell by ("" for text or none)."""
    number = None if _missing(value) or isinstance(value, str) else float(value)
    return "" if number is None else f" data-v=\"{number!r}\""


def _cell(value: object, digits: int = 2) -> tuple[str, str]:
    return html.escape(_fmt(value, digits)), _sort_key(value)


def _vs_baseline(row: Any) -> str:
    """The full stage's verdict when there is one, else the proxy's."""
    for stage in (Stage.FULL, Stage.PROXY):
        label = getattr(row, f"vs_baseline_{stage}", None)
        if not _missing(label):
            return f"{label}" if stage == Stage.PROXY else f"{label} (full)"
    return "–"


def _latency_cell(value: object, lo: object, hi: object, source: object) -> tuple[str, str]:
    """(html, sort key) of a latency overhead with its interval and source beneath it."""
    if _missing(value):
        return "–", ""
    interval = "" if _missing(lo) else f"{float(lo):.2f}–{float(hi):.2f}, "
    return (f"{float(value):.2f}<br><small>{interval}{html.escape(str(source))}</small>",
            _sort_key(value))


def _front_html_table(front: pd.DataFrame) -> str:
    latency = "overhead_ms" in front
    heads = ["configuration", "ρ", "classifier ch.", "params", "overhead", "GMACs",
             *(["latency overhead ms"] if latency else []),
             *(f"{STAGE_LABELS[s]} top-1 %" for s in STAGES), "vs baseline", "on front of"]
    head = "".join(f"<th onclick=\"sortBy(this)\">{html.escape(h)}</th>" for h in heads)
    body = []
    for row in front.itertuples(index=False):
        cells = [_cell(row.name), _cell(row.rho), _cell(row.classifier_channels),
                 _cell(row.params), _cell(row.overhead_params), _cell(row.gmacs, 4)]
        if latency:
            cells.append(_latency_cell(row.overhead_ms, row.overhead_ms_lo, row.overhead_ms_hi,
                                       row.latency_source))
        cells += [_top1_cell(getattr(row, f"top1_{s}"), getattr(row, f"top1_lo_{s}"),
                             getattr(row, f"top1_hi_{s}")) for s in STAGES]
        verdict = _vs_baseline(row)
        cells += [(html.escape(verdict), ""),
                  (html.escape(", ".join("one-shot" if stage == Stage.ONESHOT else stage
                                         for stage in row.front.split(","))), "")]
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


_LEFT = " class=\"text\""  # a column of sentences (the verdicts), aligned left


def _finalist_cells(row: Any) -> list[tuple[str, str]]:
    """(html, attributes) cells of one finalist over its seeds."""
    seeds = int(row.seeds)
    run = int(row.seeds_run) if not _missing(row.seeds_run) else seeds
    mean = "–" if _missing(row.top1) else f"{float(row.top1):.2f}"
    if not _missing(row.top1_std):
        mean += f" ± {float(row.top1_std):.2f}"
    runs = html.escape(row.top1_runs or "–")
    if row.seed_list:
        runs += f"<br><small>seeds {html.escape(row.seed_list)}</small>"
    control = row.vs_baseline == Verdict.CONTROL
    diff = "–" if control or _missing(row.top1_diff) else f"{float(row.top1_diff):+.2f}"
    p_value = "–" if _missing(row.p_value) else f"{float(row.p_value):.2g}"
    verdict = "–" if _missing(row.vs_baseline) else str(row.vs_baseline)
    return [
        _cell(row.name), _cell(row.rho),
        (str(seeds) if seeds == run else f"{seeds} of {run}", _sort_key(seeds)),
        (mean, _sort_key(row.top1)), (runs, ""),
        (diff, "" if control else _sort_key(row.top1_diff)),
        (p_value, _sort_key(row.p_value)), (html.escape(verdict), _LEFT),
        _cell(row.epochs_done),
    ]


def _finalists_html(finalists: pd.DataFrame) -> str:
    """The finalists over seeds: a note on how they were compared, then the table."""
    if finalists.empty:
        return ""
    seeds = int(finalists["seeds_run"].max())
    control = finalists[finalists["vs_baseline"] == Verdict.CONTROL]
    if control.empty:
        paired = ("No baseline control in the full stage: nothing to pair the finalists with "
                  "(<code>train-best</code> trains one with the same seeds).")
    else:
        name, rho = control.iloc[0]["name"], control.iloc[0]["rho"]
        paired = (f"The baseline control ({html.escape(str(name))}, ρ {html.escape(rho)}) "
                  "trained with the same seeds, so each seed's data order and initialisation "
                  "are shared: Δ is the mean over seeds of (finalist − control), p a two-sided "
                  "paired t-test with the variance of all runs' configuration × seed fit (an "
                  "exact sign-flip test when all differences tie), labelled at 5 % over the "
                  "finalists compared (Holm).")
    if seeds < 2:
        spread = ("One seed per run: no std, and a paired test needs ≥ 2 seeds (Δ is the one "
                  "seed's difference); <code>train-best --seeds 3</code> gives one.")
    else:
        spread = f"n = {seeds} seeds per configuration; mean ± std (n − 1) over them."
    heads = ["configuration", "ρ", "seeds", "top-1 % (mean ± std)", "runs (top-1 %)",
             "Δ top-1 vs control (pts)", "p (paired t)", "vs control", "epochs"]
    head = "".join(f"<th onclick=\"sortBy(this)\"{_LEFT if h == 'vs control' else ''}>"
                   f"{html.escape(h)}</th>" for h in heads)
    body = ["<tr>" + "".join(f"<td{attrs}>{text}</td>" for text, attrs in _finalist_cells(row))
            + "</tr>" for row in finalists.itertuples(index=False)]
    return (f"<h2>Finalists over seeds (paired with the baseline control)</h2>\n"
            f"<p class=\"note\" id=\"finalists-note\">Full-stage runs (<code>train-best "
            f"--seeds N</code>); top-1 is the EMA model's when the recipe has EMA. {spread} "
            f"{paired}</p>\n"
            f"<table id=\"finalists\" class=\"fit\"><thead><tr>{head}</tr></thead>"
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
th.text, td.text { text-align: left; }
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
    band = ((f"the grey band is where a one-seed configuration is within noise at 5 % over the "
             f"{noise.get('band_m', '?')} configurations compared (Holm's strictest step, t "
             "quantiles)") if noise.get("band")
            else "the grey band is mean ± 1.96σ, where 95 % of its own reruns land"
            if noise["std"] else "every seed gave the same top-1, so the band is the dotted line")
    return (f"Noise floor: {name} proxy top-1 {noise['mean']:.2f} % ± {noise['std']:.2f} pts "
            f"(std over {len(noise.get('top1', []))} seeds: {runs}); {band}. Validation set: "
            f"{n_val or '?'} images{per_image}. Bars are 95 % t intervals of one run from the "
            "pooled seed spread (which holds the validation set's noise already).")


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
{latency_section(info)}
{_finalists_html(info.finalists)}
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
    write_atomic(path, page.encode())
    path.chmod(0o644)  # a page to read and share (write_atomic's temporary file is 0600)
    return path


def write_report(
    study_name: str, *, storage: str | None = None, reports_dir: Path | str = "reports",
    x: str = "overhead_params",
) -> Path:
    """Loads a study and writes `reports/<study>/index.html`; returns its path.

    Refused before anything is read when the page would be written through a symlink or over
    an `index.html` rhosearch did not write."""
    path = study_dir(study_name, reports_dir) / "index.html"
    values.check_new_file(path, flag="report", ours=_written_by_us)
    study = load_study(study_name, storage=storage, reports_dir=reports_dir)
    info = front_info(trials_frame(study), x=x, noise=study.user_attrs.get("noise_floor"),
                      data=str(study.user_attrs.get("data", "")),
                      latency_note=str(study.user_attrs.get("latency", "")))
    return render_html(info, path, title=f"rhosearch: study {study_name}")


def _written_by_us(path: Path) -> bool:
    with path.open("rb") as file:
        return b"<title>rhosearch: study " in file.read(400)
