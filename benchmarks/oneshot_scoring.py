"""Configurations scored per second from cached supernet features, against one proxy trial.

    python benchmarks/oneshot_scoring.py [--proxy-epochs 8] [--threads 2]

On the `digits` validation set at the proxy recipe's resolution, for two grids of MobileViT-S
configurations (the `exmobilevit_s_open` space and a synthetic grid of ~9,500): the seconds of
the one forward pass that caches the widest pooled features, then configurations scored per
second by `score_features` (batched masked-classifier products). The baseline, run in the same
process: the wall time of one standalone proxy trial (`train_config`, proxy recipe) of one
configuration on the same data. Prints both and their ratio. Scoring speed does not depend on
the weights, so the supernet is left untrained; a sample of configurations is checked against
`evaluate` on the extracted standalone models.
"""

from __future__ import annotations

import argparse
import os
import random
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import torch

from rhosearch.core.model import RhoSupernet
from rhosearch.core.space import SearchSpace, load_search_space, parse_rho
from rhosearch.host import usable_cpus
from rhosearch.stages.oneshot import score_features, widest_features
from rhosearch.training.train import evaluate, load_recipe, make_loaders, train_config


def synthetic_space() -> SearchSpace:
    """3 x 3 x 9 x 13 x 9 = 9,477 rho vectors on MobileViT-S (rho_5 up to 5: 800 channels)."""
    steps = lambda last, step: tuple(Fraction(i) * step for i in range(int(last / step) + 1))  # noqa: E731
    return SearchSpace(
        backbone="mobilevit_s",
        choices=(steps(1, Fraction(1, 2)), steps(1, Fraction(1, 2)),
                 steps(Fraction(4, 3), Fraction(1, 6)), steps(Fraction(3, 2), Fraction(1, 8)),
                 tuple(Fraction(i, 2) for i in range(2, 11))),
        name="synthetic",
    )


def bench_grid(space: SearchSpace, val_loader, num_classes: int, *, checks: int) -> dict:
    torch.manual_seed(0)
    supernet = RhoSupernet(space, num_classes=num_classes).eval()
    configs = list(space.configs())
    start = time.perf_counter()
    features, labels = widest_features(supernet, val_loader)
    feature_s = time.perf_counter() - start
    score_features(supernet, features, labels, configs[:64])  # warm-up
    start = time.perf_counter()
    top1, _ = score_features(supernet, features, labels, configs)
    score_s = time.perf_counter() - start
    for i in random.Random(0).sample(range(len(configs)), checks):
        reference, _ = evaluate(supernet.extract(configs[i]), val_loader, "cpu")
        # Float summation order may flip a near-tie: allow one image, no more.
        assert abs(reference - top1[i]) <= 100.0 / len(labels) + 1e-9, (
            configs[i].rho_text, reference, top1[i])
    return dict(space=space.name, configs=len(configs), features=tuple(features.shape),
                feature_s=feature_s, score_s=score_s)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--proxy-epochs", type=int, default=None,
                        help="epochs of the baseline proxy trial (default: the proxy recipe's)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--checks", type=int, default=3,
                        help="configurations checked against their extracted models")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    overrides = {"epochs": args.proxy_epochs} if args.proxy_epochs else {}
    recipe = load_recipe("proxy", overrides)
    loaders = make_loaders("digits", recipe)
    print(f"digits validation set: {len(loaders.val.dataset)} images at {recipe.resolution} px, "
          f"{torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.1f} on "
          f"{usable_cpus()} CPUs (other processes slow every figure alike)")

    rows = []
    for space in (load_search_space("exmobilevit_s_open"), synthetic_space()):
        row = bench_grid(space, loaders.val, loaders.num_classes, checks=args.checks)
        rows.append(row)
        print(f"{row['space']}: {row['configs']} configurations; feature pass (once) "
              f"{row['feature_s']:.2f} s, features {row['features'][0]} x "
              f"{row['features'][1]}; scoring {row['score_s']:.3f} s = "
              f"{row['configs'] / row['score_s']:,.0f} configurations/s", flush=True)

    config = parse_rho("4/3,5/4,4")  # ExMViT-928
    with tempfile.TemporaryDirectory() as out_dir:
        start = time.perf_counter()
        result = train_config(config, data="digits", recipe=recipe, out_dir=Path(out_dir),
                              progress=False)
        proxy_s = time.perf_counter() - start
    print(f"baseline: one proxy trial of {config.name} ({recipe.epochs} epochs, train_config): "
          f"{proxy_s:.1f} s (top1 {result['top1']:.1f}%)")
    for row in rows:
        rate = row["configs"] / row["score_s"]
        total_s = row["feature_s"] + row["score_s"]
        print(f"{row['space']}: one proxy trial / one scored configuration = "
              f"{proxy_s * rate:,.0f}x; the whole grid, feature pass included, takes "
              f"{total_s:.2f} s = {total_s / proxy_s:.4f} proxy trials")


if __name__ == "__main__":
    main()
