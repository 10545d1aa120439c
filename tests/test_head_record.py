"""The head stage's record: the summary paired over trunks, the companion study, trials.csv's
rows and the report's own panel for the stage."""

from __future__ import annotations

import optuna
import pandas as pd

from rhosearch.core.space import parse_search_space
from rhosearch.record.head import better_count, record_head, summarize_head
from rhosearch.record.study import open_storage, stage_study, trials_frame
from rhosearch.report.front import front_info
from rhosearch.report.html import render_html

SPACE = parse_search_space({"backbone": "mobilevit_xxs",
                            "rho": {"rho_3": [0, "1/3"], "rho_5": [2, 4]}})
BASELINE = "0,0,0,0,4"


def _runs() -> pd.DataFrame:
    """Four trunks x two head seeds; "0,0,1/3,0,4" is 1 point ahead of the baseline's head on
    every trunk (a trunk-wide offset that pairing removes), "0,0,0,0,2" level with it."""
    rows = []
    for trunk, offset in enumerate([0.0, 3.0, -2.0, 1.0]):
        for seed, jitter in enumerate([0.1, -0.1]):
            for rho, gain in ((BASELINE, 0.0), ("0,0,1/3,0,4", 1.0), ("0,0,0,0,2", 0.0),
                              ("0,0,1/3,0,2", -0.5)):
                rows.append(dict(trunk=trunk, head_seed=seed, rho=rho, n_val=2000,
                                 top1=70 + offset + gain + jitter * (1 + trunk % 2)))
    return pd.DataFrame(rows)


def test_summary_pairs_on_trunks_and_labels_by_the_rule():
    summary = summarize_head(_runs(), BASELINE).set_index("rho")
    assert summary.loc[BASELINE, "vs_baseline"] == "baseline control"
    assert summary.loc["0,0,1/3,0,4", "top1_diff"] == 1.0
    assert summary.loc["0,0,1/3,0,4", "vs_baseline"] == "better"
    assert summary.loc["0,0,1/3,0,2", "vs_baseline"] == "worse"
    assert summary.loc["0,0,0,0,2", "vs_baseline"] == "within noise"
    # The search's summary line counts the labels (it parsed an old sentence and said 0).
    assert better_count(summary) == 1
    assert (summary["trunks"] == 4).all() and (summary["runs"] == 8).all()
    # The per-trunk offsets (+-3 pts) widen the mean's interval, not the paired difference's.
    width = summary.loc["0,0,1/3,0,4", "top1_hi"] - summary.loc["0,0,1/3,0,4", "top1_lo"]
    assert width > 2 and summary.loc["0,0,1/3,0,4", "diff_hi"] < 1.5


def test_recorded_rows_reach_trials_csv_and_the_report(tmp_path):
    storage = open_storage(f"sqlite:///{tmp_path / 'study.db'}")
    study = optuna.create_study(study_name="s", storage=storage,
                                directions=["maximize", "minimize"])
    summary = summarize_head(_runs(), BASELINE).assign(backbone=SPACE.backbone)
    companion = stage_study(study, "head")
    assert record_head(companion, SPACE, summary) == 4
    assert record_head(companion, SPACE, summary) == 0  # a rerun writes nothing twice
    frame = trials_frame(study)
    head = frame[frame["stage"] == "head"].set_index("rho")
    assert head.loc["0,0,1/3,0,4", "vs_baseline"] == "better"
    assert head.loc["0,0,1/3,0,4", "top1_diff"] == 1.0
    assert head["top1_lo"].notna().all() and head["overhead_params"].notna().all()
    info = front_info(frame)
    assert "head" in info.panels
    page = render_html(info, tmp_path / "index.html", title="t").read_text()
    assert "head (frozen trunks)" in page
