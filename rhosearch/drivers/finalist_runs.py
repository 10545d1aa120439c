"""The full stage's two executors: one finalist run per Ray task (`_train_one`), or one run
across N workers with Ray Train's DDP (`train_ddp`), and the driver's side of both (`run_all`
yields each run as it ends, its files pulled from the job store).

    for config, reason, seed, result in run_all(picks, settings, data, recipe, base, ...):
        ...
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import ray

from rhosearch.core.space import RhoConfig
from rhosearch.errors import RhoSearchError
from rhosearch.execution.jobstore import CHECKPOINTS
from rhosearch.execution.resources import budget_cpus
from rhosearch.vocab import RunFile, Status

if TYPE_CHECKING:
    from rhosearch.drivers.finalists import FinalistSettings
    from rhosearch.training.data import BaseData

__all__ = ["WEIGHTS", "run_all", "run_dir", "run_job", "train_ddp", "worker_resources"]


WEIGHTS = RunFile.WEIGHTS


def run_job(config: RhoConfig, seed: int, first_seed: int) -> str:
    """A finalist run's folder name, under `reports/<study>/` and in the job store:
    `finalists/<key>` for the first seed, `finalists/<key>-seed<s>` after."""
    return "finalists/" + (config.key if seed == first_seed else f"{config.key}-seed{seed}")


def run_dir(folder: Path, config: RhoConfig, seed: int, first_seed: int) -> Path:
    """A finalist run's folder in the driver's `reports/<study>/`."""
    return folder / run_job(config, seed, first_seed)


def worker_resources(settings: FinalistSettings, finalists: int) -> dict[str, float]:
    """CPUs and GPUs of one worker: GPUs as asked (1 each on a GPU budget), CPUs shared out
    evenly between the workers that can run at once."""
    budget, workers = settings.budget, settings.workers_per_finalist
    gpus = settings.gpus_per_trial
    if gpus is None:
        gpus = 1.0 if budget.gpus else 0.0
    if gpus and gpus > budget.gpus:
        raise RhoSearchError(f"--gpus-per-trial {gpus:g} exceeds the budget's {budget.gpus:g} "
                             "GPUs; lower it or raise --budget")
    cpus = budget_cpus(budget)
    slots = int(budget.gpus // gpus) if gpus else int(cpus)
    if workers > slots:
        raise RhoSearchError(f"--workers-per-finalist {workers} needs {workers} workers at once "
                             f"but the budget ({budget.describe()}) fits {slots}")
    concurrent = min(slots, finalists * workers) if workers == 1 else workers
    return {"cpu": max(1.0, float(int(cpus // max(1, concurrent)))), "gpu": gpus}


def _save_finalist_weights(out_dir: Path, config: RhoConfig, result: dict[str, Any],
                           num_classes: int, drop_rate: float) -> str | None:
    """Writes `model.safetensors` from the run's checkpoint (EMA weights when it has them)."""
    from rhosearch.core.model import create_model
    from rhosearch.deploy.export import save_weights
    from rhosearch.training.checkpoint import CHECKPOINT, load_checkpoint

    checkpoint = out_dir / CHECKPOINT
    if not checkpoint.is_file() or not result.get("epochs_done"):
        return None
    state = load_checkpoint(checkpoint)
    use_ema = state.get("ema") is not None
    weights = state["ema"] if use_ema else state["model"]
    if use_ema:  # ModelEmaV3 keeps the averaged model as its `module`
        weights = {k.removeprefix("module."): v for k, v in weights.items()}
    model = create_model(config, num_classes=num_classes, drop_rate=drop_rate)
    model.load_state_dict(weights)
    top1 = result.get("ema_top1") if use_ema else result.get("top1")
    path = save_weights(model, out_dir / WEIGHTS, extra={
        "weights": "ema" if use_ema else "raw", "top1": top1, "data": result.get("data"),
        "resolution": result.get("resolution"), "epochs": result.get("epochs_done"),
        "recipe": result.get("recipe")})
    return str(path)


def _top1_text(metrics: dict[str, Any]) -> str:
    """An epoch line's top-1, when the epoch was validated (`Recipe.val_every`)."""
    return f", top-1 {metrics['top1']:.2f}%" if metrics.get("top1") is not None else ""


def _train_one(config: RhoConfig, job: str, settings: FinalistSettings,
               data: str, base: BaseData) -> dict[str, Any]:
    """A Ray task, on any node: trains one finalist with train.py's `train_config` on the
    driver's copy of the data (`base`) in a scratch folder (resuming its checkpoint from the
    job store), saves its weights, and pushes the folder to the store after every epoch and at
    the end."""
    import torch

    from rhosearch.training.data import adopt_base, dataset_info
    from rhosearch.training.train import load_recipe, train_config

    adopt_base(base)

    assigned = ray.get_runtime_context().get_assigned_resources()
    torch.set_num_threads(max(1, int(assigned.get("CPU", 1))))
    recipe = load_recipe(settings.recipe, settings.recipe_overrides)
    store = settings.job_store()
    with store.workdir(job, resume=settings.resume) as out_dir:

        def log_epoch(metrics: dict[str, Any]) -> None:
            store.push(out_dir, job)
            print(f"{config.name} [{config.rho_text}] epoch {metrics['epoch']}/{recipe.epochs}: "
                  f"loss {metrics['loss']:.3f}{_top1_text(metrics)}", flush=True)

        result = train_config(
            config, data=data, recipe=recipe, out_dir=out_dir, seed=settings.seed,
            resume=settings.resume, data_root=settings.data_root, download=settings.download,
            progress=False, on_epoch=log_epoch,
        )
        num_classes = dataset_info(data, settings.data_root)
        result["weights"] = _save_finalist_weights(out_dir, config, result, num_classes,
                                                   recipe.drop_rate)
        store.push(out_dir, job)
    return {**result, "workers": 1, "cpus": assigned.get("CPU", 0), "gpus": assigned.get("GPU", 0)}


def _ddp_worker(loop_config: dict[str, Any]) -> None:
    """Ray Train's per-worker loop: `train.fit` with a DDP model, a sharded sampler and the
    worker's rank.

    Every rank trains on its own shard (`make_loaders(rank=, world_size=)`) and DDP averages
    the gradients; rank 0 validates and writes the checkpoint (every rank's random state in
    it, and the world size in its identity: a resume must use as many workers) and the result.
    After each epoch each rank writes `shards/rank<k>.json`, the dataset indices of its shard.
    Each rank works in a scratch folder on its node (with the checkpoint from the job store on
    a resume: every rank restores its own random state from it) and pushes its files to the
    store: rank 0 the run's, the others their shard files.
    """
    import ray.train
    import ray.train.torch
    import torch

    from rhosearch.core.model import create_model
    from rhosearch.training import train
    from rhosearch.training.data import adopt_base

    settings: FinalistSettings = loop_config["settings"]
    adopt_base(loop_config["base"])  # the driver's copy of the data set
    config = RhoConfig.parse(loop_config["rho"], backbone=loop_config["backbone"])
    job, data = loop_config["job"], loop_config["data"]
    context = ray.train.get_context()
    rank, world_size = context.get_world_rank(), context.get_world_size()
    torch.set_num_threads(loop_config["threads"])
    recipe = train.load_recipe(settings.recipe, settings.recipe_overrides)
    device = ray.train.torch.get_device()
    train.seed_everything(settings.seed)  # the same initial weights on every rank
    loaders = train.make_loaders(data, recipe, root=settings.data_root, seed=settings.seed,
                                 rank=rank, world_size=world_size,
                                 pin_memory=device.type == "cuda")
    model = ray.train.torch.prepare_model(
        create_model(config, num_classes=loaders.num_classes, drop_rate=recipe.drop_rate))
    on_epoch = loop_config.get("on_epoch")
    store = settings.job_store()

    with store.workdir(job, resume=settings.resume) as out_dir:

        def push() -> None:
            if rank == 0:
                store.push(out_dir, job)
            else:
                store.push(out_dir / "shards", f"{job}/shards")

        def report(metrics: dict[str, Any]) -> None:
            (out_dir / "shards").mkdir(parents=True, exist_ok=True)
            (out_dir / "shards" / f"rank{rank}.json").write_text(json.dumps(dict(
                rank=rank, world_size=world_size, epoch=metrics["epoch"], pid=os.getpid(),
                indices=loaders.sampler.shard(metrics["epoch"] - 1))))
            push()
            if rank == 0:
                print(f"{config.name} [{config.rho_text}] epoch {metrics['epoch']}/"
                      f"{recipe.epochs} on {world_size} workers: loss {metrics['loss']:.3f}"
                      f"{_top1_text(metrics)}", flush=True)
            ray.train.report({k: metrics[k] for k in ("epoch", "top1") if k in metrics})
            if on_epoch is not None:
                on_epoch(metrics)

        def summarize(run: train.Run) -> dict[str, Any]:
            result = train.config_result(config, run, recipe=recipe, data=str(data),
                                         num_classes=loaders.num_classes, seed=settings.seed)
            result["weights"] = _save_finalist_weights(out_dir, config, result,
                                                       loaders.num_classes, recipe.drop_rate)
            return result

        identity = dict(config=config.key, data=str(data), seed=settings.seed,
                        recipe=dataclasses.asdict(recipe))
        train.fit(model, loaders, recipe, out_dir, identity=identity, device=device,
                  seed=settings.seed, resume=settings.resume, rank=rank, world_size=world_size,
                  on_epoch=report, progress=False, summarize=summarize)
        push()


def train_ddp(config: RhoConfig, job: str, out_dir: Path, settings: FinalistSettings,
               data: str, resources: dict[str, float], *, base: BaseData | None = None,
               on_epoch: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Trains one finalist on `workers_per_finalist` Ray Train workers; returns its result
    (read from the run's files, pulled from the job store into `out_dir`). `on_epoch` is
    called on every worker with its epoch's metrics (and may raise to stop); `base`: the
    driver's copy of the data set (default: read here)."""
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from rhosearch.training.data import load_base
    from rhosearch.training.train import load_recipe

    recipe = load_recipe(settings.recipe, settings.recipe_overrides)
    base = base or load_base(data, root=settings.data_root, subset=recipe.subset,
                             val_subset=recipe.val_subset)
    workers = settings.workers_per_finalist
    result_path = out_dir / "result.json"
    result_path.unlink(missing_ok=True)
    store = settings.job_store()
    store.drop(job, ("result.json",))
    trainer = TorchTrainer(
        _ddp_worker,
        train_loop_config=dict(settings=settings, rho=config.rho_text, backbone=config.backbone,
                               job=job, data=data, base=base, on_epoch=on_epoch,
                               threads=max(1, int(resources["cpu"]))),
        scaling_config=ScalingConfig(
            num_workers=workers, use_gpu=bool(resources["gpu"]),
            resources_per_worker={"CPU": resources["cpu"], "GPU": resources["gpu"]}
            if resources["gpu"] else {"CPU": resources["cpu"]}),
        run_config=RunConfig(name=config.key, storage_path=store.tune_path),
    )
    try:
        trainer.fit()  # a worker's exception comes back as ray.train's TrainingFailedError
    finally:
        _pull_weights_once(store, job, out_dir)
    result = json.loads(result_path.read_text())
    return {**result, "workers": workers, "cpus": resources["cpu"] * workers,
            "gpus": resources["gpu"] * workers}


def run_all(picks: list[tuple[RhoConfig, str]], settings: FinalistSettings, data: str,
             base: BaseData, resources: dict[str, float], folder: Path):
    """Yields `(config, reason, seed, result)` as each run ends (failures as status "failed").

    Every finalist runs once per seed; a run with seed s gets `settings` with `seed=s`, so all
    finalists and the baseline control share each seed's data order and trunk initialisation.
    """
    def failed(exc: BaseException, seed: int) -> dict[str, Any]:
        cause = getattr(exc, "cause", None) or exc  # Ray wraps the worker's exception
        # The seed too: a failed seed that a --resume then trains counts once, not twice.
        return {"status": str(Status.FAILED), "reason": f"{type(cause).__name__}: {cause}"[:500],
                "epochs_done": 0, "seed": seed}

    runs = [(config, reason, seed) for seed in settings.run_seeds() for config, reason in picks]
    store = settings.job_store()
    if settings.workers_per_finalist > 1:
        for config, reason, seed in runs:
            job = run_job(config, seed, settings.seed)
            out_dir = folder / job
            out_dir.mkdir(parents=True, exist_ok=True)
            try:
                result = train_ddp(config, job, out_dir,
                                    dataclasses.replace(settings, seed=seed), data, resources,
                                    base=base)
            except Exception as exc:  # recorded as the finalist's failure; the others go on
                result = failed(exc, seed)
            yield config, reason, seed, _weights_here(result, out_dir)
        return
    remote = ray.remote(num_cpus=resources["cpu"], num_gpus=resources["gpu"],
                        max_retries=0)(_train_one)
    pending, base = {}, ray.put(base)  # one copy in the object store for every task
    for config, reason, seed in runs:
        job = run_job(config, seed, settings.seed)
        pending[remote.remote(config, job, dataclasses.replace(settings, seed=seed),
                              data, base)] = (config, reason, seed)
    while pending:
        [done], _ = ray.wait(list(pending), num_returns=1)
        config, reason, seed = pending.pop(done)
        out_dir = run_dir(folder, config, seed, settings.seed)
        try:
            result = ray.get(done)
        except Exception as exc:
            result = failed(exc, seed)
        finally:  # the driver alone writes reports/<study>/; the checkpoint stays in the store
            _pull_weights_once(store, run_job(config, seed, settings.seed), out_dir)
        yield config, reason, seed, _weights_here(result, out_dir)


def _pull_weights_once(store: Any, job: str, out_dir: Path) -> None:
    """Copies a run's files to the driver. A finished run's weights (~20 MB on MobileViT-S)
    then live there alone, and its checkpoint (~75 MB: weights, EMA and optimiser state) leaves
    the job store (`reports/<study>/ray/`): nothing resumes a finished run. A stopped run keeps
    its checkpoint there for `--resume`."""
    store.pull(job, out_dir, skip=CHECKPOINTS)
    if (out_dir / WEIGHTS).is_file():
        store.drop(job, (WEIGHTS, *CHECKPOINTS))


def _weights_here(result: dict[str, Any], out_dir: Path) -> dict[str, Any]:
    """The result with its weights' path in the driver's folder, not the worker's scratch."""
    if result.get("weights"):
        result["weights"] = str(out_dir / WEIGHTS)
    return result
