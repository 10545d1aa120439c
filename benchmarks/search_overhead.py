"""How much of a search's budget goes into training: warm Ray workers against one worker per trial.

    python benchmarks/search_overhead.py                 # 12 two-epoch trials x 2 seeds x 2 modes
    python benchmarks/search_overhead.py --sampler gp    # the default search's sampler
    python benchmarks/search_overhead.py --trials 6 --seeds 1 --epochs 1 --mode warm

Busy share: the CPU-seconds spent inside training epochs (each trial's `epoch_s` from its
`metrics.jsonl`, times the one CPU it was given) divided by the budget's CPU-seconds over the
search's wall time. The rest is Ray's start, worker start-up and imports, data loading, building
each model, validation, Optuna's proposals and idle slots. Printed beside it: the share inside
`train.fit` (training and validation epochs). Target (issue 10): >= 85 % with warm workers.

Both modes run here, in this process, with the same seeds, one after the other. The first
search (seed 0, warm) starts a fresh driver, as `rhosearch search` does; the later ones reuse its
imports (Tune's internals, Optuna's storage) and its loaded data set, about 2 s each on 2 cores,
so seed 0 is the figure a single CLI search gets:
- warm: a Ray worker runs trial after trial (Tune's `reuse_actors`), paying imports and data
  loading once (`SearchSettings(reuse_workers=True)`, the default);
- cold: a fresh worker per trial, the behaviour before warm workers (`reuse_workers=False`).
The search is the default one (the `exmobilevit_s` space with the paper's configurations first,
proxy recipe on digits) without noise seeds, so every trial is a search trial, with NSGA-II as
when this figure was first measured: a sampler's own CPU time is spent in the driver, on the same
cores (GP's proposals take about 2 s each here; `--sampler gp` measures it in). The sampler
comparison that used to live here is `benchmarks/sampler_table.py`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from rhosearch.core.space import load_search_space
from rhosearch.drivers.search import SearchSettings, run_search
from rhosearch.execution.resources import Budget

MODES = {"warm": True, "cold": False}


def busy_seconds(folder: Path) -> tuple[float, float]:
    """CPU-seconds inside training epochs, and inside `train.fit` (training and validation
    epochs: each trial's `wall_s` in its result.json), one CPU per trial."""
    epochs = fit = 0.0
    for metrics in (folder / "trials").glob("*/metrics.jsonl"):
        lines = [json.loads(line) for line in metrics.read_text().splitlines() if line]
        epochs += sum(line.get("epoch_s", 0.0) for line in lines)
        result = metrics.with_name("result.json")
        if result.is_file():
            fit += json.loads(result.read_text()).get("wall_s", 0.0)
    return epochs, fit


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--cpus", type=int, default=2)
    parser.add_argument("--space", default="exmobilevit_s")
    parser.add_argument("--sampler", default="nsga2", choices=("nsga2", "gp", "tpe", "random"))
    parser.add_argument("--mode", choices=("both", *MODES), default="both",
                        help="warm workers, one worker per trial (cold), or both (default)")
    args = parser.parse_args()
    modes = list(MODES) if args.mode == "both" else [args.mode]
    space = load_search_space(args.space)
    shares: dict[str, list[float]] = {mode: [] for mode in modes}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in range(args.seeds):
            for mode in modes:
                settings = SearchSettings(
                    study=f"{mode}-{seed}", space=space, trials=args.trials,
                    budget=Budget(cpus=args.cpus), seed=seed, noise_seeds=0, stage="proxy",
                    sampler=args.sampler,
                    recipe_overrides={"epochs": args.epochs}, reports_dir=Path(tmp),
                    reuse_workers=MODES[mode], progress=False,
                )
                start = time.perf_counter()
                outcome = run_search(settings, log=lambda line: None)
                wall = time.perf_counter() - start
                epochs, fit = busy_seconds(outcome["folder"])
                share = epochs / (args.cpus * wall)
                shares[mode].append(share)
                print(f"seed {seed} {mode}: wall {wall:6.1f} s, busy share {share:5.1%} "
                      f"(training and validation {fit / (args.cpus * wall):5.1%}), "
                      f"{len(list((outcome['folder'] / 'trials').glob('*/result.json')))} "
                      "trials trained", flush=True)
    for mode, values in shares.items():
        print(f"busy share {mode}: mean {statistics.mean(values):.1%} over {len(values)} "
              f"{args.sampler} searches of {args.trials} x {args.epochs}-epoch trials on "
              f"{args.cpus} CPUs "
              f"({', '.join(f'{v:.1%}' for v in values)})")
    if len(shares) == 2:
        ratio = statistics.mean(shares["warm"]) / statistics.mean(shares["cold"])
        print(f"ratio warm / cold: {ratio:.2f}")


if __name__ == "__main__":
    main()
