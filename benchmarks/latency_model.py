"""The latency model's error on configurations it was not fitted on, next to measurement noise.

    python benchmarks/latency_model.py [--configs 16] [--clock cpu] [--reports-dir reports]
                                       [--splits 200]

Measures (or reads from the latency table) the baseline, the paper's configurations, and a
seeded sample of the search space, every one timed interleaved with the baseline
(`rhosearch.deploy.latency`); fits `LatencyModel` on the space's design set (`design_set`:
what a search measures) and prices the rest. For each held-out configuration: latency
L = baseline + overhead (the row's own paired baseline), predicted L' = baseline + the model's
overhead; printed: the median and 95th percentile of |L' - L| / L, beside the same for a
MACs-proportional model fitted on the same rows (overhead_ms = k x overhead MACs: what FLOPs
would predict), and beside the measurement's own noise (its interval's half-width / L), and
how many predictions fall inside the measured interval. `--splits N` also refits both
predictors on N random half/half splits of all the measured configurations (no new timing) and
prints their median held-out errors over the splits.

`--clock cpu` (default here) times the calling thread's CPU time: on a shared, loaded machine
wall-clock timings of a few-ms difference are within noise (see docs/latency.md).
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

import numpy as np

from rhosearch.core.cost import CostModel
from rhosearch.core.space import load_search_space
from rhosearch.deploy.latency import LatencySettings, LatencyTable, measure_latency
from rhosearch.deploy.latency_model import LatencyModel, design_set
from rhosearch.errors import RhoSearchError


def _errors(rows: list[dict], predict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per row: |L' - L| / L, noise half-width / L, and whether L' is inside the interval."""
    errors, noise, inside = [], [], []
    for row in rows:
        latency = row["baseline_ms"] + row["overhead_ms"]
        predicted = predict(row)
        errors.append(abs(predicted - row["overhead_ms"]) / latency)
        noise.append((row["overhead_hi"] - row["overhead_lo"]) / 2 / latency)
        inside.append(row["overhead_lo"] <= predicted <= row["overhead_hi"])
    return np.array(errors), np.array(noise), np.array(inside)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--space", default="exmobilevit_s")
    parser.add_argument("--configs", type=int, default=16,
                        help="held-out configurations sampled from the space")
    parser.add_argument("--clock", choices=("wall", "cpu"), default="cpu")
    parser.add_argument("--max-seconds", type=float, default=20.0)
    parser.add_argument("--reports-dir", type=Path, default=Path("reports"))
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--splits", type=int, default=0,
                        help="random half/half refits of all measured rows (default: none)")
    args = parser.parse_args()

    space = load_search_space(args.space)
    settings = LatencySettings(clock=args.clock, max_seconds=args.max_seconds)
    fit_on = design_set(space)
    rest = [c for c in space.configs() if c not in fit_on]
    held_out = random.Random(args.seed).sample(rest, min(args.configs, len(rest)))
    table = LatencyTable.for_folder(args.reports_dir)

    def say(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    measured = measure_latency([*fit_on, *held_out], table=table, settings=settings,
                               progress=say)
    by_rho = {row["rho"]: row for row in measured}
    train = [by_rho[c.rho_text] for c in fit_on]
    test = [by_rho[c.rho_text] for c in held_out]
    model = LatencyModel.fit(train)
    cost = CostModel(space.backbone, resolution=settings.resolution)
    baseline_macs = cost.macs(next(c for c in fit_on if c.is_baseline))

    def extra_macs(row: dict) -> float:
        return cost.macs(_config(row, space.backbone)) - baseline_macs

    x = np.array([extra_macs(r) for r in train])
    y = np.array([r["overhead_ms"] for r in train])
    per_mac = float(x @ y / (x @ x)) if x @ x > 0 else 0.0

    model_err, noise, model_in = _errors(
        test, lambda r: model.overhead_ms(_config(r, space.backbone)))
    macs_err, _, macs_in = _errors(test, lambda r: per_mac * extra_macs(r))
    splits = _splits([*train, *test], extra_macs, space.backbone, args.splits, args.seed)

    def pct(values: np.ndarray, q: float) -> str:
        return f"{100 * np.quantile(values, q):.2f} %"

    print(f"space {space.name}: fitted on {len(train)} configurations (design set), held out "
          f"{len(test)}; {settings.clock} clock, {settings.threads} thread, "
          f"{settings.resolution} px, batch {settings.batch}; {measured[0]['cpu']}, "
          f"onnxruntime {measured[0]['onnxruntime']}")
    print(f"model: trunk {', '.join(f'depth {d}: {v:+.3f} ms' for d, v in model.trunk_ms.items())}"
          "; per shortcut channel (ms): " + ", ".join(
              f"block {k + 1}: {v:.5f}" for k, v in enumerate(model.per_channel_ms)
              if v is not None))
    print("held-out |predicted - measured| / measured latency:")
    print(f"  latency model         median {pct(model_err, 0.5)}, 95th pct "
          f"{pct(model_err, 0.95)}; inside the measured interval {model_in.sum()}/{len(test)}")
    print(f"  MACs-proportional     median {pct(macs_err, 0.5)}, 95th pct "
          f"{pct(macs_err, 0.95)}; inside the measured interval {macs_in.sum()}/{len(test)}")
    print(f"  measurement noise     median {pct(noise, 0.5)}, 95th pct {pct(noise, 0.95)} "
          "(the overhead interval's half-width)")
    if splits:
        print(f"{args.splits} random half/half splits of all {len(train) + len(test)} rows, "
              f"median over splits of the held-out median error: latency model "
              f"{100 * splits[0]:.2f} %, MACs-proportional {100 * splits[1]:.2f} %")


def _splits(rows: list[dict], extra_macs, backbone: str, count: int, seed: int
            ) -> tuple[float, float] | None:
    """Median over `count` random half/half splits of each predictor's held-out median error."""
    if count <= 0:
        return None
    rng = random.Random(seed)
    model_medians, macs_medians = [], []
    for _ in range(count):
        shuffled = rows[:]
        rng.shuffle(shuffled)
        half = len(shuffled) // 2
        train, test = shuffled[:half], shuffled[half:]
        try:
            model = LatencyModel.fit(train)
            errors = _errors(test, lambda r, m=model: m.overhead_ms(_config(r, backbone)))[0]
        except RhoSearchError:  # a block fixed in this half and not in the other
            continue
        x = np.array([extra_macs(r) for r in train])
        y = np.array([r["overhead_ms"] for r in train])
        per_mac = float(x @ y / (x @ x))
        model_medians.append(np.median(errors))
        macs_medians.append(np.median(_errors(test, lambda r, k=per_mac: k * extra_macs(r))[0]))
    return float(np.median(model_medians)), float(np.median(macs_medians))


def _config(row: dict, backbone: str):
    from rhosearch.core.space import RhoConfig

    return RhoConfig.parse(row["rho"], backbone=backbone)


if __name__ == "__main__":
    main()
