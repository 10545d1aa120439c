"""The Pareto report: fronts, table, hypervolume, rank agreement, paper points, HTML, CLI."""

from __future__ import annotations

import json
import math
import random
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest
from helpers import dominated_area
from scipy.stats import t as student_t

from rhosearch.errors import RhoSearchError
from rhosearch.record.stats import Z95
from rhosearch.record.study import TRIAL_COLUMNS
from rhosearch.report.front import (
    MIN_SPAN,
    front_info,
    front_table,
    hypervolume_2d,
    hypervolume_history,
    mark_fronts,
    paper_points,
    rank_agreement,
)
from rhosearch.report.html import render_html
from rhosearch.vocab import Verdict

ROOT = Path(__file__).resolve().parent.parent

# (number, stage, state, config, top1, overhead_params, gmacs)
TRIALS = [
    (0, "proxy", "COMPLETE", "A", 90.0, 100, 1.0),
    (1, "proxy", "COMPLETE", "B", 92.0, 200, 1.2),
    (2, "proxy", "COMPLETE", "C", 89.0, 150, 0.9),  # dominated by A (overhead), not by GMACs
    (3, "proxy", "COMPLETE", "D", 92.0, 200, 1.2),  # exact tie with B: both stay on the front
    (4, "proxy", "PRUNED", "E", 99.0, 50, 0.5),  # would dominate everything; must be ignored
    (5, "proxy", "FAIL", "F", None, 60, 0.6),
    (6, "proxy", "COMPLETE", "H", 90.0, 120, 1.1),  # same top-1 as A at a higher cost
    (7, "oneshot", "COMPLETE", "A", 80.0, 100, 1.0),
    (8, "oneshot", "COMPLETE", "C", 85.0, 150, 0.9),
    (9, "oneshot", "COMPLETE", "B", 84.0, 200, 1.2),  # dominated by C in the one-shot stage
    (10, "full", "COMPLETE", "A", 96.0, 100, 1.0),
    (11, "full", "COMPLETE", "B", 97.0, 200, 1.2),
    (12, "full", "COMPLETE", "D", 95.0, 200, 1.2),  # dominated by B
    (13, "full", "RUNNING", "C", None, 150, 0.9),
]
RHO = {"A": "0,0,1/3,1/4,4", "B": "0,0,1,1,4", "C": "0,0,1/3,1/2,3", "D": "0,0,2,0,3",
       "E": "0,0,0,1/4,2", "F": "0,0,0,0,2", "H": "0,0,2/3,0,4"}


def make_trials(rows=TRIALS) -> pd.DataFrame:
    records = []
    for number, stage, state, config, top1, overhead, gmacs in rows:
        records.append({
            "number": number, "stage": stage, "state": state, "name": f"cfg-{config}",
            "backbone": "mobilevit_s", "rho": RHO.get(config, config),
            "classifier_channels": 600 + overhead // 10, "params": 1_000_000 + overhead,
            "overhead_params": overhead, "overhead_pct": overhead / 1e4, "gmacs": gmacs,
            "top1": top1, "top5": None if top1 is None else top1 + 2, "status": "ok",
            "top1_lo": None if top1 is None else top1 - 2.0,
            "top1_hi": None if top1 is None else min(100.0, top1 + 2.0),
            "vs_baseline": None if top1 is None else "within noise",
            "n_val": 360, "seed": 0,
        })
    return pd.DataFrame(records, columns=TRIAL_COLUMNS)


def front_numbers(marked: pd.DataFrame, stage: str) -> set[int]:
    rows = marked[(marked["stage"] == stage) & ~marked["dominated"]]
    return set(rows["number"].astype(int))


def test_fronts_per_stage_with_ties_and_failed_trials_excluded():
    marked = mark_fronts(make_trials())
    assert set(marked["number"]) == {0, 1, 2, 3, 6, 7, 8, 9, 10, 11, 12}  # no 4, 5, 13
    assert front_numbers(marked, "proxy") == {0, 1, 3}
    assert front_numbers(marked, "oneshot") == {7, 8}
    assert front_numbers(marked, "full") == {10, 11}


def test_front_depends_on_the_cost_axis():
    assert front_numbers(mark_fronts(make_trials(), x="gmacs"), "proxy") == {0, 1, 2, 3}


def test_front_table_rows_and_per_stage_columns():
    table = front_table(make_trials()).set_index("name")
    assert set(table.index) == {"cfg-A", "cfg-B", "cfg-C", "cfg-D"}  # H is dominated everywhere
    assert table.loc["cfg-A", "front"] == "oneshot,proxy,full"
    assert table.loc["cfg-C", "front"] == "oneshot"
    assert table.loc["cfg-B", "top1_proxy"] == 92.0 and table.loc["cfg-B", "top1_full"] == 97.0
    assert table.loc["cfg-B", "trial_oneshot"] == 9 and table.loc["cfg-B", "top5_full"] == 99.0
    assert pd.isna(table.loc["cfg-C", "top1_full"])  # its full trial is still running
    assert table.index[0] == "cfg-B"  # sorted by full top-1 first
    for column in ("name", "rho", "params", "overhead_params", "gmacs", "top1_proxy",
                   "top5_proxy", "trial_proxy"):
        assert column in table.reset_index().columns


def test_hypervolume_2d_hand_computed():
    # (top1, x): area = (2 - 1) * 3 + (4 - 2) * 5 = 13; the dominated and outside points add 0.
    points = [(3.0, 1.0), (5.0, 2.0), (2.0, 3.0), (6.0, 5.0)]
    assert hypervolume_2d(points, (0.0, 4.0)) == pytest.approx(13.0)
    assert hypervolume_2d([], (0.0, 4.0)) == 0.0


def test_hypervolume_2d_matches_brute_force():
    # Against an independent count of the grid's dominated cells (tests/helpers.py), not
    # Optuna's private `_hypervolume` module.
    rng = random.Random(0)
    points = [(rng.uniform(50, 99), rng.uniform(-100, 300)) for _ in range(30)]
    assert hypervolume_2d(points, (60.0, 250.0)) == pytest.approx(
        dominated_area(points, (60.0, 250.0)))


def test_hypervolume_history_of_the_proxy_stage():
    history, reference = hypervolume_history(make_trials())
    assert reference == (0.0, 210.0)  # max overhead 200 + 10% of the range 100..200
    assert list(history["number"]) == [0, 1, 2, 3, 4, 5, 6]  # pruned/failed keep the value
    assert history["hypervolume"].iloc[0] == pytest.approx(110 * 90)
    assert history["hypervolume"].iloc[-1] == pytest.approx(110 * 90 + 10 * 2)
    assert history["hypervolume"].is_monotonic_increasing


def _rank_trials(proxy: list[float], full: list[float]) -> pd.DataFrame:
    rows = [(i, "proxy", "COMPLETE", f"c{i}", t, 100 + i, 1.0) for i, t in enumerate(proxy)]
    rows += [(100 + i, "full", "COMPLETE", f"c{i}", t, 100 + i, 1.0) for i, t in enumerate(full)]
    return make_trials(rows)


def test_rank_agreement_known_rankings_with_count_and_interval():
    # One swapped pair of six: (5 - 1) / 6.
    agreement = rank_agreement(_rank_trials([70, 71, 72, 73], [90, 91, 93, 92]))
    assert agreement.n == 4 and agreement.value == pytest.approx(4 / 6)
    assert agreement.lo <= agreement.value <= agreement.hi
    assert "n = 4" in agreement.text() and "95% CI" in agreement.text()
    assert rank_agreement(_rank_trials([70, 71, 72], [92, 91, 90])).value == pytest.approx(-1.0)


def test_rank_agreement_needs_finalists_and_says_why_it_is_undefined():
    assert rank_agreement(_rank_trials([70, 71], [])) is None
    single = rank_agreement(_rank_trials([70, 71], [90]))
    assert single.n == 1 and math.isnan(single.value) and "n = 1" in single.text()
    ties = rank_agreement(_rank_trials([70, 71, 72], [33.3, 33.3, 33.3]))
    assert ties.text() == "undefined (all scores tie, n = 3)" and "nan" not in ties.text()


def test_paper_points_are_labelled_and_never_in_our_front():
    paper = paper_points()
    assert len(paper) == 14  # 4 configurations x 3 recipes (Table 1) + 704, 864 (Table 2)
    assert "paper Table 2 (MSS)" in set(paper["source"])
    assert "paper Table 1 (MSS+EMA)" in set(paper["source"])
    row = paper[(paper["name"] == "ExMViT-928") & (paper["recipe"] == "MSS")].iloc[0]
    assert row["rho"] == "0,0,4/3,5/4,4" and row["top1"] == 77.95
    assert row["overhead_params"] > 0 and row["gmacs"] > 2.0
    info = front_info(make_trials())
    assert not set(info.front["name"]) & set(paper["name"])
    assert set(info.trials["number"]) <= {t[0] for t in TRIALS}
    assert info.excluded == 3 and info.rank_agreement.n == 3
    assert set(info.agreements) == {"one-shot → proxy", "proxy → full"}


def test_html_is_self_contained(tmp_path):
    path = render_html(front_info(make_trials()), tmp_path / "r" / "index.html", title="t")
    text = path.read_text()
    assert "<script src=" not in text and "<link" not in text
    assert "Plotly.newPlot" in text and "plotly.js" in text.lower()
    assert "paper Table 2 (MSS)" in text and "n = 3" in text
    assert text.count('<table id="front" class="fit">') == 1
    assert '<table id="table5" class="fit">' in text and "Table 5, extended" in text
    assert "priced at 256 px, 1000 classes" in text  # what every cost axis is priced at


def _stage_rows(stage: str, top1s: list[float], start: int, *, number_from: int = 0) -> list:
    names = "ABCDH"
    return [(number_from + i, stage, "COMPLETE", names[i], t, 100 + 50 * i, 1.0 + 0.1 * i)
            for i, t in enumerate(top1s[:5])]


def test_each_stage_has_its_own_readable_scale():
    # A 2-epoch full stage near chance must not stretch the proxy's axis (or the other way).
    rows = (_stage_rows("proxy", [85.0, 86.5, 88.0], 0)
            + _stage_rows("full", [10.0, 21.0, 33.3], 0, number_from=10))
    info = front_info(make_trials(rows))
    proxy, full = info.panels["proxy"].y_range, info.panels["full"].y_range
    assert set(info.panels) == {"proxy", "full"}
    assert 82 < proxy[0] < 83 and 90 < proxy[1] < 91  # 83-90 with its bars, a little margin
    assert 5 < full[0] < 8 and 35 < full[1] < 38
    assert full[1] < proxy[0]  # two scales, neither holding the other's points


def test_tied_values_get_a_minimum_span_not_a_1e7_range():
    rows = [(i, "proxy", "COMPLETE", c, 33.33, 100, 1.0) for i, c in enumerate("ABC")]
    trials = make_trials(rows).drop(columns=["top1_lo", "top1_hi"])  # no intervals
    info = front_info(trials)
    low, high = info.panels["proxy"].y_range
    assert high - low == pytest.approx(MIN_SPAN["top1"]) and (low + high) / 2 == 33.33
    low, high = info.x_ranges["overhead_params"]
    assert high - low == pytest.approx(MIN_SPAN["overhead_params"])
    assert info.agreements == {}  # one stage: nothing to agree with


def test_noise_band_and_intervals_come_from_the_study():
    noise = {"mean": 90.0, "std": 1.0, "seeds": [0, 1, 2], "top1": [89.0, 90.0, 91.0],
             "n_val": 360}
    info = front_info(make_trials(), noise=noise)
    panel = info.panels["proxy"]
    assert panel.baseline == 90.0 and panel.band == pytest.approx((90 - Z95, 90 + Z95))
    assert panel.y_range[0] <= panel.band[0] and panel.band[1] <= panel.y_range[1]
    assert info.panels["full"].band is None  # the noise floor is the proxy stage's
    front = info.front.set_index("name")
    assert front.loc["cfg-B", ["top1_lo_proxy", "top1_hi_proxy"]].tolist() == [90.0, 94.0]
    assert front.loc["cfg-B", "vs_baseline_proxy"] == "within noise"


def test_missing_uncertainty_columns_are_treated_as_absent():
    trials = make_trials().drop(columns=["top1_lo", "top1_hi", "vs_baseline"])
    info = front_info(trials)
    assert info.front["top1_lo_proxy"].isna().all() and "proxy" in info.panels


def test_table5_extended_places_the_papers_figures_beside_ours():
    table = front_info(make_trials()).table5
    paper = table[table["kind"] == "paper"]
    assert list(paper["name"]) == ["MobileViT-S", "ExMViT-576", "ExMViT-640", "ExMViT-704",
                                   "ExMViT-864", "ExMViT-928"]
    row = paper.set_index("name").loc["ExMViT-864"]  # B in these trials: rho (0,0,1,1,4)
    assert row["paper_mss"] == 77.62 and row["paper_params"] == 5_803_000
    assert row["top1_proxy"] == 92.0 and row["top1_full"] == 97.0 and row["top1_oneshot"] == 84
    assert row["top1_lo_proxy"] == 90.0 and row["vs_baseline_proxy"] == "within noise"
    assert pd.isna(paper.set_index("name").loc["ExMViT-640", "top1_proxy"])  # not measured
    found = table[table["kind"] == "found"]
    assert list(found["name"]) == ["cfg-D"]  # on the proxy front and trained in full
    assert not found["name"].str.startswith("ExMViT").any()


def test_hypervolume_is_drawn_against_trials_run():
    rows = TRIALS[:7] + [(20, "proxy", "COMPLETE", "A", 90.0, 100, 1.0),
                         (150, "proxy", "FAIL", "E", None, 50, 0.5)]
    trials = make_trials(rows)
    trials.loc[trials["number"] == 20, "status"] = "cached"  # answered from the record
    trials.loc[trials["number"] == 150, "status"] = "not run"  # enqueued, never run
    history, _ = hypervolume_history(trials)
    assert list(history["run"]) == [1, 2, 3, 4, 5, 6, 7]
    assert list(history["number"]) == [0, 1, 2, 3, 4, 5, 6]


def test_trial_numbers_repeat_across_stages():
    # One-shot trials live in their own study, so their numbers restart at 0: trial 1 is
    # dominated in the proxy stage and not in the one-shot stage, for either cost.
    rows = _stage_rows("proxy", [90.0, 89.0], 0) + _stage_rows("oneshot", [80.0, 81.0], 0)
    info = front_info(make_trials(rows))
    trials = info.trials.set_index(["stage", "number"])
    for cost in ("overhead_params", "gmacs"):
        assert trials.loc[("proxy", 1), f"dominated_{cost}"]
        assert not trials.loc[("oneshot", 1), f"dominated_{cost}"]
    assert info.trials.groupby("stage").size().to_dict() == {"oneshot": 2, "proxy": 2}


# --- the finalists over seeds (train-best --seeds N) ------------------------------------------

CONTROL = "0,0,0,0,4"  # MobileViT-S, the baseline control train-best adds
# Top-1 per seed 0, 1, 2. Against the control: A's differences 2, 3, 1 (mean 2, std 1), B's 5,
# 6, 5.5 (mean 5.5, std 0.5).
SEED_RUNS = {"A": [82.0, 84.0, 83.0], "B": [85.0, 87.0, 87.5], CONTROL: [80.0, 81.0, 82.0]}


def seed_trials(runs: dict[str, list[float]] = SEED_RUNS, *, extra=()) -> pd.DataFrame:
    """The proxy and one-shot trials of `TRIALS`, then a full stage run once per seed, seed by
    seed as train-best records it; `extra`: more full-stage rows as (state, config, seed,
    top1, status)."""
    rows = [(seed, config, top1s[seed], "COMPLETE", "ok") for seed in range(3)
            for config, top1s in runs.items() if seed < len(top1s)]
    rows += [(seed, config, top1, state, status) for state, config, seed, top1, status in extra]
    trials = make_trials(TRIALS[:10] + [(20 + i, "full", state, config, top1, 100, 1.0)
                                        for i, (_, config, top1, state, _) in enumerate(rows)])
    full = trials["stage"] == "full"
    trials.loc[full, "seed"] = [seed for seed, *_ in rows]
    trials.loc[full, "status"] = [status for *_, status in rows]
    trials.loc[full, "epochs_done"] = 300.0  # a float column, as trials_frame reads it
    trials.loc[trials["rho"] == CONTROL, "name"] = "MobileViT-S"
    return trials


def t_test_p_df2(diffs: list[float]) -> float:
    """Two-sided p of a paired t-test over 3 seeds, by hand: t with 2 degrees of freedom has
    P(|T| > t) = 1 - t / sqrt(2 + t^2)."""
    mean = sum(diffs) / 3
    std = (sum((d - mean) ** 2 for d in diffs) / 2) ** 0.5
    t = mean / (std / 3**0.5)
    return 1 - t / (2 + t * t) ** 0.5


def test_finalists_over_seeds_are_paired_with_the_control():
    finalists = front_info(seed_trials()).finalists
    assert list(finalists["rho"]) == [RHO["B"], RHO["A"], CONTROL]  # best first, control last
    rows = finalists.set_index("rho")
    a, b, control = rows.loc[RHO["A"]], rows.loc[RHO["B"]], rows.loc[CONTROL]
    assert (a["seeds"], a["seeds_run"], a["seed_list"]) == (3, 3, "0, 1, 2")
    assert a["top1"] == 83.0 and a["top1_std"] == 1.0 and a["top1_runs"] == "82.00; 84.00; 83.00"
    assert a["top1_diff"] == 2.0
    # Alone, A's own paired t (2 df) gives p = 0.074. The rule's paired variance is the
    # two-way (configuration x seed) residual over all 9 runs, by the textbook formula:
    # 2 x sum (y - row mean - column mean + grand mean)^2 / ((3 - 1)(3 - 1)), 4 df.
    assert t_test_p_df2([2, 3, 1]) == pytest.approx(0.0742, abs=1e-4)
    y = np.array(list(SEED_RUNS.values()))
    residual = y - y.mean(axis=1, keepdims=True) - y.mean(axis=0, keepdims=True) + y.mean()
    pooled_se = (2 * (residual ** 2).sum() / 4 / 3) ** 0.5
    assert a["p_value"] == pytest.approx(2 * student_t.sf(2.0 / pooled_se, 4), abs=1e-4)
    assert a["vs_baseline"] == Verdict.BETTER
    assert b["top1"] == 86.5 and b["top1_std"] == pytest.approx(1.75**0.5, abs=1e-3)
    assert b["top1_diff"] == 5.5
    assert b["p_value"] == pytest.approx(2 * student_t.sf(5.5 / pooled_se, 4), abs=1e-4)
    assert b["vs_baseline"] == Verdict.BETTER
    assert control["vs_baseline"] == "baseline control" and control["name"] == "MobileViT-S"
    assert control["top1"] == 81.0 and control["top1_std"] == 1.0
    assert pd.isna(control["top1_diff"]) and pd.isna(control["p_value"])


def test_a_rerun_counts_once_and_failed_seeds_are_counted_apart():
    runs = {**SEED_RUNS, "C": [81.0, 83.0]}
    extra = [("FAIL", "C", 2, None, "failed"),
             ("COMPLETE", "A", 2, 99.0, "ok"),  # A's seed 2 resumed with more epochs: counts
             ("RUNNING", "B", 3, None, None)]  # not finished: not a run yet
    rows = front_info(seed_trials(runs, extra=extra)).finalists.set_index("rho")
    assert rows.loc[RHO["A"], "top1_runs"] == "82.00; 84.00; 99.00"
    assert rows.loc[RHO["B"], "seeds_run"] == 3
    c = rows.loc[RHO["C"]]
    assert (c["seeds"], c["seeds_run"], c["seed_list"]) == (2, 3, "0, 1")
    assert c["top1_diff"] == 1.5  # paired on the seeds both have: (81 - 80 + 83 - 81) / 2
    assert c["vs_baseline"].startswith("within noise")


def test_finalists_table_in_the_html(tmp_path):
    text = render_html(front_info(seed_trials()), tmp_path / "a.html", title="t").read_text()
    assert "Finalists over seeds (paired with the baseline control)" in text
    assert text.count('<table id="finalists" class="fit">') == 1 and "n = 3 seeds" in text
    table = text.split('<table id="finalists"')[1].split("</table>")[0]
    assert "86.50 ± 1.32" in table and "85.00; 87.00; 87.50" in table and "+5.50" in table
    assert table.count(">better<") == 2 and "p = " not in table
    assert "seeds 0, 1, 2" in table and "baseline control" in table
    assert table.count(">300</td></tr>") == 3 and "300.0<" not in table  # epochs: a count
    assert str(front_info(seed_trials()).finalists["epochs_done"].dtype) == "Int64"

    one_seed = {config: top1s[:1] for config, top1s in SEED_RUNS.items()}
    info = front_info(seed_trials(one_seed))
    assert info.finalists["top1_std"].isna().all() and info.finalists["p_value"].isna().all()
    assert info.finalists.set_index("rho").loc[RHO["A"], "vs_baseline"] == Verdict.NO_TEST
    text = render_html(info, tmp_path / "b.html", title="t").read_text()
    table = text.split('<table id="finalists"')[1].split("</table>")[0]
    assert "a paired test needs ≥ 2 seeds" in text and "+2.00" in table
    assert "<td data-v=\"82.0\">82.00</td>" in table and not re.search(r"\d ± \d", table)

    no_full = front_info(make_trials(TRIALS[:10]))
    assert no_full.finalists.empty
    text = render_html(no_full, tmp_path / "c.html", title="t").read_text()
    assert "Finalists over seeds" not in text


# --- end to end through cli.py, on a real Optuna SQLite study ---------------------------------


def write_study(folder: Path, name: str = "hand") -> str:
    storage = f"sqlite:///{folder / name / 'study.db'}"
    (folder / name).mkdir(parents=True)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name=name, storage=storage,
                                directions=["maximize", "minimize"])
    distributions = {"rho": optuna.distributions.CategoricalDistribution(sorted(RHO.values()))}
    states = {s.name: s for s in optuna.trial.TrialState}
    for record in make_trials().to_dict("records"):
        state = states[record["state"]]
        values = [record["top1"], record["overhead_params"]] if state.name == "COMPLETE" else None
        attrs = {k: v for k, v in record.items() if k not in ("number", "state") and v == v}
        study.add_trial(optuna.trial.create_trial(
            state=state, values=values, user_attrs=attrs, params={"rho": record["rho"]},
            distributions=distributions,
        ))
    return storage


def rhosearch(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "cli.py"), *args],
                          capture_output=True, text=True, cwd=ROOT)


def test_cli_report_html_end_to_end(tmp_path):
    write_study(tmp_path)
    result = rhosearch("report", "--study", "hand", "--reports-dir", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert Path(result.stdout.strip()) == tmp_path / "hand" / "index.html"
    assert "Plotly.newPlot" in (tmp_path / "hand" / "index.html").read_text()


def test_cli_report_json_csv(tmp_path, capsys):
    from rhosearch import (
        cli,  # in-process: a second interpreter start (torch import) costs ~10 s here
    )

    write_study(tmp_path)
    base = ["report", "--study", "hand", "--reports-dir", str(tmp_path)]
    assert cli.main([*base, "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {r["name"] for r in rows} == {"cfg-A", "cfg-B", "cfg-C", "cfg-D"}

    assert cli.main([*base, "--format", "csv", "--x", "gmacs"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].startswith("name,backbone,rho,")
    assert "cfg-H" not in out and "cfg-C" in out


def test_cli_report_missing_study_is_one_line(tmp_path, capsys):
    from rhosearch import cli

    assert cli.main(["report", "--study", "nope", "--reports-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "nope" in err


# --- a real browser, offline ------------------------------------------------------------------


@pytest.mark.parametrize("variant", ["trained", "ties"])
def test_report_draws_in_headless_chromium(tmp_path, variant):
    from render_report import build_demo_study, chromium_binary, pixel_spread, render

    if chromium_binary() is None:
        pytest.skip("no chromium binary (.ci/run installs it)")
    (tmp_path / variant).mkdir()
    build_demo_study(f"sqlite:///{tmp_path / variant / 'study.db'}", variant, variant=variant)
    from rhosearch.report.html import write_report

    path = write_report(variant, reports_dir=tmp_path)
    screenshot = tmp_path / "shot.png"
    dom = render(path, screenshot=screenshot, size="1400,2400")
    stages = 3 if variant == "trained" else 2
    assert dom.count('class="main-svg"') >= 2 * 3  # stages, hypervolume, paper figures
    assert dom.count('class="subplot x') >= 2 * stages + 2 + 1  # stage panels, paper, HV
    assert dom.count('<path class="point') >= 40 + 21 + 14 * 2
    # Both tables fit a 1,400 px page (24 px margins): their laid-out widths, read in Chromium.
    widths = [int(w) for w in re.findall(r'class="fit" data-width="(\d+)"', dom)]
    tables = 3 if variant == "trained" else 2  # the finalists over seeds, when trained
    assert len(widths) == tables and max(widths) <= 1400 - 48, widths
    stddev, colours = pixel_spread(screenshot)
    assert stddev > 5 and colours > 50, (stddev, colours)
    if variant == "ties":
        assert "undefined (all scores tie" in dom and "nan" not in dom.split("<script")[0]


def test_latency_is_carried_by_the_front_table_and_drawn_beside_params(tmp_path):
    from rhosearch.report.front import latency_trials

    trials = make_trials().astype({"latency_source": object})
    # Latency overhead (ms) of the proxy trials: A (ExMViT-704) is cheap in latency, C
    # (ExMViT-576, fewer parameters) is not: the two fronts differ.
    latency = {0: 0.9, 1: 1.8, 2: 1.4, 3: 2.5, 6: 0.5}
    for number, ms in latency.items():
        row = trials["number"] == number
        trials.loc[row, ["overhead_ms", "overhead_ms_lo", "overhead_ms_hi"]] = (
            ms, ms - 0.4, ms + 0.4)
        trials.loc[row, "latency_source"] = "table" if number < 3 else "model"
    points = latency_trials(trials)
    assert sorted(points["number"]) == [0, 1, 2, 3, 6]  # COMPLETE proxy trials only
    by_number = points.set_index("number")
    # D ties B on params and top-1 (both on that front) but costs 0.7 ms more.
    assert not bool(by_number.loc[3, "dominated_overhead_params"])
    assert bool(by_number.loc[3, "dominated_overhead_ms"])
    assert bool(by_number.loc[2, "dominated_overhead_params"])  # 150 params, below A's top-1
    assert bool(by_number.loc[0, "dominated_overhead_ms"])  # H: same top-1, 0.5 ms < 0.9 ms
    assert not bool(by_number.loc[6, "dominated_overhead_ms"])
    assert by_number.loc[0, "paper"] == "ExMViT-704" and by_number.loc[6, "paper"] == ""
    info = front_info(trials, x="overhead_ms")
    assert info.latency is not None and info.x == "overhead_ms"
    assert {"overhead_ms", "overhead_ms_lo", "overhead_ms_hi", "latency_source"} <= set(
        info.front.columns)
    page = render_html(info, tmp_path / "index.html", title="latency").read_text()
    assert 'id="latency-plot"' in page and "latency overhead ms" in page
    # A study searched without latency draws no latency section and refuses --x latency.
    plain = front_info(make_trials())
    assert plain.latency is None and "overhead_ms" not in plain.front.columns
    assert 'id="latency-plot"' not in render_html(plain, tmp_path / "p.html",
                                                   title="plain").read_text()
    with pytest.raises(RhoSearchError, match="--latency-objective"):
        front_info(make_trials(), x="overhead_ms")
