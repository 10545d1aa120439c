"""The one-shot stage: train the rho supernet once, score the whole space, hand its front on.

    supernet, result = train_supernet(space, data="digits", recipe=load_recipe("proxy"),
                                      out_dir=Path("runs/supernet"))
    scores = score_space(supernet, val_loader, list(space.configs()))    # one row per config
    scores = score_supernet(space, data="digits", recipe=recipe, out_dir=..., seed=0)
    front = pareto_front(scores.assign(stage=Stage.ONESHOT, state="COMPLETE"),
                         stage=Stage.ONESHOT)

Training is the sandwich rule with in-place distillation (BigNAS / OFA): every step trains the
largest configuration (label-smoothed CE), the smallest and two random ones (soft cross-entropy
against the largest's detached soft labels), and sums the four losses before one optimizer step.

Why one forward serves all four configurations, and why scoring needs no BN recalibration:

* The backbone (stem + blocks) does not depend on rho; a configuration whose last shortcut is
  earlier simply does not read the later blocks.
* Output channel j of shortcut k is conv row j, then BatchNorm channel j, then SiLU and pooling.
  BatchNorm is per channel: in training it normalises channel j by channel j's own batch mean
  and variance, in evaluation by channel j's own running statistics. So channel j's value is the
  same whichever other channels a configuration keeps (`test_bn_channel_is_width_independent`).
* Hence a configuration's classifier input is a gather of the widest configuration's pooled
  features, in training and in evaluation alike: a step computes the widest features once and
  each configuration applies the classifier to its columns. Gradients equal those of four
  separate forwards (`test_shared_forward_matches_separate_forwards`). The running statistics
  are updated once per step by the widest configuration, which holds every channel: each
  channel's statistics are the same EMA of its own batch statistics a standalone model keeps.
  Nothing else in the supernet depends on rho, so nothing needs recalibrating.

Scoring follows from the same argument: the widest pooled features of the validation set are
computed once (N x sum of widths) and every configuration is the classifier restricted to its
channels, evaluated for many configurations at once from per-block prefix sums (`score_features`).

Just over ~400 lines: the sandwich step, supernet training through `train.fit`, and scoring
the whole space from cached features are one stage; each part is a screen or less.
"""

from __future__ import annotations

import dataclasses
import random
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from timm.utils import ModelEmaV3
from torch.utils.data import DataLoader

from rhosearch.core.cost import CostModel
from rhosearch.core.model import RhoSupernet
from rhosearch.core.space import RhoConfig, SearchSpace
from rhosearch.errors import RhoSearchError
from rhosearch.training.checkpoint import CHECKPOINT, write_atomic
from rhosearch.training.train import Recipe, Run, fit, make_loaders, pick_device, seed_everything
from rhosearch.vocab import RunFile, Stage, Status

__all__ = [
    "STAGE",
    "SandwichStep",
    "config_logits",
    "largest_config",
    "sandwich_configs",
    "sandwich_step",
    "score_features",
    "score_space",
    "score_supernet",
    "smallest_config",
    "train_supernet",
    "widest_features",
]

STAGE = Stage.ONESHOT
RANDOM_PER_STEP = 2


# --- which configurations a step trains --------------------------------------------------------


def largest_config(space: SearchSpace) -> RhoConfig:
    """The widest choice of every block: the supernet itself."""
    return space.widest


def smallest_config(space: SearchSpace, cost: CostModel) -> RhoConfig:
    """The valid configuration with the fewest classifier channels (ties: fewest params)."""
    return min(space.configs(), key=lambda c: (c.classifier_channels, cost.params(c)))


def sandwich_configs(
    largest: RhoConfig, smallest: RhoConfig, configs: Sequence[RhoConfig], rng: random.Random
) -> list[RhoConfig]:
    """One step's configurations: largest first (the teacher), smallest, then random ones."""
    return [largest, smallest, *(rng.choice(configs) for _ in range(RANDOM_PER_STEP))]


# --- one sandwich step ------------------------------------------------------------------------


def _columns(supernet: RhoSupernet, config: RhoConfig, device: torch.device) -> torch.Tensor:
    return supernet.classifier_index(config).to(device)


def sandwich_step(
    supernet: RhoSupernet, images: torch.Tensor, labels: torch.Tensor,
    optimizer: torch.optim.Optimizer, configs: Sequence[RhoConfig], *, label_smoothing: float,
    grad_clip: float | None = None,
) -> tuple[float, float]:
    """One optimizer step over `configs` (the first is the teacher); returns (the summed loss,
    the teacher's correct predictions). The scheduler is the caller's to step."""
    # bfloat16 autocast on CUDA, as `train.train_step` does for one configuration.
    with torch.autocast(images.device.type, dtype=torch.bfloat16,
                        enabled=images.device.type == "cuda"):
        # One backbone + widest-shortcut forward serves every configuration (module docstring).
        features = supernet.forward_widest_features(images, supernet.config)
        total = features.new_zeros((), dtype=torch.float32)
        teacher = None
        correct = 0.0
        for config in configs:
            columns = _columns(supernet, config, features.device)
            logits = F.linear(supernet.head_drop(features[:, columns]),
                              supernet.fc.weight[:, columns], supernet.fc.bias).float()
            if teacher is None:
                total = total + F.cross_entropy(logits, labels, label_smoothing=label_smoothing)
                teacher = logits.detach().softmax(dim=1)
                correct = float((logits.argmax(1) == labels).sum())
            else:
                total = total - (teacher * logits.log_softmax(dim=1)).sum(dim=1).mean()
    optimizer.zero_grad(set_to_none=True)
    total.backward()
    if grad_clip:
        torch.nn.utils.clip_grad_norm_(supernet.parameters(), grad_clip)
    optimizer.step()
    return float(total.detach()), correct


class SandwichStep:
    """The supernet's `train.Step`: each batch trains the largest, the smallest and
    `RANDOM_PER_STEP` random configurations, drawn from the step's own random stream (which the
    checkpoint keeps, so a resumed run draws the same ones)."""

    def __init__(self, largest: RhoConfig, smallest: RhoConfig, configs: Sequence[RhoConfig],
                 *, seed: int) -> None:
        self.largest, self.smallest, self.configs = largest, smallest, list(configs)
        self.rng = random.Random(seed)

    def __call__(self, supernet: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor,
                 optimizer: torch.optim.Optimizer, recipe: Recipe) -> tuple[float, float]:
        configs = sandwich_configs(self.largest, self.smallest, self.configs, self.rng)
        return sandwich_step(supernet, images, labels, optimizer, configs,
                             label_smoothing=recipe.label_smoothing, grad_clip=recipe.grad_clip)

    def state_dict(self) -> dict[str, Any]:
        return {"rng": self.rng.getstate()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        version, internal, gauss = state["rng"]
        self.rng.setstate((version, tuple(internal), gauss))


# --- scoring ----------------------------------------------------------------------------------


def _device_of(module: torch.nn.Module) -> torch.device:
    return next(module.parameters()).device


@torch.no_grad()
def widest_features(
    supernet: RhoSupernet, loader: DataLoader
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pooled shortcut features of the widest configuration (eval mode) and the labels."""
    device = _device_of(supernet)
    was_training = supernet.training
    supernet.eval()
    largest = supernet.config  # the widest configuration
    features, labels = [], []
    for images, targets in loader:
        features.append(supernet.forward_widest_features(images.to(device), largest).float())
        labels.append(targets.to(device))
    supernet.train(was_training)
    return torch.cat(features), torch.cat(labels)


# Scoring relies on the width independence argued in the module docstring: in eval mode a
# configuration's classifier input is the widest pooled features restricted to its channels,
# which are a prefix of each shortcut's channels. Its logits are therefore
#     bias + sum over blocks k of  sum_{j < c_k} feature[k, j] * fc.weight[:, k, j],
# and a table of per-block prefix sums of feature x weight (rows: sum(widths + 1), each row an
# N x classes matrix) turns every configuration into the sum of one table row per block: a
# batched row-gather-and-add over many configurations at once, N x blocks x classes operations
# per configuration instead of the N x channels x classes of its classifier product. Images are
# taken in chunks so the table stays small on large validation sets with many classes.

_TABLE_ELEMENTS = 1 << 24  # floats in one chunk's prefix table (64 MiB)
_LOGIT_ELEMENTS = 1 << 20  # floats of logits per gather (4 MiB: stays in cache between passes)


def _prefix_index(supernet: RhoSupernet, configs: Sequence[RhoConfig]) -> torch.Tensor:
    """(configs, blocks): each configuration's row of the prefix table in every block."""
    # Block k's rows start at its classifier offset + k (each block has width + 1 rows); row
    # `start + c` holds the sum over the block's first c channels.
    starts = [offset + k for k, offset in enumerate(supernet.config.block_offsets)]
    return torch.tensor([[s + c for s, c in zip(starts, config.shortcut_channels, strict=True)]
                         for config in configs], dtype=torch.long)


def _prefix_table(supernet: RhoSupernet, features: torch.Tensor) -> torch.Tensor:
    """(sum(widths + 1), N, classes): per block, cumulative feature x classifier-column sums."""
    weight = supernet.fc.weight.detach().float().t()  # (in, classes)
    parts, start = [], 0
    for width in supernet.widths:
        block = features.t()[start:start + width, :, None] * weight[start:start + width, None]
        parts.append(F.pad(block.cumsum(dim=0), (0, 0, 0, 0, 1, 0)))  # a zero row: 0 channels
        start += width
    return torch.cat(parts).contiguous()


def _gathered_logits(table: torch.Tensor, index: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """(configs, N, classes): one table row per block, added (contiguous row copies)."""
    logits = table.index_select(0, index[:, 0])
    for block in range(1, index.shape[1]):
        logits += table.index_select(0, index[:, block])
    return logits + bias


@torch.no_grad()
def config_logits(
    supernet: RhoSupernet, features: torch.Tensor, configs: Sequence[RhoConfig]
) -> torch.Tensor:
    """Logits (configs, N, classes) of every configuration from the widest features."""
    index = _prefix_index(supernet, configs).to(features.device)
    table = _prefix_table(supernet, features.float())
    return _gathered_logits(table, index, supernet.fc.bias.detach().float())


@torch.no_grad()
def score_features(
    supernet: RhoSupernet, features: torch.Tensor, labels: torch.Tensor,
    configs: Sequence[RhoConfig],
) -> tuple[np.ndarray, np.ndarray]:
    """Top-1 and top-5 accuracy (%) of each configuration (top-k when k < 5 classes).

    An image counts as top-k when fewer than k classes score strictly above its label (an exact
    tie with the label counts in the label's favour).
    """
    threads = torch.get_num_threads()
    if features.device.type == "cpu":
        # The gather-adds are small and memory-bound: one thread per op scored ~20,000
        # configurations/s on the 2-core machine under load, two threads 1,000-4,000/s.
        torch.set_num_threads(1)
    try:
        return _score_chunks(supernet, features, labels, configs)
    finally:
        torch.set_num_threads(threads)


def _score_chunks(
    supernet: RhoSupernet, features: torch.Tensor, labels: torch.Tensor,
    configs: Sequence[RhoConfig],
) -> tuple[np.ndarray, np.ndarray]:
    device = features.device
    index = _prefix_index(supernet, configs).to(device)
    bias = supernet.fc.bias.detach().float()
    classes = supernet.fc.out_features
    k = min(5, classes)
    correct1 = torch.zeros(len(configs), device=device)
    correct5 = torch.zeros(len(configs), device=device)
    images = max(1, _TABLE_ELEMENTS // (int(index.max()) + 1) // classes)
    for first in range(0, len(features), images):
        table = _prefix_table(supernet, features[first:first + images].float())
        targets = labels[first:first + images]
        step = max(1, _LOGIT_ELEMENTS // (table.shape[1] * classes))
        for start in range(0, len(configs), step):
            logits = _gathered_logits(table, index[start:start + step], bias)  # (c, n, K)
            label_logit = logits.gather(2, targets[None, :, None].expand(len(logits), -1, 1))
            above = (logits > label_logit).sum(dim=2)  # (c, n): classes beating the label
            correct1[start:start + step] += (above == 0).sum(dim=1)
            correct5[start:start + step] += (above < k).sum(dim=1)
    scale = 100.0 / max(1, len(features))
    return ((scale * correct1).cpu().numpy().astype(float),
            (scale * correct5).cpu().numpy().astype(float))


def score_space(
    supernet: RhoSupernet, val_loader: DataLoader, configs: Sequence[RhoConfig]
) -> pd.DataFrame:
    """One row per configuration: its identity and one-shot top-1 / top-5 (%) on `val_loader`."""
    configs = list(configs)
    features, labels = widest_features(supernet, val_loader)
    top1, top5 = score_features(supernet, features, labels, configs)
    rows = [{**config.as_dict(), "rho": config.rho_text} for config in configs]
    frame = pd.DataFrame(rows)
    frame["top1"], frame["top5"] = top1, top5
    return frame


# --- training the supernet --------------------------------------------------------------------


def _identity(space: SearchSpace, data: str, recipe: Recipe, seed: int) -> dict[str, Any]:
    return {"stage": str(STAGE), "backbone": space.backbone,  # torch's safe loader: no enums
            "choices": [[str(r) for r in c] for c in space.choices],
            "data": data, "recipe": dataclasses.asdict(recipe), "seed": seed}


def _log(enabled: bool, text: str) -> None:
    if enabled:
        print(text, file=sys.stderr, flush=True)


def train_supernet(
    space: SearchSpace, *, data: str = "digits", recipe: Recipe, out_dir: Path | str,
    seed: int = 0, resume: bool = False, on_epoch: Callable[[dict[str, Any]], None] | None = None,
    progress: bool = True, data_root: Path | None = None, device: str | None = None,
    validate: bool = True, on_batch: Callable[[int, int, int], None] | None = None,
) -> tuple[RhoSupernet, dict[str, Any]]:
    """Trains the supernet of `space` with the sandwich rule and in-place distillation, through
    `train.fit` (so resume, EMA, checkpoints and metrics are a single run's).

    Args:
        space: the search space; the supernet has each block's widest shortcut.
        data: data set name (see `rhosearch.training.data`).
        recipe: optimizer, schedule, epochs, resolution, EMA (as for one configuration).
        out_dir: gets `checkpoint.pt` (every epoch, atomically), `metrics.jsonl`, `result.json`.
        seed: weights, data order and the random configurations.
        resume: continue from `out_dir/checkpoint.pt` if there is one (a finished run is loaded).
        on_epoch: called with each epoch's metrics.
        progress: one line per epoch on stderr.
        data_root: where CIFAR lives.
        device: default CUDA when available.
        validate: score the largest and smallest configurations on the validation set after
            each epoch the recipe validates (`top1_largest`, `top1_smallest` in its metrics).
        on_batch: called with (epoch, batches done, batches in the epoch) after each step.

    Returns:
        The trained supernet (its EMA copy when the recipe has EMA) and the run's result; its
        `epochs_done` counts an epoch that diverged.
    """
    device = pick_device(device)
    loaders = make_loaders(data, recipe, root=data_root, seed=seed)
    configs = list(space.configs())
    largest = largest_config(space)
    # Before seeding: the cost model's first use builds a model, which draws random numbers.
    smallest = smallest_config(space, CostModel(space.backbone, resolution=recipe.resolution,
                                                num_classes=loaders.num_classes))
    seed_everything(seed)
    step = SandwichStep(largest, smallest, configs, seed=seed)
    supernet = RhoSupernet(space, num_classes=loaders.num_classes, drop_rate=recipe.drop_rate)
    supernet.to(device)

    def score(model: torch.nn.Module, ema: ModelEmaV3 | None) -> dict[str, float]:
        if not validate:
            return {}
        scored = ema.module if ema is not None else model
        features, labels = widest_features(scored, loaders.val)
        top1, _ = score_features(scored, features, labels, [largest, smallest])
        return dict(top1_largest=float(top1[0]), top1_smallest=float(top1[1]))

    def report(metrics: dict[str, Any]) -> None:
        # Only an epoch `recipe.validates` has scores (the proxy recipes: the last one alone).
        scores = (f"  top1 largest {metrics['top1_largest']:.1f}%  smallest "
                  f"{metrics['top1_smallest']:.1f}%" if "top1_largest" in metrics else "")
        _log(progress, f"supernet epoch {metrics['epoch']}/{recipe.epochs}: loss "
                       f"{metrics['loss']:.3f}{scores}  {metrics['epoch_s']:.1f}s")
        if on_epoch is not None:
            on_epoch(metrics)

    def summarize(run: Run) -> dict[str, Any]:
        last = run.history[-1] if run.history else {}
        return {"status": run.status, "epochs_done": len(run.history), "steps": run.steps,
                "wall_s": round(run.wall_s, 2), "largest": largest.rho_text,
                "smallest": smallest.rho_text, "configs": len(configs),
                **{k: last[k] for k in ("loss", "top1_largest", "top1_smallest") if k in last}}

    run = fit(supernet, loaders, recipe, out_dir, identity=_identity(space, data, recipe, seed),
              device=device, step=step, validate=score, summarize=summarize, resume=resume,
              on_epoch=report, progress=False, on_batch=on_batch)
    model = run.ema.module if run.ema is not None else supernet
    return model.eval(), run.result


# --- the stage: train, score, record ----------------------------------------------------------


def _price(scores: pd.DataFrame, configs: Sequence[RhoConfig], cost: CostModel) -> pd.DataFrame:
    prices = [cost.price(config) for config in configs]
    scores = scores.copy()
    scores["params"] = [p.params for p in prices]
    scores["overhead_params"] = [p.overhead_params for p in prices]
    scores["overhead_pct"] = [round(p.overhead_pct, 3) for p in prices]
    scores["gmacs"] = [round(p.gmacs, 4) for p in prices]
    return scores


def score_supernet(
    space: SearchSpace, *, data: str, recipe: Recipe, out_dir: Path | str, seed: int,
    data_root: Path | None = None, progress: bool = True,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
    on_batch: Callable[[int, int, int], None] | None = None,
) -> pd.DataFrame:
    """Trains the supernet in `out_dir` (resuming its checkpoint), scores every configuration
    of the space on the validation set and writes `out_dir/scores.csv`; returns the scores.

    Costs are priced like the proxy stage's (`vocab.PRICED`).
    """
    out_dir = Path(out_dir)
    supernet, result = train_supernet(space, data=data, recipe=recipe, out_dir=out_dir,
                                      seed=seed, resume=True, progress=progress,
                                      data_root=data_root, on_epoch=on_epoch,
                                      on_batch=on_batch)
    if result["status"] != Status.OK:
        raise RhoSearchError(
            f"supernet training {result['status']} after {result['epochs_done']} epochs "
            f"(see {out_dir / 'metrics.jsonl'}); lower lr_peak or set grad_clip, and delete "
            f"{out_dir / CHECKPOINT} to start over"
        )
    loaders = make_loaders(data, recipe, root=data_root, seed=seed)
    configs = list(space.configs())
    scores = _price(score_space(supernet, loaders.val, configs), configs,
                    CostModel(space.backbone))  # at the pricing point
    # Atomic: a resume trusts a scores.csv with a row per configuration, so a half-written
    # one (a crash, a full disk) must never exist.
    write_atomic(out_dir / RunFile.SCORES, scores.to_csv(index=False))
    return scores
