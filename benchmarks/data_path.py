"""Host-side cost of the multi-scale sampler per training step, at ImageNet's size.

    python benchmarks/data_path.py                      # 1281167 samples, the full recipe's batch
    python benchmarks/data_path.py --device cuda        # also times a GPU training step beside it

What `train_one_epoch` asks of the sampler on every step, with a synthetic index (no images,
no decoding, no workers): the next batch of `(index, resolution)` pairs, and `len(loader)`
(the progress bar's total and the end-of-epoch check). The epoch's one-off costs (the shuffled
order, the resolution plan) are timed apart and spread over the epoch's steps in the total.
With `--device`, one training step of the baseline model at the recipe's batch and resolution
is timed too, so the host cost reads as a fraction of the step it sits beside; without it only
the host cost is printed (no GPU step is guessed).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch.utils.data import DataLoader, Dataset

from rhosearch.training.sampler import VariableBatchSampler, mss_resolutions

IMAGENET_TRAIN = 1281167


class _IndexOnly(Dataset):
    """A data set of `size` items that are only their index (the sampler is what is timed)."""

    def __init__(self, size: int) -> None:
        self.size = size

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, item: tuple[int, int]) -> int:
        return item[0]


def host_cost_per_step(samples: int, *, batch: int, resolution: int, steps: int) -> dict:
    """Seconds of sampler work per step (median over `steps`) and the epoch's one-off cost."""
    sampler = VariableBatchSampler(samples, base_resolution=resolution, base_batch_size=batch,
                                   resolutions=mss_resolutions(resolution))
    loader = DataLoader(_IndexOnly(samples), batch_sampler=sampler)
    start = time.perf_counter()
    batches = iter(sampler)
    first = next(batches)  # the epoch's order and plan are made here
    epoch_setup_s = time.perf_counter() - start
    total = len(loader)
    per_step = []
    for i in range(steps):
        start = time.perf_counter()
        batch_ = next(batches)
        total = len(loader)  # as train_one_epoch asks: the bar's total, the last-step check
        last = i + 1 == total
        per_step.append(time.perf_counter() - start)
        del batch_, last
    del first
    median = statistics.median(per_step)
    return dict(per_step_s=median, epoch_setup_s=epoch_setup_s, steps_per_epoch=total,
                amortized_s=median + epoch_setup_s / total)


def gpu_step_seconds(device: torch.device, *, batch: int, resolution: int, repeats: int) -> float:
    """Median time of one forward + backward + AdamW step of the baseline model."""
    from rhosearch.core.model import create_model
    from rhosearch.core.space import baseline_config

    model = create_model(baseline_config("mobilevit_s")).to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    images = torch.randn(batch, 3, resolution, resolution, device=device)
    labels = torch.randint(1000, (batch,), device=device)
    times = []
    for _ in range(repeats + 2):  # two warm-up steps
        start = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            loss = torch.nn.functional.cross_entropy(model(images), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times[2:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=IMAGENET_TRAIN)
    parser.add_argument("--batch", type=int, default=128, help="the full recipe's base batch")
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--device", default=None, help="also time a training step there")
    args = parser.parse_args()
    cost = host_cost_per_step(args.samples, batch=args.batch, resolution=args.resolution,
                              steps=args.steps)
    print(f"host cost per step at {args.samples} samples: {cost['per_step_s'] * 1e6:.0f} us")
    print(f"  epoch set-up (order + plan) {cost['epoch_setup_s'] * 1e3:.0f} ms over "
          f"{cost['steps_per_epoch']} steps: {cost['amortized_s'] * 1e6:.0f} us per step in all")
    if args.device:
        step_s = gpu_step_seconds(torch.device(args.device), batch=args.batch,
                                  resolution=args.resolution, repeats=10)
        print(f"training step on {args.device} (batch {args.batch} at {args.resolution} px): "
              f"{step_s * 1e3:.1f} ms; host cost {100 * cost['amortized_s'] / step_s:.2f} % of it")


if __name__ == "__main__":
    main()
