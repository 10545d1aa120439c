"""The head stage inside a search: its trunks, its heads, its record.

    rhosearch search --stage head --head-seeds 2 --head-trunks 1 --data fashion-mnist

Trunks are the baseline trained with the proxy recipe: the noise floor's seeds (search seed
+ 1 ... + `--noise-seeds`), then `--head-trunks` more. A search already trains those seeds to
measure the noise floor; this stage trains any that are missing first (as Ray tasks on the
budget, their weights kept as `reports/<study>/noise/seed<NNN>_<key>/model.safetensors`,
~22 MB each on MobileViT-S) and records them in `<study>::noise`, so the proxy stage that
follows does not train them again. Every trunk is then run once over the training and
validation images and every configuration's head trained on the cached maps
(`stages/head.py`), in this driver process with the budget's CPUs (or its first GPU): the
cache lives in the driver's memory, one trunk at a time (8.6 KiB per image at 32 px on
MobileViT-S; see `stages/head.py` for ImageNet). Each finished pass of heads is appended to
`reports/<study>/head/runs.jsonl`, so a search killed mid-stage resumes without training
them again; the per-configuration summary goes to `<study>::head` when every head is done.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna
import pandas as pd
import ray
from optuna.trial import TrialState

from rhosearch.core.cost import CostModel
from rhosearch.core.space import RhoConfig, baseline_config
from rhosearch.errors import RhoSearchError
from rhosearch.execution.jobstore import CHECKPOINTS
from rhosearch.execution.searcher import trial_job
from rhosearch.output import write_csv
from rhosearch.record.head import better_count, record_head, summarize_head
from rhosearch.record.study import pareto_front, stage_study, study_dir
from rhosearch.vocab import RunFile, Stage, Status

if TYPE_CHECKING:
    from rhosearch.drivers.search_settings import SearchSettings
    from rhosearch.training.data import BaseData

__all__ = ["check_head_settings", "head_loaders", "run_head_stage", "trunk_seeds"]

STAGE = Stage.HEAD
WEIGHTS = RunFile.WEIGHTS


def check_head_settings(settings: SearchSettings) -> None:
    """One line for a head stage that cannot run on this space, before anything is created
    (its counts are checked by `SearchSettings` itself)."""
    if settings.stage == Stage.HEAD and not trunk_seeds(settings):
        raise RhoSearchError("the head stage has no trunk: --noise-seeds 0 and --head-trunks 0; "
                             "give --head-trunks 2 (or more noise seeds)")
    baseline = baseline_config(settings.space.backbone)
    produced = len(baseline.block_widths)
    taps = {k for c in settings.space.configs() for k, ch in enumerate(c.shortcut_channels)
            if ch}
    if not taps or max(taps) >= produced:
        raise RhoSearchError(f"space {settings.space.name!r} taps no block the "
                             f"{baseline.backbone} trunk produces (blocks 1-{produced})")


def trunk_seeds(settings: SearchSettings) -> list[int]:
    """The trunks' seeds: the noise floor's, then `head_trunks` more."""
    first = settings.seed + 1
    return list(range(first, first + settings.noise_seeds + settings.head_trunks))


def _trunk_task(settings: SearchSettings, recipe: Any, data: BaseData, seed: int) -> dict:
    """A Ray task: trains the baseline with `seed` (the proxy recipe), keeping its weights."""
    import torch

    from rhosearch.training.data import adopt_base
    from rhosearch.training.train import train_config

    adopt_base(data)
    assigned = ray.get_runtime_context().get_assigned_resources()
    torch.set_num_threads(max(1, int(assigned.get("CPU", 1))))
    baseline = baseline_config(settings.space.backbone)
    store, job = settings.job_store(), trial_job(seed, baseline, stage=Stage.NOISE)
    with store.workdir(job) as out_dir:
        result = train_config(baseline, data=settings.data, recipe=recipe, out_dir=out_dir,
                              seed=seed, data_root=settings.data_root, progress=False,
                              checkpoint=False, weights=True)
        store.push(out_dir, job)
    # Where it ran, as a proxy trial records it (a cluster's tests check every job's node).
    return {**result, "node": ray.get_runtime_context().get_node_id(), "worker_pid": os.getpid()}


def _train_trunks(study: optuna.Study, settings: SearchSettings, recipe: Any,
                  resources: dict[str, float], data: BaseData,
                  log: Callable[[str], None]) -> dict[int, Any]:
    """Trains the trunks without weights (Ray tasks, as many at once as the budget holds),
    records new noise seeds; returns seed -> weights path of every usable trunk."""
    baseline = baseline_config(settings.space.backbone)
    folder = study_dir(settings.study, settings.reports_dir)
    paths = {s: folder / trial_job(s, baseline, stage=Stage.NOISE) / WEIGHTS
             for s in trunk_seeds(settings)}
    missing = [s for s, path in paths.items() if not path.is_file()]
    if missing:
        log(f"head: training {len(missing)} trunk(s) (the baseline, seeds "
            f"{', '.join(map(str, missing))}; {recipe.epochs} epochs each)")
        task = ray.remote(_trunk_task).options(
            num_cpus=resources["cpu"], num_gpus=resources["gpu"], max_retries=0)
        results = ray.get([task.remote(settings, recipe, data, s) for s in missing])
        noise = stage_study(study, Stage.NOISE)
        recorded = {t.user_attrs.get("seed") for t in noise.get_trials(
            deepcopy=False, states=(TrialState.COMPLETE,))}
        cost = CostModel(baseline.backbone).price(baseline)  # at the paper's point (vocab.PRICED)
        for seed, result in zip(missing, results, strict=True):
            job = trial_job(seed, baseline, stage=Stage.NOISE)
            settings.job_store().pull(job, folder / job, skip=CHECKPOINTS)
            if result["status"] == Status.OK and seed not in recorded and result.get("top1"):
                attrs = {**result, **cost.as_dict(), **baseline.as_dict(),
                         "stage": str(Stage.NOISE), "seed": seed, "trained": True,
                         "n_val": len(data.val), "source": "head-stage trunk"}
                attrs = {k: v for k, v in attrs.items() if isinstance(v, (int, float, str, bool))}
                noise.add_trial(optuna.trial.create_trial(
                    values=[float(attrs[n]) for n in settings.objectives], user_attrs=attrs))
    usable = {s: p for s, p in paths.items() if p.is_file()}
    if not usable:
        raise RhoSearchError("the head stage has no trunk: every trunk's training failed "
                             f"(see {folder / 'noise'})")
    return usable


def head_loaders(data: str, recipe: Any, *, root: Path | None = None) -> tuple[Any, Any]:
    """The training images of `data` through the evaluation transform (maps are cached once:
    no augmentation), and the validation images, in a fixed order, as the trunks' (proxy)
    `recipe` sizes them."""
    from torch.utils.data import DataLoader

    from rhosearch.training.data import ScaledDataset, build_datasets

    train, val = build_datasets(data, resolution=recipe.resolution,
                                root=root, subset=recipe.subset,
                                val_subset=recipe.val_subset, crop_pct=recipe.crop_pct)
    plain = ScaledDataset(train.base, resolution=recipe.resolution, train=False,
                          crop_pct=recipe.crop_pct)
    return (DataLoader(plain, batch_size=256, shuffle=False),
            DataLoader(val, batch_size=256, shuffle=False))


def run_head_stage(study: optuna.Study, settings: SearchSettings, recipe: Any,
                   resources: dict[str, float], log: Callable[[str], None], *,
                   data: BaseData) -> list[RhoConfig]:
    """Trains the missing trunks and heads, records the summary in `<study>::head`; returns
    the stage's front (configurations)."""
    import torch
    from safetensors.torch import load_model

    from rhosearch.core.model import create_model
    from rhosearch.stages.head import read_runs, train_heads_on_trunk
    from rhosearch.training.data import dataset_info
    from rhosearch.training.datasets import head_recipe_for
    from rhosearch.training.train import load_recipe

    head_recipe = load_recipe(head_recipe_for(settings.data), settings.head_overrides)
    trunks = _train_trunks(study, settings, recipe, resources, data, log)
    folder = study_dir(settings.study, settings.reports_dir) / STAGE
    folder.mkdir(parents=True, exist_ok=True)
    runs_path = folder / "runs.jsonl"
    configs = list(settings.space.configs())
    threads = torch.get_num_threads()
    torch.set_num_threads(max(1, int(settings.budget.cpus or os.cpu_count() or 1)))
    device = torch.device("cuda" if settings.budget.gpus and torch.cuda.is_available()
                          else "cpu")
    baseline = baseline_config(settings.space.backbone)
    train_loader, val_loader = head_loaders(settings.data, recipe,
                                            root=settings.data_root)
    num_classes = dataset_info(settings.data, root=settings.data_root)
    try:
        for seed, path in trunks.items():
            trunk = create_model(baseline, num_classes=num_classes)
            load_model(trunk, str(path))
            train_heads_on_trunk(seed, trunk.to(device), configs, train=train_loader,
                                 val=val_loader, recipe=head_recipe,
                                 head_seeds=range(settings.head_seeds), runs_path=runs_path,
                                 log=log)
    finally:
        torch.set_num_threads(threads)
    wanted = {(s, h, c.rho_text) for s in trunks for h in range(settings.head_seeds)
              for c in configs}
    runs = pd.DataFrame([r.__dict__ for r in read_runs(runs_path) if r.key in wanted])
    runs = runs.drop_duplicates(["trunk", "head_seed", "rho"])
    summary = summarize_head(runs, baseline.rho_text)
    summary["backbone"] = settings.space.backbone
    write_csv(summary.round(4), folder / "summary.csv")
    companion = stage_study(study, STAGE)
    written = record_head(companion, settings.space, summary)
    frame = summary.assign(stage=STAGE, state="COMPLETE")
    prices = CostModel(settings.space.backbone)  # the paper's point (vocab.PRICED)
    frame["overhead_params"] = [prices.price(RhoConfig.parse(r, backbone=b)).overhead_params
                                for r, b in zip(frame["rho"], frame["backbone"], strict=True)]
    frame["params"] = 0
    front = [RhoConfig.parse(r, backbone=settings.space.backbone)
             for r in pareto_front(frame, stage=STAGE)["rho"]]
    better = better_count(summary)
    log(f"head: {len(configs)} configurations x {len(trunks)} trunks x {settings.head_seeds} "
        f"head seeds ({len(runs)} heads; {written} recorded in {companion.study_name}); "
        f"{better} better than the baseline's head (at 5 %, Holm); front of {len(front)}: "
        + ", ".join(c.name for c in front))
    return front
