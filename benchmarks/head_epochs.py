"""How many head epochs the head stage needs: its self-agreement and cost per head recipe.

    python benchmarks/head_epochs.py --study h5 --epochs 1 2 3 5       # reports/h5: a search's
    rhosearch search --stage head --study h5                         # ... trunks, made first

Reads the trunks a search trained (`reports/<study>/noise/seed*/model.safetensors`, the
baseline with the proxy recipe: `rhosearch search --stage head` makes them), caches each
trunk's block maps once, then trains every configuration's head with the `head` recipe at each
`--epochs` value (all else as the recipe says) and prints, per value: the wall time per trunk on
this machine, the configurations' mean top-1, and the head stage's self-agreement over the
whole space (`record.head.head_agreement`: Kendall's tau of the configurations' mean top-1 on
one trunk against the others, with its bootstrap 95 % interval, and the paired sd of a
difference from the baseline's head). Every value trains on the same cached maps in this
process, one after another, so the times are comparable when the machine is quiet.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pandas as pd
import torch
from safetensors.torch import load_model

from rhosearch.core.model import create_model
from rhosearch.core.space import baseline_config, load_search_space
from rhosearch.drivers.head import head_loaders
from rhosearch.record.head import head_agreement
from rhosearch.stages.head import cache_block_maps, tapped_blocks, train_heads
from rhosearch.training.data import dataset_info
from rhosearch.training.datasets import proxy_recipe_for
from rhosearch.training.recipe import load_recipe


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study", default="default")
    parser.add_argument("--reports-dir", type=Path, default=Path("reports"))
    parser.add_argument("--space", default="exmobilevit_s")
    parser.add_argument("--data", default="digits")
    parser.add_argument("--epochs", type=int, nargs="+", default=[1, 2, 3, 5])
    args = parser.parse_args()

    space = load_search_space(args.space)
    configs = list(space.configs())
    baseline = baseline_config(space.backbone)
    recipe = load_recipe(proxy_recipe_for(args.data))
    train_loader, val_loader = head_loaders(args.data, recipe)
    num_classes = dataset_info(args.data)
    paths = sorted((args.reports_dir / args.study / "noise").glob("seed*/model.safetensors"))
    if len(paths) < 2:
        raise SystemExit(f"{args.reports_dir / args.study / 'noise'}: fewer than 2 trunks; run "
                         f"rhosearch search --stage head --study {args.study} first")
    print(f"{len(paths)} trunks of {args.study}, {len(configs)} configurations, data "
          f"{args.data}, {torch.get_num_threads()} threads")
    rows: list[dict] = []
    seconds: dict[int, float] = {e: 0.0 for e in args.epochs}
    blocks = tapped_blocks(configs)
    for trunk_id, path in enumerate(paths, start=1):
        trunk = create_model(baseline, num_classes=num_classes)
        load_model(trunk, str(path))
        train = cache_block_maps(trunk, train_loader, blocks)
        val = cache_block_maps(trunk, val_loader, blocks)
        for epochs in args.epochs:
            head_recipe = load_recipe("head", {"epochs": epochs})
            started = time.perf_counter()
            for group, top1 in train_heads(configs, train, val, recipe=head_recipe, seed=0,
                                           num_classes=num_classes):
                rows += [{"epochs": epochs, "trunk": trunk_id, "head_seed": 0,
                          "rho": c.rho_text, "top1": t} for c, t in zip(group, top1, strict=True)]
            seconds[epochs] += time.perf_counter() - started
    runs = pd.DataFrame(rows)
    n_val = len(val.labels)
    print(f"{n_val} validation images: 1 image = {100 / n_val:.2f} pts")
    for epochs in args.epochs:
        agreement = head_agreement(runs[runs["epochs"] == epochs], baseline.rho_text)
        lo, hi = agreement.mean_range
        sd, df = agreement.paired_sd
        print(f"\n== {epochs} head epoch(s): {seconds[epochs] / len(paths):.1f} s per trunk "
              f"({len(configs)} heads) ==")
        print(f"  configurations' mean top-1 {lo:.2f} to {hi:.2f} % (std {agreement.mean_std:.2f}"
              f" pts); mean difference from the baseline's head {agreement.mean_diff:+.2f} pts")
        for left, right, tau in agreement.splits:
            print(f"  self-agreement, trunks {left} vs {right}: tau = {tau.text()}")
        print(f"  paired sd of a difference from the baseline's head: {sd:.2f} pts ({df} df)")


if __name__ == "__main__":
    main()
