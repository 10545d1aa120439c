"""How sure a measurement is: intervals on top-1, Kendall's tau with its interval, and the one
calibrated rule that says whether a configuration differs from the baseline.

    c = paired_test([+0.8, -0.2, +1.1])                    # Comparison: diff, se, df, lo, hi, p
    c = unpaired_test([86.1], [84.0, 85.9, 83.2, 84.7])    # one seed against the baseline's seeds
    labels = verdicts([c1, c2, c3])                        # Holm over the family: [Verdict, ...]
    detectable_difference(se=1.2, df=6)                    # smallest diff seen with 80 % power
    seeds_needed(1.0, sigma=1.5)                           # paired seeds for a +1 pt difference
    tau = kendall_tau(oneshot_scores, proxy_top1)          # Tau(value, n, lo, hi)

Two sources of noise are in every top-1 this project prints. The validation set is a sample
(binomial, Wilson's interval), and training is a sample too: the same configuration trained with
another seed lands elsewhere. A seed-to-seed spread measured by retraining already contains the
validation set's binomial noise (each rerun is scored on the same finite set), so a comparison
between trained runs uses that spread alone; adding Wilson's half-width on top counts the
binomial noise twice.

The rule (simulated under the null by `benchmarks/calibration.py`, which calls these very
functions). A configuration's difference from the baseline is a t statistic whose variance comes
from the degrees of freedom actually available:
- paired (`paired_test`): seed s of the configuration minus seed s of the baseline (common random
  numbers: same trunk initialisation and data order). The variance of those differences is the
  configuration's own (df = n - 1) or, better, pooled over every configuration with >= 2 paired
  seeds (`pooled_variance`, df = sum(n_i - 1)), which is what one noise level for the whole
  search assumes;
- unpaired (`unpaired_test`): when the baseline has no run with the trial's seed, or no paired
  variance is known yet, the trial is compared with the baseline's mean with
  Var = s0^2 (1/n + 1/n0) and df = n0 - 1 (s0: the baseline's seed spread; conservative when
  pairing would have helped).
t quantiles (not 1.96) give a 5 % false-positive rate with 3 degrees of freedom as with 300.
Where the t-test has no variance to work with (all paired differences tie, no pooled variance),
an exact sign-flip permutation p is used: it is never 0 (smallest: 2 / 2^n).

Many comparisons at once: a search compares m configurations with one control. `verdicts`
applies Holm's step-down over the m tests, so the chance that any label "better"/"worse" is false
stays at 5 % (family-wise), not 1 - 0.95^m. `detectable_difference` and `seeds_needed` state
what a test could have seen: the smallest true difference it detects with 80 % power (noncentral
t, exact), and the seeds a given difference needs.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import numpy as np

from rhosearch.vocab import Method, Verdict

__all__ = [
    "ALPHA",
    "POWER",
    "Comparison",
    "Family",
    "Tau",
    "Z95",
    "compare_family",
    "detectable_difference",
    "holm",
    "paired_test",
    "pairing_correlation",
    "paired_variance",
    "pooled_variance",
    "power_sentence",
    "seeds_needed",
    "sign_flip_p",
    "t_interval",
    "unpaired_test",
    "verdict_sentence",
    "verdicts",
    "kendall_tau",
    "noise_band",
    "wilson_interval",
]

Z95 = 1.959963984540054  # the normal quantile of 97.5 %: two-sided 95 % intervals
ALPHA = 0.05  # every label's family-wise error rate
POWER = 0.8  # the power at which detectable differences are stated
# The paired test takes over from the unpaired one once the pooled paired variance has this
# many degrees of freedom (with 1, t's 97.5 % quantile is 12.7: a test with almost no power).
MIN_PAIRED_DF = 2
# Up to this many differences the sign-flip test enumerates all 2^n sign vectors.
EXACT_SIGN_FLIP_MAX = 16
# Below this many pairs a bootstrap of tau only redraws the same few points (n = 2 always gives
# [+1, +1] or [-1, -1]): no interval is given.
MIN_BOOTSTRAP_PAIRS = 4


def wilson_interval(top1: float, n: int, *, z: float = Z95) -> tuple[float, float]:
    """Wilson score 95 % interval of a top-1 (in percent) measured on `n` validation images."""
    if n <= 0:
        return (0.0, 100.0)
    p = min(max(top1 / 100.0, 0.0), 1.0)
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return (100.0 * max(0.0, centre - half), 100.0 * min(1.0, centre + half))


class Tau(NamedTuple):
    """Kendall's tau-b with its count and a bootstrap 95 % interval (NaN when undefined)."""

    value: float
    n: int
    lo: float
    hi: float

    @property
    def defined(self) -> bool:
        return not math.isnan(self.value)

    def text(self) -> str:
        """How tau is printed everywhere: value, interval and n, or why it is undefined."""
        if self.n < 2:
            return f"undefined (n = {self.n}: fewer than 2 pairs)"
        if not self.defined:
            return f"undefined (all scores tie, n = {self.n})"
        interval = (f"95% CI [{self.lo:+.2f}, {self.hi:+.2f}]" if not math.isnan(self.lo)
                    else f"no 95% CI with n < {MIN_BOOTSTRAP_PAIRS}"
                    if self.n < MIN_BOOTSTRAP_PAIRS else "95% CI undefined")
        return f"{self.value:+.2f} ({interval}, n = {self.n})"

    def as_dict(self) -> dict[str, float | int | None]:
        def clean(x: float) -> float | None:
            return None if math.isnan(x) else round(float(x), 4)

        return {"tau": clean(self.value), "n": self.n, "lo": clean(self.lo),
                "hi": clean(self.hi)}


def kendall_tau(
    x: Sequence[float], y: Sequence[float], *, resamples: int = 2000, seed: int = 0
) -> Tau:
    """Kendall's tau-b of paired scores (scipy), with a percentile-bootstrap 95 % interval.

    The bootstrap resamples the pairs; resamples where tau is undefined (every value tied)
    are left out. The one tau function of rhosearch: the search, the fidelity benchmark and
    the report all call it, so they pair and print the same way.
    """
    from scipy.stats import kendalltau

    xs, ys = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    n = len(xs)
    if n < 2:
        return Tau(math.nan, n, math.nan, math.nan)
    value = float(kendalltau(xs, ys).statistic)
    if math.isnan(value) or n < MIN_BOOTSTRAP_PAIRS:
        return Tau(value, n, math.nan, math.nan)
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(resamples):
        index = rng.integers(0, n, n)
        drawn = kendalltau(xs[index], ys[index]).statistic
        if not math.isnan(drawn):
            draws.append(drawn)
    if len(draws) < resamples // 2:  # mostly ties: no honest interval
        return Tau(value, n, math.nan, math.nan)
    lo, hi = np.percentile(draws, [2.5, 97.5])
    return Tau(value, n, float(lo), float(hi))


# ---------------------------------------------------------------------------------------------
# The calibrated rule: one test per configuration against the control, Holm over the family.


class Comparison(NamedTuple):
    """A configuration against the baseline: the mean difference (points, configuration minus
    baseline), its standard error, the degrees of freedom its variance has, the 95 % interval
    of the difference, a two-sided p and how it was computed.

    `method`: "paired t", "unpaired t", "sign-flip" (exact permutation) or "none" (no test:
    p, se and the interval are NaN). `n`: the configuration's seeds that entered the test.
    """

    diff: float
    se: float
    df: float
    lo: float
    hi: float
    p_value: float
    n: int
    method: str

    @property
    def tested(self) -> bool:
        return not math.isnan(self.p_value)

    def text(self) -> str:
        """How a comparison is printed: "+1.2 pts [-0.3, +2.7], p = 0.11 (paired t, 5 df)"."""
        if not self.tested:
            return ("no test" if math.isnan(self.diff) else f"{self.diff:+.1f} pts, no test")
        interval = "" if math.isnan(self.lo) else f" [{self.lo:+.1f}, {self.hi:+.1f}]"
        df = f", {self.df:g} df" if self.method in (Method.PAIRED_T, Method.UNPAIRED_T) else ""
        return f"{self.diff:+.1f} pts{interval}, p = {self.p_value:.2g} ({self.method}{df})"


_NO_TEST = Comparison(math.nan, math.nan, math.nan, math.nan, math.nan, math.nan, 0, Method.NONE)


def _t_quantile(q: float, df: float) -> float:
    """Student's t quantile: scipy's ufunc (`special.stdtrit`, ~100x faster per call than
    `stats.t.ppf`, which the calibration benchmark calls a million times)."""
    from scipy.special import stdtrit

    return float(stdtrit(df, q))


def _t_two_sided_p(t_value: float, df: float) -> float:
    from scipy.special import stdtr

    return float(2 * stdtr(df, -abs(t_value)))


def _t_comparison(diff: float, se: float, df: float, n: int, method: str,
                  alpha: float) -> Comparison:
    if not (se > 0 and df >= 1) or math.isnan(diff):
        return _NO_TEST._replace(diff=diff, n=n)
    half = _t_quantile(1 - alpha / 2, df) * se
    p = _t_two_sided_p(diff / se, df)
    return Comparison(diff, se, float(df), diff - half, diff + half, p, n, method)


def pooled_variance(groups: Sequence[Sequence[float]]) -> tuple[float | None, int]:
    """The within-group variance pooled over every group with >= 2 values, and its degrees of
    freedom: sum((n_i - 1) s_i^2) / sum(n_i - 1). (None, 0) when no group has two values.

    Groups are configurations' paired differences (or their top-1s over seeds): one noise level
    for the whole search, estimated with every degree of freedom the search has.
    """
    squares, df = 0.0, 0
    for group in groups:
        values = np.asarray(group, dtype=float)
        values = values[~np.isnan(values)]
        if len(values) >= 2:
            squares += float(((values - values.mean()) ** 2).sum())
            df += len(values) - 1
    return (squares / df, df) if df else (None, 0)


def sign_flip_p(differences: Sequence[float]) -> float:
    """The exact two-sided sign-flip permutation p of a mean difference: the share of the 2^n
    sign vectors whose |mean| is at least the observed one (valid when differences are
    symmetric under the null; never 0, smallest 2 / 2^n). Beyond `EXACT_SIGN_FLIP_MAX`
    differences, 100,000 random sign vectors with the observed one counted (Monte Carlo)."""
    d = np.asarray(differences, dtype=float)
    n = len(d)
    if n == 0:
        return math.nan
    observed = abs(d.sum()) * (1 - 1e-12)  # ties at the observed value count as extreme
    if n <= EXACT_SIGN_FLIP_MAX:
        signs = 1 - 2 * ((np.arange(2 ** n)[:, None] >> np.arange(n)) & 1)
        return float(np.mean(np.abs(signs @ d) >= observed))
    rng = np.random.default_rng(0)
    signs = rng.choice([-1.0, 1.0], size=(100_000, n))
    return float((1 + np.sum(np.abs(signs @ d) >= observed)) / (1 + len(signs)))


def paired_test(differences: Sequence[float], *, pooled_var: float | None = None,
                pooled_df: int = 0, alpha: float = ALPHA) -> Comparison:
    """A configuration against the baseline over seeds both ran (same seed, same data order).

    Args:
        differences: configuration minus baseline, one per shared seed (points).
        pooled_var: the variance of one paired difference pooled over the search
            (`pooled_variance` of every configuration's differences); used with `pooled_df`
            instead of these differences' own variance (n - 1 df) when given.
        pooled_df: its degrees of freedom.
        alpha: the two-sided level of the interval (the test's p does not depend on it).

    One difference and no pooled variance: no test. Differences that all tie (own variance 0)
    and no pooled variance: the exact sign-flip p, and no interval (a t-test would say p = 0).
    """
    d = np.asarray(differences, dtype=float)
    d = d[~np.isnan(d)]
    n = len(d)
    if n == 0:
        return _NO_TEST
    mean = float(d.mean())
    if pooled_var is not None and pooled_var > 0 and pooled_df >= 1:
        return _t_comparison(mean, math.sqrt(pooled_var / n), pooled_df, n, Method.PAIRED_T, alpha)
    if n < 2:
        return _NO_TEST._replace(diff=mean, n=n)
    own = float(d.var(ddof=1))
    if own <= 1e-12 * max(1.0, mean * mean):
        return Comparison(mean, 0.0, float(n - 1), math.nan, math.nan, sign_flip_p(d), n,
                          Method.SIGN_FLIP)
    return _t_comparison(mean, math.sqrt(own / n), n - 1, n, Method.PAIRED_T, alpha)


def unpaired_test(values: Sequence[float], baseline: Sequence[float], *,
                  pooled_var: float | None = None, pooled_df: int = 0,
                  alpha: float = ALPHA) -> Comparison:
    """A configuration's mean over its n seeds against the baseline's mean over n0 seeds, not
    paired: Var = s^2 (1/n + 1/n0). s^2 is `pooled_var` (a within-configuration variance of
    one run, with `pooled_df`) when given, else the baseline's own seed variance
    (df = n0 - 1). No test with fewer than 2 baseline seeds and no pooled variance."""
    a = np.asarray(values, dtype=float)
    b = np.asarray(baseline, dtype=float)
    a, b = a[~np.isnan(a)], b[~np.isnan(b)]
    if len(a) == 0 or len(b) == 0:
        return _NO_TEST
    diff = float(a.mean() - b.mean())
    if pooled_var is not None and pooled_var > 0 and pooled_df >= 1:
        var, df = pooled_var, pooled_df
    elif len(b) >= 2:
        var, df = float(b.var(ddof=1)), len(b) - 1
    else:
        return _NO_TEST._replace(diff=diff, n=len(a))
    se = math.sqrt(var * (1 / len(a) + 1 / len(b)))
    return _t_comparison(diff, se, df, len(a), Method.UNPAIRED_T, alpha)


def holm(p_values: Sequence[float], alpha: float = ALPHA) -> list[bool]:
    """Holm's step-down: which of m tests are rejected with the family-wise error held at
    `alpha`. Sorted ascending, the k-th smallest p (k = 0...) is compared with alpha/(m - k),
    stopping at the first that fails. NaN p-values (no test) are neither rejected nor counted in
    m. Hand-written: scipy has no Holm (statsmodels' `multipletests` does, but is not a
    dependency of this project for ten lines)."""
    p = np.asarray(p_values, dtype=float)
    tested = np.flatnonzero(~np.isnan(p))
    rejected = [False] * len(p)
    m = len(tested)
    for rank, index in enumerate(tested[np.argsort(p[tested], kind="stable")]):
        if p[index] > alpha / (m - rank):
            break
        rejected[index] = True
    return rejected


def verdicts(comparisons: Sequence[Comparison], *, alpha: float = ALPHA) -> list[Verdict]:
    """The label of each comparison in a family (every configuration compared with one control
    in one stage): Holm over the tested ones, then better / worse by the sign of the
    difference; "within noise" when not rejected; "no test" when untested."""
    rejected = holm([c.p_value for c in comparisons], alpha)
    return [Verdict.NO_TEST if not c.tested
            else (Verdict.BETTER if c.diff > 0 else Verdict.WORSE) if reject
            else Verdict.WITHIN_NOISE for c, reject in zip(comparisons, rejected, strict=True)]


def t_interval(values: Sequence[float], *, var: float | None = None, df: int = 0,
               alpha: float = ALPHA) -> tuple[float, float]:
    """The 95 % t interval of a mean top-1 over seeds: mean ± t(df) sqrt(var / n), with `var`
    the seed variance of one run (pooled, with its df) or the values' own (n - 1 df). NaN when
    there is no variance to use."""
    x = np.asarray(values, dtype=float)
    x = x[~np.isnan(x)]
    if var is None or df < 1:
        var, df = (float(x.var(ddof=1)), len(x) - 1) if len(x) >= 2 else (None, 0)
    if not len(x) or var is None or df < 1:
        return (math.nan, math.nan)
    half = _t_quantile(1 - alpha / 2, df) * math.sqrt(var / len(x))
    return (float(x.mean()) - half, float(x.mean()) + half)


def _power(ncp: float, df: float, alpha: float) -> float:
    """Power of a two-sided t-test at level alpha with noncentrality ncp."""
    from scipy.stats import nct, norm, t

    crit = float(t.ppf(1 - alpha / 2, df))
    if df > 1e4:  # the t is the normal here, and scipy's nct returns NaN for huge df
        return float(norm.sf(crit - ncp) + norm.cdf(-crit - ncp))
    power = float(nct.sf(crit, df, ncp) + nct.cdf(-crit, df, ncp))
    return power if not math.isnan(power) else float(ncp > crit)


def detectable_difference(se: float, df: float, *, alpha: float = ALPHA,
                          power: float = POWER) -> float:
    """The smallest true difference a two-sided t-test with this standard error and df rejects
    at `alpha` with probability `power` (noncentral t, solved exactly). For a family of m
    comparisons pass alpha / m: Holm's first step, the one a lone real difference must pass.
    NaN without a standard error or df."""
    from scipy.optimize import brentq

    if not (se > 0 and df >= 1):
        return math.nan
    top = 50.0
    while _power(top, df, alpha) < power:  # 1 df at alpha/12 needs a noncentrality ~ 600
        top *= 4
        if top > 1e5:
            return math.inf
    ncp = brentq(lambda x: _power(x, df, alpha) - power, 0.0, top)
    return float(ncp * se)


def seeds_needed(difference: float, *, sigma: float, pooled_df: int = 0,
                 alpha: float = ALPHA, power: float = POWER, most: int = 10_000) -> int | None:
    """Paired seeds a configuration needs (each with the baseline's same seed) for a true
    difference of `difference` points to be detected with `power`, when one paired difference
    has standard deviation `sigma`. The variance has the configuration's own n - 1 degrees of
    freedom plus `pooled_df` from the other configurations it is pooled with. None beyond
    `most` seeds or without a sigma."""
    if not (sigma > 0) or difference == 0:
        return None

    def enough(n: int) -> bool:
        dof = pooled_df + n - 1
        return dof >= 1 and _power(abs(difference) / (sigma / math.sqrt(n)), dof, alpha) >= power

    if enough(1):
        return 1
    lo, hi = 1, 2
    while not enough(hi):
        lo, hi = hi, hi * 2
        if hi > most:
            return None
    while hi - lo > 1:  # power grows with n: bisect to the smallest n that is enough
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if enough(mid) else (mid, hi)
    return hi


class Family(NamedTuple):
    """Every configuration of one stage against the control, labelled together
    (`compare_family`): what the front, `trials.csv`, the report and the verdict print.

    comparisons / labels: per configuration key (the control has neither).
    m: the tests in the family (Holm's m). paired_var, paired_df: the pooled variance of one
    paired difference and its df (None, 0: no configuration has two paired seeds yet).
    run_var, run_df: the pooled seed variance of one run over every configuration with >= 2
    seeds, the control included. correlation: the pairing correlation (NaN: not measurable).
    control_top1: the control's runs by seed.
    """

    comparisons: dict[str, Comparison]
    labels: dict[str, Verdict]
    m: int
    paired_var: float | None
    paired_df: int
    run_var: float | None
    run_df: int
    correlation: float
    control_top1: dict[int, float]

    def paired_share(self) -> int:
        """How many of the tested comparisons used the paired test."""
        return sum(1 for c in self.comparisons.values()
                   if c.tested and c.method != Method.UNPAIRED_T)


def pairing_correlation(runs: Mapping[str, Mapping[int, float]], control: str) -> float:
    """The correlation between a configuration's and the control's top-1 across the seeds both
    ran, pooled over every configuration with >= 2 shared seeds (each centred on its own mean
    over those seeds). It is what common random numbers buy: the paired difference's variance
    is 2 sigma^2 (1 - correlation). NaN when no configuration shares two seeds."""
    base = runs.get(control, {})
    xs, ys = [], []
    for key, seeds in runs.items():
        shared = sorted(set(seeds) & set(base))
        if key == control or len(shared) < 2:
            continue
        x = np.array([seeds[s] for s in shared], dtype=float)
        y = np.array([base[s] for s in shared], dtype=float)
        xs.append(x - x.mean())
        ys.append(y - y.mean())
    if not xs:
        return math.nan
    x, y = np.concatenate(xs), np.concatenate(ys)
    denominator = math.sqrt(float((x * x).sum() * (y * y).sum()))
    return float((x * y).sum() / denominator) if denominator > 0 else math.nan


def paired_variance(runs: Mapping[str, Mapping[int, float]]) -> tuple[float | None, int]:
    """The variance of one paired difference (configuration minus control, same seed) and its
    degrees of freedom, from the additive model top-1 = configuration + seed + error fitted to
    every run (least squares): 2 x the residual variance, df = runs - configurations - seeds + 1.
    (None, 0) without residual degrees of freedom.

    Why not the pooled variance of each configuration's differences: those share the
    control's runs, so k configurations' variance estimates are correlated and their nominal
    k(n - 1) df overstate how well the variance is known (train-best with 4 finalists x 3
    seeds: 5.7 % search-wise false positives in `benchmarks/calibration.py`). The model's
    residual counts each run once; with complete blocks it is the textbook two-way analysis.
    """
    keys = list(runs)
    seeds = sorted({s for values in runs.values() for s in values})
    rows = [(keys.index(k), seeds.index(s), v) for k, values in runs.items()
            for s, v in values.items()]
    if not rows:
        return (None, 0)
    design = np.zeros((len(rows), len(keys) + len(seeds) - 1))
    target = np.empty(len(rows))
    for row, (config, seed, value) in enumerate(rows):
        design[row, config] = 1.0
        if seed:  # seed 0's effect is the reference
            design[row, len(keys) + seed - 1] = 1.0
        target[row] = value
    _, _, rank, _ = np.linalg.lstsq(design, target, rcond=None)
    df = len(rows) - int(rank)
    if df < 1:
        return (None, 0)
    fitted = design @ np.linalg.lstsq(design, target, rcond=None)[0]
    return (2.0 * float(((target - fitted) ** 2).sum()) / df, df)


def compare_family(runs: Mapping[str, Mapping[int, float]], control: str, *,
                   alpha: float = ALPHA) -> Family:
    """Every configuration in `runs` (key -> {seed: top-1}) against `control`, labelled by the
    one rule: the paired test on the seeds it shares with the control, with the variance of one
    paired difference from every run (`paired_variance`), once it has at least `MIN_PAIRED_DF`
    degrees of freedom; before that, the unpaired test
    (seed variance of one run pooled over configurations with >= 2 seeds, the control's at
    least). Then Holm over the family.

    Which test is decided from counts only (seeds shared, degrees of freedom), never from the
    values: choosing whichever standard error came out smaller would pick underestimates and
    inflate the false-positive rate. The price: with no pairing correlation a single seed's
    paired difference has variance 2 sigma^2 against the unpaired sigma^2 (1 + 1/n0), so where
    the measured correlation is low, pairing costs power; the verdict prints the correlation.
    """
    base = {int(s): float(v) for s, v in runs.get(control, {}).items() if not math.isnan(v)}
    clean = {key: {int(s): float(v) for s, v in seeds.items() if not math.isnan(v)}
             for key, seeds in runs.items()}
    differences = {key: [seeds[s] - base[s] for s in sorted(set(seeds) & set(base))]
                   for key, seeds in clean.items() if key != control}
    paired_var, paired_df = paired_variance(clean)
    run_var, run_df = pooled_variance([list(seeds.values()) for seeds in clean.values()])
    comparisons = {}
    for key, diffs in differences.items():
        if diffs and paired_var and paired_df >= MIN_PAIRED_DF:
            comparisons[key] = paired_test(diffs, pooled_var=paired_var, pooled_df=paired_df,
                                           alpha=alpha)
        else:
            comparisons[key] = unpaired_test(list(clean[key].values()), list(base.values()),
                                             pooled_var=run_var, pooled_df=run_df, alpha=alpha)
    labels = dict(zip(comparisons, verdicts(list(comparisons.values()), alpha=alpha),
                      strict=True))
    return Family(comparisons, labels, sum(c.tested for c in comparisons.values()),
                  paired_var, paired_df, run_var, run_df, pairing_correlation(clean, control),
                  base)


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def power_sentence(family: Family, *, trial_s: float | None = None,
                   differences: Sequence[float] = (0.5, 1.1), alpha: float = ALPHA) -> str:
    """What the family's tests could have seen: the smallest difference a one-seed
    configuration is told from the baseline with 80 % power at alpha/m (Holm's first step),
    and the paired seeds each of `differences` (the paper's +0.5 and +1.1 points) would need,
    with the time they cost at `trial_s` seconds per run (a configuration's run and the
    baseline's, per seed)."""
    m = max(1, family.m)
    level = alpha / m
    n0 = len(family.control_top1)
    ses = []
    if family.run_var and n0:
        ses.append((math.sqrt(family.run_var * (1 + 1 / n0)), family.run_df))
    if family.paired_var:
        ses.append((math.sqrt(family.paired_var), family.paired_df))
    if not ses:
        return "Power: not stated (no seed spread measured: give --noise-seeds 2 or more)."
    mdd = min(detectable_difference(se, df, alpha=level) for se, df in ses)
    if family.paired_var:
        sigma, dof, basis = math.sqrt(family.paired_var), family.paired_df, "measured"
    else:
        sigma, dof = math.sqrt(2 * family.run_var), family.run_df
        basis = "assuming no pairing correlation"
    needs = []
    for difference in differences:
        seeds = seeds_needed(difference, sigma=sigma, pooled_df=dof, alpha=level)
        cost = (f", ~{_duration(2 * seeds * trial_s)} at {trial_s:.0f} s per run"
                if seeds and trial_s else "")
        needs.append(f"{difference:+.1f} pts needs {seeds or 'over 10,000'} paired seeds{cost}"
                     if seeds != 1 else f"{difference:+.1f} pts needs 1 seed")
    seen = (f"only if it differs by {mdd:.1f} pts or more" if mdd <= 100
            else "by no difference a top-1 can have (it would need over 100 pts)")
    return (f"Power: with one seed a configuration is told from the baseline with 80 % power "
            f"{seen} (at 5 % over {m}); "
            f"{'; '.join(needs)} (paired σ {sigma:.1f} pts, {basis}).")


def verdict_sentence(family: Family | None, *, baseline_name: str,
                     trial_s: float | None = None, alpha: float = ALPHA) -> str:
    """The plain sentences a search summary ends with: which configurations differ from the
    baseline at 5 % over the configurations compared (Holm), the noise it was measured
    against, the pairing correlation, and the power statement (`power_sentence`)."""
    if family is None or not family.control_top1:
        return (f"No baseline ({baseline_name}) was measured, so no configuration can be "
                "compared with it.")
    labels = list(family.labels.values())
    better, worse = labels.count(Verdict.BETTER), labels.count(Verdict.WORSE)
    untested = labels.count(Verdict.NO_TEST)
    n0 = len(family.control_top1)
    floor = (f"seed σ = {math.sqrt(family.run_var):.1f} pts per run, {family.run_df} df, "
             f"baseline over {n0} seeds" if family.run_var
             else "no seed spread measured")
    pairing = (f"Pairing correlation {family.correlation:+.2f}"
               if not math.isnan(family.correlation)
               else "Pairing correlation not measured (no configuration has 2 paired seeds)")
    if family.m == 0:
        head = f"No configuration could be tested against {baseline_name} ({floor})."
    elif better or worse:
        parts = []
        if better:
            parts.append(f"{_plural(better, 'configuration')} beat{'s' if better == 1 else ''} "
                         f"{baseline_name}")
        if worse:
            parts.append(f"{_plural(worse, 'configuration')} fall{'s' if worse == 1 else ''} "
                         f"short of it")
        head = (f"{' and '.join(parts)} at 5 % over the {_plural(family.m, 'configuration')} "
                f"compared (Holm); the rest are within noise ({floor}).")
    else:
        head = (f"No configuration differs from {baseline_name} at 5 % over the "
                f"{_plural(family.m, 'configuration')} compared (Holm) ({floor}).")
    tests = (f"; {family.paired_share()} of {family.m} compared paired (same seeds)"
             if family.m else "")
    extra = f" {untested} not tested (no variance)." if untested else ""
    return (f"{head}{extra} {pairing}{tests}. "
            f"{power_sentence(family, trial_s=trial_s, alpha=alpha)}")


def noise_band(family: Family, *, alpha: float = ALPHA) -> tuple[float, float] | None:
    """The band around the baseline's mean inside which a one-seed configuration compared
    unpaired is "within noise" at Holm's strictest step (alpha / m): the report's grey band,
    drawn at the threshold the labels use. None without a seed spread."""
    n0 = len(family.control_top1)
    if not family.run_var or not n0 or family.run_df < 1:
        return None
    level = alpha / max(1, family.m)
    half = _t_quantile(1 - level / 2, family.run_df) * math.sqrt(family.run_var * (1 + 1 / n0))
    mean = float(np.mean(list(family.control_top1.values())))
    return (mean - half, mean + half)
