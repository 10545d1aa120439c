"""Prices a grid of >= 10,000 rho configurations in closed form, beside fvcore's time per model.

    python benchmarks/cost_grid.py [--fvcore-samples 5]

Prints configurations priced per second by `CostModel` (including its one-time trunk trace),
and the seconds fvcore takes to build and trace one configuration, measured in the same process
on a sample of the same grid; checks that both agree on that sample.
"""

from __future__ import annotations

import argparse
import itertools
import random
import time
from fractions import Fraction

from rhosearch.core.cost import CostModel, count_cost
from rhosearch.core.space import RhoConfig

STEPS = [Fraction(i, 4) for i in range(0, 24)]  # 0, 1/4, ..., 23/4


def grid() -> list[RhoConfig]:
    configs = []
    for r1, r3, r4, r5 in itertools.product(STEPS[:4], STEPS[:12], STEPS[:12], STEPS[:20]):
        if r1 or r3 or r4 or r5:
            configs.append(RhoConfig("mobilevit_s", (r1, 0, r3, r4, r5)))
    return configs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fvcore-samples", type=int, default=5)
    parser.add_argument("--resolution", type=int, default=256)
    args = parser.parse_args()
    configs = grid()

    start = time.perf_counter()
    model = CostModel("mobilevit_s", resolution=args.resolution, num_classes=1000)
    setup = time.perf_counter() - start
    start = time.perf_counter()
    priced = [model.price(c) for c in configs]
    pricing = time.perf_counter() - start

    sample = random.Random(0).sample(range(len(configs)), args.fvcore_samples)
    start = time.perf_counter()
    for i in sample:
        params, macs = count_cost(configs[i], resolution=args.resolution, num_classes=1000)
        assert (params, macs) == (priced[i].params, priced[i].macs), configs[i].rho_text
    fvcore_each = (time.perf_counter() - start) / len(sample)

    per_second = len(configs) / (setup + pricing)
    print(f"grid: {len(configs):,} configurations of mobilevit_s at {args.resolution}px")
    print(f"closed form: {per_second:,.0f} configs/s including the one-time trunk trace "
          f"({setup:.2f} s); {len(configs) / pricing:,.0f} configs/s after it")
    print(f"fvcore build + trace: {fvcore_each:.3f} s per configuration "
          f"({args.fvcore_samples} sampled, all equal to the closed form)")
    print(f"ratio: closed form is {fvcore_each * per_second:,.0f}x faster per configuration")


if __name__ == "__main__":
    main()
