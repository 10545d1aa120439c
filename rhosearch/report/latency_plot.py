"""The report's latency section: top-1 against latency overhead beside top-1 against parameters.

Drawn only for a search priced for latency (`rhosearch search --latency-objective`); it draws
`FrontInfo.latency` (`front.latency_trials`): the proxy stage's configurations, each panel with
its own front, 95 % bars on top-1 and on the latency overhead, and the paper's six
configurations named where the search measured them.
"""

from __future__ import annotations

import html
from typing import Any

import pandas as pd

from rhosearch.report.front import X_LABELS, FrontInfo
from rhosearch.vocab import PRICED

__all__ = ["latency_section"]

_COLOR = "#ff7f0e"
_PAPER_COLOR = "#9467bd"
_HOVER = ("<b>%{customdata[0]}</b> (trial %{customdata[1]})<br>ρ = %{customdata[2]}"
          "<br>overhead %{customdata[3]} params; latency %{customdata[4]} ms "
          "(95%: %{customdata[5]}, %{customdata[6]})<br>top-1 %{customdata[7]} "
          "(95%: %{customdata[8]})<extra></extra>")


def _bars(points: pd.DataFrame, value: str, lo: str, hi: str) -> dict[str, Any]:
    above = (points[hi] - points[value]).clip(lower=0).fillna(0)
    below = (points[value] - points[lo]).clip(lower=0).fillna(0)
    return {"type": "data", "symmetric": False, "array": above.tolist(),
            "arrayminus": below.tolist(), "thickness": 1, "width": 3,
            "visible": bool(points[lo].notna().any())}


def _customdata(points: pd.DataFrame) -> list[list[str]]:
    def interval(lo: float, hi: float, digits: int) -> str:
        return "–" if pd.isna(lo) or pd.isna(hi) else f"{lo:.{digits}f}–{hi:.{digits}f}"

    return [[str(r.name), str(int(r.number)), str(r.rho), f"{int(r.overhead_params):,}",
             f"{r.overhead_ms:.2f}", interval(r.overhead_ms_lo, r.overhead_ms_hi, 2),
             str(r.latency_source), f"{r.top1:.2f}", interval(r.top1_lo, r.top1_hi, 1)]
            for r in points.itertuples(index=False)]


def latency_figure(points: pd.DataFrame, *, data: str = ""):
    """Two panels, top-1 vs overhead parameters and top-1 vs latency overhead (ms)."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    columns = ("overhead_params", "overhead_ms")
    figure = make_subplots(rows=1, cols=2, horizontal_spacing=0.08, subplot_titles=[
        f"proxy stage: top-1 vs {X_LABELS[x]}" for x in columns])
    for col, x in enumerate(columns, start=1):
        dominated = points[f"dominated_{x}"]
        front = points[~dominated].sort_values(x)
        figure.add_trace(go.Scatter(
            x=front[x], y=front["top1"], mode="lines", hoverinfo="skip", showlegend=False,
            line={"shape": "hv", "width": 1.5, "color": _COLOR}), row=1, col=col)
        for faded, group in ((False, points[~dominated]), (True, points[dominated])):
            if group.empty:
                continue
            error_x = (_bars(group, "overhead_ms", "overhead_ms_lo", "overhead_ms_hi")
                       if x == "overhead_ms" else None)
            figure.add_trace(go.Scatter(
                x=group[x], y=group["top1"], mode="markers", opacity=0.35 if faded else 1.0,
                name="proxy trials (bars: 95% intervals)" if not faded else "dominated",
                legendgroup="faded" if faded else "front", showlegend=col == 1,
                error_y={**_bars(group, "top1", "top1_lo", "top1_hi"), "color": _COLOR},
                error_x={**error_x, "color": _COLOR} if error_x else None,
                marker={"symbol": "diamond", "color": _COLOR, "size": 9,
                        "line": {"width": 0.5, "color": "white"}},
                customdata=_customdata(group), hovertemplate=_HOVER), row=1, col=col)
        paper = points[points["paper"] != ""].sort_values(x)
        figure.add_trace(go.Scatter(
            x=paper[x], y=paper["top1"], mode="markers+text", text=paper["paper"].tolist(),
            # Above and below in turn along x: neighbours a fraction of a ms apart stay legible.
            textposition=["top center" if i % 2 == 0 else "bottom center"
                          for i in range(len(paper))], textfont={"size": 9, "color": _PAPER_COLOR},
            name="the paper's configurations (measured by this search)",
            showlegend=col == 1, hoverinfo="skip",
            marker={"symbol": "square-open", "size": 13, "line": {"width": 2},
                    "color": _PAPER_COLOR}), row=1, col=col)
        unit = "onnxruntime, this CPU" if x == "overhead_ms" else PRICED
        figure.update_xaxes(title_text=f"{X_LABELS[x]} ({unit})", row=1, col=col)
    on = f" on {data}" if data else ""
    figure.update_yaxes(title_text=f"proxy top-1 %{on}", row=1, col=1)
    figure.update_layout(height=440, template="plotly_white",
                         margin={"t": 60, "b": 40, "l": 70, "r": 20},
                         legend={"orientation": "h", "y": -0.2, "x": 0})
    return figure


def latency_section(info: FrontInfo) -> str:
    """The section's HTML ("" when the search did not price latency)."""
    if info.latency is None or info.latency.empty:
        return ""
    figure = latency_figure(info.latency, data=info.data).to_html(
        include_plotlyjs=False, full_html=False, div_id="latency-plot")
    sources = info.latency["latency_source"].value_counts().to_dict()
    counted = ", ".join(f"{n} from the {s}" for s, n in sorted(sources.items()))
    note = html.escape(info.latency_note or "")
    return f"""<h2>Latency: top-1 against latency overhead, beside top-1 against parameters</h2>
<p class="note" id="latency-note">Latency overhead over the baseline in ms (onnxruntime, this
machine's CPU, timed interleaved with the baseline; see docs/latency.md): {counted}. {note}.
Each panel has its own front (maximise top-1, minimise its cost); dominated points are faded;
bars are 95 % intervals. The paper's six configurations are named where this search measured
them.</p>
{figure}
"""
