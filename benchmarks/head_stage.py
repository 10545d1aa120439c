"""Heads trained per second on cached block maps: one `HeadBank` pass against a loop of heads.

    python benchmarks/head_stage.py                      # the default space, fashion-mnist sizes
    python benchmarks/head_stage.py --configs 12 --images 500 --val-images 500 --epochs 1

Both run in this process on the same maps: synthetic block maps of the shapes MobileViT-S gives
at the fashion-mnist proxy's 32 px (96x4x4, 128x2x2, 160x1x1; the speed of a head does not
depend on the values), `--images` training and `--val-images` validation images, the `head`
recipe's epochs. The same configurations both ways (`--configs K`: K spread evenly over the
space's order, default all): batched, `--heads-per-pass` heads per `HeadBank`; looped, one
`Head` at a time (the same training, one module each). Prints heads/s of each, their ratio and
the peak memory.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time

import torch

from rhosearch.core.space import load_search_space
from rhosearch.stages.head import HEADS_PER_PASS, BlockMaps, tapped_blocks, train_heads
from rhosearch.training.recipe import load_recipe


def synthetic_maps(space_name: str, images: int, device: torch.device) -> BlockMaps:
    """Random maps with the shapes of MobileViT-S's blocks at 32 px."""
    space = load_search_space(space_name)
    blocks = tapped_blocks(space)
    widths = space.widest.block_widths
    sides = {k: 32 // 2 ** (k + 1) for k in blocks}
    generator = torch.Generator().manual_seed(0)
    maps = tuple(torch.randn(images, widths[k], sides[k], sides[k], generator=generator)
                 .to(device) for k in blocks)
    return BlockMaps(blocks, maps, torch.randint(10, (images,), generator=generator).to(device))


def heads_per_second(configs, train, val, recipe, *, batched: bool, per_pass: int) -> float:
    started = time.perf_counter()
    count = sum(len(group) for group, _ in train_heads(
        configs, train, val, recipe=recipe, seed=0, num_classes=10, batched=batched,
        heads_per_pass=per_pass))
    if train.labels.device.type == "cuda":
        torch.cuda.synchronize()
    return count / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--space", default="exmobilevit_s")
    parser.add_argument("--images", type=int, default=4000)
    parser.add_argument("--epochs", type=int, default=None, help="default: the head recipe's")
    parser.add_argument("--configs", type=int, default=None, help="default: the whole space")
    parser.add_argument("--val-images", type=int, default=2000)
    parser.add_argument("--heads-per-pass", type=int, default=HEADS_PER_PASS)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    overrides = {"epochs": args.epochs} if args.epochs else {}
    recipe = load_recipe("head", overrides)
    configs = list(load_search_space(args.space).configs())
    if args.configs:
        configs = configs[:: max(1, len(configs) // args.configs)][: args.configs]
    train = synthetic_maps(args.space, args.images, device)
    val = synthetic_maps(args.space, args.val_images, device)
    print(f"{len(configs)} configurations, {args.images} training images, {recipe.epochs} "
          f"epochs, {torch.get_num_threads()} threads, {device}", flush=True)
    looped = heads_per_second(configs, train, val, recipe, batched=False, per_pass=1)
    print(f"looped:  {looped:.3f} heads/s ({len(configs)} heads)", flush=True)
    batched = heads_per_second(configs, train, val, recipe, batched=True,
                               per_pass=args.heads_per_pass)
    print(f"batched: {batched:.3f} heads/s ({len(configs)} heads, {args.heads_per_pass} per "
          f"pass): {len(configs) / batched:.1f} s for them on one trunk with one head seed")
    print(f"batched / looped: {batched / looped:.2f}x")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    gpu = (f", GPU {torch.cuda.max_memory_allocated() / 2**20:.0f} MiB"
           if device.type == "cuda" else "")
    print(f"peak memory: {peak:.0f} MiB resident{gpu}")
    sys.exit(0)


if __name__ == "__main__":
    main()
