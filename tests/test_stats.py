"""Intervals, tau and the calibrated rule (rhosearch/record/stats.py) against hand-computed
values, scipy and simulation, and the trials table's uncertainty columns on hand-made trials."""

from __future__ import annotations

import math

import numpy as np
import optuna
import pandas as pd
import pytest
import torch

from rhosearch.record.stats import (
    compare_family,
    detectable_difference,
    holm,
    kendall_tau,
    paired_test,
    pooled_variance,
    seeds_needed,
    sign_flip_p,
    unpaired_test,
    verdicts,
    wilson_interval,
)
from rhosearch.record.study import stage_agreement, stage_noise, trials_frame
from rhosearch.vocab import Verdict


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


def _hand_made_study() -> tuple[optuna.Study, optuna.Study]:
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
    from scipy.stats import t

    study, noise = _hand_made_study()
    # A cached copy of the baseline's seed-0 run (answered from the record) is not a seed.
    study.add_trial(optuna.trial.create_trial(values=[80.0, 0.0], user_attrs={
        "stage": "proxy", "rho": "0,0,0,0,4", "backbone": "mobilevit_s", "top1": 80.0,
        "seed": 0, "n_val": 1000, "status": "cached"}))
    monkeypatch.setattr("rhosearch.record.table.stage_study",
                        lambda s, stage, create=True: noise if stage == "noise" else None)
    frame = trials_frame(study)
    floor = stage_noise(frame, "proxy")
    assert floor["mean"] == pytest.approx(81.0) and floor["std"] == pytest.approx(1.0)
    assert floor["seeds"] == [0, 1, 2]
    by_rho = frame[(frame["stage"] == "proxy") & frame["status"].ne("cached")].set_index("rho")
    # One seed each, unpaired against 3 baseline seeds: se = 1 * sqrt(1 + 1/3), df = 2, and
    # Holm over the 2 compared: p = 0.0067 <= 0.05 / 2.
    assert by_rho.at["0,0,1,1,4", "vs_baseline"] == Verdict.BETTER
    assert by_rho.at["0,0,1,1,4", "p_value"] == pytest.approx(
        2 * t.sf(14.0 / math.sqrt(4 / 3), 2), abs=1e-5)
    assert by_rho.at["0,0,1,1,4", "test"] == "unpaired t"
    assert by_rho.at["0,0,1/3,1/2,3", "vs_baseline"] == Verdict.WITHIN_NOISE
    assert by_rho.at["0,0,0,0,4", "vs_baseline"] == Verdict.CONTROL
    half = t.ppf(0.975, 2) * 1.0  # one run's t interval with the pooled seed spread
    assert by_rho.at["0,0,1,1,4", "top1_lo"] == pytest.approx(95.0 - half, abs=1e-3)
    assert by_rho.at["0,0,1,1,4", "top1_hi"] == pytest.approx(95.0 + half, abs=1e-3)


def test_cached_rows_never_enter_the_noise_floor():
    """The seen case: "σ = 2.3 pts over 5 seeds" with seeds [0, 0, 1, 2, 3]."""
    rows = [("proxy", 0, 84.0, "ok"), ("proxy", 0, 84.0, "cached"), ("noise", 1, 86.0, "ok"),
            ("noise", 2, 82.0, "ok"), ("noise", 3, 85.0, "ok"), ("noise", 3, 85.0, "ok")]
    frame = pd.DataFrame([{"number": i, "stage": stage, "state": "COMPLETE",
                           "rho": "0,0,0,0,4", "backbone": "mobilevit_s", "seed": seed,
                           "top1": top1, "status": status, "n_val": 360}
                          for i, (stage, seed, top1, status) in enumerate(rows)])
    floor = stage_noise(frame, "proxy")
    assert floor["seeds"] == [0, 1, 2, 3]
    assert floor["std"] == pytest.approx(np.std([84.0, 86.0, 82.0, 85.0], ddof=1))


def test_the_paired_comparison_uses_the_same_seed_baseline():
    """A configuration 1 point above the baseline at every seed, where seeds themselves move
    the baseline by several points: paired on the same seeds the difference is exact and
    clear; the same numbers with the baseline's seeds relabelled are not."""
    baseline = {0: 80.0, 1: 86.0, 2: 83.0, 3: 89.0}
    noise = {0: 0.1, 1: -0.1, 2: 0.05, 3: -0.05}
    runs = {"base": baseline, "wide": {s: baseline[s] + 1.0 + noise[s] for s in baseline},
            "thin": {s: baseline[s] - 0.2 + noise[s] for s in (0, 1, 2)}}
    family = compare_family(runs, "base")
    wide = family.comparisons["wide"]
    assert wide.method == "paired t" and wide.n == 4
    assert wide.diff == pytest.approx(1.0)
    assert family.labels["wide"] == Verdict.BETTER
    assert family.correlation > 0.99
    shuffled = compare_family({**runs, "base": dict(zip([1, 0, 3, 2], baseline.values(),
                                                        strict=True))}, "base")
    assert shuffled.labels["wide"] == Verdict.WITHIN_NOISE  # pairing with the wrong seed
    assert shuffled.correlation < 0


def test_the_test_is_chosen_from_counts_paired_once_its_variance_has_2_df():
    """One configuration with 2 paired seeds gives the paired variance 1 df (t quantile
    12.7): the unpaired test is used; a second such configuration gives it 2 df: paired."""
    base = {0: 85.0, 1: 83.0, 2: 86.5, 3: 84.0}
    runs = {"base": base, "single": {0: 86.0}, "a": {0: 85.5, 1: 84.0}}
    assert compare_family(runs, "base").comparisons["single"].method == "unpaired t"
    runs["b"] = {0: 84.0, 1: 83.5}
    family = compare_family(runs, "base")
    assert family.paired_df == 2 and family.comparisons["single"].method == "paired t"
    assert family.comparisons["single"].diff == pytest.approx(1.0)  # against seed 0 alone


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


# ---------------------------------------------------------------------------------------------
# The calibrated rule (paired_test, unpaired_test, holm, verdicts, power).


def test_paired_test_is_scipys_one_sample_t():
    from scipy.stats import t, ttest_1samp

    d = [0.8, -0.2, 1.1, 0.4]
    c = paired_test(d)
    reference = ttest_1samp(d, 0.0)
    assert c.method == "paired t" and c.df == 3 and c.n == 4
    assert c.p_value == pytest.approx(reference.pvalue, rel=1e-9)
    half = t.ppf(0.975, 3) * np.std(d, ddof=1) / 2
    assert (c.lo, c.hi) == pytest.approx((np.mean(d) - half, np.mean(d) + half))


def test_paired_test_with_a_pooled_variance_uses_its_degrees_of_freedom():
    from scipy.stats import t

    c = paired_test([1.0, 2.0], pooled_var=4.0, pooled_df=9)
    assert c.df == 9 and c.se == pytest.approx(math.sqrt(4.0 / 2))
    assert c.p_value == pytest.approx(2 * t.sf(1.5 / math.sqrt(2.0), 9))
    # One seed with a pooled variance is a test; one seed without is none.
    assert paired_test([1.0], pooled_var=4.0, pooled_df=9).tested
    assert not paired_test([1.0]).tested and paired_test([1.0]).diff == 1.0


def test_tied_differences_get_the_exact_sign_flip_p_never_zero():
    c = paired_test([1.0, 1.0, 1.0])
    assert c.method == "sign-flip" and c.p_value == pytest.approx(2 / 8)
    assert paired_test([0.5] * 6).p_value == pytest.approx(2 / 64)
    assert paired_test([0.0, 0.0]).p_value == 1.0
    # The permutation p by enumeration equals a hand count: 4 sign vectors of 8 reach |3|.
    assert sign_flip_p([1.0, 2.0, 0.0]) == pytest.approx(4 / 8)


def test_unpaired_test_uses_the_baseline_spread_and_its_degrees_of_freedom():
    from scipy.stats import t

    baseline = [84.0, 85.9, 83.2, 84.7]
    c = unpaired_test([86.1], baseline)
    s = np.std(baseline, ddof=1)
    se = s * math.sqrt(1 + 1 / 4)
    assert c.method == "unpaired t" and c.df == 3 and c.se == pytest.approx(se)
    assert c.p_value == pytest.approx(2 * t.sf((86.1 - np.mean(baseline)) / se, 3))
    assert not unpaired_test([86.1], [84.0]).tested  # one baseline seed: no spread


def test_pooled_variance_counts_only_groups_with_two_values():
    var, df = pooled_variance([[1.0, 3.0], [5.0], [2.0, 2.0, 5.0]])
    assert df == 1 + 2 and var == pytest.approx((2.0 + 6.0) / 3)
    assert pooled_variance([[1.0], [2.0]]) == (None, 0)


def test_holm_step_down_by_hand():
    # m = 4: 0.01 <= 0.05/4, 0.012 <= 0.05/3, 0.03 > 0.05/2 stops; 0.04 is not rejected.
    assert holm([0.03, 0.01, 0.04, 0.012]) == [False, True, False, True]
    assert holm([0.01, math.nan, 0.02]) == [True, False, True]  # m = 2: 0.02 <= 0.05/1
    assert holm([]) == []


def test_verdicts_are_the_enum_by_sign_after_holm():
    better = paired_test([2.0, 2.1, 1.9, 2.2], alpha=0.05)
    worse = paired_test([-2.0, -2.1, -1.9, -2.2])
    noise = paired_test([1.0, -1.0, 0.5])
    assert verdicts([better, worse, noise, paired_test([1.0])]) == [
        Verdict.BETTER, Verdict.WORSE, Verdict.WITHIN_NOISE, Verdict.NO_TEST]
    assert Verdict.WITHIN_NOISE == "within noise"  # a StrEnum: the CSV's value is the member


def test_detectable_difference_is_the_difference_seen_with_80_percent_power():
    # With known sigma (df -> inf) the textbook (z_0.975 + z_0.8) se = 2.80 se.
    assert detectable_difference(1.0, 1e9) == pytest.approx(2.8016, abs=1e-3)
    # Few df cost power: a larger difference is needed; simulated power at it is 80 %.
    se, df = 1.0, 3
    mdd = detectable_difference(se, df)
    assert mdd > 2.8016 + 1.0
    rng = np.random.default_rng(0)
    from scipy.stats import t

    estimates = mdd + se * rng.standard_normal(40_000)
    ses = se * np.sqrt(rng.chisquare(df, 40_000) / df)
    power = np.mean(np.abs(estimates / ses) > t.ppf(0.975, df))
    assert power == pytest.approx(0.8, abs=0.01)


def test_seeds_needed_is_the_smallest_count_with_enough_power():
    n = seeds_needed(1.0, sigma=2.0)
    assert n is not None
    mdd_at = [detectable_difference(2.0 / math.sqrt(k), k - 1) for k in (n - 1, n)]
    assert mdd_at[0] > 1.0 >= mdd_at[1]
    assert seeds_needed(1.0, sigma=2.0, pooled_df=30) <= n  # a pooled variance's df helps
    assert seeds_needed(0.001, sigma=2.0, most=100) is None


@pytest.mark.parametrize("paired", [True, False])
def test_the_rule_is_calibrated_under_the_null_on_small_simulated_studies(paired):
    """12 configurations equal to the baseline, one seed each (4 baseline seeds, unpaired) or 3
    paired seeds each: the chance that any of them is labelled better or worse stays at 5 %
    (Holm), and each single test's rate at 5 % (within 3 Monte-Carlo standard errors)."""
    rng = np.random.default_rng(1)
    searches, m, sigma = 1500, 12, 2.3
    any_false, per_test = 0, 0
    for _ in range(searches):
        if paired:
            diffs = sigma * rng.standard_normal((m, 3))
            var, df = pooled_variance(diffs)
            tests = [paired_test(d, pooled_var=var, pooled_df=df) for d in diffs]
        else:
            baseline = 85 + sigma * rng.standard_normal(4)
            tests = [unpaired_test([85 + sigma * rng.standard_normal()], baseline)
                     for _ in range(m)]
        labels = verdicts(tests)
        any_false += any(label in (Verdict.BETTER, Verdict.WORSE) for label in labels)
        per_test += sum(c.p_value < 0.05 for c in tests)
    family = any_false / searches
    single = per_test / (searches * m)
    assert family <= 0.05 + 3 * math.sqrt(0.05 * 0.95 / searches)
    assert single <= 0.05 + 3 * math.sqrt(0.05 * 0.95 / (searches * m))
