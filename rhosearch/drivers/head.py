"""The head stage inside a search: its trunks, its heads, its record.

    rhosearch search --stage head --head-seeds 2 --head-trunks 1 --data fashion-mnist

Trunks are the baseline trained with the proxy recipe: the noise floor's seeds (search seed
+ 1 ... + `--noise-seeds`), then `--head-trunks` more. A search already trains those seeds to
measure the noise floor; this stage trains any that are missing first (as Ray tasks on the
budget, their weights kept as `reports/<study>/noise/seed<NNN>_<key>/model.safetensors`,
~22 MB each on MobileViT-S) and records them in `<study>::noise`, so the proxy stage that
follows does not train them again. Every trunk is then run once over the training and
validation images and every configuration's head trained on the cached maps
(`stages/head.py`), one Ray task per trunk with one proxy trial's resources, started as soon
as its trunk is trained, beside the other trunks' tasks: the stage runs wherever the budget
has room (a GPU per trunk on a GPU budget, any node of a cluster), and resumes per trunk. On 2
CPUs it takes as long as heads in the driver with both threads did (3 min 17 s against 3 min
23 s for the default digits search's trunks and heads, stop 26): a single-threaded task
trains a trunk's heads in about twice the time, and no CPU idles. A task's cache lives in its
own memory (8.6 KiB per image at 32 px on MobileViT-S; see `stages/head.py` for ImageNet). Each
finished pass of heads is appended to the task's `head/trunk<NNN>/runs.jsonl` and pushed to
the job store, so a search killed mid-stage resumes without training them again; the driver
pulls them into `reports/<study>/head/`, joins them in `head/runs.jsonl`, and writes the
per-configuration summary to `<study>::head` when every head is done. The trunks' weights
stay in `reports/<study>/noise/` only: the store's copy, which the tasks read, is dropped
once their heads are done (and put back if a later head stage needs it).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna
import pandas as pd
import ray
from optuna.trial import TrialState
from ray.util.queue import Queue

from rhosearch.core.cost import CostModel
from rhosearch.core.space import RhoConfig, baseline_config
from rhosearch.errors import RhoSearchError
from rhosearch.execution.jobstore import CHECKPOINTS
from rhosearch.execution.searcher import trial_job
from rhosearch.output import write_csv
from rhosearch.record.head import better_count, record_head, summarize_head
from rhosearch.record.study import pareto_front, stage_study, study_dir
from rhosearch.training.checkpoint import write_atomic
from rhosearch.vocab import RunFile, Stage, Status

if TYPE_CHECKING:
    from rhosearch.drivers.search_settings import SearchSettings
    from rhosearch.training.data import BaseData

__all__ = ["check_head_settings", "head_loaders", "run_head_stage", "trunk_seeds"]

STAGE = Stage.HEAD
WEIGHTS = RunFile.WEIGHTS
RUNS = "runs.jsonl"


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


def _head_job(seed: int) -> str:
    """The job folder of trunk `seed`'s heads (its `runs.jsonl`), in the store and under
    `reports/<study>/`."""
    return f"{STAGE}/trunk{seed:03d}"


def _heads_task(settings: SearchSettings, recipe: Any, data: BaseData, seed: int,
                configs: list[RhoConfig], news: Queue, trunk: dict | None = None) -> int:
    """A Ray task, on any node: every configuration's heads on trunk `seed`, its weights read
    from the job store, the heads its job holds already skipped; `runs.jsonl` is pushed to the
    store after every pass (a killed search resumes there) and its progress lines go to
    `news`. `trunk`: the result of the task that trained it (Ray starts this task once that
    one is done); returns the heads trained."""
    import tempfile

    import torch
    from safetensors.torch import load_model

    from rhosearch.core.model import create_model
    from rhosearch.stages.head import train_heads_on_trunk
    from rhosearch.training.data import adopt_base, dataset_info
    from rhosearch.training.datasets import head_recipe_for
    from rhosearch.training.train import load_recipe

    if trunk is not None and trunk.get("status") != Status.OK:
        news.put_nowait(f"head: trunk {seed}: not trained ({trunk.get('status')}); no heads")
        return 0
    adopt_base(data)
    assigned = ray.get_runtime_context().get_assigned_resources()
    torch.set_num_threads(max(1, int(assigned.get("CPU", 1))))
    device = torch.device("cuda" if assigned.get("GPU") and torch.cuda.is_available()
                          else "cpu")
    baseline = baseline_config(settings.space.backbone)
    store, job = settings.job_store(), _head_job(seed)
    with store.workdir(job, resume=True) as out_dir, tempfile.TemporaryDirectory() as weights:
        store.pull(trial_job(seed, baseline, stage=Stage.NOISE), Path(weights), skip=CHECKPOINTS)
        model = create_model(baseline, num_classes=dataset_info(settings.data,
                                                                root=settings.data_root))
        load_model(model, str(Path(weights) / WEIGHTS))
        train, val = head_loaders(settings.data, recipe, root=settings.data_root)
        new = train_heads_on_trunk(
            seed, model.to(device), configs, train=train, val=val,
            recipe=load_recipe(head_recipe_for(settings.data), settings.head_overrides),
            head_seeds=range(settings.head_seeds), runs_path=out_dir / RUNS, log=news.put_nowait,
            on_pass=lambda runs: store.push(out_dir, job))
        store.push(out_dir, job)
    return len(new)


def _record_trunks(study: optuna.Study, settings: SearchSettings, results: dict[int, dict],
                   n_val: int) -> None:
    """Records each new trained trunk (its files already pulled into `reports/<study>/noise/`)
    as a noise seed of `<study>::noise` (the proxy stage then does not train it again)."""
    baseline = baseline_config(settings.space.backbone)
    noise = stage_study(study, Stage.NOISE)
    recorded = {t.user_attrs.get("seed") for t in noise.get_trials(
        deepcopy=False, states=(TrialState.COMPLETE,))}
    cost = CostModel(baseline.backbone).price(baseline)  # at the paper's point (vocab.PRICED)
    for seed, result in results.items():
        if result["status"] == Status.OK and seed not in recorded and result.get("top1"):
            attrs = {**result, **cost.as_dict(), **baseline.as_dict(),
                     "stage": str(Stage.NOISE), "seed": seed, "trained": True,
                     "n_val": n_val, "source": "head-stage trunk"}
            attrs = {k: v for k, v in attrs.items() if isinstance(v, (int, float, str, bool))}
            noise.add_trial(optuna.trial.create_trial(
                values=[float(attrs[n]) for n in settings.objectives], user_attrs=attrs))


def _run_trunks_and_heads(study: optuna.Study, settings: SearchSettings, recipe: Any,
                          resources: dict[str, float], data: BaseData,
                          configs: list[RhoConfig], log: Callable[[str], None]) -> list[int]:
    """Trains the missing trunks and then each trunk's missing heads, all as Ray tasks of one
    proxy trial's resources (a trunk's heads start as soon as it is trained, beside the other
    trunks); records the new trunks and pulls every head job. Returns the seeds of the usable
    trunks."""
    from rhosearch.stages.head import read_runs  # torch: not imported by `rhosearch --help`

    baseline = baseline_config(settings.space.backbone)
    folder = study_dir(settings.study, settings.reports_dir)
    store = settings.job_store()
    jobs = {s: trial_job(s, baseline, stage=Stage.NOISE) for s in trunk_seeds(settings)}
    weights = {s: folder / job / WEIGHTS for s, job in jobs.items()}
    recovered = {}
    for seed in [s for s, path in weights.items() if not path.is_file()]:
        # A trunk a stopped search trained but did not pull yet is in the store, finished.
        job = jobs[seed]
        store.pull(job, folder / job, skip=CHECKPOINTS)
        if weights[seed].is_file() and (folder / job / "result.json").is_file():
            recovered[seed] = json.loads((folder / job / "result.json").read_text())
        else:
            weights[seed].unlink(missing_ok=True)
    _record_trunks(study, settings, recovered, len(data.val))
    missing = [s for s, path in weights.items() if not path.is_file()]
    for seed in missing:  # heads of an earlier, unfinished trunk of this seed do not count
        store.drop(_head_job(seed), (RUNS,))
        (folder / _head_job(seed) / RUNS).unlink(missing_ok=True)
    wanted = {(h, c.rho_text) for h in range(settings.head_seeds) for c in configs}
    todo = []
    for seed in weights:  # heads a stopped search pushed are in the store: read them first
        store.pull(_head_job(seed), folder / _head_job(seed))
        done = {(r.head_seed, r.rho) for r in read_runs(folder / _head_job(seed) / RUNS)}
        if seed in missing or wanted - done:
            todo.append(seed)
    if missing:
        log(f"head: training {len(missing)} trunk(s) (the baseline, seeds "
            f"{', '.join(map(str, missing))}; {recipe.epochs} epochs each), each trunk's heads "
            "as soon as it is trained")
    options = dict(num_cpus=resources["cpu"], num_gpus=resources["gpu"], max_retries=0)
    trunk_refs = {s: ray.remote(_trunk_task).options(**options).remote(settings, recipe, data, s)
                  for s in missing}
    for seed in todo:  # a trunk trained earlier whose weights left the store: put them back
        if seed not in missing:
            store.push(folder / jobs[seed], jobs[seed], skip=CHECKPOINTS)
    news = Queue(actor_options={"num_cpus": 0})  # the tasks' progress lines, for the console
    head_refs = [ray.remote(_heads_task).options(**options).remote(
        settings, recipe, data, s, configs, news, trunk_refs.get(s)) for s in todo]
    seeds = {ref: seed for seed, ref in trunk_refs.items()}

    def record(ref: ray.ObjectRef) -> None:  # each trunk as it finishes: a Ctrl-C keeps it
        if ref in seeds:
            result = ray.get(ref)
            job = jobs[seeds[ref]]
            store.pull(job, folder / job, skip=CHECKPOINTS)
            _record_trunks(study, settings, {seeds[ref]: result}, len(data.val))

    try:
        _wait_logging([*trunk_refs.values(), *head_refs], news, log, on_done=record)
        ray.get(head_refs)
    except ray.exceptions.RayTaskError as exc:  # a refusal inside a task: its one line
        if isinstance(exc.cause, RhoSearchError):
            raise exc.cause from None
        raise
    finally:
        for seed in todo:  # what each trunk's heads did, even when stopped
            store.pull(_head_job(seed), folder / _head_job(seed))
    usable = [s for s, path in weights.items() if path.is_file()]
    if not usable:
        raise RhoSearchError("the head stage has no trunk: every trunk's training failed "
                             f"(see {folder / 'noise'})")
    for seed in usable:  # reports/ keeps the weights; the store's copy was for the tasks
        store.drop(trial_job(seed, baseline, stage=Stage.NOISE), (WEIGHTS,))
    return usable


def _wait_logging(refs: list[ray.ObjectRef], news: Queue, log: Callable[[str], None], *,
                  on_done: Callable[[ray.ObjectRef], None]) -> None:
    """Waits for every task in `refs`, logging the lines they put in `news` as they come and
    calling `on_done` with each task as it finishes."""
    pending = list(refs)
    while True:
        if pending:
            done, pending = ray.wait(pending, num_returns=len(pending), timeout=1.0)
            for ref in done:
                on_done(ref)
        for line in news.get_nowait_batch(news.qsize()) if news.qsize() else []:
            log(line)
        if not pending:
            return


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
    """Trains the missing trunks and heads (Ray tasks), records the summary in
    `<study>::head`; returns the stage's front (configurations)."""
    from rhosearch.stages.head import read_runs, runs_text

    configs = list(settings.space.configs())
    trunks = _run_trunks_and_heads(study, settings, recipe, resources, data, configs, log)
    folder = study_dir(settings.study, settings.reports_dir) / STAGE
    runs_path = folder / RUNS  # every trunk's heads in one file, as benchmarks read them
    folder.mkdir(parents=True, exist_ok=True)
    heads = [r for seed in trunks for r in read_runs(folder.parent / _head_job(seed) / RUNS)]
    write_atomic(runs_path, runs_text(heads))
    wanted = {(s, h, c.rho_text) for s in trunks for h in range(settings.head_seeds)
              for c in configs}
    runs = pd.DataFrame([r.__dict__ for r in heads if r.key in wanted])
    runs = runs.drop_duplicates(["trunk", "head_seed", "rho"])
    baseline = baseline_config(settings.space.backbone)
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
