"""ml-cvnets' multi-scale batch sampler: one resolution per batch, constant pixels per batch.

    sampler = VariableBatchSampler(len(train_set), base_resolution=256, base_batch_size=128,
                                   resolutions=mss_resolutions(256))
    loader = DataLoader(train_set, batch_sampler=sampler)   # batches of (index, resolution)
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import torch

from rhosearch.errors import RhoSearchError

__all__ = ["MSS_SCALES", "VariableBatchSampler", "mss_resolutions"]

# MobileViT's multi-scale set for a 256 base (ml-cvnets: 160 ... 320), as fractions of the base.
MSS_SCALES = (0.625, 0.75, 1.0, 1.125, 1.25)


def mss_resolutions(base: int, scales: Sequence[float] = MSS_SCALES) -> tuple[int, ...]:
    """The multi-scale set for a base resolution, on multiples of 32 (16 below a 128 base).

    256 gives (160, 192, 256, 288, 320) as in MobileViT; 32 gives (16, 32, 48).
    """
    step = 32 if base >= 128 else 16
    sizes = {max(step, math.floor(base * s / step + 0.5) * step) for s in scales}
    return tuple(sorted(sizes | {base}))


class VariableBatchSampler:
    """ml-cvnets' VariableBatchSampler: each batch has one resolution and a batch size that keeps
    the pixels per batch those of `base_batch_size` images at `base_resolution`.

    Yields lists of `(index, resolution)`. The order is reshuffled every epoch from `seed` and
    the epoch (`set_epoch`), so a resumed run sees the same batches. With `world_size > 1` each
    rank takes a disjoint shard of the shuffled indices (padded by wrapping to equal length), and
    all ranks draw the same resolutions, so they run the same number of steps. Every sample is
    seen once per epoch; the last batch is filled up from the start of the order.
    """

    def __init__(self, num_samples: int, *, base_resolution: int, base_batch_size: int,
                 resolutions: Sequence[int] | None = None, shuffle: bool = True, seed: int = 0,
                 rank: int = 0, world_size: int = 1) -> None:
        if num_samples < 1 or base_batch_size < 1:
            raise RhoSearchError("the sampler needs at least one sample and a batch size >= 1")
        if not 0 <= rank < world_size:
            raise RhoSearchError(f"rank {rank} is outside world size {world_size}")
        self.num_samples = num_samples
        self.resolutions = tuple(resolutions or (base_resolution,))
        pixels = base_batch_size * base_resolution**2
        self.batch_sizes = {r: max(1, pixels // r**2) for r in self.resolutions}
        self.shuffle, self.seed, self.rank, self.world_size = shuffle, seed, rank, world_size
        self.shard_size = math.ceil(num_samples / world_size)
        self.epoch = 0
        # The last epoch's plan: `len()` is asked on every training step (the progress bar, the
        # last-step check) and a plan is a Python loop over every batch of the epoch.
        self._plans: dict[int, list[tuple[int, int]]] = {}

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def plan(self, epoch: int | None = None) -> list[tuple[int, int]]:
        """(resolution, batch size) of every batch of an epoch; the same on every rank."""
        epoch = self.epoch if epoch is None else epoch
        if epoch not in self._plans:
            self._plans = {epoch: self._make_plan(epoch)}  # one epoch kept: plans are long
        return self._plans[epoch]

    def _make_plan(self, epoch: int) -> list[tuple[int, int]]:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch * 2 + 1)
        picks = torch.randint(len(self.resolutions), (self.shard_size,), generator=generator)
        batches, seen = [], 0
        while seen < self.shard_size:
            resolution = self.resolutions[int(picks[len(batches)])]
            batches.append((resolution, self.batch_sizes[resolution]))
            seen += self.batch_sizes[resolution]
        return batches

    def shard(self, epoch: int | None = None) -> list[int]:
        """This rank's indices for an epoch, in order."""
        epoch = self.epoch if epoch is None else epoch
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch * 2)
            order = torch.randperm(self.num_samples, generator=generator).tolist()
        else:
            order = list(range(self.num_samples))
        padded = (order * math.ceil(self.shard_size * self.world_size / self.num_samples))
        return padded[: self.shard_size * self.world_size][self.rank :: self.world_size]

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        indices = self.shard()
        start = 0
        for resolution, batch_size in self.plan():
            batch = [indices[(start + i) % len(indices)] for i in range(batch_size)]
            start += batch_size
            yield [(index, resolution) for index in batch]

    def __len__(self) -> int:
        return len(self.plan())

    def mean_batches(self, epochs: int) -> float:
        """Average batches per epoch over `epochs` epochs (the LR schedule's steps per epoch)."""
        return sum(len(self.plan(e)) for e in range(epochs)) / epochs
