"""How much of a search's budget goes into training, and how good its front is vs random search.

    python benchmarks/search_overhead.py                # 12 trials x 3 seeds, ~20 min on 2 CPUs
    python benchmarks/search_overhead.py --trials 6 --seeds 1 --epochs 1

1. Busy share: for one NSGA-II search, the CPU-seconds spent inside training epochs (each
   trial's `epoch_s` from its metrics.jsonl, times the CPUs it was given) divided by the
   budget's CPU-seconds over the search's wall time (Ray start, worker start-up, imports,
   Optuna bookkeeping and idle slots are the rest). Target: >= 80%.
2. Front quality: the 2-D hypervolume (max top-1, min overhead params; reference point top-1 = 0
   and the space's largest feasible overhead) of the front found by NSGA-II and by random search
   with the same number of trials, over the same seeds; both searches run here, in this process.
   Both start with the paper's six enqueued configurations, so only trials beyond the sixth
   differ: use --trials well above 6.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from rhosearch.cost import CostModel
from rhosearch.report import hypervolume_2d
from rhosearch.resources import Budget
from rhosearch.search import SearchSettings, run_search
from rhosearch.space import load_search_space
from rhosearch.study import pareto_front


def busy_share(outcome: dict, budget_cpus: float, wall_s: float) -> float:
    busy = 0.0
    for trial_dir in (outcome["folder"] / "trials").iterdir():
        metrics = trial_dir / "metrics.jsonl"
        if metrics.is_file():
            epochs = [json.loads(line) for line in metrics.read_text().splitlines() if line]
            busy += sum(e.get("epoch_s", 0.0) for e in epochs)
    return busy / (budget_cpus * wall_s)  # one CPU per trial


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--cpus", type=int, default=2)
    parser.add_argument("--space", default="exmobilevit_s")
    args = parser.parse_args()
    space = load_search_space(args.space)
    cost = CostModel(space.backbone)
    worst = max(cost.price(c).overhead_params for c in space.configs())
    reference = (0.0, float(worst) * 1.1)
    volumes: dict[str, list[float]] = {"nsga2": [], "random": []}
    shares = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in range(args.seeds):
            for sampler in volumes:
                settings = SearchSettings(
                    study=f"{sampler}-{seed}", space=space, trials=args.trials,
                    budget=Budget(cpus=args.cpus), sampler=sampler, seed=seed,
                    recipe_overrides={"epochs": args.epochs}, reports_dir=Path(tmp),
                )
                start = time.perf_counter()
                outcome = run_search(settings, log=lambda line: None)
                wall = time.perf_counter() - start
                front = pareto_front(outcome["trials"])
                points = [(float(r.top1), float(r.overhead_params)) for r in front.itertuples()]
                volume = hypervolume_2d(points, reference)
                volumes[sampler].append(volume)
                share = busy_share(outcome, args.cpus, wall)
                shares.append(share)
                print(f"seed {seed} {sampler:6s}: wall {wall:6.1f} s, busy share {share:5.1%}, "
                      f"front {len(front)} points, hypervolume {volume:,.0f}")
    print(f"busy share (training epochs / budget CPU-seconds): mean {statistics.mean(shares):.1%} "
          f"over {len(shares)} searches of {args.trials} trials")
    for sampler, values in volumes.items():
        print(f"hypervolume {sampler:6s}: mean {statistics.mean(values):,.0f} over "
              f"{len(values)} seeds ({', '.join(f'{v:,.0f}' for v in values)})")
    ratio = statistics.mean(volumes["nsga2"]) / max(statistics.mean(volumes["random"]), 1e-9)
    print(f"ratio nsga2 / random: {ratio:.3f}")


if __name__ == "__main__":
    main()
