"""The resolve stage's racing algorithm (rhosearch/stages/resolve.py) on hand-made results."""

from __future__ import annotations

from rhosearch.record.stats import compare_family
from rhosearch.stages.resolve import pick_contenders, resolve_round

CONTROL = "base"


def _plan(runs, contenders, *, max_seeds=3):
    family = compare_family(runs, CONTROL)
    return resolve_round(family, runs, control=CONTROL, contenders=contenders, first_seed=0,
                         max_seeds=max_seeds)


def test_an_open_contender_gets_its_next_seed_and_the_baseline_its_missing_one():
    runs = {CONTROL: {0: 80.0, 2: 82.5, 3: 79.0}, "x": {0: 82.0}}
    plan = _plan(runs, ["x"])
    assert plan.decisions["x"].status == "open"
    assert plan.jobs == [("x", 1), (CONTROL, 1)]  # the baseline lacks seed 1: paired, it runs


def test_resolve_stops_adding_seeds_to_a_decided_contender():
    """"far" is 10 points above the baseline at every seed (paired differences within 0.2):
    separated after two seeds, it gets no third; "near" is still open and gets one."""
    base = {0: 80.0, 1: 83.0, 2: 78.0, 3: 81.0}
    runs = {CONTROL: base, "far": {0: 90.1, 1: 92.9}, "near": {0: 80.5, 1: 82.0}}
    plan = _plan(runs, ["far", "near"], max_seeds=4)
    assert plan.decisions["far"].status == "separated"
    assert plan.decisions["far"].reason.startswith("better")
    assert ("far", 2) not in plan.jobs and plan.jobs == [("near", 2)]
    # Its next round: "far" is still decided; nothing new is asked for it.
    runs["near"][2] = 78.9
    again = _plan(runs, ["far", "near"], max_seeds=4)
    assert again.decisions["far"].status == "separated"
    assert all(rho != "far" for rho, _ in again.jobs)


def test_a_contender_at_the_cap_is_capped_and_a_hopeless_one_futile():
    base = {0: 80.0, 1: 83.0, 2: 78.0}
    runs = {CONTROL: base, "capped": {0: 80.3, 1: 83.1, 2: 78.6},
            "flat": {0: 80.0, 1: 83.0}, "other": {0: 80.2, 1: 82.8}}
    plan = _plan(runs, ["capped", "flat"], max_seeds=3)
    assert plan.decisions["capped"].status == "capped"
    # A difference of 0.0 (se 0.16) cannot reach Holm's threshold with one more seed.
    assert plan.decisions["flat"].status == "futile"
    assert plan.done


def test_contenders_are_the_front_and_what_overlaps_it():
    points = [  # rho, top1, lo, hi, cost
        ("base", 80.0, 76.0, 84.0, 0.0),
        ("cheap", 81.0, 77.0, 85.0, 10.0),
        ("good", 88.0, 86.0, 90.0, 20.0),
        ("beaten", 70.0, 68.0, 72.0, 30.0),  # "good" is better beyond noise and cheaper
        ("overlap", 86.0, 83.0, 89.0, 40.0),
    ]
    assert pick_contenders(points, control="base", limit=5) == ["good", "overlap", "cheap"]
    assert pick_contenders(points, control="base", limit=1) == ["good"]
