"""Picking finalists from a front: the knee, the best, under a size, the baseline always."""

from __future__ import annotations

import pandas as pd
import pytest

from rhosearch.errors import RhoSearchError
from rhosearch.record.picking import (
    knee_order,
    parse_param_count,
    pick_finalists,
    picks_with_reasons,
)
from rhosearch.record.study import TRIAL_COLUMNS, pareto_front

XXS = "mobilevit_xxs"

# (rho, params, overhead_params, top1): on axes scaled to [0, 1] the front A, B, C, D sits at
# x = 0, 1/3, 2/3, 1 and y = 0, 0.75, 0.875, 1, so y - x = 0, 0.42, 0.21, 0: B is the knee.
FRONT = {
    "A": ("0,0,0,0,1", 900_000, -100, 50.0),
    "B": ("0,0,1/3,0,2", 1_000_000, 0, 80.0),
    "C": ("0,0,1,0,3", 1_100_000, 100, 85.0),
    "D": ("0,0,2,0,4", 1_200_000, 200, 90.0),
}
DOMINATED = ("0,0,1,1,4", 1_150_000, 150, 60.0)


def _frame(points, *, extra_rows=()) -> pd.DataFrame:
    rows = [dict(stage="proxy", state="COMPLETE", backbone=XXS, rho=rho, params=float(params),
                 overhead_params=float(overhead), top1=top1)
            for rho, params, overhead, top1 in points]
    rows += list(extra_rows)
    frame = pd.DataFrame(rows).reindex(columns=TRIAL_COLUMNS)
    frame["number"] = range(len(frame))
    return frame


HAND = _frame([*FRONT.values(), DOMINATED], extra_rows=[
    # Neither a failed proxy trial nor another stage's trial can be picked.
    dict(stage="proxy", state="FAIL", backbone=XXS, rho="0,0,4/3,0,5", params=1e6,
         overhead_params=-500.0, top1=99.0),
    dict(stage="oneshot", state="COMPLETE", backbone=XXS, rho="0,0,2/3,0,5", params=1e6,
         overhead_params=-500.0, top1=99.0),
])


def _rhos(configs) -> list[str]:
    return [c.rho_text for c in configs]


def test_knee_is_farthest_above_the_line_between_the_extremes():
    ordered = knee_order(pareto_front(HAND))
    assert list(ordered["rho"]) == [FRONT[k][0] for k in "BCAD"]
    assert ordered["knee_distance"].iloc[0] == pytest.approx((0.75 - 1 / 3) / 2**0.5)


def test_default_pick_is_knee_and_best_plus_the_baseline():
    picked = picks_with_reasons(HAND)
    assert [(c.rho_text, why) for c, why in picked] == [
        (FRONT["B"][0], "knee"), (FRONT["D"][0], "best"), ("0,0,0,0,4", "baseline")]
    assert all(c.backbone == XXS for c, _ in picked)


@pytest.mark.parametrize("pick, top, expected", [
    ("best", 1, ["D"]),
    ("knee", 1, ["B"]),
    ("knee,best", 2, ["B", "C", "D"]),  # C is second of both orders: trained once
    ("best", 3, ["D", "C", "B"]),
    ("under=1.05M", 1, ["B"]),
    ("under=1100000", 1, ["C"]),
    ("under=1150k", 2, ["C", "B"]),
    ("KNEE, under=950k", 1, ["B", "A"]),
])
def test_picks_in_order_with_the_baseline_always_last(pick, top, expected):
    configs = pick_finalists(HAND, pick=pick, top=top)
    assert _rhos(configs) == [FRONT[k][0] for k in expected] + ["0,0,0,0,4"]


def test_a_picked_baseline_is_not_trained_twice():
    frame = _frame([("0,0,0,0,4", 1_000_000, 0, 95.0), FRONT["A"]])
    picked = picks_with_reasons(frame, pick="best")
    assert [(c.rho_text, why) for c, why in picked] == [("0,0,0,0,4", "best+baseline")]


@pytest.mark.parametrize("text, count", [("5.7M", 5_700_000), ("5700000", 5_700_000),
                                         ("300k", 300_000), ("1_000", 1000), ("0.5m", 500_000)])
def test_param_counts(text, count):
    assert parse_param_count(text) == count


@pytest.mark.parametrize("frame, kwargs, message", [
    (HAND, dict(pick="fastest"), "unknown --pick"),
    (HAND, dict(pick=""), "empty"),
    (HAND, dict(pick="under=lots"), "parameter count"),
    (HAND, dict(pick="under=300k"), "no configuration on the front has <= 300,000"),
    (HAND, dict(top=0), "--top"),
    (_frame([]), {}, "no completed proxy trials"),
    (HAND[HAND["stage"] != "proxy"], {}, "no completed proxy trials"),
])
def test_bad_picks_are_one_line_errors(frame, kwargs, message):
    with pytest.raises(RhoSearchError, match=message) as info:
        pick_finalists(frame, **kwargs)
    assert "\n" not in str(info.value)
