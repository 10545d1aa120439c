"""The resolve stage's algorithm: race the contenders against the baseline, one paired seed at a
time, until each is decided (a racing algorithm, as F-race / irace and Hoeffding races: spend
runs only where the answer is still open).

    family = compare_family(runs, control)              # record.stats: the one rule
    plan = resolve_round(family, runs, control="0,0,0,0,4", contenders=["0,0,1,1,4", ...],
                         first_seed=0, max_seeds=3)
    plan.jobs        # [(rho, seed), ...] to run next: one more seed per open contender, and
                     # the baseline's seed where it lacks one
    plan.decisions   # rho -> Decision(status, reason)

Pure: it reads per-configuration, per-seed top-1s and returns what to run next; the driver
(`drivers/search.py`) runs the jobs through Ray Tune and records them, then asks again.

Decisions use the one rule every label uses (`stats.compare_family`: paired on shared seeds,
Holm over every configuration compared; computed by the caller, since stages sit below the
record layer), so a contender dropped as "separated" carries the
label the final verdict prints. A contender is
- "separated" when its label is better or worse;
- "futile" when even the top of its current 95 % interval of the difference, with the standard
  error the seed cap would give, would not reach the test's threshold at Holm's strictest level
  (alpha / m) - it can no longer become separated within the cap;
- "capped" when it has `max_seeds` seeds and is still within noise;
- "open" otherwise: it gets its next seed.
Contenders (`pick_contenders`): the proxy front's members and every configuration that the
front does not beat beyond noise (its interval overlaps), best first, at most `limit` of them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, NamedTuple

from rhosearch.vocab import Verdict

if TYPE_CHECKING:
    from rhosearch.record.stats import Family

__all__ = ["Decision", "Plan", "pick_contenders", "resolve_round"]

OPEN, SEPARATED, FUTILE, CAPPED = "open", "separated", "futile", "capped"


class Decision(NamedTuple):
    status: str  # open | separated | futile | capped
    reason: str


class Plan(NamedTuple):
    jobs: list[tuple[str, int]]
    decisions: dict[str, Decision]

    @property
    def done(self) -> bool:
        return not self.jobs


def pick_contenders(points: Sequence[tuple[str, float, float, float, float]], *,
                    control: str, limit: int) -> list[str]:
    """The configurations worth more seeds, from `(rho, top1, lo, hi, cost)` per configuration:
    those no other configuration beats beyond noise at no more cost (another's `lo` above its
    `hi` with cost <=), i.e. the front and everything whose interval overlaps it, best top-1
    first, at most `limit`; never the control."""
    kept = [p for p in points if p[0] != control and not any(
        q[0] != p[0] and q[4] <= p[4] and q[2] > p[3] for q in points)]
    kept.sort(key=lambda p: (-p[1], p[4]))
    return [p[0] for p in kept[:max(0, limit)]]


def _futile(diff: float, se: float, df: float, n: int, max_seeds: int, level: float) -> bool:
    """Whether the difference could not be told from noise even at the cap: the top of its
    95 % interval against the threshold with the cap's standard error (se shrinks as
    1/sqrt(n))."""
    from scipy.special import stdtrit  # Student's t quantile (stats.t.ppf, as a fast ufunc)

    if not (se > 0 and df >= 1):
        return False
    optimistic = abs(diff) + float(stdtrit(df, 0.975)) * se
    se_at_cap = se * math.sqrt(n / max_seeds)
    return optimistic < float(stdtrit(df + max_seeds - n, 1 - level / 2)) * se_at_cap


def resolve_round(family: Family, runs: Mapping[str, Mapping[int, float]], *, control: str,
                  contenders: Sequence[str], first_seed: int, max_seeds: int,
                  alpha: float = 0.05) -> Plan:
    """What to run next: for each open contender its next seed (first_seed, first_seed + 1,
    ... up to `max_seeds` seeds in all), and the control's run of each such seed it lacks.

    Args:
        family: `stats.compare_family(runs, control)`: the labels the decisions follow.
        runs: rho -> {seed: top-1} of every configuration compared (the control's included).
        control: the baseline's rho.
        contenders: the configurations being raced (`pick_contenders`).
        first_seed: the search seed; seeds run are first_seed, first_seed + 1, ...
        max_seeds: the most seeds a contender gets (1 + --resolve-seeds).
    """
    level = alpha / max(1, family.m)
    decisions: dict[str, Decision] = {}
    jobs: list[tuple[str, int]] = []
    wanted = range(first_seed, first_seed + max_seeds)
    for rho in contenders:
        seeds = runs.get(rho, {})
        comparison = family.comparisons.get(rho)
        label = family.labels.get(rho, Verdict.NO_TEST)
        if label in (Verdict.BETTER, Verdict.WORSE):
            decisions[rho] = Decision(SEPARATED, f"{label}: {comparison.text()}")
            continue
        missing = [s for s in wanted if s not in seeds]
        if not missing:
            decisions[rho] = Decision(CAPPED, f"within noise at {len(seeds)} seeds")
            continue
        if comparison is not None and comparison.tested and _futile(
                comparison.diff, comparison.se, comparison.df, len(seeds), max_seeds, level):
            decisions[rho] = Decision(FUTILE, f"cannot separate within {max_seeds} seeds: "
                                              f"{comparison.text()}")
            continue
        decisions[rho] = Decision(OPEN, f"seed {missing[0]} next")
        jobs.append((rho, missing[0]))
    base = runs.get(control, {})
    for seed in sorted({seed for _, seed in jobs} - set(base)):
        jobs.append((control, seed))
    return Plan(jobs, decisions)
