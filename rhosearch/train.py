"""Train one ExMobileViT configuration with the paper's recipe, resumably.

    from rhosearch.train import load_recipe, train_config
    result = train_config(parse_rho("4/3,5/4,4"), data="digits", recipe=load_recipe("proxy"),
                          out_dir=Path("runs/x"))                 # or: rhosearch train ...

Read top to bottom: the recipe (data, in `recipes.yaml`), the building blocks the supernet
trainer reuses (optimizer, warm-up cosine schedule, loaders, evaluation), one epoch, atomic
checkpoints, and `train_config`, which ties them together. A run writes to `out_dir`:
`metrics.jsonl` (one line per epoch), `checkpoint.pt` (everything needed to resume: model, EMA,
optimizer, scheduler, epoch, RNG states) and `result.json`. Accuracies are percentages.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, get_type_hints

import numpy as np
import torch
import torch.nn.functional as F
import yaml
from timm.utils import ModelEmaV3
from torch.utils.data import DataLoader

from rhosearch.cost import CostModel
from rhosearch.data import (
    VariableBatchSampler,
    build_datasets,
    dataset_info,
    mss_resolutions,
    worker_count,
)
from rhosearch.errors import RhoSearchError
from rhosearch.model import create_model
from rhosearch.space import RhoConfig

__all__ = [
    "RECIPES_PATH",
    "Loaders",
    "Recipe",
    "build_optimizer",
    "build_scheduler",
    "evaluate",
    "learning_rate",
    "load_recipe",
    "make_loaders",
    "train_config",
    "train_one_epoch",
]

RECIPES_PATH = Path(__file__).resolve().parent / "recipes.yaml"
CHECKPOINT = "checkpoint.pt"


# --- the recipe -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Recipe:
    """How to train: the paper's values by default (see `recipes.yaml` for each field's why)."""

    name: str = "full"
    description: str = ""
    epochs: int = 300
    resolution: int = 256
    batch_size: int = 128
    lr_start: float = 2e-4
    lr_peak: float = 2e-3
    lr_end: float = 2e-4
    warmup_iters: int = 3000
    warmup_fraction: float | None = None
    weight_decay: float = 0.01
    label_smoothing: float = 0.1
    drop_rate: float = 0.1
    mss: bool = True
    mss_scales: tuple[float, ...] = (0.625, 0.75, 1.0, 1.125, 1.25)
    ema: bool = True
    ema_decay: float = 0.9995
    crop_scale: tuple[float, ...] = (0.08, 1.0)
    hflip: float = 0.5
    crop_pct: float = 0.9
    subset: int | None = None
    val_subset: int | None = None
    workers: int = 8
    grad_clip: float | None = None

    def warmup_steps(self, total_steps: int) -> int:
        cap = self.warmup_fraction * total_steps if self.warmup_fraction else math.inf
        return max(1, round(min(self.warmup_iters, cap)))


def _coerce(key: str, value: Any, hint: Any) -> Any:
    """`value` as the field's type; text (from `--set key=value`) is read as YAML first."""
    args = getattr(hint, "__args__", ())
    optional = type(None) in args and hint is not tuple
    base = next(t for t in args if t is not type(None)) if optional else hint
    if isinstance(value, str) and base is not str:
        try:
            value = yaml.safe_load(value)
        except yaml.YAMLError:
            pass
    if value is None:
        if optional:
            return None
        raise RhoSearchError(f"recipe key {key!r} cannot be empty")
    try:
        if base is bool or isinstance(value, bool):
            if base is bool and isinstance(value, bool):
                return value
            raise ValueError
        if base is int:
            if float(value) != int(value):
                raise ValueError
            return int(value)
        if base in (float, str):
            return base(value)
        if isinstance(value, str):  # tuple[float, ...] written as `0.5,1.0`
            value = value.split(",")
        return tuple(float(v) for v in value)
    except (TypeError, ValueError):
        kind = getattr(base, "__name__", "list of numbers")
        raise RhoSearchError(f"recipe key {key!r}: {value!r} is not a valid {kind}") from None


def _check_ranges(recipe: Recipe) -> None:
    rules = {
        "epochs": recipe.epochs >= 1,
        "resolution": recipe.resolution >= 16,
        "batch_size": recipe.batch_size >= 1,
        "lr_start": recipe.lr_start >= 0,
        "lr_peak": recipe.lr_peak > 0,
        "lr_end": recipe.lr_end >= 0,
        "warmup_iters": recipe.warmup_iters >= 0,
        "warmup_fraction": recipe.warmup_fraction is None or 0 < recipe.warmup_fraction <= 1,
        "weight_decay": recipe.weight_decay >= 0,
        "label_smoothing": 0 <= recipe.label_smoothing < 1,
        "drop_rate": 0 <= recipe.drop_rate < 1,
        "mss_scales": bool(recipe.mss_scales) and min(recipe.mss_scales) > 0,
        "ema_decay": 0 <= recipe.ema_decay < 1,
        "crop_scale": len(recipe.crop_scale) == 2
        and 0 < recipe.crop_scale[0] <= recipe.crop_scale[1] <= 1,
        "hflip": 0 <= recipe.hflip <= 1,
        "crop_pct": 0 < recipe.crop_pct <= 1,
        "subset": recipe.subset is None or recipe.subset >= 1,
        "val_subset": recipe.val_subset is None or recipe.val_subset >= 1,
        "workers": recipe.workers >= 0,
        "grad_clip": recipe.grad_clip is None or recipe.grad_clip > 0,
    }
    for key, ok in rules.items():
        if not ok:
            raise RhoSearchError(f"recipe key {key!r}: {getattr(recipe, key)!r} is out of range")


def _read_recipes(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise RhoSearchError(f"cannot read recipe file {path}: {exc.strerror}") from None
    except yaml.YAMLError:
        raise RhoSearchError(f"{path} is not valid YAML; fix its syntax") from None
    if not isinstance(data, dict):
        raise RhoSearchError(f"{path}: expected a mapping of recipe fields or of named recipes")
    return data


def load_recipe(name_or_path: str | Path, overrides: dict[str, Any] | None = None) -> Recipe:
    """A recipe by name from `recipes.yaml`, or from a YAML file, with fields overridden.

    A file holds either one recipe (its fields at the top level) or named recipes; a file of
    named recipes must hold exactly one. Unknown keys and bad values raise RhoSearchError.
    """
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml"):
        data = _read_recipes(path)
        if all(isinstance(v, dict) for v in data.values()):
            if len(data) != 1:
                raise RhoSearchError(f"{path} holds recipes {', '.join(data)}; keep one per file")
            name, fields = next(iter(data.items()))
        else:
            name, fields = path.stem, data
    else:
        recipes = _read_recipes(RECIPES_PATH)
        if str(name_or_path) not in recipes:
            raise RhoSearchError(
                f"unknown recipe {str(name_or_path)!r}; choose one of: {', '.join(recipes)} "
                "or give a path to a .yaml file"
            )
        name, fields = str(name_or_path), recipes[str(name_or_path)]
    hints = get_type_hints(Recipe)
    values = {"name": name, **fields, **(overrides or {})}
    unknown = sorted(set(values) - set(hints))
    if unknown:
        raise RhoSearchError(f"unknown recipe key {unknown[0]!r}; known keys: {', '.join(hints)}")
    recipe = Recipe(**{k: _coerce(k, v, hints[k]) for k, v in values.items()})
    _check_ranges(recipe)
    return recipe


# --- building blocks (also used by the supernet trainer) ---------------------------------------


def build_optimizer(model: torch.nn.Module, recipe: Recipe) -> torch.optim.Optimizer:
    """AdamW with the paper's weight decay on every parameter, at the peak LR (the schedule
    multiplies it)."""
    return torch.optim.AdamW(model.parameters(), lr=recipe.lr_peak,
                             weight_decay=recipe.weight_decay)


def learning_rate(step: int, total_steps: int, recipe: Recipe) -> float:
    """Linear warm-up lr_start -> lr_peak, then cosine lr_peak -> lr_end at `total_steps`."""
    warmup = recipe.warmup_steps(total_steps)
    if step < warmup:
        return recipe.lr_start + (recipe.lr_peak - recipe.lr_start) * step / warmup
    progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
    cosine = 0.5 * (1 + math.cos(math.pi * progress))
    return recipe.lr_end + (recipe.lr_peak - recipe.lr_end) * cosine


def build_scheduler(
    optimizer: torch.optim.Optimizer, recipe: Recipe, steps_per_epoch: float
) -> torch.optim.lr_scheduler.LambdaLR:
    """The warm-up cosine schedule, stepped once per iteration. `steps_per_epoch` may be a
    mean: with MSS the number of batches varies from epoch to epoch."""
    total = max(1, round(recipe.epochs * steps_per_epoch))
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: learning_rate(step, total, recipe) / recipe.lr_peak
    )


class Loaders(NamedTuple):
    train: DataLoader
    val: DataLoader
    sampler: VariableBatchSampler
    num_classes: int


def make_loaders(
    data: str, recipe: Recipe, *, root: Path | None = None, download: bool = False,
    seed: int = 0, rank: int = 0, world_size: int = 1, pin_memory: bool = False,
) -> Loaders:
    """Training loader (multi-scale when `recipe.mss`, sharded by rank) and validation loader."""
    train_set, val_set = build_datasets(
        data, resolution=recipe.resolution, root=root, download=download, subset=recipe.subset,
        val_subset=recipe.val_subset,
        seed=seed, crop_scale=recipe.crop_scale, hflip=recipe.hflip, crop_pct=recipe.crop_pct,
    )
    resolutions = mss_resolutions(recipe.resolution, recipe.mss_scales) if recipe.mss else None
    sampler = VariableBatchSampler(
        len(train_set), base_resolution=recipe.resolution, base_batch_size=recipe.batch_size,
        resolutions=resolutions, seed=seed, rank=rank, world_size=world_size,
    )
    workers = worker_count(recipe.workers)
    common = dict(num_workers=workers, pin_memory=pin_memory, persistent_workers=workers > 0)
    train = DataLoader(train_set, batch_sampler=sampler, **common)
    val = DataLoader(val_set, batch_size=2 * recipe.batch_size, shuffle=False, **common)
    return Loaders(train, val, sampler, dataset_info(data, root))


def _batches(loader: DataLoader):
    """Iterates `loader`; a RhoSearchError from a worker process (which DataLoader re-raises
    with the worker's traceback as its message) comes back as its one line."""
    try:
        yield from loader
    except RhoSearchError as exc:
        line = str(exc).strip().splitlines()[-1]
        raise RhoSearchError(line.removeprefix("rhosearch.errors.RhoSearchError: ")) from None


def _to_device(images: torch.Tensor, labels: torch.Tensor, device: torch.device):
    memory_format = torch.channels_last if device.type == "cuda" else torch.contiguous_format
    images = images.to(device, non_blocking=True, memory_format=memory_format)
    return images, labels.to(device, non_blocking=True)


def _autocast(device: torch.device):
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")


@torch.no_grad()
def evaluate(
    model: torch.nn.Module, loader: DataLoader, device: torch.device | str
) -> tuple[float, float]:
    """Top-1 and top-5 accuracy (%) of `model` on `loader` (top-5 is top-k when k < 5 classes)."""
    device = torch.device(device)
    was_training = model.training
    model.eval()
    correct1 = correct5 = seen = 0
    for images, labels in _batches(loader):
        images, labels = _to_device(images, labels, device)
        with _autocast(device):
            logits = model(images)
        top = logits.topk(min(5, logits.shape[1]), dim=1).indices
        hits = top == labels[:, None]
        correct1 += int(hits[:, 0].sum())
        correct5 += int(hits.any(dim=1).sum())
        seen += len(labels)
    model.train(was_training)
    return 100.0 * correct1 / max(1, seen), 100.0 * correct5 / max(1, seen)


# --- one epoch --------------------------------------------------------------------------------


def train_step(
    model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor,
    optimizer: torch.optim.Optimizer, scheduler: Any, recipe: Recipe,
    ema: ModelEmaV3 | None = None, step: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimizer step; returns the (detached) loss and the count of correct predictions."""
    device = images.device
    with _autocast(device):
        logits = model(images)
        loss = F.cross_entropy(logits, labels, label_smoothing=recipe.label_smoothing)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if recipe.grad_clip:
        torch.nn.utils.clip_grad_norm_(model.parameters(), recipe.grad_clip)
    optimizer.step()
    scheduler.step()
    if ema is not None:
        ema.update(model, step=step + 1)
    return loss.detach(), (logits.argmax(1) == labels).sum()


def _progress(enabled: bool):
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    return Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        TextColumn("{task.fields[stats]}"),
        console=Console(stderr=True), disable=not enabled, transient=False,
    )


def train_one_epoch(
    model: torch.nn.Module, loader: DataLoader, optimizer: torch.optim.Optimizer,
    scheduler: Any, recipe: Recipe, device: torch.device, *, ema: ModelEmaV3 | None = None,
    step: int = 0, description: str = "train", progress: bool = True, check_every: int = 10,
) -> dict[str, Any]:
    """One pass over `loader`. Stops early with `diverged: True` when the loss is not finite
    (checked every `check_every` steps: each check waits for the device)."""
    model.train()
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    seen, diverged, start = 0, False, time.perf_counter()
    with _progress(progress) as bar:
        task = bar.add_task(description, total=len(loader), stats="")
        for i, (images, labels) in enumerate(_batches(loader)):
            images, labels = _to_device(images, labels, device)
            loss, hits = train_step(model, images, labels, optimizer, scheduler, recipe, ema, step)
            step, seen = step + 1, seen + len(labels)
            loss_sum += loss * len(labels)
            correct += hits
            if (i + 1) % check_every == 0 or i + 1 == len(loader):
                mean_loss = float(loss_sum) / seen
                if not math.isfinite(mean_loss):
                    diverged = True
                    break
                rate = seen / (time.perf_counter() - start)
                accuracy = 100 * int(correct) / seen
                stats = f"loss {mean_loss:.3f}  acc {accuracy:.1f}%  {rate:.0f} img/s"
                bar.update(task, completed=i + 1, stats=stats)
    seconds = time.perf_counter() - start
    seen = max(1, seen)
    return dict(loss=float(loss_sum) / seen, train_top1=100.0 * int(correct) / seen,
                images_per_s=seen / seconds, epoch_s=seconds, steps=step, diverged=diverged)


# --- checkpoints ------------------------------------------------------------------------------


def _rng_state() -> dict[str, Any]:
    state = dict(torch=torch.get_rng_state(), numpy=np.random.get_state(),
                 python=random.getstate())
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Writes next to `path` and renames: a run killed mid-write keeps its last checkpoint."""
    temporary = path.with_name(path.name + ".tmp")
    torch.save(state, temporary)
    os.replace(temporary, path)


def load_checkpoint(path: Path, identity: dict[str, Any]) -> dict[str, Any]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # a truncated or foreign file: any unpickling error
        raise RhoSearchError(
            f"cannot read checkpoint {path} ({type(exc).__name__}); delete it"
        ) from None
    if state.get("identity") != identity:
        raise RhoSearchError(
            f"{path} belongs to another run ({state.get('identity')}); use another --out or "
            "leave out --resume"
        )
    return state


# --- one configuration, start to end ----------------------------------------------------------


def restore_training_state(state: dict[str, Any], model: torch.nn.Module,
                           optimizer: torch.optim.Optimizer, scheduler: Any,
                           ema: ModelEmaV3 | None) -> None:
    """Loads a checkpoint's model, optimizer, scheduler and EMA (the caller restores the rest:
    counters and RNG, which differ between a run, a DDP rank and the supernet)."""
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    if ema is not None:
        ema.load_state_dict(state["ema"])


def pick_device(device: str | None = None) -> torch.device:
    """`device`, or CUDA when present, else CPU."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(device)
    except RuntimeError:
        raise RhoSearchError(f"unknown device {device!r}; use cpu, cuda or cuda:N") from None


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _validate(model: torch.nn.Module, ema: ModelEmaV3 | None, loader: DataLoader,
              device: torch.device) -> dict[str, float | None]:
    top1, top5 = evaluate(model, loader, device)
    ema_top1, ema_top5 = evaluate(ema.module, loader, device) if ema is not None else (None, None)
    return dict(top1=top1, top5=top5, ema_top1=ema_top1, ema_top5=ema_top5)


def _result(config: RhoConfig, recipe: Recipe, num_classes: int, last: dict[str, Any],
            epochs_done: int, wall_s: float, status: str, data: str, seed: int) -> dict[str, Any]:
    cost = CostModel(config.backbone, resolution=recipe.resolution,
                     num_classes=num_classes).price(config)
    return {
        "name": config.name, "rho": config.rho_text, "backbone": config.backbone,
        "params": cost.params, "gmacs": round(cost.gmacs, 4),
        "overhead_params": cost.overhead_params, "resolution": recipe.resolution,
        "top1": last.get("top1"), "top5": last.get("top5"),
        "ema_top1": last.get("ema_top1"), "ema_top5": last.get("ema_top5"),
        "epochs_done": epochs_done, "wall_s": round(wall_s, 2), "status": status,
        "data": data, "recipe": recipe.name, "seed": seed,
    }


def train_config(
    config: RhoConfig, *, data: str = "digits", recipe: Recipe, out_dir: Path, seed: int = 0,
    resume: bool = False, data_root: Path | None = None, download: bool = False,
    device: str | None = None, on_epoch: Callable[[dict], None] | None = None,
    progress: bool = True, model: torch.nn.Module | None = None,
) -> dict[str, Any]:
    """Trains one configuration and returns (and writes to `out_dir/result.json`) its result.

    Args:
        config: the configuration; also what the result's cost figures describe.
        data: `digits`, `cifar10`, `cifar100` or an ImageFolder root (see `rhosearch.data`).
        recipe: how to train (`load_recipe`).
        out_dir: where metrics, checkpoints and the result go.
        seed: weights, data order and augmentation; the same seed gives the same weights.
        resume: continue from `out_dir/checkpoint.pt` when there is one.
        on_epoch: called with each epoch's metrics after its checkpoint is written; may raise
            to stop the run (Ray Tune does).
        progress: show a progress bar per epoch.
        model: a pre-built model to train (e.g. extracted from a supernet); default: a fresh
            `create_model(config)`.

    A loss that stops being finite ends the run with status `diverged`; the result then holds
    the last completed epoch's accuracies (None before the first).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    device = pick_device(device)
    _seed_everything(seed)
    loaders = make_loaders(data, recipe, root=data_root, download=download, seed=seed,
                           pin_memory=device.type == "cuda")
    if model is None:
        model = create_model(config, num_classes=loaders.num_classes, drop_rate=recipe.drop_rate)
    memory_format = torch.channels_last if device.type == "cuda" else torch.contiguous_format
    model = model.to(device, memory_format=memory_format)
    optimizer = build_optimizer(model, recipe)
    scheduler = build_scheduler(optimizer, recipe, loaders.sampler.mean_batches(recipe.epochs))
    ema = ModelEmaV3(model, decay=recipe.ema_decay) if recipe.ema else None

    identity = dict(config=config.key, data=str(data), seed=seed,
                    recipe=dataclasses.asdict(recipe))
    checkpoint_path, metrics_path = out_dir / CHECKPOINT, out_dir / "metrics.jsonl"
    start_epoch, step, wall_before, last = 0, 0, 0.0, {}
    if resume and checkpoint_path.is_file():
        state = load_checkpoint(checkpoint_path, identity)
        restore_training_state(state, model, optimizer, scheduler, ema)
        start_epoch, step = state["epoch"], state["step"]
        wall_before, last = state["wall_s"], state["last"]
        _set_rng_state(state["rng"])
    else:
        metrics_path.unlink(missing_ok=True)

    status, started = "ok", time.perf_counter()
    for epoch in range(start_epoch, recipe.epochs):
        loaders.sampler.set_epoch(epoch)
        stats = train_one_epoch(
            model, loaders.train, optimizer, scheduler, recipe, device, ema=ema, step=step,
            description=f"epoch {epoch + 1}/{recipe.epochs}", progress=progress,
        )
        if stats.pop("diverged"):
            status = "diverged"
            break
        step = stats.pop("steps")
        last = dict(epoch=epoch + 1, **stats, lr=scheduler.get_last_lr()[0],
                    **_validate(model, ema, loaders.val, device))
        with metrics_path.open("a") as f:
            f.write(json.dumps(last) + "\n")
        wall_s = wall_before + time.perf_counter() - started
        save_checkpoint(checkpoint_path, dict(
            identity=identity, epoch=epoch + 1, step=step, wall_s=wall_s, last=last,
            model=model.state_dict(), optimizer=optimizer.state_dict(),
            scheduler=scheduler.state_dict(), ema=ema.state_dict() if ema is not None else None,
            rng=_rng_state(),
        ))
        if on_epoch is not None:
            on_epoch(dict(last))

    wall_s = wall_before + time.perf_counter() - started
    result = _result(config, recipe, loaders.num_classes, last, epochs_done=last.get("epoch", 0),
                     wall_s=wall_s, status=status, data=str(data), seed=seed)
    (out_dir / "result.json").write_text(json.dumps(result, indent=2) + "\n")
    return result
