"""The multi-objective rho search: Optuna decides what to try, Ray Tune runs the trials.

    rhosearch search --budget 2cpus --trials 12 --study demo
    rhosearch search --budget 6gpus --gpus-per-trial 0.5 --data /data/imagenet --study in1k

Design. The Optuna study (see `study.py`) is the record; Ray Tune is the executor. A Tune
`Searcher` (`StudySearcher`) asks the study for a rho vector whenever Tune has room for a trial
and tells it the outcome when the trial ends, so every write to the storage happens in this
driver process. Before a rho vector costs a trial it is priced with the closed-form cost model:
an infeasible one (over the space's constraints) or one already measured is answered without
training and does not count against `--trials`. Tune's ASHA scheduler stops weak trials after
their first proxy epochs; those are recorded as PRUNED with the epochs they ran. The paper's
baseline and Table 5 configurations are enqueued first, so they are measured under the same
recipe as everything the search finds.

Resume: the study holds every finished trial. `--resume` reopens it, marks trials left RUNNING
by a killed driver as FAIL ("interrupted"), and asks only for the trials still missing.

This module runs the stages in turn and records the noise floor; beside it, `search_settings`
(the settings and the expected time), `search_study` (opening, resuming and queueing the
study), `search_stages` (the one-shot, proxy and resolve stages) and `search_summary` (the
verdict and next steps). The searcher, trainable, budget and Ray start-up live in
`execution/searcher.py` and `execution/resources.py`.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ray

from rhosearch.deploy.latency import LatencyTable
from rhosearch.deploy.latency_model import space_pricer
from rhosearch.drivers.head import check_head_settings, run_head_stage, trunk_seeds
from rhosearch.drivers.search_settings import SearchSettings, expected_seconds
from rhosearch.drivers.search_stages import (
    record_fidelity,
    run_oneshot_stage,
    run_proxy_stage,
    run_resolve_stage,
    with_latency_columns,
)
from rhosearch.drivers.search_study import (
    check_resolvable,
    check_resumed_space,
    check_study_name,
    close_waiting,
    enqueue_front,
    fail_interrupted,
    open_search_study,
    reruns_waiting,
)
from rhosearch.drivers.search_summary import all_failed, next_steps, verdict
from rhosearch.errors import Terminated
from rhosearch.execution.resources import (
    check_local_gpus,
    check_ray_address,
    check_trial_fits,
    cluster_address,
    start_ray,
    trial_resources,
)
from rhosearch.execution.searcher import STAGE
from rhosearch.output import write_csv
from rhosearch.record.lease import DriverLease
from rhosearch.record.stats import noise_band
from rhosearch.record.study import (
    default_storage_url,
    pareto_front,
    stage_family,
    stage_noise,
    study_dir,
    trials_frame,
)
from rhosearch.training.data import BaseData, load_base
from rhosearch.training.datasets import proxy_recipe_for
from rhosearch.vocab import ALL_STAGES, RunFile, Stage

__all__ = ["SearchSettings", "all_failed", "enqueue_front", "expected_seconds",
           "next_steps", "open_search_study", "run_search", "say", "verdict",
           "with_latency_columns"]


def say(line: str) -> None:
    """The default progress line writer. Not `print` itself: Tune pickles its callbacks, and a
    builtin pickles by reference, which fails once anything (Ray Train, a test) swaps
    `builtins.print`."""
    print(line, flush=True)


def run_search(
    settings: SearchSettings, *, trial_fn: Callable[..., None] | None = None,
    log: Callable[[str], None] = say,
) -> dict[str, Any]:
    """Runs (or resumes) a search; returns the study, its trials table, front and fidelity.

    Args:
        settings: what to search, which stages, and with which resources.
        trial_fn: the Tune trainable (default: `proxy_trial`); gets `(config, settings=...)`.
        log: where progress lines go.
    """
    from rhosearch.training.data import dataset_info
    from rhosearch.training.train import load_recipe

    # Trials run in Ray workers with their own working directories: paths must be absolute.
    settings = dataclasses.replace(settings, reports_dir=Path(settings.reports_dir).resolve())
    if settings.stage == Stage.RESOLVE:  # on an existing study: reopened, as --resume does
        check_resolvable(settings)
        settings = dataclasses.replace(settings, resume=True)
    check_head_settings(settings)
    settings = dataclasses.replace(settings, recipe=settings.recipe or proxy_recipe_for(
        settings.data))
    if settings.early_stop == "asha":  # ASHA decides on each epoch's top-1: validate them all
        settings = dataclasses.replace(
            settings, recipe_overrides={**settings.recipe_overrides, "val_every": 1})
    recipe = load_recipe(settings.recipe, settings.recipe_overrides)
    dataset_info(settings.data, root=settings.data_root)
    # Loaded here once, which checks it; every Ray job of the search gets this copy.
    data = load_base(settings.data, root=settings.data_root, download=settings.download,
                     subset=recipe.subset, val_subset=recipe.val_subset)
    log(f"data: {settings.data}, {len(data.train):,} training and {len(data.val):,} validation "
        "images, checked")
    expected = expected_seconds(settings, recipe, len(data.train))
    if expected is not None and not settings.resume:
        log(f"expected: at most about {max(1, round(expected / 60))} min on "
            f"{settings.budget.cpus:g} quiet CPUs (longer on a busy machine: the progress lines "
            "give the pace)")
    resources = trial_resources(settings.budget, gpus_per_trial=settings.gpus_per_trial,
                                cpus_per_trial=settings.cpus_per_trial)
    check_local_gpus(settings.budget, address=settings.address)
    check_ray_address(settings.address)
    settings.job_store().check_writable()
    check_resumed_space(settings)
    url = settings.storage or default_storage_url(settings.study, settings.reports_dir)
    # Quiet Tune's own console tables (our _Progress prints the search's state), and let Ctrl-C
    # reach us as KeyboardInterrupt so interrupted trials are marked and a resume is printed.
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("TUNE_DISABLE_SIGINT_HANDLER", "1")
    # A cluster is joined before the lease (which writes the study's file), so one short of the
    # budget's GPUs, with a node that does not see the job store, or with no node that holds a
    # proxy trial, is refused with nothing created; a local Ray (one node, holding the budget)
    # starts once the lease is held, so a study refused by its lease costs no Ray start.
    joined = False
    try:
        if cluster_address(settings.address) or ray.is_initialized():
            joined = start_ray(settings.budget, address=settings.address)
            settings.job_store().check_shared()
            if settings.stage != Stage.ONESHOT:  # the supernet takes what one node has
                check_trial_fits(resources)
        with DriverLease.acquire(url, settings.study, command="search") as lease:
            return _run_search_leased(settings, recipe, resources, trial_fn, log, data=data,
                                      joined=joined, lease=lease)
    finally:
        if joined:
            ray.shutdown()


def _run_search_leased(
    settings: SearchSettings, recipe: Any, resources: dict[str, float],
    trial_fn: Callable[..., None] | None, log: Callable[[str], None], *, data: BaseData,
    joined: bool, lease: DriverLease,
) -> dict[str, Any]:
    """`run_search` once this process holds the study's lease: nothing else writes to it.
    `joined`: this search has already joined a cluster, and leaves it when its jobs end.
    Once `lease` is lost (taken over), its RUNNING trials are the new driver's: left alone."""
    folder = study_dir(settings.study, settings.reports_dir)
    check_study_name(settings)
    if settings.latency_objective:  # before Ray: timings want the CPUs to themselves
        settings = _with_latency_pricer(settings, log)
    started_ray = start_ray(settings.budget, address=settings.address) or joined
    try:
        study = open_search_study(settings)
    except BaseException:
        if started_ray:
            ray.shutdown()
        raise
    study.set_user_attr("n_val", len(data.val))
    if settings.latency_pricer is not None:
        study.set_user_attr("latency", settings.latency_pricer.describe())
    if settings.resume:
        fail_interrupted(study, settings.space)  # what a killed (kill -9) driver left RUNNING
        if reruns := reruns_waiting(study):
            log(f"resume: {reruns} interrupted trial(s) will be run again (same rho)")
    started = time.time()
    deadline = started + settings.budget.wall_s if settings.budget.wall_s else None
    interrupted = terminated = False
    try:
        if settings.stage in (Stage.ONESHOT, ALL_STAGES):
            run_oneshot_stage(study, settings, recipe, resources, log, data=data)
        if settings.stage == ALL_STAGES and not trunk_seeds(settings):
            log("head: skipped (no trunk: --noise-seeds 0 and --head-trunks 0)")
        elif settings.stage in (Stage.HEAD, ALL_STAGES):
            front = run_head_stage(study, settings, recipe, resources, log, data=data)
            if settings.stage == ALL_STAGES and settings.enqueue_head_front:
                queued = enqueue_front(study, settings.space, front, source="head-front")
                log(f"head: {queued} front configuration(s) queued as the proxy stage's first "
                    "proposals (--enqueue-head-front)")
        if settings.stage in (Stage.PROXY, ALL_STAGES):
            interrupted = run_proxy_stage(study, settings, recipe, resources, trial_fn, log,
                                           data=data, deadline=deadline)
            if not interrupted:  # an interrupted search keeps its queue for --resume
                close_waiting(study, settings.space)
        if settings.stage in (Stage.RESOLVE, ALL_STAGES) and not interrupted:
            interrupted = run_resolve_stage(study, settings, recipe, resources, trial_fn, log,
                                             data=data, deadline=deadline)
    except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM as the CLI raises it
        interrupted, terminated = True, isinstance(exc, Terminated)
    finally:
        if lease.writes_allowed:
            fail_interrupted(study, settings.space)
        if started_ray:
            ray.shutdown()
    lease.check()
    frame = trials_frame(study)
    noise = stage_noise(frame, STAGE)
    found = stage_family(frame, STAGE)
    family = found[0] if found else None
    if noise is not None:
        if family is not None and (band := noise_band(family)) is not None:
            noise["band"] = [round(band[0], 3), round(band[1], 3)]
            noise["band_m"] = family.m
        study.set_user_attr("noise_floor", noise)
    fidelity = record_fidelity(study, frame)
    folder.mkdir(parents=True, exist_ok=True)
    write_csv(frame, folder / RunFile.TRIALS)  # counts as integers, not 640.0
    front = pareto_front(frame)
    return {"study": study, "trials": frame, "front": front, "fidelity": fidelity,
            "noise": noise, "family": family, "resolve": study.user_attrs.get("resolve"),
            "verdict": verdict(frame, family, settings.space.backbone),
            "interrupted": interrupted, "terminated": terminated,
            "wall_s": time.time() - started, "folder": folder}


def _with_latency_pricer(settings: SearchSettings, log: Callable[[str], None]
                         ) -> SearchSettings:
    """`settings` with the space's latency pricer: the table under `reports_dir`, with the
    configurations its model needs measured first (once per machine: the table keeps them)."""
    table = LatencyTable.for_folder(settings.reports_dir)
    pricer = space_pricer(settings.space, table=table, settings=settings.latency,
                          progress=lambda line: log(f"latency: {line}"))
    log(f"{pricer.describe()} ({table.path})")
    return dataclasses.replace(settings, latency_pricer=pricer)
