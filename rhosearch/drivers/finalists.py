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
weights when the recipe has EMA; load with `export.load_model`). A stopped run's checkpoint
stays in the store, where `--resume` continues it from any node; a finished run's leaves it.
Results go into the study as trials of stage "full" and into `reports/<study>/finalists.csv`;
the study's HTML report is rewritten at the end.

This module holds the settings and the stage's sequence (`train_finalists`); the two executors
(a Ray task per run, or Ray Train DDP across workers) are in `finalist_runs`, recording a run
in the study in `finalist_record`, picking in `record/picking.py`. The seed summary
(`study.summarize_seeds`) lives with the record, so the report draws the same one.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import ray

from rhosearch import values
from rhosearch.core.cost import CostModel
from rhosearch.core.space import baseline_config
from rhosearch.drivers.finalist_record import already_recorded, record_run
from rhosearch.drivers.finalist_runs import run_all, run_dir, worker_resources
from rhosearch.errors import RhoSearchError
from rhosearch.execution.jobstore import JobStore
from rhosearch.execution.resources import Budget, one_node_share, start_ray
from rhosearch.output import write_csv
from rhosearch.record.lease import DriverLease
from rhosearch.record.picking import DEFAULT_PICK, picks_with_reasons
from rhosearch.record.study import (
    default_storage_url,
    load_study,
    study_dir,
    summarize_seeds,
    trials_frame,
)
from rhosearch.training.datasets import full_recipe_for

__all__ = [
    "FinalistSettings",
    "train_finalists",
]


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
    resources = worker_resources(settings, len(picks))
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
        for config, reason, seed, result in run_all(picks, settings, data, base, resources,
                                                     folder):
            out_dir = run_dir(folder, config, seed, settings.seed)
            _ema_is_the_objective(result)
            # Cost figures as the proxy stage prices them (256 px, 1000 classes), whatever the
            # data set and resolution trained on, so the stages' fronts share an axis.
            result.update(CostModel(config.backbone).price(config).as_dict())
            number = None
            if settings.resume:
                number = already_recorded(study, out_dir, result.get("epochs_done"))
            if number is None:
                lease.check()  # taken over: the study is another driver's now
                number = record_run(study, config, reason, result, out_dir)
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


