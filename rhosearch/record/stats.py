"""How sure a measurement is: intervals on top-1, Kendall's tau with its interval, and whether a
configuration differs from the baseline beyond noise.

    lo, hi = top1_interval(86.1, n_val=360, seed_std=2.5)     # percent
    tau = kendall_tau(oneshot_scores, proxy_top1)            # Tau(value, n, lo, hi)
    significance(88.0, lo=85.1, hi=90.9, baseline=84.0)      # "beyond noise (+4.0)"

Two sources of noise are in every top-1 this project prints. The validation set is a sample:
with n images, a top-1 of p has a binomial standard error of sqrt(p(1-p)/n), and the Wilson
score interval is the 95 % interval that stays honest near 0 % and 100 % (scipy offers it only
through `binomtest`, which needs integer counts, hence the closed form here). Training is a
sample too: the same configuration trained with another seed lands elsewhere, and the search
measures that spread on the baseline (`--noise-seeds`). The two are independent, so an interval
widened by the seed spread adds their half-widths in quadrature.

A difference between two configurations is only called a result when the configuration's
interval excludes the baseline's mean; everything else is "within noise".
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

__all__ = [
    "Tau",
    "Z95",
    "kendall_tau",
    "noise_sentence",
    "paired_difference",
    "significance",
    "top1_interval",
    "wilson_interval",
]

Z95 = 1.959963984540054  # the normal quantile of 97.5 %: two-sided 95 % intervals
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


def top1_interval(
    top1: float, n_val: int, *, seed_std: float | None = None, z: float = Z95
) -> tuple[float, float]:
    """The 95 % interval of a trained top-1: Wilson's from the validation-set size, each side
    widened in quadrature by z times the seed spread (in points) when one was measured."""
    lo, hi = wilson_interval(top1, n_val, z=z)
    if not seed_std:
        return (lo, hi)
    spread = z * seed_std
    lo = top1 - math.hypot(top1 - lo, spread)
    hi = top1 + math.hypot(hi - top1, spread)
    return (max(0.0, lo), min(100.0, hi))


def significance(top1: float, *, lo: float, hi: float, baseline: float | None) -> str:
    """"beyond noise (+x.x)" / "beyond noise (-x.x)" when [lo, hi] excludes the baseline's
    mean top-1, else "within noise"; "no baseline" when there is none to compare with."""
    if baseline is None or math.isnan(baseline):
        return "no baseline"
    if lo > baseline or hi < baseline:
        return f"beyond noise ({top1 - baseline:+.1f})"
    return "within noise"


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


class Paired(NamedTuple):
    """A configuration against the baseline trained with the same seeds."""

    mean_diff: float
    std_diff: float
    n: int
    p_value: float
    label: str


def paired_difference(
    values: Sequence[float], baseline: Sequence[float], *, alpha: float = 0.05
) -> Paired:
    """Paired comparison over seeds (same seed, same data order): mean and std of the
    differences and a two-sided paired t-test; one seed gives no test, only the difference."""
    a, b = np.asarray(values, dtype=float), np.asarray(baseline, dtype=float)
    diff = a - b
    n = len(diff)
    mean = float(diff.mean()) if n else math.nan
    std = float(diff.std(ddof=1)) if n > 1 else math.nan
    if n < 2:
        return Paired(mean, std, n, math.nan, "one seed: no test")
    if std == 0:
        p = 0.0 if mean != 0 else 1.0
    else:
        from scipy.stats import ttest_rel

        p = float(ttest_rel(a, b).pvalue)
    label = f"beyond noise ({mean:+.1f}, p = {p:.2g})" if p < alpha else (
        f"within noise (p = {p:.2g})")
    return Paired(mean, std, n, p, label)


def noise_sentence(
    labels: Sequence[str], *, baseline_name: str, std: float | None, seeds: int
) -> str:
    """The plain sentence a search summary ends with."""
    better = sum(1 for label in labels if label.startswith("beyond noise (+"))
    worse = sum(1 for label in labels if label.startswith("beyond noise (-"))
    floor = (f"σ = {std:.1f} pts over {seeds} seeds" if std is not None and seeds > 1
             else "no seed spread measured: validation-set noise only")
    if better or worse:
        parts = []
        if better:
            parts.append(f"{better} configuration{'s' if better > 1 else ''} beat "
                         f"{baseline_name} beyond noise")
        if worse:
            parts.append(f"{worse} fall{'s' if worse == 1 else ''} short of it beyond noise")
        return "; ".join(parts) + f" ({floor})."
    return f"No configuration differs from {baseline_name} beyond noise ({floor})."
