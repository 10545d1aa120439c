"""The full stage: pick finalists from the proxy front and train them with the paper's recipe.

    rhosearch train-best --study demo --epochs 2 --budget 2cpus
    rhosearch train-best --study in1k --budget 8gpus --pick under=5.7M --top 2
    rhosearch train-best --study in1k --budget 8gpus --workers-per-finalist 4     # DDP

Picking (`record/picking.py`) reads the proxy stage's Pareto front (max top-1, min overhead params)
and always adds plain MobileViT as a control trained under the same recipe. Training runs on
Ray with the budget's resources, one of two ways:

* one finalist per worker (default): each finalist is a Ray task holding its own CPUs/GPU and
  calling `train.train_config`, so finalists train side by side;
* one finalist across N workers (`--workers-per-finalist N`): Ray Train's `TorchTrainer`
  runs `_ddp_worker` on N processes with DDP (gloo on CPU, NCCL on GPU); each rank trains on
  its shard of the multi-scale sampler, rank 0 validates and checkpoints. Finalists then train
  one after another.

Each run trains in a scratch folder on its worker's node and pushes it to the job store
(`--storage-path`, see jobstore.py) after every epoch; the driver pulls each finished run into
`reports/<study>/finalists/<key>/`: `metrics.jsonl`, `result.json` and `model.safetensors` (EMA
weights when the recipe has EMA; load with `export.load_model`). The checkpoint stays in the
store, where `--resume` continues it from any node. Results go into the study as trials of stage
"full" and into `reports/<study>/finalists.csv`; the study's HTML report is rewritten at the end.

Over ~400 lines because the full stage has two executors (a Ray task per run, or Ray Train
DDP across workers) behind one `train_finalists`; picking and recording are the short rest. The
seed summary (`study.summarize_seeds`) lives with the record, so the report draws the same one.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna
import pandas as pd
import ray
from optuna.trial import TrialState

from rhosearch import values
from rhosearch.core.cost import CostModel
from rhosearch.core.space import RhoConfig, baseline_config, load_search_space
from rhosearch.errors import RhoSearchError
from rhosearch.execution.jobstore import CHECKPOINTS, JobStore
from rhosearch.execution.resources import Budget, budget_cpus, one_node_share, start_ray
from rhosearch.output import write_csv
from rhosearch.record.lease import DriverLease
from rhosearch.record.picking import DEFAULT_PICK, picks_with_reasons
from rhosearch.record.study import (
    default_storage_url,
    load_study,
    params_of,
    space_distributions,
    stage_study,
    study_dir,
    study_objectives,
    summarize_seeds,
    trials_frame,
)
from rhosearch.training.datasets import full_recipe_for
from rhosearch.vocab import LATENCY_COLUMNS, Stage, Status

if TYPE_CHECKING:
    from rhosearch.training.data import BaseData

__all__ = [
    "FinalistSettings",
    "train_finalists",
]

STAGE = Stage.FULL
WEIGHTS = "model.safetensors"


# ---------------------------------------------------------------------------------------------
# Settings and resources.


@dataclass
class FinalistSettings:
    """Everything `train_finalists` needs (the CLI fills it; tests build it directly)."""

    study: str
    storage: str | None = None
    reports_dir: Path = Path("reports")
    pick: str = DEFAULT_PICK
    top: int = 1
    budget: Budget = field(default_factory=Budget)
    gpus_per_trial: float | None = None
    workers_per_finalist: int = 1
    recipe: str | None = None  # None: `full_recipe_for(data)`
    recipe_overrides: dict[str, Any] = field(default_factory=dict)
    data: str | None = None  # None: the data set the study searched on
    data_root: Path | None = None
    download: bool = False
    seed: int = 0
    # Each finalist and the baseline control trained with seeds seed..seed+N-1: 3 by default,
    # the fewest that give a paired test its own variance (1 seed gives no test at all).
    seeds: int = 3
    resume: bool = False
    address: str | None = None
    storage_path: str | None = None  # the job store (see jobstore.py); None: reports/<study>/ray

    def __post_init__(self) -> None:
        """The one set of value checks (also on `dataclasses.replace`)."""
        values.at_least(self.seeds, 1, flag="--seeds", hint="give at least 1 (each finalist "
                        "and the baseline control train once per seed)")
        values.at_least(self.workers_per_finalist, 1, flag="--workers-per-finalist",
                        hint="give at least 1")

    def run_seeds(self) -> list[int]:
        return list(range(self.seed, self.seed + self.seeds))

    def job_store(self) -> JobStore:
        return JobStore.for_study(self.study, reports_dir=self.reports_dir,
                                  storage_path=self.storage_path)


def run_job(config: RhoConfig, seed: int, first_seed: int) -> str:
    """A finalist run's folder name, under `reports/<study>/` and in the job store:
    `finalists/<key>` for the first seed, `finalists/<key>-seed<s>` after."""
    return "finalists/" + (config.key if seed == first_seed else f"{config.key}-seed{seed}")


def run_dir(folder: Path, config: RhoConfig, seed: int, first_seed: int) -> Path:
    """A finalist run's folder in the driver's `reports/<study>/`."""
    return folder / run_job(config, seed, first_seed)


def _worker_resources(settings: FinalistSettings, finalists: int) -> dict[str, float]:
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


# ---------------------------------------------------------------------------------------------
# One finalist on one worker.


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


# ---------------------------------------------------------------------------------------------
# One finalist across several workers (Ray Train, DDP).


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


def _train_ddp(config: RhoConfig, job: str, out_dir: Path, settings: FinalistSettings,
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


# ---------------------------------------------------------------------------------------------
# Recording results.


def _latency_price(study: optuna.Study, config: RhoConfig) -> dict[str, Any]:
    """The latency columns the search recorded for `config` (its proxy or noise trials), or
    none when it never priced it."""
    for source in (study, stage_study(study, Stage.NOISE, create=False)):
        for trial in source.get_trials(deepcopy=False) if source is not None else ():
            attrs = trial.user_attrs
            if attrs.get("rho") == config.rho_text and attrs.get("overhead_ms") is not None:
                return {k: attrs[k] for k in LATENCY_COLUMNS if k in attrs}
    return {}


def _record(study: optuna.Study, config: RhoConfig, reason: str, result: dict[str, Any],
            out_dir: Path) -> int:
    """Adds one finished finalist to the study as a stage "full" trial; returns its number.

    Its params follow the search space's distributions (a configuration outside the space gets
    none).
    """
    try:
        space = load_search_space(study.user_attrs["space"])
    except (KeyError, RhoSearchError):
        space = None
    in_space = space is not None and space.contains(config)
    attrs = {k: v for k, v in result.items() if isinstance(v, (int, float, str, bool))}
    attrs.update(stage=STAGE, **config.as_dict(), trained=True, pick=reason,
                 run_dir=str(out_dir))
    attrs.update(rho=config.rho_text)
    names = study_objectives(study)
    if "overhead_ms" in names:  # a latency search: the price its proxy trial was given
        attrs.update(_latency_price(study, config))
    ok = (result.get("status") == Status.OK and result.get("top1") is not None
          and all(name in attrs for name in names))
    trial = optuna.trial.create_trial(
        state=TrialState.COMPLETE if ok else TrialState.FAIL,
        values=[float(attrs[name]) for name in names] if ok else None,
        params=params_of(space, config) if in_space else {},
        distributions=space_distributions(space) if in_space else {},
        user_attrs=attrs,
    )
    study.add_trial(trial)
    return study.get_trials(deepcopy=False)[-1].number


def _already_recorded(study: optuna.Study, out_dir: Path, epochs_done: int) -> int | None:
    """The number of a full trial already recording this run at this epoch (a resume)."""
    for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        attrs = trial.user_attrs
        if (attrs.get("stage") == STAGE and attrs.get("run_dir") == str(out_dir)
                and attrs.get("epochs_done") == epochs_done):
            return trial.number
    return None


# ---------------------------------------------------------------------------------------------
# The whole stage.


FINALIST_COLUMNS = ["pick", "name", "rho", "backbone", "seed", "params", "overhead_params",
                    "gmacs", "top1", "top5", "raw_top1", "raw_top5", "epochs_done", "wall_s",
                    "status", "workers", "trial", "weights", "reason"]


def train_finalists(settings: FinalistSettings, *,
                    log: Callable[[str], None] = print) -> dict[str, Any]:
    """Picks the finalists of a study, trains them on Ray and records them as stage "full".

    Returns a dict with `finalists` (one row per finalist over its seeds, with
    `study.SEED_SUMMARY_COLUMNS`), `runs` (one row per run, `FINALIST_COLUMNS`), `csv`, `report`
    (the HTML report's path), `folder` and `wall_s`.
    """
    from rhosearch.report.html import write_report
    from rhosearch.training.data import dataset_info, load_base
    from rhosearch.training.train import load_recipe

    # Ray workers have their own working directories: every path they get is absolute.
    settings = dataclasses.replace(settings, reports_dir=Path(settings.reports_dir).resolve())
    study = load_study(settings.study, storage=settings.storage,
                       reports_dir=settings.reports_dir)
    picks = picks_with_reasons(trials_frame(study), pick=settings.pick, top=settings.top)
    data = settings.data or study.user_attrs.get("data", "digits")
    if settings.recipe is None:
        settings = dataclasses.replace(settings, recipe=full_recipe_for(data))
    recipe = load_recipe(settings.recipe, settings.recipe_overrides)
    dataset_info(data, settings.data_root)
    if Path(data).is_dir():  # an ImageFolder: workers must find it from their own folders
        data = str(Path(data).resolve())
    if settings.data_root is not None:
        settings = dataclasses.replace(settings, data_root=settings.data_root.resolve())
    # Read once, here (downloaded too with --download: concurrent workers must not download
    # side by side); every worker gets this copy through Ray's object store.
    base = load_base(data, root=settings.data_root, download=settings.download,
                     subset=recipe.subset, val_subset=recipe.val_subset)
    resources = _worker_resources(settings, len(picks))
    folder = study_dir(settings.study, settings.reports_dir)
    settings.job_store().check_writable()
    if not settings.resume and any((folder / "finalists").glob("*")):  # weights, checkpoints
        raise RhoSearchError(f"train-best already ran on study {settings.study!r} (see "
                             f"{folder / 'finalists'}); add --resume to continue it (nothing "
                             "was changed)")
    log(f"train-best {settings.study!r}: {len(picks)} finalists ("
        + ", ".join(f"{c.name} [{c.rho_text}] ({why})" for c, why in picks)
        + f"), recipe {recipe.name}, {recipe.epochs} epochs at {recipe.resolution}px on {data}, "
        f"{settings.workers_per_finalist} worker(s) of {resources['cpu']:g} CPU"
        + (f" + {resources['gpu']:g} GPU" if resources["gpu"] else "") + " each")

    started, rows = time.time(), []
    lease = DriverLease.acquire(settings.storage or default_storage_url(
        settings.study, settings.reports_dir), settings.study, command="train-best")
    started_ray = False
    try:  # a cluster refused as Ray is joined (its GPUs, its store) releases the lease too
        started_ray = start_ray(settings.budget, address=settings.address, log_to_driver=True)
        settings.job_store().check_shared()
        # On a cluster the budget's CPUs are summed over nodes; a worker gets what one holds.
        fitting = one_node_share(resources["cpu"], resources["gpu"])
        if fitting < resources["cpu"]:
            log(f"each worker gets {fitting:g} CPU: the most one Ray node has")
            resources = {**resources, "cpu": fitting}
        for config, reason, seed, result in _run_all(picks, settings, data, base, resources,
                                                     folder):
            out_dir = run_dir(folder, config, seed, settings.seed)
            _ema_is_the_objective(result)
            # Cost figures as the proxy stage prices them (256 px, 1000 classes), whatever the
            # data set and resolution trained on, so the stages' fronts share an axis.
            result.update(CostModel(config.backbone).price(config).as_dict())
            number = None
            if settings.resume:
                number = _already_recorded(study, out_dir, result.get("epochs_done"))
            if number is None:
                lease.check()  # taken over: the study is another driver's now
                number = _record(study, config, reason, result, out_dir)
            rows.append({**result, "pick": reason, "name": config.name,
                         "rho": config.rho_text, "trial": number, "seed": seed})
            top1, raw_top1 = result.get("top1"), result.get("raw_top1")
            log(f"{config.name} [{config.rho_text}] ({reason}, seed {seed}): "
                f"{result.get('status')}, top-1 "
                + ("n/a" if top1 is None else f"{top1:.2f}%")
                + ("" if raw_top1 is None else f" (EMA; raw weights {raw_top1:.2f}%)")
                + f", {result.get('epochs_done', 0)} epochs in {result.get('wall_s', 0):.0f}s"
                + f" -> trial #{number}")
    finally:
        if started_ray:
            ray.shutdown()
        lease.release()
    order = {config.rho_text: i for i, (config, _) in enumerate(picks)}
    # The pick order, not the finishing order; each finalist's seeds together.
    rows.sort(key=lambda row: (order[row["rho"]], row["seed"]))
    runs = pd.DataFrame(rows).reindex(columns=FINALIST_COLUMNS)
    frame = summarize_seeds(runs, baseline_config(picks[0][0].backbone).rho_text)
    csv = folder / "finalists.csv"
    write_csv(frame, csv)  # counts as integers, not 640.0
    write_csv(runs, folder / "finalist_runs.csv")
    write_csv(trials_frame(study), folder / "trials.csv")  # with the full stage's rows now
    report = write_report(settings.study, storage=settings.storage,
                          reports_dir=settings.reports_dir)
    return {"finalists": frame, "runs": runs, "csv": csv, "report": report,
            "folder": folder / "finalists", "wall_s": time.time() - started}


def _ema_is_the_objective(result: dict[str, Any]) -> None:
    """With EMA on, the EMA model is what the paper reports and what `export` writes: its top-1
    becomes the recorded `top1`, the raw model's is kept as `raw_top1`."""
    if result.get("ema_top1") is not None:
        result["raw_top1"], result["top1"] = result.get("top1"), result["ema_top1"]
        result["raw_top5"], result["top5"] = result.get("top5"), result.get("ema_top5")


def _run_all(picks: list[tuple[RhoConfig, str]], settings: FinalistSettings, data: str,
             base: BaseData, resources: dict[str, float], folder: Path):
    """Yields `(config, reason, seed, result)` as each run ends (failures as status "failed").

    Every finalist runs once per seed; a run with seed s gets `settings` with `seed=s`, so all
    finalists and the baseline control share each seed's data order and trunk initialisation.
    """
    def failed(exc: BaseException) -> dict[str, Any]:
        cause = getattr(exc, "cause", None) or exc  # Ray wraps the worker's exception
        return {"status": str(Status.FAILED), "reason": f"{type(cause).__name__}: {cause}"[:500],
                "epochs_done": 0}

    runs = [(config, reason, seed) for seed in settings.run_seeds() for config, reason in picks]
    store = settings.job_store()
    if settings.workers_per_finalist > 1:
        for config, reason, seed in runs:
            job = run_job(config, seed, settings.seed)
            out_dir = folder / job
            out_dir.mkdir(parents=True, exist_ok=True)
            try:
                result = _train_ddp(config, job, out_dir,
                                    dataclasses.replace(settings, seed=seed), data, resources,
                                    base=base)
            except Exception as exc:  # recorded as the finalist's failure; the others go on
                result = failed(exc)
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
            result = failed(exc)
        finally:  # the driver alone writes reports/<study>/; the checkpoint stays in the store
            _pull_weights_once(store, run_job(config, seed, settings.seed), out_dir)
        yield config, reason, seed, _weights_here(result, out_dir)


def _pull_weights_once(store: Any, job: str, out_dir: Path) -> None:
    """Copies a finished run's files to the driver; its weights (~20 MB on MobileViT-S) then
    live there alone, not a second time in the job store (`reports/<study>/ray/`)."""
    store.pull(job, out_dir, skip=CHECKPOINTS)
    if (out_dir / WEIGHTS).is_file():
        store.drop(job, (WEIGHTS,))


def _weights_here(result: dict[str, Any], out_dir: Path) -> dict[str, Any]:
    """The result with its weights' path in the driver's folder, not the worker's scratch."""
    if result.get("weights"):
        result["weights"] = str(out_dir / WEIGHTS)
    return result
