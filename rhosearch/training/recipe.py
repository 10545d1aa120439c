"""How to train: a recipe's fields (data, in `recipes.yaml`), their checks, and the optimizer
and learning-rate schedule they define.

    recipe = load_recipe("proxy", {"epochs": 5})          # a name in recipes.yaml, or a file
    optimizer = build_optimizer(model, recipe)
    scheduler = build_scheduler(optimizer, recipe, steps_per_epoch=len(loader))

A user's `--set key=value` arrives here as text and is read as YAML, then checked against the
field's type and range; every problem is one line naming the key.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_type_hints

import torch
import yaml

from rhosearch.errors import RhoSearchError
from rhosearch.values import load_yaml

__all__ = [
    "RECIPES_PATH", "Recipe", "build_optimizer", "build_scheduler", "learning_rate", "load_recipe",
]

RECIPES_PATH = Path(__file__).resolve().parent / "recipes.yaml"


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
    # timm's EMA warm-up: the decay grows with the step, 1 - (1 + step) ** -2/3, up to
    # `ema_decay`, so a short run's EMA follows the trained weights instead of their start
    # (without it, 2 epochs of digits left the EMA model at chance).
    ema_warmup: bool = True
    # Precise BN (fvcore's `update_bn_stats`): before each validation, the BN layers' running
    # statistics of the model and its EMA are recomputed over this many training batches with
    # the weights fixed. The running averages lag weights that still move fast: after 2 epochs
    # of digits (full_small) they put the model at 11.7 % and its EMA at 10.0 % (chance), and
    # recomputed, 61.4 % and 56.1 % (docs/first_run.md). 0: off (the proxies keep their figures).
    precise_bn: int = 0
    crop_scale: tuple[float, ...] = (0.08, 1.0)
    hflip: float = 0.5
    crop_pct: float = 0.9
    subset: int | None = None
    val_subset: int | None = None
    workers: int = 8
    grad_clip: float | None = None
    val_every: int = 1  # validate after every n-th epoch and after the last; 0: the last only

    def validates(self, epoch: int) -> bool:
        """Whether the 1-based `epoch` ends with a validation."""
        return epoch == self.epochs or (self.val_every > 0 and epoch % self.val_every == 0)

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
        if base is str:
            return str(value)
        if base is float:
            return _finite(float(value))
        if isinstance(value, str):  # tuple[float, ...] written as `0.5,1.0`
            value = value.split(",")
        return tuple(_finite(float(v)) for v in value)
    except (TypeError, ValueError, OverflowError):  # OverflowError: int(inf)
        kind = getattr(base, "__name__", "list of numbers")
        raise RhoSearchError(f"recipe key {key!r}: {value!r} is not a valid {kind}") from None


def _finite(number: float) -> float:
    if not math.isfinite(number):
        raise ValueError(number)
    return number


def _check_ranges(recipe: Recipe) -> None:
    rules = {
        "epochs": 1 <= recipe.epochs <= 10_000,  # the schedule plans every epoch up front
        "resolution": 16 <= recipe.resolution <= 4096,
        "batch_size": 1 <= recipe.batch_size <= 65_536,
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
        "val_every": recipe.val_every >= 0,
        "precise_bn": 0 <= recipe.precise_bn <= 100_000,
    }
    for key, ok in rules.items():
        if not ok:
            raise RhoSearchError(f"recipe key {key!r}: {getattr(recipe, key)!r} is out of range")


def _read_recipes(path: Path) -> dict[str, Any]:
    data = load_yaml(path, what="recipe file")
    if not isinstance(data, dict) or not all(isinstance(key, str) for key in data):
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
    unknown = sorted(map(str, set(values) - set(hints)))
    if unknown:
        raise RhoSearchError(f"unknown recipe key {unknown[0]!r}; known keys: {', '.join(hints)}")
    recipe = Recipe(**{k: _coerce(k, v, hints[k]) for k, v in values.items()})
    _check_ranges(recipe)
    return recipe


# --- the optimizer and its schedule ----------------------------------------------------------


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
