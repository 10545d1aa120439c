"""The head stage: every rho's own head trained on the cached block maps of frozen trunks.

    blocks = tapped_blocks(space)                                  # (2, 3, 4) for blocks 3-5
    train = cache_block_maps(trunk, train_loader, blocks)          # one eval pass, no grad
    val = cache_block_maps(trunk, val_loader, blocks)
    for config, head_seed, top1 in train_heads(configs, train, val, recipe=head_recipe,
                                               seed=0):
        ...

Why it works. rho changes only the head: the ExShortcuts (1x1 conv + BN + SiLU on blocks 3-5,
then global pooling) and the classifier reading them. The trunk (stem and blocks) is the same
network for every rho, so with the trunk frozen two configurations differ only in their heads:
their difference carries no trunk seed noise, and every comparison on one trunk is paired (same
trunk, same images in the same order, same validation images). It measures "given a trunk
trained as the baseline, what do this rho's shortcuts add", which is not joint training; how
well it ranks like joint training is measured by `benchmarks/fidelity.py --only head`.

The 1x1 conv must run on the maps (SiLU sits between it and the pooling), so what is cached is
each tapped block's output map, not pooled features. Per image, in float32:
sum over tapped blocks of C_k x H_k x W_k x 4 bytes. MobileViT-S at 32 px (the fashion-mnist
proxy): 96x4x4 + 128x2x2 + 160x1x1 = 2,208 floats = 8.6 KiB, so 4,000 + 2,000 images take
52 MiB. At ImageNet's 256 px: 96x32x32 + 128x16x16 + 160x8x8 = 141,312 floats = 552 KiB per
image, 706 GB for the 1.28 M training images (353 GB in bfloat16): that does not fit a driver,
so at that scale the stage would have to run on a subset or stream maps from disk (not built:
the cache lives in the memory of the process that runs the stage, the search driver).
Training images are cached through the evaluation transform (no augmentation: augmenting would
mean running the trunk again every epoch).

Batched heads. The heads of many configurations train in one pass (`HeadBank`): for each
tapped block the shortcuts of all heads are one 1x1 conv whose output channels are all heads'
channels side by side, followed by one BatchNorm and SiLU over those channels; BatchNorm is per
channel, so each head's channels are normalised exactly as in its own module. The pooled
channels are gathered per head into a zero-padded (heads, channels) layout and each head's
classifier is one batched matrix product. The loss is the sum of the heads' losses, so each
head's gradient is its own, and AdamW is elementwise: a bank trains each head as it would train
alone (`test_bank_matches_looped_heads`), up to floating-point order. Each head is initialised
as the model's head (`init_head_weights`) from a seed of its own (rho, head seed), so its
initial weights do not depend on which other heads share its pass.
"""

from __future__ import annotations

import json
import os
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F
from timm.layers import ConvNormAct
from torch import nn
from torch.utils.data import DataLoader

from rhosearch.core.model import ExMobileViT, init_head_weights
from rhosearch.core.space import RhoConfig, SearchSpace
from rhosearch.errors import RhoSearchError
from rhosearch.training.recipe import Recipe, learning_rate
from rhosearch.vocab import Stage

__all__ = [
    "HEADS_PER_PASS",
    "STAGE",
    "BlockMaps",
    "Head",
    "HeadBank",
    "HeadRun",
    "cache_block_maps",
    "check_trunk",
    "head_init_seed",
    "read_runs",
    "runs_text",
    "tapped_blocks",
    "train_heads",
    "train_heads_on_trunk",
]

STAGE = Stage.HEAD

# Heads per `HeadBank` pass. Measured on 2 quiet CPU cores (`benchmarks/head_stage.py --configs
# 48 --images 4000 --epochs 1 --heads-per-pass N`): 3, 6, 8, 48 per pass gave 5.1, 5.3, 5.2,
# 3.7 heads/s, and one head at a time 4.8-5.0: wide banks lose on a CPU (probably their
# activations outgrow the caches), narrow ones keep a little of the batching's gain.
HEADS_PER_PASS = 6


# --- what is tapped and cached ----------------------------------------------------------------


def tapped_blocks(space: SearchSpace | Sequence[RhoConfig]) -> tuple[int, ...]:
    """0-based blocks with a shortcut in some configuration: the maps the stage caches."""
    configs = list(space.configs()) if isinstance(space, SearchSpace) else list(space)
    return tuple(sorted({k for c in configs for k, ch in enumerate(c.shortcut_channels) if ch}))


def check_trunk(trunk: ExMobileViT, configs: Sequence[RhoConfig]) -> None:
    """Refuses configurations whose taps the trunk does not produce (another backbone, or a
    block beyond the trunk's depth), before anything runs."""
    produced = trunk.config.block_widths[: trunk.depth]
    for config in configs:
        taps = [k for k, ch in enumerate(config.shortcut_channels) if ch]
        if config.backbone != trunk.config.backbone or any(k >= len(produced) for k in taps):
            raise RhoSearchError(
                f"the space's {config.rho_text} on {config.backbone} taps blocks "
                f"{', '.join(str(k + 1) for k in taps)} that the {trunk.config.backbone} trunk "
                f"(blocks 1-{len(produced)}) does not produce; use a space of "
                f"{trunk.config.backbone}")


class BlockMaps(NamedTuple):
    """One image set's block maps from one trunk: `maps[i]` is block `blocks[i]`'s output
    (N, C, H, W), in the loader's order, and the labels (N,)."""

    blocks: tuple[int, ...]
    maps: tuple[torch.Tensor, ...]
    labels: torch.Tensor

    def bytes_per_image(self) -> int:
        return sum(m[0].numel() * m.element_size() for m in self.maps)


@torch.no_grad()
def cache_block_maps(trunk: ExMobileViT, loader: DataLoader,
                     blocks: Sequence[int]) -> BlockMaps:
    """Runs the frozen trunk once over `loader` (eval mode, no gradients) and keeps the outputs
    of `blocks`; the trunk's weights and training flag are left as they were."""
    was_training = trunk.training
    trunk.eval()
    device = next(trunk.parameters()).device
    last = max(blocks) + 1
    kept: list[list[torch.Tensor]] = [[] for _ in blocks]
    labels = []
    try:
        for images, targets in loader:
            x = trunk.stem(images.to(device))
            for k, stage in enumerate(trunk.stages[:last]):
                x = stage(x)
                if k in blocks:
                    kept[blocks.index(k)].append(x.float())
            labels.append(targets.to(device))
    finally:
        trunk.train(was_training)
    return BlockMaps(tuple(blocks), tuple(torch.cat(m) for m in kept), torch.cat(labels))


# --- one head, and many in one pass -----------------------------------------------------------


def head_init_seed(config: RhoConfig, head_seed: int) -> int:
    """The seed a configuration's head is initialised from: a function of (rho, head seed)
    alone, so a head starts the same looped, batched or resumed among other heads."""
    return zlib.crc32(f"{config.key}|{head_seed}".encode())


class Head(nn.Module):
    """One configuration's head on cached maps: its ExShortcuts, pooling and classifier, the
    same modules (and initialisation) as `ExMobileViT`'s."""

    def __init__(self, config: RhoConfig, blocks: Sequence[int], *, num_classes: int,
                 drop_rate: float = 0.0) -> None:
        super().__init__()
        self.config, self.blocks = config, tuple(blocks)
        channels = config.shortcut_channels
        self.shortcuts = nn.ModuleDict({
            str(k): ConvNormAct(config.block_widths[k], channels[k], 1, act_layer="silu")
            for k in self.blocks if channels[k]})
        self.head_drop = nn.Dropout(drop_rate)
        self.fc = nn.Linear(config.classifier_channels, num_classes)
        self.shortcuts.apply(init_head_weights)
        self.fc.apply(init_head_weights)

    @classmethod
    def from_model(cls, model: ExMobileViT, blocks: Sequence[int]) -> Head:
        """The head of a full model, its weights copied (for checking against the model)."""
        head = cls(model.config, blocks, num_classes=model.num_classes,
                   drop_rate=model.head_drop.p)
        for k, shortcut in head.shortcuts.items():
            shortcut.load_state_dict(model.shortcuts[int(k)].state_dict())
        head.fc.load_state_dict(model.fc.state_dict())
        return head

    def forward(self, maps: Sequence[torch.Tensor]) -> torch.Tensor:
        pooled = [F.adaptive_avg_pool2d(self.shortcuts[str(k)](x), 1).flatten(1)
                  for k, x in zip(self.blocks, maps, strict=True) if str(k) in self.shortcuts]
        return self.fc(self.head_drop(torch.cat(pooled, dim=1)))


class HeadBank(nn.Module):
    """Many heads as one module (see the module docstring): per tapped block, one 1x1 conv +
    BN + SiLU over all heads' channels; per head, its classifier over its own channels.

    `forward(maps)` gives logits (heads, N, classes).
    """

    def __init__(self, heads: Sequence[Head]) -> None:
        super().__init__()
        self.blocks = heads[0].blocks
        self.num_heads = len(heads)
        self.shortcuts = nn.ModuleDict()
        columns: list[list[int]] = [[] for _ in heads]
        start = 0
        for k in self.blocks:
            members = [h.shortcuts[str(k)] for h in heads if str(k) in h.shortcuts]
            if not members:
                continue
            width = sum(m.conv.out_channels for m in members)
            bank = ConvNormAct(members[0].conv.in_channels, width, 1, act_layer="silu")
            with torch.no_grad():
                bank.conv.weight.copy_(torch.cat([m.conv.weight for m in members]))
                for name in ("weight", "bias", "running_mean", "running_var"):
                    getattr(bank.bn, name).copy_(torch.cat([getattr(m.bn, name)
                                                            for m in members]))
            self.shortcuts[str(k)] = bank
            for h, head in enumerate(heads):  # each head's channels, in its classifier's order
                if str(k) in head.shortcuts:
                    channels = head.shortcuts[str(k)].conv.out_channels
                    columns[h] += range(start, start + channels)
                    start += channels
        widest = max(len(c) for c in columns)
        # Padding points at a zero column appended to the pooled features: its classifier
        # weights get zero gradient and stay zero.
        index = torch.full((len(heads), widest), start, dtype=torch.long)
        fc_weight = torch.zeros(len(heads), widest, heads[0].fc.out_features)
        for h, (head, cols) in enumerate(zip(heads, columns, strict=True)):
            index[h, : len(cols)] = torch.tensor(cols)
            fc_weight[h, : len(cols)] = head.fc.weight.detach().t()
        self.register_buffer("index", index)
        self.fc_weight = nn.Parameter(fc_weight)
        self.fc_bias = nn.Parameter(torch.stack([h.fc.bias.detach() for h in heads]))
        self.head_drop = nn.Dropout(heads[0].head_drop.p)

    def forward(self, maps: Sequence[torch.Tensor]) -> torch.Tensor:
        pooled = [F.adaptive_avg_pool2d(self.shortcuts[str(k)](x), 1).flatten(1)
                  for k, x in zip(self.blocks, maps, strict=True) if str(k) in self.shortcuts]
        features = torch.cat([*pooled, pooled[0].new_zeros(len(pooled[0]), 1)], dim=1)
        per_head = self.head_drop(features[:, self.index])  # (N, heads, widest)
        return torch.einsum("nhc,hck->hnk", per_head, self.fc_weight) + self.fc_bias[:, None]


# --- training on cached maps ------------------------------------------------------------------


def _batches(n: int, batch_size: int, generator: torch.Generator) -> list[torch.Tensor]:
    order = torch.randperm(n, generator=generator)
    return list(order.split(batch_size))


def image_order(n: int, recipe: Recipe, head_seed: int) -> list[list[torch.Tensor]]:
    """Every epoch's batches of image indices: a function of the head seed alone, so every
    configuration (and every trunk) trained with that seed sees the same images in the same
    order."""
    generator = torch.Generator().manual_seed(head_seed)
    return [_batches(n, recipe.batch_size, generator) for _ in range(recipe.epochs)]


def fit_heads(model: Head | HeadBank, train: BlockMaps, recipe: Recipe, head_seed: int,
              *, on_batch: Callable[[torch.Tensor], None] | None = None) -> None:
    """Trains `model` (one head or a bank) on the cached maps: AdamW, the recipe's warm-up
    cosine schedule, label smoothing; one step per batch of `image_order`."""
    epochs = image_order(len(train.labels), recipe, head_seed)
    total = sum(len(e) for e in epochs)
    optimizer = torch.optim.AdamW(model.parameters(), lr=recipe.lr_peak,
                                  weight_decay=recipe.weight_decay)
    model.train()
    step = 0
    for batches in epochs:
        for batch in batches:
            if on_batch is not None:
                on_batch(batch)
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(step, total, recipe)
            index = batch.to(train.labels.device)
            logits = model([m[index] for m in train.maps])
            labels = train.labels[index]
            if logits.ndim == 2:
                logits = logits[None]
            # The sum over heads: each head's gradient is that of its own mean loss.
            loss = sum(F.cross_entropy(h, labels, label_smoothing=recipe.label_smoothing)
                       for h in logits)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1


@torch.no_grad()
def head_top1(model: Head | HeadBank, val: BlockMaps, *, batch_size: int = 1000) -> list[float]:
    """Top-1 (%) of each head on the validation maps (eval mode: running statistics)."""
    model.eval()
    correct = None
    for start in range(0, len(val.labels), batch_size):
        logits = model([m[start:start + batch_size] for m in val.maps])
        if logits.ndim == 2:
            logits = logits[None]
        hits = (logits.argmax(2) == val.labels[start:start + batch_size]).sum(1).double()
        correct = hits if correct is None else correct + hits
    return (100.0 * correct / len(val.labels)).tolist()


def train_heads(
    configs: Sequence[RhoConfig], train: BlockMaps, val: BlockMaps, *, recipe: Recipe,
    seed: int, num_classes: int, batched: bool = True, heads_per_pass: int = HEADS_PER_PASS,
) -> Iterator[tuple[list[RhoConfig], list[float]]]:
    """Trains every configuration's head with head seed `seed`; yields (configs, top-1 %) after
    each pass (`heads_per_pass` heads in one `HeadBank`, or one `Head` at a time when not
    `batched`), so a caller can record them as they finish."""
    size = heads_per_pass if batched else 1
    for start in range(0, len(configs), size):
        group = list(configs[start:start + size])
        heads = []
        for config in group:
            torch.manual_seed(head_init_seed(config, seed))
            heads.append(Head(config, train.blocks, num_classes=num_classes,
                              drop_rate=recipe.drop_rate))
        model = HeadBank(heads) if batched else heads[0]
        model.to(train.labels.device)
        # Dropout masks (the only randomness left in a pass) from the seed and the pass.
        torch.manual_seed(head_init_seed(group[0], seed) + 1)
        fit_heads(model, train, recipe, seed)
        yield group, head_top1(model, val)


# --- the stage over trunks, resumable ---------------------------------------------------------


@dataclass(frozen=True)
class HeadRun:
    """One trained head: configuration `rho` on trunk `trunk` with head seed `head_seed`."""

    trunk: int
    head_seed: int
    rho: str
    top1: float
    n_val: int

    @property
    def key(self) -> tuple[int, int, str]:
        return (self.trunk, self.head_seed, self.rho)


def read_runs(path: Path) -> list[HeadRun]:
    """The heads recorded in `path` (JSON lines). A line cut short by a kill is skipped: its
    heads are trained again."""
    runs = []
    if not path.is_file():
        return runs
    for line in path.read_text().splitlines():
        try:
            runs.append(HeadRun(**json.loads(line)))
        except (ValueError, TypeError):
            continue
    return runs


def runs_text(runs: Sequence[HeadRun]) -> str:
    """`runs` as the JSON lines `read_runs` reads."""
    return "".join(json.dumps(r.__dict__) + "\n" for r in runs)


def _append(path: Path, runs: Sequence[HeadRun]) -> None:
    text = runs_text(runs)
    with path.open("a") as file:
        file.write(text)
        file.flush()
        os.fsync(file.fileno())


def train_heads_on_trunk(
    trunk_id: int, trunk: ExMobileViT, configs: Sequence[RhoConfig], *, train: DataLoader,
    val: DataLoader, recipe: Recipe, head_seeds: Sequence[int], runs_path: Path,
    batched: bool = True, heads_per_pass: int = HEADS_PER_PASS,
    log: Callable[[str], None] | None = None,
    on_pass: Callable[[list[HeadRun]], None] | None = None,
) -> list[HeadRun]:
    """Caches `trunk`'s maps of `train` and `val` and trains every configuration's head with
    every head seed, appending each pass's heads to `runs_path` as it finishes (then calling
    `on_pass` with them: a Ray task pushes the file to its job store there); heads already
    recorded there are not trained again. Returns the new runs."""
    check_trunk(trunk, configs)
    done = {r.key for r in read_runs(runs_path)}
    todo = {seed: [c for c in configs if (trunk_id, seed, c.rho_text) not in done]
            for seed in head_seeds}
    if not any(todo.values()):
        return []
    started = time.perf_counter()
    blocks = tapped_blocks(configs)
    train_maps = cache_block_maps(trunk, train, blocks)
    val_maps = cache_block_maps(trunk, val, blocks)
    if log is not None:
        log(f"head: trunk {trunk_id}: cached {len(train_maps.labels)} + {len(val_maps.labels)} "
            f"images' block maps ({train_maps.bytes_per_image() / 1024:.1f} KiB per image) in "
            f"{time.perf_counter() - started:.1f}s")
    new, total = [], sum(len(missing) for missing in todo.values())
    for seed, missing in todo.items():
        for group, top1 in train_heads(missing, train_maps, val_maps, recipe=recipe, seed=seed,
                                       num_classes=trunk.num_classes, batched=batched,
                                       heads_per_pass=heads_per_pass):
            runs = [HeadRun(trunk_id, seed, c.rho_text, round(t, 4), len(val_maps.labels))
                    for c, t in zip(group, top1, strict=True)]
            _append(runs_path, runs)
            if on_pass is not None:
                on_pass(runs)
            new += runs
            # A line per 48 heads or so: the bank's passes are the stage's long silence otherwise.
            if log is not None and (len(new) % 48 < len(runs) or len(new) == total):
                log(f"head: trunk {trunk_id}: {len(new)}/{total} heads trained, "
                    f"{time.perf_counter() - started:.0f} s so far")
    if log is not None:
        log(f"head: trunk {trunk_id}: {len(new)} heads in {time.perf_counter() - started:.1f}s")
    return new

