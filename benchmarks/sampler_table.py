"""Which Optuna sampler finds the best front: a tabular (NAS-Bench-style) benchmark on one-shot
scores.

    python benchmarks/sampler_table.py                  # after benchmarks/fidelity.py: ~10 min
    python benchmarks/sampler_table.py --seeds 20 --trials 12,24,48,96 --workers 2

1. The table: every configuration of the space scored once by a trained supernet (the scores
   the fidelity benchmark recorded for `supernet-seed0` when they are there, or `--supernet`
   pointing at a search's `supernet` folder, else one trained and scored here), with its
   `overhead_params` priced like the search prices them (256 px, 1000 classes); saved to
   `--out/table.csv` and reused on reruns.
2. The searches: NSGA-II, TPE, GP and random search, built by the search's own
   `make_sampler` and asking over the search's own parameter mapping (`space_distributions`,
   `config_from_params`), answer each suggestion by looking it up in the table (maximise top-1,
   minimise overhead_params). As in the search driver, an infeasible suggestion is told FAIL and
   a repeated one is told its earlier values, and neither counts as a trial: every sampler gets
   exactly N distinct configurations. Unlike a `rhosearch search`, nothing is enqueued first
   (the paper's six would make every sampler's first six trials the same) and trials run one
   at a time.
3. The figure: the hypervolume of each search's front (`rhosearch.report.front.hypervolume_2d`),
   with the reference point at the table's nadir (its lowest top-1 and largest overhead among
   feasible configurations), as a fraction of the whole table's front; mean +- std over the
   seeds per sampler and trial count, each sampler's ratio to random, the best sampler per
   trial count and whether its lead over the runner-up and over random exceeds the seed std.
"""

from __future__ import annotations

import argparse
import json
import math
import time
import warnings
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from pathlib import Path
from typing import NamedTuple

import optuna
import pandas as pd
from optuna.trial import TrialState

from rhosearch.core.cost import CostModel
from rhosearch.core.space import SearchSpace, load_search_space
from rhosearch.record.study import config_from_params, space_distributions
from rhosearch.report.front import hypervolume_2d

SAMPLERS = ("nsga2", "tpe", "gp", "random")
DEFAULT_OUT = Path("reports/benchmarks/sampler_table")
FIDELITY_OUT = Path("reports/benchmarks/fidelity")
# The search driver gives up after this many suggestions in a row that are infeasible or known.
MAX_ASKS = 1000


# --- the table --------------------------------------------------------------------------------


def price_table(space: SearchSpace, top1: dict[str, float], *,
                cost: CostModel | None = None) -> pd.DataFrame:
    """One row per configuration: rho, top1, overhead_params and whether it is feasible."""
    cost = cost or CostModel(space.backbone, resolution=256, num_classes=1000)
    rows = []
    for config in space.configs():
        price = cost.price(config)
        ok = ((space.max_overhead_pct is None or price.overhead_pct <= space.max_overhead_pct)
              and (space.max_gmacs is None or price.gmacs <= space.max_gmacs))
        rows.append({"name": config.name, "rho": config.rho_text,
                     "classifier_channels": config.classifier_channels,
                     "top1": float(top1[config.rho_text]),
                     "overhead_params": int(price.overhead_params), "feasible": ok})
    return pd.DataFrame(rows)


def build_table(space: SearchSpace, *, data: str, recipe_name: str, supernet_dir: Path,
                seed: int) -> pd.DataFrame:
    """Every configuration's one-shot top-1 from the supernet in `supernet_dir`: the scores
    the fidelity benchmark recorded there (`record.json`) or a search's one-shot stage left
    there (`scores.csv`), else scored here (training the supernet first unless its finished
    checkpoint is there)."""
    record_path, scores_path = supernet_dir / "record.json", supernet_dir / "scores.csv"
    record = json.loads(record_path.read_text()) if record_path.is_file() else {}
    if record.get("scores"):
        scores = pd.DataFrame({"rho": list(record["scores"]),
                               "top1": list(record["scores"].values())})
        print(f"one-shot scores: {record_path} (reused)")
    elif scores_path.is_file():
        scores = pd.read_csv(scores_path, dtype={"rho": str})
        print(f"one-shot scores: {scores_path} (reused)")
    else:
        import torch

        from rhosearch.stages.oneshot import score_space, train_supernet
        from rhosearch.training.train import load_recipe, make_loaders

        torch.set_num_threads(1)
        recipe = load_recipe(recipe_name)
        supernet, result = train_supernet(space, data=data, recipe=recipe,
                                          out_dir=supernet_dir, seed=seed, resume=True)
        print(f"supernet {supernet_dir}: {result['status']}, {result['epochs_done']} epochs, "
              f"{result['wall_s']:.0f} s of training")
        scores = score_space(supernet, make_loaders(data, recipe, seed=seed).val,
                             list(space.configs()))
        scores.to_csv(scores_path, index=False)
    return price_table(space, dict(zip(scores["rho"], scores["top1"], strict=True)))


# --- one search against the table -------------------------------------------------------------


class Reference(NamedTuple):
    top1: float
    overhead_params: float


def nadir(table: pd.DataFrame) -> Reference:
    """The hypervolume reference point: the worst top-1 and overhead of the feasible rows."""
    ok = table[table["feasible"]]
    return Reference(float(ok["top1"].min()), float(ok["overhead_params"].max()))


def hypervolume(points: list[tuple[float, float]], reference: Reference) -> float:
    """Area dominated by (top1, overhead_params) points: max top-1, min overhead."""
    return hypervolume_2d(points, (reference.top1, reference.overhead_params))


def table_search(table: pd.DataFrame, space: SearchSpace, sampler: str, trials: int,
                 seed: int) -> list[tuple[float, float]]:
    """(top1, overhead_params) of the distinct feasible configurations one search measured."""
    # The search's own sampler settings, not a copy of them (imported here: it loads Ray).
    from rhosearch.record.study import make_sampler

    lookup = table.set_index("rho")
    study = optuna.create_study(directions=["maximize", "minimize"],
                                sampler=make_sampler(sampler, seed, trials))
    distributions = space_distributions(space)
    measured: dict[str, tuple[float, float]] = {}
    idle = 0
    while len(measured) < trials and idle < MAX_ASKS:
        trial = study.ask(distributions)
        rho = config_from_params(space, trial.params).rho_text
        row = lookup.loc[rho]
        if not row["feasible"]:
            study.tell(trial, state=TrialState.FAIL)
            idle += 1
        elif rho in measured:
            study.tell(trial, measured[rho])
            idle += 1
        else:
            measured[rho] = (float(row["top1"]), float(row["overhead_params"]))
            study.tell(trial, measured[rho])
            idle = 0
    return list(measured.values())


def _one(task: tuple[pd.DataFrame, SearchSpace, str, int, int]) -> dict:
    import torch

    torch.set_num_threads(1)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
    table, space, sampler, trials, seed = task
    started = time.perf_counter()
    points = table_search(table, space, sampler, trials, seed)
    return {"sampler": sampler, "trials": trials, "seed": seed, "found": len(points),
            "hypervolume": hypervolume(points, nadir(table)),
            "seconds": time.perf_counter() - started}


def run_searches(table: pd.DataFrame, space: SearchSpace, wanted: list[tuple[str, int, int]],
                 path: Path, *, workers: int) -> pd.DataFrame:
    """One row per (sampler, trials, seed) in `wanted`: read from `path` when an earlier run
    left it there, else searched `workers` at a time and added to `path` as each ends."""
    key = ["sampler", "trials", "seed"]
    done = pd.read_csv(path) if path.is_file() else pd.DataFrame(columns=key)
    have = set(done[key].itertuples(index=False, name=None))
    todo = [w for w in wanted if w not in have]
    rows = done.to_dict("records")
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
        futures = [pool.submit(_one, (table, space, *w)) for w in todo]
        for future in as_completed(futures):
            rows.append(future.result())
            pd.DataFrame(rows).to_csv(path, index=False)
    runs = pd.DataFrame(rows)
    return runs.merge(pd.DataFrame(wanted, columns=key), on=key)


# --- the figures ------------------------------------------------------------------------------


def summarize(runs: pd.DataFrame, best_volume: float) -> pd.DataFrame:
    """Per (trials, sampler): mean and std (ddof 1) of hypervolume / the table's, and the ratio
    of the mean to random search's mean at the same trial count."""
    runs = runs.assign(fraction=runs["hypervolume"] / best_volume)
    table = (runs.groupby(["trials", "sampler"])["fraction"]
             .agg(mean="mean", std=lambda v: v.std(ddof=1), n="count").reset_index())
    random_mean = table[table["sampler"] == "random"].set_index("trials")["mean"]
    table["vs_random"] = table["mean"] / table["trials"].map(random_mean)
    return table


def verdicts(summary: pd.DataFrame) -> list[str]:
    """Per trial count: the best sampler and whether its lead exceeds the seed std."""
    lines = []
    for trials, group in summary.groupby("trials"):
        group = group.sort_values("mean", ascending=False)
        best, second = group.iloc[0], group.iloc[1]
        parts = [f"{trials:3d} trials: best {best['sampler']} ({best['mean']:.3f} "
                 f"+- {best['std']:.3f})"]
        others = [second] + ([] if "random" in (best["sampler"], second["sampler"])
                             else [group[group["sampler"] == "random"].iloc[0]])
        for other in others:
            lead = best["mean"] - other["mean"]
            std = max(best["std"], other["std"])
            beyond = "beyond" if lead > std else "within"
            parts.append(f"lead over {other['sampler']} {lead:+.3f}, {beyond} the seed std "
                         f"({std:.3f})")
        lines.append("; ".join(parts))
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="fashion-mnist")
    parser.add_argument("--recipe", default="proxy_fmnist")
    parser.add_argument("--space", default="exmobilevit_s")
    parser.add_argument("--supernet", type=Path, default=FIDELITY_OUT / "supernet-seed0",
                        help="supernet folder (trained there if it has no finished checkpoint)")
    parser.add_argument("--trials", default="12,24,48")
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = load_search_space(args.space)
    args.out.mkdir(parents=True, exist_ok=True)
    table_path = args.out / "table.csv"
    if table_path.is_file():
        table = pd.read_csv(table_path)
        print(f"table: {table_path} ({len(table)} configurations, reused)")
    else:
        table = build_table(space, data=args.data, recipe_name=args.recipe,
                            supernet_dir=args.supernet, seed=0)
        table.to_csv(table_path, index=False)
        print(f"table: {table_path} ({len(table)} configurations scored)")
    reference = nadir(table)
    ok = table[table["feasible"]]
    best_volume = hypervolume(list(zip(ok["top1"], ok["overhead_params"], strict=True)),
                              reference)
    print(f"{len(ok)} feasible configurations; one-shot top-1 {ok['top1'].min():.2f}-"
          f"{ok['top1'].max():.2f}%; overhead {ok['overhead_params'].min():,}-"
          f"{ok['overhead_params'].max():,} params")
    print(f"hypervolume reference point: top-1 {reference.top1:.2f}%, overhead_params "
          f"{reference.overhead_params:,.0f}; the whole table's front: {best_volume:,.1f} "
          "(= 1.000 below)")

    counts = [int(t) for t in args.trials.split(",")]
    wanted = [(s, t, seed) for t in counts for s in SAMPLERS for seed in range(args.seeds)]
    started = time.perf_counter()
    runs = run_searches(table, space, wanted, args.out / "runs.csv", workers=args.workers)
    print(f"{len(runs)} searches ({time.perf_counter() - started:.0f} s wall now, "
          f"{args.workers} workers; cached ones cost nothing); seconds per search by sampler: "
          + ", ".join(f"{s} {runs[runs['sampler'] == s]['seconds'].mean():.1f}"
                      for s in SAMPLERS))

    summary = summarize(runs, best_volume)
    print(f"\nhypervolume / the table's front, mean +- std over {args.seeds} seeds "
          "(ratio: mean / random's mean)")
    print(f"{'trials':>6s}  " + "".join(f"{s:>24s}" for s in SAMPLERS))
    for trials, group in summary.groupby("trials"):
        cells = group.set_index("sampler")
        print(f"{trials:6d}  " + "".join(
            f"{cells.loc[s, 'mean']:>9.3f} +- {cells.loc[s, 'std']:.3f} "
            f"({cells.loc[s, 'vs_random']:.2f})" for s in SAMPLERS))
    print()
    for line in verdicts(summary):
        print(line)
    if not math.isfinite(best_volume) or best_volume <= 0:
        print("the table's front has no area: every configuration ties on one objective")


if __name__ == "__main__":
    main()
