"""How well a search's head stage agrees with itself over its whole space, from its records.

    python benchmarks/head_agreement.py --study default                 # reports/default/head
    python benchmarks/head_agreement.py --study fm --reports-dir /tmp/r

Reads `reports/<study>/head/runs.jsonl` (every head the search's head stage trained: trunk,
head seed, rho, top-1) and prints, over every configuration measured on every trunk:
- the self-agreement: Kendall's tau between the configurations' mean top-1 on two disjoint sets
  of trunks (each trunk against the mean of the others, and even against odd trunks), with n
  and the bootstrap 95 % interval of `rhosearch.record.stats.kendall_tau`;
- the spread of the configurations' means, and the pooled standard deviation of one paired
  difference from the baseline's head on the same trunk and head seed, next to the validation
  set's resolution (1 image in points).
Trains nothing: it reads what `rhosearch search --stage head` (or `all`) recorded. The whole
search space, not a subset, is what `benchmarks/fidelity.py` cannot afford to train twice.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
import pandas as pd

from rhosearch.core.space import baseline_config
from rhosearch.record.stats import kendall_tau, pooled_variance


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study", default="default")
    parser.add_argument("--reports-dir", type=Path, default=Path("reports"))
    parser.add_argument("--backbone", default="mobilevit_s")
    args = parser.parse_args()

    path = args.reports_dir / args.study / "head" / "runs.jsonl"
    runs = pd.read_json(path, lines=True).drop_duplicates(["trunk", "head_seed", "rho"])
    by_trunk = runs.pivot_table(index="rho", columns="trunk", values="top1").dropna()
    trunks = list(by_trunk.columns)
    n_val = int(runs["n_val"].iloc[0])
    print(f"{path}: {len(runs)} heads, {len(by_trunk)} configurations on every one of "
          f"{len(trunks)} trunks {trunks}, {runs['head_seed'].nunique()} head seed(s), "
          f"{n_val} validation images (1 image = {100 / n_val:.2f} pts)")
    means = by_trunk.mean(axis=1)
    print(f"configurations' mean top-1: {means.min():.2f} to {means.max():.2f} % "
          f"(std {means.std():.2f} pts)")
    splits = [([t], [u for u in trunks if u != t]) for t in trunks]
    if len(trunks) >= 4:
        splits.append((trunks[0::2], trunks[1::2]))
    for left, right in splits:
        tau = kendall_tau(by_trunk[left].mean(axis=1), by_trunk[right].mean(axis=1))
        print(f"self-agreement, trunks {left} vs {right}: tau = {tau.value:+.2f} "
              f"(95% CI [{tau.lo:+.2f}, {tau.hi:+.2f}], n = {tau.n})")
    control = baseline_config(args.backbone).rho_text
    runs = runs.set_index(["trunk", "head_seed"])
    base = runs[runs["rho"] == control]["top1"]
    diffs = [(group["top1"] - base.reindex(group.index)).dropna().tolist()
             for rho, group in runs.groupby("rho") if rho != control]
    var, df = pooled_variance(diffs)
    sd = math.sqrt(var) if var is not None else math.nan
    mean_diff = np.mean([np.mean(d) for d in diffs if d])
    print(f"paired difference from the baseline's head: pooled sd {sd:.2f} pts per (trunk, head "
          f"seed) ({df} df); mean over configurations {mean_diff:+.2f} pts")


if __name__ == "__main__":
    main()
