"""Intervals, tau and significance (rhosearch/stats.py) against hand-computed values, and the
trials table's uncertainty columns on hand-made trials."""

from __future__ import annotations

import math

import optuna
import pandas as pd
import pytest
import torch

from rhosearch.record.stats import (
    kendall_tau,
    noise_sentence,
    paired_difference,
    significance,
    top1_interval,
    wilson_interval,
)
from rhosearch.record.study import stage_agreement, stage_noise, trials_frame


@pytest.mark.parametrize(
    "top1, n, expected",
    [
        (50.0, 100, (40.383, 59.617)),  # 50/100: the textbook Wilson interval
        (0.0, 10, (0.0, 27.753)),       # 0/10: Wilson's upper bound stays honest at 0 %
        (100.0, 10, (72.247, 100.0)),
        (90.0, 360, (86.466, 92.689)),  # 324/360, the digits validation set
    ],
)
def test_wilson_interval_matches_hand_computed_values(top1, n, expected):
    lo, hi = wilson_interval(top1, n)
    assert lo == pytest.approx(expected[0], abs=1e-3)
    assert hi == pytest.approx(expected[1], abs=1e-3)


@pytest.mark.parametrize("correct, n", [(324, 360), (1, 2000), (1460, 2000), (7, 7)])
def test_wilson_interval_equals_scipys_for_whole_counts(correct, n):
    from scipy.stats import binomtest

    reference = binomtest(correct, n).proportion_ci(method="wilson")
    lo, hi = wilson_interval(100.0 * correct / n, n)
    assert lo == pytest.approx(100 * reference.low, abs=1e-9)
    assert hi == pytest.approx(100 * reference.high, abs=1e-9)


def test_seed_spread_widens_the_interval_in_quadrature():
    lo, hi = wilson_interval(50.0, 100)
    wide_lo, wide_hi = top1_interval(50.0, 100, seed_std=2.0)
    z = 1.959963984540054
    assert 50.0 - wide_lo == pytest.approx(math.hypot(50.0 - lo, 2.0 * z))
    assert wide_hi - 50.0 == pytest.approx(math.hypot(hi - 50.0, 2.0 * z))
    assert top1_interval(50.0, 100) == (lo, hi)


def test_kendall_tau_value_and_bootstrap_interval():
    # Pairs (1,2),(1,3),(1,4),(2,4),(3,4) concordant, (2,3) discordant: tau = (5 - 1) / 6.
    tau = kendall_tau([1, 2, 3, 4], [1, 3, 2, 4])
    assert tau.value == pytest.approx(4 / 6) and tau.n == 4
    assert -1 <= tau.lo <= tau.value <= tau.hi <= 1
    same = kendall_tau(range(8), range(8))
    # Every resample agrees fully: the interval collapses onto the value.
    assert (same.value, same.lo, same.hi) == pytest.approx((1.0, 1.0, 1.0))
    reverse = kendall_tau(range(8), range(8, 0, -1))
    assert (reverse.value, reverse.lo, reverse.hi) == pytest.approx((-1.0, -1.0, -1.0))
    assert "95% CI [+1.00, +1.00], n = 8" in same.text()


def test_no_interval_from_too_few_pairs():
    tau = kendall_tau([1, 2, 3], [1, 3, 2])
    assert tau.value == pytest.approx(1 / 3) and math.isnan(tau.lo) and math.isnan(tau.hi)
    assert tau.text() == "+0.33 (no 95% CI with n < 4, n = 3)"


def test_tau_says_why_it_is_undefined():
    assert kendall_tau([1, 2, 3], [5, 5, 5]).text() == "undefined (all scores tie, n = 3)"
    assert kendall_tau([1], [2]).text().startswith("undefined (n = 1")


@pytest.mark.parametrize(
    "top1, lo, hi, baseline, label",
    [
        (88.0, 85.1, 90.9, 84.0, "beyond noise (+4.0)"),
        (80.0, 77.0, 83.0, 84.0, "beyond noise (-4.0)"),
        (85.0, 82.0, 88.0, 84.0, "within noise"),
        (85.0, 84.0, 88.0, 84.0, "within noise"),  # touching the mean is not excluding it
        (85.0, 82.0, 88.0, None, "no baseline"),
    ],
)
def test_significance_labels(top1, lo, hi, baseline, label):
    assert significance(top1, lo=lo, hi=hi, baseline=baseline) == label


def test_noise_sentence():
    labels = ["beyond noise (+4.0)", "within noise", "beyond noise (+1.0)"]
    assert noise_sentence(labels, baseline_name="MobileViT-S", std=0.6, seeds=3) == (
        "2 configurations beat MobileViT-S beyond noise (σ = 0.6 pts over 3 seeds).")
    assert noise_sentence(["within noise"], baseline_name="MobileViT-S", std=0.6, seeds=3) == (
        "No configuration differs from MobileViT-S beyond noise (σ = 0.6 pts over 3 seeds).")


def test_paired_difference_over_seeds():
    paired = paired_difference([81.0, 82.0, 83.0], [80.0, 80.5, 81.5])
    assert paired.mean_diff == pytest.approx(4.0 / 3)
    assert paired.n == 3 and 0 < paired.p_value < 1
    assert paired_difference([81.0], [80.0]).label == "one seed: no test"


def _hand_made_study() -> optuna.Study:
    """A proxy stage with the baseline at seed 0, two noise seeds and two configurations."""
    study = optuna.create_study(directions=["maximize", "minimize"])
    study.set_user_attr("n_val", 1000)
    noise = optuna.create_study(study_name=None, directions=["maximize", "minimize"])

    def add(target, stage, rho, top1, seed=0):
        target.add_trial(optuna.trial.create_trial(values=[top1, 0.0], user_attrs={
            "stage": stage, "rho": rho, "backbone": "mobilevit_s", "top1": top1, "seed": seed,
            "n_val": 1000}))

    add(study, "proxy", "0,0,0,0,4", 80.0)
    add(noise, "noise", "0,0,0,0,4", 81.0, seed=1)
    add(noise, "noise", "0,0,0,0,4", 82.0, seed=2)
    add(study, "proxy", "0,0,1,1,4", 95.0)
    add(study, "proxy", "0,0,1/3,1/2,3", 81.5)
    return study, noise


def test_trials_table_labels_hand_made_trials(monkeypatch):
    study, noise = _hand_made_study()
    monkeypatch.setattr("rhosearch.record.study.stage_study",
                        lambda s, stage, create=True: noise if stage == "noise" else None)
    frame = trials_frame(study)
    floor = stage_noise(frame, "proxy")
    assert floor["mean"] == pytest.approx(81.0) and floor["std"] == pytest.approx(1.0)
    assert floor["seeds"] == [0, 1, 2]
    by_rho = frame[frame["stage"] == "proxy"].set_index("rho")
    assert by_rho.at["0,0,1,1,4", "vs_baseline"] == "beyond noise (+14.0)"
    assert by_rho.at["0,0,1/3,1/2,3", "vs_baseline"] == "within noise"
    lo, hi = top1_interval(95.0, 1000, seed_std=1.0)
    assert by_rho.at["0,0,1,1,4", "top1_lo"] == pytest.approx(lo, abs=1e-3)
    assert by_rho.at["0,0,1,1,4", "top1_hi"] == pytest.approx(hi, abs=1e-3)
    assert frame[frame["stage"] == "noise"]["vs_baseline"].isna().all()


def test_stage_agreement_pairs_first_measurements_by_rho():
    frame = pd.DataFrame({
        "stage": ["oneshot"] * 4 + ["proxy"] * 4,
        "state": ["COMPLETE"] * 8,
        "rho": ["a", "b", "c", "d", "a", "b", "c", "x"],
        "top1": [1.0, 2.0, 3.0, 4.0, 10.0, 30.0, 20.0, 5.0],
    })
    tau = stage_agreement(frame, "oneshot", "proxy")
    assert tau.n == 3 and tau.value == pytest.approx(1 / 3)


def test_common_random_numbers_pair_trials_with_the_baseline(monkeypatch, tmp_path):
    """A trial with seed s starts from the baseline's trunk weights at seed s and sees its data
    in the same order, so its difference to the baseline is a paired one."""
    from rhosearch.core.space import RhoConfig, baseline_config
    from rhosearch.training import train
    from rhosearch.training.recipe import load_recipe

    seen = {}

    def capture(model, loaders, recipe, out_dir, **kwargs):
        seen[out_dir.name] = (
            {k: v.clone() for k, v in model.state_dict().items() if k.startswith(("stem",
                                                                                  "stages"))},
            [list(batch) for batch in loaders.sampler][:3])
        raise StopIteration  # nothing to train: only the starting point matters

    monkeypatch.setattr(train, "fit", capture)
    recipe = load_recipe("proxy", {"subset": 64, "batch_size": 16})
    runs = {"base": (baseline_config("mobilevit_xxs"), 3),
            "wide": (RhoConfig.parse("0,0,1,1,3", backbone="mobilevit_xxs"), 3),
            "other": (baseline_config("mobilevit_xxs"), 4)}
    for name, (config, seed) in runs.items():
        with pytest.raises(StopIteration):
            train.train_config(config, data="digits", recipe=recipe, out_dir=tmp_path / name,
                               seed=seed, progress=False)
    (base_w, base_order), (wide_w, wide_order), (other_w, other_order) = (
        seen[name] for name in ("base", "wide", "other"))
    assert base_order == wide_order and base_order != other_order
    shared = base_w.keys() & wide_w.keys()
    assert len(shared) > 50
    assert all(torch.equal(base_w[k], wide_w[k]) for k in shared)
    assert not all(torch.equal(base_w[k], other_w[k]) for k in shared)
