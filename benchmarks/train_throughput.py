"""Training throughput: rhosearch's training step against a plain hand-written timm loop.

    python benchmarks/train_throughput.py                       # MobileViT-S, 32 x 64 px, CPU
    python benchmarks/train_throughput.py --batch 128 --resolution 256 --device cuda --ema

Both loops train the same architecture (timm's `mobilevit_s` and rhosearch's baseline
ExMobileViT, which is MobileViT-S) on the same in-memory batches, in this one process, in
alternating rounds so that a machine whose load changes affects both alike. The rhosearch side
is `train_one_epoch` (autocast, scheduler, optional EMA, loss and accuracy kept on the device,
a finiteness check every 10 steps); the plain side is forward, loss, backward, AdamW step.
Prints images/s of each (median over rounds) and their ratio, also as the median of per-round
ratios (robust to a shared machine's changing load); the target is >= 0.95.
"""

from __future__ import annotations

import argparse
import statistics
import time

import timm
import torch
import torch.nn.functional as F
from timm.utils import ModelEmaV3

from rhosearch.core.model import create_model
from rhosearch.core.space import baseline_config
from rhosearch.training.train import build_optimizer, build_scheduler, load_recipe, train_one_epoch


def plain_timm_loop(model, optimizer, batches, device) -> None:
    model.train()
    for images, labels in batches:
        images, labels = images.to(device), labels.to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            loss = F.cross_entropy(model(images), labels, label_smoothing=0.1)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(run) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--steps", type=int, default=4, help="steps per round")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--ema", action="store_true", help="rhosearch side also updates an EMA")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    memory_format = torch.channels_last if device.type == "cuda" else torch.contiguous_format
    torch.manual_seed(0)
    batches = [(torch.rand(args.batch, 3, args.resolution, args.resolution),
                torch.randint(0, 10, (args.batch,))) for _ in range(args.steps)]

    recipe = load_recipe("proxy", {"ema": args.ema, "resolution": args.resolution})
    ours = create_model(baseline_config(), num_classes=10).to(device, memory_format=memory_format)
    optimizer = build_optimizer(ours, recipe)
    scheduler = build_scheduler(optimizer, recipe, steps_per_epoch=args.steps)
    ema = ModelEmaV3(ours, decay=recipe.ema_decay) if args.ema else None

    def rhosearch_round() -> None:
        train_one_epoch(ours, batches, optimizer, scheduler, recipe, device, ema=ema,
                        progress=False)

    plain = timm.create_model("mobilevit_s", num_classes=10)
    plain = plain.to(device, memory_format=memory_format)
    plain_optimizer = torch.optim.AdamW(plain.parameters(), lr=2e-3, weight_decay=0.01)

    def plain_round() -> None:
        plain_timm_loop(plain, plain_optimizer, batches, device)

    params = tuple(sum(p.numel() for p in m.parameters()) for m in (ours, plain))
    assert params[0] == params[1], params
    for run in (rhosearch_round, plain_round):  # warm-up: allocator, autotuning
        run()
    images = args.batch * args.steps
    rates: dict[str, list[float]] = {"rhosearch": [], "plain timm": []}
    for _ in range(args.rounds):
        rates["rhosearch"].append(images / timed(rhosearch_round))
        rates["plain timm"].append(images / timed(plain_round))

    medians = {name: statistics.median(values) for name, values in rates.items()}
    print(f"MobileViT-S ({params[0] / 1e6:.2f}M params), batch {args.batch} at "
          f"{args.resolution}px on {device}, {torch.get_num_threads()} threads, "
          f"{args.rounds} rounds x {args.steps} steps{', EMA on' if args.ema else ''}")
    for name, rate in medians.items():
        spread = ", ".join(f"{r:.1f}" for r in rates[name])
        print(f"  {name:>10}: {rate:8.1f} images/s  (rounds: {spread})")
    # Paired by round: on a shared machine the load moves between rounds, not within one.
    paired = statistics.median(a / b for a, b in zip(*rates.values(), strict=True))
    print(f"  ratio rhosearch / plain: {medians['rhosearch'] / medians['plain timm']:.3f} of "
          f"medians, {paired:.3f} median of paired rounds  (target >= 0.95)")


if __name__ == "__main__":
    main()
