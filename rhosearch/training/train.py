"""Train one ExMobileViT configuration with the paper's recipe, resumably; and `fit`, the one
training loop that single runs, the rho supernet and DDP finalists all go through.

    from rhosearch.training.train import load_recipe, train_config
    result = train_config(parse_rho("4/3,5/4,4"), data="digits", recipe=load_recipe("proxy"),
                          out_dir=Path("runs/x"))                 # or: rhosearch train ...

Read top to bottom: the building blocks (loaders, evaluation, seeding), one step and one epoch,
`fit` (resume, epochs, validation, checkpoints, metrics, the result), and `train_config`, which
builds one configuration's model and hands it to `fit`. What differs between callers is passed
in: the supernet passes its sandwich `step`, a DDP worker its `rank` and `world_size`. The
recipe, optimizer and schedule are `rhosearch.training.recipe`'s; how run state is written and
read is `rhosearch.training.checkpoint`'s. A run writes to `out_dir`: `metrics.jsonl` (one line
per epoch), `checkpoint.pt` (everything needed to resume) and `result.json`. Accuracies are
percentages.
(Past 400 lines on purpose: the loop and everything it calls, in the order a run meets them.)
"""

from __future__ import annotations

import dataclasses
import math
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from timm.utils import ModelEmaV3, accuracy, random_seed, unwrap_model
from torch.utils.data import DataLoader

with warnings.catch_warnings():  # fvcore's import scripts a loss with torch.jit (deprecated)
    warnings.simplefilter("ignore", FutureWarning)
    from fvcore.nn.precise_bn import update_bn_stats

from rhosearch.core.cost import CostModel
from rhosearch.core.model import create_model
from rhosearch.core.space import RhoConfig
from rhosearch.errors import RhoSearchError
from rhosearch.training.checkpoint import (
    CHECKPOINT,
    json_text,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
    write_atomic,
)
from rhosearch.training.data import (
    build_datasets,
    dataset_info,
    worker_count,
)
from rhosearch.training.recipe import (  # re-exported: callers import them from here
    RECIPES_PATH,
    Recipe,
    build_optimizer,
    build_scheduler,
    learning_rate,
    load_recipe,
)
from rhosearch.training.sampler import VariableBatchSampler, mss_resolutions
from rhosearch.vocab import Status

__all__ = [
    "CHECKPOINT", "RECIPES_PATH", "Loaders", "Recipe", "Run", "build_optimizer",
    "build_scheduler", "config_result", "evaluate", "fit", "learning_rate", "load_recipe",
    "make_loaders", "pick_device", "recalibrate_bn", "seed_everything", "train_config",
    "train_one_epoch", "train_step",
]


# --- building blocks --------------------------------------------------------------------------


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


def _memory_format(device: torch.device) -> torch.memory_format:
    return torch.channels_last if device.type == "cuda" else torch.contiguous_format


def _to_device(images: torch.Tensor, labels: torch.Tensor, device: torch.device):
    images = images.to(device, non_blocking=True, memory_format=_memory_format(device))
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
        top1, top5 = accuracy(logits, labels, topk=(1, 5))
        # timm gives each batch's percentage; counts keep the whole set's accuracy exact.
        correct1 += round(float(top1) * len(labels) / 100)
        correct5 += round(float(top5) * len(labels) / 100)
        seen += len(labels)
    model.train(was_training)
    return 100.0 * correct1 / max(1, seen), 100.0 * correct5 / max(1, seen)


def recalibrate_bn(models: list[torch.nn.Module], loader: DataLoader, device: torch.device,
                   batches: int) -> None:
    """Precise BN: each model's BN running statistics recomputed over `batches` training batches
    (at most one epoch's) with its weights fixed, by fvcore's `update_bn_stats`. During training
    the running averages trail the moving weights, so early in a run they describe a network
    that no longer exists (see `Recipe.precise_bn`). Each model is back in its own mode after."""
    batches = min(batches, len(loader))
    if batches < 1:
        return
    for model in models:
        was_training = model.training
        model.train()
        images = (_to_device(x, y, device)[0] for x, y in _batches(loader))
        with _autocast(device):
            update_bn_stats(model, images, num_iters=batches)
        model.train(was_training)


def pick_device(device: str | None = None) -> torch.device:
    """`device`, or CUDA when present, else CPU."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(device)
    except RuntimeError:
        raise RhoSearchError(f"unknown device {device!r}; use cpu, cuda or cuda:N") from None


def seed_everything(seed: int, rank: int = 0) -> None:
    """Seeds torch, NumPy and Python's `random` with `seed + rank` (timm's `random_seed`)."""
    random_seed(seed, rank)


# --- one step, one epoch ----------------------------------------------------------------------

# A step trains on one batch: forward, loss, backward, optimizer step. It returns the loss and
# the number of correct predictions, as device tensors (no sync) or Python numbers. The
# scheduler and EMA are the epoch's to step. A step may carry state to checkpoint
# (`state_dict` / `load_state_dict`), as the supernet's sandwich sampler does.
Step = Callable[[torch.nn.Module, torch.Tensor, torch.Tensor, torch.optim.Optimizer, Recipe],
                tuple[Any, Any]]


def train_step(
    model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor,
    optimizer: torch.optim.Optimizer, recipe: Recipe,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One configuration's step: label-smoothed cross-entropy (bfloat16 autocast on CUDA),
    optional gradient clipping; returns the detached loss and the correct predictions."""
    with _autocast(images.device):
        logits = model(images)
        loss = F.cross_entropy(logits, labels, label_smoothing=recipe.label_smoothing)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if recipe.grad_clip:
        torch.nn.utils.clip_grad_norm_(model.parameters(), recipe.grad_clip)
    optimizer.step()
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
    scheduler: Any, recipe: Recipe, device: torch.device, *, step: Step = train_step,
    ema: ModelEmaV3 | None = None, global_step: int = 0, description: str = "train",
    progress: bool = True, check_every: int = 10,
    on_batch: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """One pass over `loader`, a `step` per batch, then the scheduler and the EMA. Stops early
    with `diverged: True` when the loss is not finite (checked every `check_every` steps: each
    check waits for the device). `steps` in the result counts from `global_step`; `on_batch`
    gets (batches done, batches in the epoch) after each step (progress where no bar shows)."""
    model.train()
    plain = unwrap_model(model)  # what the EMA averages: the model inside DDP
    loss_sum = correct = 0  # device tensors or Python numbers, as the step returns them
    seen, diverged, start = 0, False, time.perf_counter()
    with _progress(progress) as bar:
        batches = len(loader)  # once: a multi-scale loader's length plans the whole epoch
        task = bar.add_task(description, total=batches, stats="")
        for i, (images, labels) in enumerate(_batches(loader)):
            images, labels = _to_device(images, labels, device)
            loss, hits = step(model, images, labels, optimizer, recipe)
            scheduler.step()
            global_step += 1
            if ema is not None:
                ema.update(plain, step=global_step)
            seen += len(labels)
            if on_batch is not None:
                on_batch(i + 1, batches)
            loss_sum = loss_sum + loss * len(labels)
            correct = correct + hits
            if (i + 1) % check_every == 0 or i + 1 == batches:
                mean_loss = float(loss_sum) / seen
                if not math.isfinite(mean_loss):
                    diverged = True
                    break
                rate = seen / (time.perf_counter() - start)
                bar.update(task, completed=i + 1, stats=f"loss {mean_loss:.3f}  acc "
                           f"{100 * float(correct) / seen:.1f}%  {rate:.0f} img/s")
    seconds = time.perf_counter() - start
    seen = max(1, seen)
    return dict(loss=float(loss_sum) / seen, train_top1=100.0 * float(correct) / seen,
                images_per_s=seen / seconds, epoch_s=seconds, steps=global_step,
                diverged=diverged)


# --- the loop ---------------------------------------------------------------------------------


class Run(NamedTuple):
    """A finished (or stopped) `fit`: what its `summarize` reads, and what it returns."""

    status: str  # "ok", or "diverged": a loss stopped being finite
    history: list[dict[str, Any]]  # one entry per epoch; a diverged one last, unvalidated
    steps: int
    wall_s: float
    ema: ModelEmaV3 | None
    result: dict[str, Any] | None = None  # what `summarize` returned (None on ranks > 0)


def _validate_classifier(loader: DataLoader, device: torch.device):
    def validate(model: torch.nn.Module, ema: ModelEmaV3 | None) -> dict[str, float | None]:
        top1, top5 = evaluate(model, loader, device)
        ema_top1, ema_top5 = (None, None) if ema is None else evaluate(ema.module, loader, device)
        return dict(top1=top1, top5=top5, ema_top1=ema_top1, ema_top5=ema_top5)
    return validate


def _summary(run: Run) -> dict[str, Any]:
    return {"status": run.status, "epochs_done": len(run.history), "steps": run.steps,
            "wall_s": round(run.wall_s, 2), **(run.history[-1] if run.history else {})}


def _gather(value: Any, world_size: int) -> list[Any]:
    """Every rank's `value` in rank order, on every rank; all ranks must call it (so it is also
    a barrier). One process: `[value]`."""
    if world_size == 1:
        return [value]
    import torch.distributed as dist

    gathered: list[Any] = [None] * world_size
    dist.all_gather_object(gathered, value)
    return gathered


def fit(
    model: torch.nn.Module, loaders: Loaders, recipe: Recipe, out_dir: Path | str, *,
    identity: dict[str, Any], device: torch.device, step: Step = train_step,
    validate: Callable[[torch.nn.Module, ModelEmaV3 | None], dict[str, Any]] | None = None,
    summarize: Callable[[Run], dict[str, Any]] = _summary, resume: bool = False, seed: int = 0,
    rank: int = 0, world_size: int = 1, on_epoch: Callable[[dict[str, Any]], None] | None = None,
    progress: bool = True, checkpoint: bool = True,
    on_batch: Callable[[int, int, int], None] | None = None,
) -> Run:
    """Trains `model` for `recipe.epochs`: the one loop of rhosearch.

    Args:
        model: on its device with its initial weights (the caller seeds, then builds it, so
            every rank starts alike); a DDP model is unwrapped for the EMA and the files.
        identity: what makes two runs one run; a checkpoint of another run is refused.
        step: trains on one batch (`Step`); default one configuration's `train_step`.
        validate: metrics of the model and its EMA after each epoch `recipe.validates` (rank
            0); default top-1 and top-5 of both on `loaders.val`.
        summarize: the result from the `Run`, written as `result.json` (rank 0).
        resume: continue from `out_dir/checkpoint.pt` when there is one: weights, optimizer,
            schedule, EMA, the step's state, metrics and every rank's random state.
        seed: with several ranks, each starts its own random stream at `seed * 1000 + rank`.
        rank, world_size: this process in a DDP group. Ranks stop together; rank 0 validates
            and writes the files, with every rank's random state.
        on_epoch: called on every rank with its epoch's metrics once the checkpoint exists;
            may raise to stop the run (Ray Tune does).
        checkpoint: write `checkpoint.pt` after every epoch; off for runs nothing resumes
            (proxy trials: ~57 MB written per epoch on MobileViT-S, for nothing).
        on_batch: called on rank 0 with (epoch, batches done, batches in it) after each step.

    A loss that stops being finite ends the run as `diverged`: that epoch is listed in
    `metrics.jsonl` (unvalidated, `diverged: true`) but not checkpointed.
    """
    out_dir = Path(out_dir)
    plain = unwrap_model(model)
    optimizer = build_optimizer(model, recipe)
    scheduler = build_scheduler(optimizer, recipe, loaders.sampler.mean_batches(recipe.epochs))
    ema = (ModelEmaV3(plain, decay=recipe.ema_decay, use_warmup=recipe.ema_warmup)
           if recipe.ema else None)
    validate = validate or _validate_classifier(loaders.val, device)
    if world_size > 1:
        identity = {**identity, "world_size": world_size}  # a resume needs as many ranks
    checkpoint_path, metrics_path = out_dir / CHECKPOINT, out_dir / "metrics.jsonl"
    history: list[dict[str, Any]] = []
    steps, wall_before = 0, 0.0
    if resume and checkpoint_path.is_file():
        state = load_checkpoint(checkpoint_path, identity=identity)
        plain.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if ema is not None:
            ema.load_state_dict(state["ema"])
        if hasattr(step, "load_state_dict"):
            step.load_state_dict(state["step"])
        history, steps, wall_before = state["history"], state["steps"], state["wall_s"]
        set_rng_state(state["rng"][rank])
    else:
        if rank == 0:
            out_dir.mkdir(parents=True, exist_ok=True)
            metrics_path.unlink(missing_ok=True)
        if world_size > 1:
            seed_everything(seed * 1_000, rank)  # each rank its own augmentations and dropout

    status, started = str(Status.OK), time.perf_counter()
    for epoch in range(len(history), recipe.epochs):
        loaders.sampler.set_epoch(epoch)
        stats = train_one_epoch(
            model, loaders.train, optimizer, scheduler, recipe, device, step=step, ema=ema,
            global_step=steps, description=f"epoch {epoch + 1}/{recipe.epochs}",
            progress=progress and rank == 0,
            on_batch=None if on_batch is None or rank else (
                lambda done, batches, epoch=epoch: on_batch(epoch + 1, done, batches)),
        )
        diverged = any(_gather(stats.pop("diverged"), world_size))  # all ranks stop, or none
        steps = stats.pop("steps")
        metrics = dict(epoch=epoch + 1, **stats, lr=scheduler.get_last_lr()[0])
        if diverged:
            status = str(Status.DIVERGED)
            history = [*history, {**metrics, "diverged": True}]
            if rank == 0:
                write_atomic(metrics_path, "".join(json_text(m) + "\n" for m in history))
            break
        if rank == 0 and recipe.validates(epoch + 1):
            if recipe.precise_bn:  # before the checkpoint: a resumed run has the same RNG state
                recalibrate_bn([plain] + ([ema.module] if ema is not None else []),
                               loaders.train, device, recipe.precise_bn)
            metrics.update(validate(plain, ema))
        history = [*history, metrics]
        rngs = _gather(rng_state(), world_size)
        if rank == 0 and checkpoint:
            save_checkpoint(checkpoint_path, dict(
                identity=identity, history=history, steps=steps,
                wall_s=wall_before + time.perf_counter() - started, rng=rngs,
                model=plain.state_dict(), optimizer=optimizer.state_dict(),
                scheduler=scheduler.state_dict(),
                ema=None if ema is None else ema.state_dict(),
                step=step.state_dict() if hasattr(step, "state_dict") else None,
            ))
        if rank == 0:  # rewritten from the history: a retried epoch never doubles a line
            write_atomic(metrics_path, "".join(json_text(m) + "\n" for m in history))
        _gather(None, world_size)  # no rank reports an epoch before its checkpoint exists
        if on_epoch is not None:
            on_epoch(dict(metrics))

    run = Run(status, history, steps, wall_before + time.perf_counter() - started, ema)
    result = None
    if rank == 0:
        result = summarize(run)
        write_atomic(out_dir / "result.json", json_text(result, indent=2) + "\n")
    _gather(None, world_size)  # the result exists before any rank returns
    return run._replace(result=result)


# --- one configuration, start to end ----------------------------------------------------------


def config_result(config: RhoConfig, run: Run, *, recipe: Recipe, num_classes: int, data: str,
                  seed: int) -> dict[str, Any]:
    """A configuration's `result.json`: its cost and its last validated epoch's accuracies."""
    done = next((m for m in reversed(run.history) if not m.get("diverged")), {})
    last = next((m for m in reversed(run.history) if "top1" in m), {})
    cost = CostModel(config.backbone, resolution=recipe.resolution,
                     num_classes=num_classes).price(config)
    return {
        "name": config.name, "rho": config.rho_text, "backbone": config.backbone,
        "params": cost.params, "gmacs": round(cost.gmacs, 4),
        "overhead_params": cost.overhead_params, "resolution": recipe.resolution,
        "top1": last.get("top1"), "top5": last.get("top5"),
        "ema_top1": last.get("ema_top1"), "ema_top5": last.get("ema_top5"),
        "epochs_done": done.get("epoch", 0), "wall_s": round(run.wall_s, 2),
        "status": run.status, "data": data, "recipe": recipe.name, "seed": seed,
    }


def train_config(
    config: RhoConfig, *, data: str = "digits", recipe: Recipe, out_dir: Path, seed: int = 0,
    resume: bool = False, data_root: Path | None = None, download: bool = False,
    device: str | None = None, on_epoch: Callable[[dict], None] | None = None,
    progress: bool = True, model: torch.nn.Module | None = None, checkpoint: bool = True,
    weights: bool = False,
) -> dict[str, Any]:
    """Trains one configuration and returns (and writes to `out_dir/result.json`) its result.

    Args:
        config: the configuration; also what the result's cost figures describe.
        data: a data set's name or an ImageFolder root (see `rhosearch.training.data`).
        recipe: how to train (`load_recipe`).
        out_dir: where metrics, checkpoints and the result go.
        seed: weights, data order and augmentation; the same seed gives the same weights.
        resume: continue from `out_dir/checkpoint.pt` when there is one.
        on_epoch: called with each epoch's metrics after its checkpoint is written; may raise
            to stop the run (Ray Tune does).
        progress: show a progress bar per epoch.
        model: a pre-built model to train (e.g. extracted from a supernet); default: a fresh
            `create_model(config)`.
        checkpoint: write `out_dir/checkpoint.pt` after every epoch (see `fit`).
        weights: write the trained weights (the EMA's when the recipe has EMA) to
            `out_dir/model.safetensors` (the head stage's trunks: ~22 MB on MobileViT-S).

    A loss that stops being finite ends the run with status `diverged`; the result then holds
    the last validated epoch's accuracies (None before the first; see `Recipe.val_every`).
    """
    device = pick_device(device)
    seed_everything(seed)
    loaders = make_loaders(data, recipe, root=data_root, download=download, seed=seed,
                           pin_memory=device.type == "cuda")
    if model is None:
        model = create_model(config, num_classes=loaders.num_classes, drop_rate=recipe.drop_rate)
    model = model.to(device, memory_format=_memory_format(device))
    identity = dict(config=config.key, data=str(data), seed=seed,
                    recipe=dataclasses.asdict(recipe))
    run = fit(model, loaders, recipe, out_dir, identity=identity, device=device, seed=seed,
              resume=resume, on_epoch=on_epoch, progress=progress, checkpoint=checkpoint,
              summarize=lambda run: config_result(config, run, recipe=recipe, data=str(data),
                                                  num_classes=loaders.num_classes, seed=seed))
    if weights and run.status == Status.OK:
        from safetensors.torch import save_model

        trained = run.ema.module if run.ema is not None else unwrap_model(model)
        save_model(trained.cpu(), str(Path(out_dir) / "model.safetensors"))
    return run.result
