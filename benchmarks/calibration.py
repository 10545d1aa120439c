"""Does "better than the baseline" mean 5 %? Simulated searches labelled by rhosearch's own code.

    python benchmarks/calibration.py                    # 2,000 searches per setting (~2-4 min)
    python benchmarks/calibration.py --searches 300     # a quick look

Each simulated search is what `rhosearch search` measures: the baseline with 4 seeds (the
search seed and `--noise-seeds 3`), 12 other configurations with one seed each, every top-1 a
draw around its configuration's true accuracy with the seed spread sigma (which holds the
validation set's binomial noise). Under the null no configuration differs from the baseline; under
an alternative one configuration is +1 or +3 points better. The same for `train-best`: 2-4
finalists and the baseline control, 3 paired seeds each.

Two rules label the same draws, in one run:
- before: the rule rhosearch shipped until this benchmark (kept here, `_legacy_*`, for the
  comparison only): a one-seed trial's Wilson interval widened in quadrature by 1.96 x the
  baseline's seed std, compared with the baseline's mean as if exact; the verdict an OR over the
  12 labels; train-best a paired t per finalist at p < 0.05, no correction, p = 0 on ties.
- after: the product's labelling code itself - `stats.compare_family` (t quantiles from the df
  available, pooled variances, paired where it helps, Holm over the family), and for searches
  the resolve stage as the driver runs it (`stages.resolve.pick_contenders`, `resolve_round`
  with the default 2 more seeds for the best 3 contenders), its further seeds drawn here.

Seeds are drawn with a pairing correlation rho_pair between a configuration's and the
baseline's runs of one seed (common random numbers): 0 (pairing buys nothing) in the main
settings, and one setting at 0.6 to show what it buys.

Per setting it prints the per-trial false-positive rate (a null configuration labelled better or
worse), the per-search rate (a search whose verdict reports any difference under the null) and
the power (the +1 / +3 configuration labelled better), each with its Monte-Carlo standard error,
and ends with one line per rule for its worst null setting:
`calibration RULE: per-trial FP x.x %, per-search FP y.y %, power(+3 pts) z.z %`.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rhosearch.record.stats import Z95, compare_family, t_interval, wilson_interval  # noqa: E402
from rhosearch.stages.resolve import pick_contenders, resolve_round  # noqa: E402
from rhosearch.vocab import Verdict  # noqa: E402

BASELINE_TOP1 = 85.0
CONTROL = "control"
DECIDED = (Verdict.BETTER, Verdict.WORSE)


@dataclass(frozen=True)
class Setting:
    name: str
    sigma: float  # seed std of one run, points
    n_val: int  # validation images (the old rule's Wilson interval reads it)
    rho_pair: float = 0.0  # correlation of two configurations' runs with the same seed
    finalists: int = 0  # > 0: a train-best setting (finalists x 3 paired seeds)
    trials: int = 12
    baseline_seeds: int = 4
    resolve_seeds: int = 2  # the search default
    contenders: int = 3


SETTINGS = [
    Setting("digits, 360 val, sigma 1.0", 1.0, 360),
    Setting("digits, 360 val, sigma 2.3", 2.3, 360),
    Setting("fashion-mnist, 2000 val, sigma 1.0", 1.0, 2000),
    Setting("fashion-mnist, 2000 val, sigma 2.3", 2.3, 2000),
    Setting("digits, sigma 2.3, pairing 0.6", 2.3, 360, rho_pair=0.6),
    Setting("train-best, 2 finalists x 3 seeds, sigma 1.0", 1.0, 2000, finalists=2),
    Setting("train-best, 3 finalists x 3 seeds, sigma 1.0", 1.0, 2000, finalists=3),
    Setting("train-best, 4 finalists x 3 seeds, sigma 1.0", 1.0, 2000, finalists=4),
]


# ---------------------------------------------------------------------------------------------
# The rule before (kept for this comparison only; the product no longer has it).


def _legacy_top1_interval(top1: float, n_val: int, seed_std: float | None) -> tuple[float, float]:
    lo, hi = wilson_interval(top1, n_val)
    if not seed_std:
        return lo, hi
    spread = Z95 * seed_std
    return (max(0.0, top1 - math.hypot(top1 - lo, spread)),
            min(100.0, top1 + math.hypot(hi - top1, spread)))


def _legacy_search_labels(values: np.ndarray, baseline: np.ndarray, n_val: int) -> list[int]:
    """+1 / -1 / 0 per configuration: its widened interval excludes the baseline's mean."""
    mean, std = float(baseline.mean()), float(baseline.std(ddof=1))
    labels = []
    for top1 in values:
        lo, hi = _legacy_top1_interval(float(top1), n_val, std)
        labels.append(1 if lo > mean else -1 if hi < mean else 0)
    return labels


def _legacy_finalist_labels(diffs: np.ndarray) -> list[int]:
    """A paired t per finalist at p < 0.05, no correction; all-equal differences gave p = 0."""
    from scipy.stats import ttest_1samp

    labels = []
    for d in diffs:
        if d.std(ddof=1) == 0:
            p = 0.0 if d.mean() != 0 else 1.0
        else:
            p = float(ttest_1samp(d, 0.0).pvalue)
        labels.append(0 if p >= 0.05 else 1 if d.mean() > 0 else -1)
    return labels


# ---------------------------------------------------------------------------------------------
# Draws.


class Draws:
    """Top-1s of one simulated search, drawn on demand: run (config, seed) is
    true(config) + sigma (sqrt(rho) z_seed + sqrt(1 - rho) e_config,seed)."""

    def __init__(self, rng: np.random.Generator, setting: Setting, truth: dict[str, float]):
        self.rng, self.setting, self.truth = rng, setting, truth
        self.shared: dict[int, float] = {}
        self.cache: dict[tuple[str, int], float] = {}

    def top1(self, config: str, seed: int) -> float:
        key = (config, seed)
        if key not in self.cache:
            if seed not in self.shared:
                self.shared[seed] = float(self.rng.standard_normal())
            rho = self.setting.rho_pair
            noise = (math.sqrt(rho) * self.shared[seed]
                     + math.sqrt(1 - rho) * float(self.rng.standard_normal()))
            self.cache[key] = self.truth[config] + self.setting.sigma * noise
        return self.cache[key]


def _search(rng: np.random.Generator, setting: Setting, effect: float) -> tuple[list, list]:
    """One simulated search: (before labels, after labels) of its configurations, the first
    one carrying `effect` (0 under the null)."""
    configs = [f"c{k}" for k in range(setting.trials)]
    truth = {CONTROL: BASELINE_TOP1, **{c: BASELINE_TOP1 for c in configs}}
    truth[configs[0]] += effect
    draws = Draws(rng, setting, truth)
    runs = {CONTROL: {s: draws.top1(CONTROL, s) for s in range(setting.baseline_seeds)}}
    runs.update({c: {0: draws.top1(c, 0)} for c in configs})
    before = _legacy_search_labels(np.array([runs[c][0] for c in configs]),
                                   np.array(list(runs[CONTROL].values())), setting.n_val)
    # After: the proxy family, then the resolve stage as the driver runs it.
    costs = rng.permutation(len(configs))
    family = compare_family(runs, CONTROL)
    if setting.resolve_seeds:
        points = []
        for index, c in enumerate(configs):
            lo, hi = t_interval([runs[c][0]], var=family.run_var, df=family.run_df)
            points.append((c, runs[c][0], lo, hi, float(costs[index])))
        contenders = pick_contenders(points, control=CONTROL, limit=setting.contenders)
        while True:
            plan = resolve_round(family, runs, control=CONTROL, contenders=contenders,
                                 first_seed=0, max_seeds=1 + setting.resolve_seeds)
            if plan.done:
                break
            for config, seed in plan.jobs:
                runs[config][seed] = draws.top1(config, seed)
            family = compare_family(runs, CONTROL)
    after = [_sign(family.labels[c]) for c in configs]
    return before, after


def _finalists(rng: np.random.Generator, setting: Setting, effect: float) -> tuple[list, list]:
    configs = [f"f{k}" for k in range(setting.finalists)]
    truth = {CONTROL: BASELINE_TOP1, **{c: BASELINE_TOP1 for c in configs}}
    truth[configs[0]] += effect
    draws = Draws(rng, setting, truth)
    seeds = range(3)
    runs = {c: {s: draws.top1(c, s) for s in seeds} for c in [CONTROL, *configs]}
    diffs = np.array([[runs[c][s] - runs[CONTROL][s] for s in seeds] for c in configs])
    family = compare_family(runs, CONTROL)  # what `study.summarize_seeds` calls
    return _legacy_finalist_labels(diffs), [_sign(family.labels[c]) for c in configs]


def _sign(label: Verdict) -> int:
    return 1 if label == Verdict.BETTER else -1 if label == Verdict.WORSE else 0


# ---------------------------------------------------------------------------------------------
# Rates.


@dataclass
class Rates:
    per_trial: float
    per_search: float
    power1: float
    power3: float
    n: int

    def se(self, p: float) -> float:
        return math.sqrt(max(p * (1 - p), 1e-12) / self.n)


def measure(setting: Setting, searches: int, seed: int) -> dict[str, Rates]:
    """Both rules' rates on the same draws: null, +1 and +3 points."""
    simulate = _finalists if setting.finalists else _search
    rng = np.random.default_rng(seed)
    counts = {rule: {"trial": 0, "trials": 0, "search": 0, "power1": 0, "power3": 0}
              for rule in ("before", "after")}
    for _ in range(searches):
        for rule, labels in zip(("before", "after"), simulate(rng, setting, 0.0), strict=True):
            counts[rule]["trial"] += sum(label != 0 for label in labels)
            counts[rule]["trials"] += len(labels)
            counts[rule]["search"] += any(label != 0 for label in labels)
        for effect, key in ((1.0, "power1"), (3.0, "power3")):
            for rule, labels in zip(("before", "after"), simulate(rng, setting, effect),
                                    strict=True):
                counts[rule][key] += labels[0] == 1
    return {rule: Rates(c["trial"] / c["trials"], c["search"] / searches,
                        c["power1"] / searches, c["power3"] / searches, searches)
            for rule, c in counts.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--searches", type=int, default=2000,
                        help="simulated searches per setting and hypothesis (default: 2000)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.searches < 1:
        print("calibration: --searches must be at least 1", file=sys.stderr)
        return 2
    started = time.time()
    print(f"{args.searches} simulated searches per setting and hypothesis; per-trial and "
          "per-search false positives under the null, power at +1 / +3 points "
          "(± one Monte-Carlo standard error)")
    worst: dict[str, tuple[float, Rates]] = {}
    for index, setting in enumerate(SETTINGS):
        rates = measure(setting, args.searches, args.seed + index)
        for rule, r in rates.items():
            print(f"{setting.name:<46} {rule:<6} per-trial FP {100 * r.per_trial:5.1f} % "
                  f"(± {100 * r.se(r.per_trial):.1f})  per-search FP "
                  f"{100 * r.per_search:5.1f} % (± {100 * r.se(r.per_search):.1f})  power +1 "
                  f"{100 * r.power1:5.1f} %  +3 {100 * r.power3:5.1f} % (± "
                  f"{100 * r.se(r.power3):.1f})", flush=True)
            if rule not in worst or r.per_search > worst[rule][0]:
                worst[rule] = (r.per_search, r)
    print(f"({time.time() - started:.0f} s; worst null setting per rule below)")
    for rule in ("before", "after"):
        r = worst[rule][1]
        print(f"calibration {rule}: per-trial FP {100 * r.per_trial:.1f} %, per-search FP "
              f"{100 * r.per_search:.1f} %, power(+3 pts) {100 * r.power3:.1f} %")
    return 0


if __name__ == "__main__":
    sys.exit(main())
