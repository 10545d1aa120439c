"""The stages a search runs, each on the open study: the one-shot supernet (one Ray task),
the proxy trials and the resolve stage's paired seeds (Ray Tune, asked by the searchers of
`execution.searcher`). `drivers.search.run_search` calls them in turn.

    run_oneshot_stage(study, settings, recipe, resources, log, data=data)
    interrupted = run_proxy_stage(study, settings, recipe, resources, None, log, data=data)
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
import ray
from ray import tune
from ray.tune.schedulers import ASHAScheduler
from ray.util.queue import Queue

from rhosearch.core.space import RhoConfig
from rhosearch.drivers.search_settings import SearchSettings
from rhosearch.drivers.search_study import enqueue_front
from rhosearch.errors import RhoSearchError
from rhosearch.execution.jobstore import CHECKPOINTS
from rhosearch.execution.resources import (
    budget_cpus,
    concurrent_trials,
    one_node_share,
)
from rhosearch.execution.searcher import (
    STAGE,
    Progress,
    ResolveSearcher,
    StudySearcher,
    proxy_trial,
)
from rhosearch.record.study import (
    pareto_front,
    record_scores,
    stage_agreement,
    stage_family,
    stage_runs,
    stage_study,
    study_dir,
    trials_frame,
)
from rhosearch.stages.resolve import pick_contenders, resolve_round
from rhosearch.training.data import BaseData, adopt_base
from rhosearch.vocab import ALL_STAGES, RunFile, Stage, Status

__all__ = [
    "record_fidelity", "run_oneshot_stage", "run_proxy_stage", "run_resolve_stage",
    "with_latency_columns",
]


def run_proxy_stage(
    study: optuna.Study, settings: SearchSettings, recipe: Any, resources: dict[str, float],
    trial_fn: Callable[..., None] | None, log: Callable[[str], None], *, data: BaseData,
    deadline: float | None = None,
) -> bool:
    """Runs the missing proxy trials (and the baseline's noise seeds) through Ray Tune; True if
    it was interrupted. After `deadline` (the budget's wall time) no trial starts."""
    searcher = StudySearcher(study, settings, epochs=recipe.epochs, n_val=len(data.val),
                             deadline=deadline)
    if searcher.total <= 0:
        return False
    if searcher.noise_pending:
        log(f"noise floor: training the baseline with {len(searcher.noise_pending)} more "
            f"seed(s) ({', '.join(map(str, searcher.noise_pending))}) beside the search")
    _tune_fit(searcher, settings, recipe, resources, trial_fn, log, data=data)
    return bool(searcher.live)


def _tune_fit(searcher: StudySearcher, settings: SearchSettings, recipe: Any,
              resources: dict[str, float], trial_fn: Callable[..., None] | None,
              log: Callable[[str], None], *, data: BaseData) -> None:
    """Runs what `searcher` hands out through Ray Tune, `resources` per trial."""
    trainable = tune.with_resources(
        tune.with_parameters(trial_fn or proxy_trial, settings=settings, data=data), resources)
    tuner = tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            search_alg=searcher, num_samples=searcher.total,
            scheduler=_scheduler(settings.early_stop, recipe.epochs),
            reuse_actors=settings.reuse_workers,
            # Without it Tune holds a custom searcher to one pending trial: a trial waits for
            # the one before it to start running, and warm workers run one trial at a time.
            max_concurrent_trials=concurrent_trials(settings.budget, resources),
        ),
        run_config=tune.RunConfig(
            name="tune", storage_path=settings.job_store().tune_path, verbose=0,
            callbacks=[Progress(searcher, settings, log)],
        ),
    )
    tuner.fit()


def _contenders(frame: pd.DataFrame, control: str, limit: int) -> list[str]:
    """The proxy front and the configurations whose interval overlaps it (`pick_contenders`),
    from each configuration's first proxy run."""
    proxy = frame[(frame["stage"] == STAGE) & (frame["state"] == "COMPLETE")
                  & (frame["status"] == Status.OK)].drop_duplicates("rho")
    points = [(row.rho, float(row.top1), float(row.top1_lo), float(row.top1_hi),
               float(row.overhead_params)) for row in proxy.itertuples()
              if pd.notna(row.top1_lo)]
    return pick_contenders(points, control=control, limit=limit)


def run_resolve_stage(
    study: optuna.Study, settings: SearchSettings, recipe: Any, resources: dict[str, float],
    trial_fn: Callable[..., None] | None, log: Callable[[str], None], *, data: BaseData,
    deadline: float | None = None,
) -> bool:
    """Races the contenders against the baseline with further paired seeds, one round at a
    time (`stages.resolve.resolve_round`), until every contender is decided, the seed cap is
    reached or the budget's wall time is spent; records what it spent and decided in the study
    (user attr "resolve"). True if interrupted."""
    if settings.resolve_seeds <= 0:
        return False
    started, spent, rounds = time.time(), 0, 0
    max_seeds = 1 + settings.resolve_seeds
    contenders: list[str] | None = None
    plan = None
    while True:
        frame = trials_frame(study)
        found = stage_family(frame, STAGE)
        if found is None:
            log("resolve: no baseline measured in the proxy stage: nothing to race against")
            return False
        family, control = found
        if contenders is None:
            contenders = _contenders(frame, control, settings.contenders_raced())
            log(f"resolve: racing {len(contenders)} contender(s) against the baseline with up "
                f"to {settings.resolve_seeds} more paired seed(s) each: "
                + (", ".join(contenders) or "none"))
        runs: dict[str, dict[int, float]] = {}
        for row in stage_runs(frame, STAGE).itertuples(index=False):
            runs.setdefault(row.rho, {})[int(row.seed_key)] = float(row.top1)
        plan = resolve_round(family, runs, control=control, contenders=contenders,
                             first_seed=settings.seed, max_seeds=max_seeds)
        if plan.done:
            break
        if deadline is not None and time.time() >= deadline:
            log(f"resolve: wall-time budget ({settings.budget.describe()}) spent; "
                f"{len(plan.jobs)} run(s) not started")
            break
        rounds += 1
        searcher = ResolveSearcher(study, settings, epochs=recipe.epochs, n_val=len(data.val),
                                   jobs=plan.jobs)
        _tune_fit(searcher, settings, recipe, resources, trial_fn, log, data=data)
        spent += len(plan.jobs) - len(searcher.pending)
        if searcher.live_jobs:  # interrupted mid-round
            return True
    decisions = {rho: list(d) for rho, d in (plan.decisions if plan else {}).items()}
    summary = {"runs": spent, "rounds": rounds, "wall_s": round(time.time() - started, 1),
               "max_seeds": max_seeds, "decisions": decisions}
    study.set_user_attr("resolve", summary)
    counts = pd.Series([d[0] for d in decisions.values()]).value_counts().to_dict()
    log(f"resolve: {spent} run(s) in {rounds} round(s), {summary['wall_s']:.0f} s; decided: "
        + (", ".join(f"{n} {status}" for status, n in counts.items()) or "nothing to race"))
    return False


def _scheduler(early_stop: str, epochs: int) -> ASHAScheduler | None:
    """ASHA when asked, else none (Tune's FIFO): every trial runs its full proxy epochs.

    Off by default: `benchmarks/fidelity.py` measures how well the top-1 at ASHA's first rung
    predicts the final one on the proxy, and on a 3-epoch proxy it does not beyond noise
    (docs/measurements.md), so stopping there would stop trials on noise.
    """
    if early_stop != "asha":
        return None
    return ASHAScheduler(time_attr="epoch", metric="top1", mode="max", max_t=max(1, epochs),
                         grace_period=_grace_period(epochs), reduction_factor=2)


def _grace_period(epochs: int) -> int:
    """ASHA's first rung: half the proxy epochs. Earlier, a short proxy's accuracies are still
    near chance for every configuration, and stopping on them is stopping at random."""
    return max(1, math.ceil(epochs / 2))


def run_oneshot_stage(
    study: optuna.Study, settings: SearchSettings, recipe: Any, resources: dict[str, float],
    log: Callable[[str], None], *, data: BaseData,
) -> None:
    """Trains the supernet as one Ray task on the budget, scores the space, and (when asked)
    enqueues its front."""

    out_dir = study_dir(settings.study, settings.reports_dir) / "supernet"
    scored = _oneshot_scores(study, out_dir)
    if scored is not None:  # a resumed search: the stage finished, its checkpoint may be gone
        scores = scored
    else:
        # The supernet gets the whole budget (it is the only thing running in this stage), or
        # as much of it as one node holds: on a cluster the budget is summed over nodes.
        gpus = 1.0 if settings.budget.gpus else 0.0
        cpus = one_node_share(budget_cpus(settings.budget), gpus)
        log(f"one-shot: training the supernet over {settings.space.size} rho vectors "
            f"({recipe.epochs} epochs, {cpus:g} CPU{', 1 GPU' if gpus else ''})")
        task = ray.remote(_supernet_task).options(num_cpus=cpus, num_gpus=gpus, max_retries=0)
        store = settings.job_store()
        try:
            news = Queue(actor_options={"num_cpus": 0})  # the task's progress, for the console
            _wait_saying(task.remote(settings, recipe, data, news), news, recipe.epochs, log)
        except ray.exceptions.RayTaskError as exc:  # e.g. a diverged supernet: its one line
            if isinstance(exc.cause, RhoSearchError):
                raise exc.cause from None
            raise
        finally:  # its metrics, even when it failed
            store.pull("supernet", out_dir,
                       skip=() if settings.keep_checkpoints else CHECKPOINTS)
        scores = with_latency_columns(pd.read_csv(out_dir / RunFile.SCORES), settings)
        record_scores(stage_study(study, Stage.ONESHOT), settings.space, scores,
                      objectives=settings.objectives)
        if not settings.keep_checkpoints:  # ~60 MB; every score is in the study and scores.csv
            store.drop("supernet")
    frame = scores.assign(stage=Stage.ONESHOT, state="COMPLETE")
    front = [RhoConfig.parse(rho, backbone=backbone) for rho, backbone in
             pareto_front(frame, stage=Stage.ONESHOT)[["rho", "backbone"]].itertuples(index=False)]
    log(f"one-shot: scored {len(scores)} configurations; front of {len(front)}: "
        + ", ".join(c.name for c in front))
    if settings.stage == ALL_STAGES and not settings.enqueue_oneshot_front:
        log("one-shot: its front is not queued for the proxy stage (--enqueue-oneshot-front "
            "does): benchmarks/fidelity.py measures one-shot rankings as not agreeing with "
            "longer training beyond noise (docs/measurements.md); the stage is "
            "kept to measure that agreement on every search")
    if settings.stage == ALL_STAGES and settings.enqueue_oneshot_front:
        enqueue_front(study, settings.space, front)


def _oneshot_scores(study: optuna.Study, out_dir: Path) -> pd.DataFrame | None:
    """The one-shot stage's scores when an earlier run finished it (every row of `scores.csv`
    recorded in the study), else None."""
    path, recorded = out_dir / RunFile.SCORES, stage_study(study, Stage.ONESHOT, create=False)
    if not path.is_file() or recorded is None:
        return None
    scores = pd.read_csv(path)
    return scores if len(recorded.get_trials(deepcopy=False)) >= len(scores) else None


def _wait_saying(ref: ray.ObjectRef, news: Queue, epochs: int,
                 log: Callable[[str], None]) -> None:
    """Waits for the supernet task, logging what it reports: where it is every ~15 s, with
    the time left at its pace so far, and each epoch's loss."""
    started, first = time.monotonic(), None  # the pace counts from the first report
    while True:
        done, _ = ray.wait([ref], timeout=1.0)
        for kind, *what in news.get_nowait_batch(news.qsize()) if news.qsize() else []:
            if kind == "epoch":
                epoch, loss, seconds = what
                log(f"one-shot: supernet epoch {epoch}/{epochs} done, loss {loss:.3f}, "
                    f"{seconds:.0f} s")
                continue
            epoch, batch, batches = what
            share, now = ((epoch - 1) * batches + batch) / (epochs * batches), time.monotonic()
            left = ("" if first is None or share <= first[1] else
                    f", about {_minutes((now - first[0]) / (share - first[1]) * (1 - share))}"
                    " left")
            first = first or (now, share)
            log(f"one-shot: supernet epoch {epoch}/{epochs}, batch {batch}/{batches} "
                f"({100 * share:.0f} %), {_minutes(now - started)} so far{left}")
        if done:
            ray.get(ref)
            return


def _minutes(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.1f} min"


def _supernet_task(settings: SearchSettings, recipe: Any, data: BaseData,
                   news: Queue | None = None, every_s: float = 15.0) -> None:
    """A Ray task, on any node: trains the supernet (resuming its checkpoint in the job store)
    and scores the space on the driver's `data`, pushing its folder to the store after every
    epoch and at the end; where it is goes to `news` every `every_s` seconds."""
    import torch

    from rhosearch.stages.oneshot import score_supernet

    adopt_base(data)

    torch.set_num_threads(max(1, int(ray.get_runtime_context().get_assigned_resources()
                                     .get("CPU", 1))))
    store = settings.job_store()
    said = [time.monotonic()]

    def on_batch(epoch: int, batch: int, batches: int) -> None:
        if news is not None and (time.monotonic() - said[0] >= every_s):
            said[0] = time.monotonic()
            news.put_nowait(("batch", epoch, batch, batches))

    def on_epoch(metrics: dict[str, Any]) -> None:
        store.push(out_dir, "supernet")
        if news is not None:
            news.put_nowait(("epoch", metrics["epoch"], metrics["loss"], metrics["epoch_s"]))

    with store.workdir("supernet", resume=True) as out_dir:
        score_supernet(settings.space, data=settings.data, recipe=recipe, out_dir=out_dir,
                       seed=settings.seed, data_root=settings.data_root, progress=False,
                       on_epoch=on_epoch, on_batch=on_batch)
        store.push(out_dir, "supernet")


def with_latency_columns(scores: pd.DataFrame, settings: SearchSettings) -> pd.DataFrame:
    """`scores` (one row per configuration) with its latency overhead when the search prices
    latency."""
    if settings.latency_pricer is None:
        return scores
    prices = [settings.latency_pricer.price(RhoConfig.parse(rho, backbone=backbone))
              for rho, backbone in scores[["rho", "backbone"]].itertuples(index=False)]
    return scores.assign(**pd.DataFrame(prices, index=scores.index))


def record_fidelity(study: optuna.Study, frame: pd.DataFrame) -> dict[str, Any] | None:
    """Kendall's tau between one-shot and proxy top-1, with its interval and count, stored in
    the study."""
    tau = stage_agreement(frame, Stage.ONESHOT, STAGE)
    if tau.n < 2:
        return None
    fidelity = {**tau.as_dict(), "text": tau.text()}
    study.set_user_attr("oneshot_proxy_kendall_tau", fidelity)
    return fidelity
