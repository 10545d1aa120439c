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
from pathlib import Path

import pandas as pd

from rhosearch.core.space import baseline_config
from rhosearch.record.head import head_agreement


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study", default="default")
    parser.add_argument("--reports-dir", type=Path, default=Path("reports"))
    parser.add_argument("--backbone", default="mobilevit_s")
    args = parser.parse_args()

    path = args.reports_dir / args.study / "head" / "runs.jsonl"
    runs = pd.read_json(path, lines=True).drop_duplicates(["trunk", "head_seed", "rho"])
    n_val = int(runs["n_val"].iloc[0])
    agreement = head_agreement(runs, baseline_config(args.backbone).rho_text)
    print(f"{path}: {len(runs)} heads, {agreement.configurations} configurations on every one "
          f"of {len(agreement.trunks)} trunks {agreement.trunks}, {runs['head_seed'].nunique()} "
          f"head seed(s), {n_val} validation images (1 image = {100 / n_val:.2f} pts)")
    lo, hi = agreement.mean_range
    print(f"configurations' mean top-1: {lo:.2f} to {hi:.2f} % (std {agreement.mean_std:.2f} "
          "pts)")
    for left, right, tau in agreement.splits:
        print(f"self-agreement, trunks {left} vs {right}: tau = {tau.text()}")
    sd, df = agreement.paired_sd
    print(f"paired difference from the baseline's head: pooled sd {sd:.2f} pts per (trunk, head "
          f"seed) ({df} df); mean over configurations {agreement.mean_diff:+.2f} pts")

if __name__ == "__main__":
    main()
