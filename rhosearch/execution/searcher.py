"""The proxy stage's two halves inside Ray Tune: the searcher (driver) and the trial (worker).

`StudySearcher` is Optuna's ask/tell behind Tune's `Searcher` interface: every write to the
study happens here, in the driver. `proxy_trial` is the Tune trainable: it trains one rho vector
in a Ray worker and reports each epoch. `Progress` prints the search's state after each trial.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import optuna
import ray
from optuna.trial import TrialState
from ray import tune
from ray.tune.search import Searcher

from rhosearch.core.cost import CostModel
from rhosearch.core.space import RhoConfig, baseline_config
from rhosearch.execution.jobstore import CHECKPOINTS
from rhosearch.record.study import (
    config_from_params,
    make_sampler,
    pareto_front,
    record_attrs,
    space_distributions,
    stage_study,
    study_dir,
    study_objectives,
    trials_done,
    trials_frame,
)
from rhosearch.vocab import FAILED_STATUSES, LATENCY_COLUMNS, TRAINED_STATUSES, Stage, Status

if TYPE_CHECKING:
    from rhosearch.drivers.search_settings import SearchSettings
    from rhosearch.training.data import BaseData

__all__ = ["STAGE", "Progress", "ResolveSearcher", "StudySearcher", "proxy_trial", "trial_job"]

STAGE = Stage.PROXY


def _latency(settings: SearchSettings, config: RhoConfig) -> dict[str, Any]:
    """The configuration's latency overhead when the search prices latency (the driver puts
    its pricer in the settings), else nothing."""
    pricer = getattr(settings, "latency_pricer", None)
    return pricer.price(config) if pricer is not None else {}


class StudySearcher(Searcher):
    """Asks the Optuna study for rho vectors and tells it each trial's outcome.

    Ray Tune's own `OptunaSearch` keeps no per-trial attributes, cannot skip a suggestion
    without running it, and restores through Tune's experiment state rather than the study;
    this searcher keeps the study as the only record, which is what makes `--resume` after a
    `kill -9` exact.
    """

    def __init__(self, study: optuna.Study, settings: SearchSettings, *, epochs: int,
                 n_val: int | None = None, deadline: float | None = None) -> None:
        super().__init__(metric="top1", mode="max")
        self.study = study
        self.settings = settings
        self.epochs = epochs
        self.space = settings.space
        self.distributions = space_distributions(settings.space)
        # The scratch studies' sampler, never the study's own: GP and NSGA-II bind to the first
        # study they are asked about, and the study's sampler is asked (for an enqueued rho) by
        # the study itself.
        self.sampler = make_sampler(settings.sampler, settings.seed, settings.trials)
        self.cost = CostModel(settings.space.backbone)  # `vocab.PRICED`
        self.remaining = settings.trials - trials_done(study)
        # The baseline's extra seeds (the noise floor) run first, recorded in their own study;
        # they do not count against --trials. Seeds already measured are not run again.
        self.noise_study = stage_study(study, Stage.NOISE) if settings.noise_seeds else None
        self.noise_pending = _noise_seeds_missing(self.noise_study, settings)
        self.live_noise: dict[str, int] = {}
        self.n_val = n_val
        self.live: dict[str, optuna.trial.Trial] = {}
        # Tune trial id -> rho, remembered here: a running trial's own record is not re-read.
        self.live_rho: dict[str, str] = {}
        self.events: list[str] = []
        self.store = settings.job_store()
        # --budget ...,2h: no trial starts after this moment; running ones finish.
        self.deadline = deadline

    def save(self, checkpoint_path: str) -> None:
        """Nothing to save: the study in its storage is the searcher's whole state."""

    def restore(self, checkpoint_path: str) -> None:
        """Nothing to restore: `--resume` reopens the study."""

    def _measured(self) -> dict[str, optuna.trial.FrozenTrial]:
        return {
            t.user_attrs["rho"]: t
            for t in self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if t.user_attrs.get("stage") == STAGE and "rho" in t.user_attrs and t.values
        }

    def _infeasible(self, config: RhoConfig) -> str | None:
        """Why a configuration breaks the space's constraints, priced without building it."""
        cost = self.cost.price(config)
        limit = self.space.max_overhead_pct
        if limit is not None and cost.overhead_pct > limit:
            return f"overhead {cost.overhead_pct:.2f}% > max_overhead_pct {limit:g}"
        if self.space.max_gmacs is not None and cost.gmacs > self.space.max_gmacs:
            return f"{cost.gmacs:.3f} GMACs > max_gmacs {self.space.max_gmacs:g}"
        return None

    @property
    def total(self) -> int:
        """Trials Tune still has to start: search trials left plus noise seeds left."""
        return self.remaining + len(self.noise_pending)

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        if self.deadline is not None and time.time() >= self.deadline and self.total > 0:
            self.events.append(
                f"wall-time budget ({self.settings.budget.describe()}) spent: no more trials "
                f"start ({self.remaining} search trial(s) and {len(self.noise_pending)} noise "
                "seed(s) not run); running trials finish; --resume continues")
            self.remaining, self.noise_pending = 0, []
        if self.noise_pending:
            seed = self.noise_pending.pop(0)
            self.live_noise[trial_id] = seed
            baseline = baseline_config(self.space.backbone)
            return {"rho": baseline.rho_text, "backbone": baseline.backbone, "number": seed,
                    "seed": seed, "stage": str(Stage.NOISE)}
        if self.remaining <= 0:
            return self.FINISHED if not (self.live or self.live_noise) else None
        measured = self._measured()
        scratch, means = None, {}
        for _ in range(1000):
            if scratch is None and not self.study.get_trials(
                    deepcopy=False, states=(TrialState.WAITING,)):
                scratch, means = self._scratch_study()
            if scratch is None:  # an enqueued configuration (paper preset, rerun) comes first
                trial = self.study.ask(self.distributions)
                config = config_from_params(self.space, trial.params)
            else:
                proposal = scratch.ask(self.distributions)
                config = config_from_params(self.space, proposal.params)
                known = measured.get(config.rho_text)
                if known is not None or config.rho_text in self.live_rho.values():
                    # Measured or running: no row in the study. The scratch study hears the
                    # measured values again (or keeps it running, a constant liar) and is asked
                    # again; the sampler's record sees each rho once.
                    if known is not None:
                        scratch.tell(proposal, _at_seed_mean(known, means, self.study).values)
                    continue
                scratch.tell(proposal, state=TrialState.FAIL)
                self.study.enqueue_trial(proposal.params)
                trial = self.study.ask(self.distributions)
            base = {"stage": STAGE, **config.as_dict(), "rho": config.rho_text}
            reason = self._infeasible(config)
            if reason:
                record_attrs(self.study, trial, {**base, "status": str(Status.INFEASIBLE),
                                                  "reason": reason})
                self.study.tell(trial, state=TrialState.FAIL)
                if scratch is not None:  # the scratch study learns it too, as the study did
                    scratch.add_trial(self.study.get_trials(deepcopy=False)[-1])
                continue
            if config.rho_text in measured or config.rho_text in self.live_rho.values():
                # An enqueued rho measured or running meanwhile: closed without training.
                record_attrs(self.study, trial, {
                    **base, "status": str(Status.NOT_RUN),
                    "reason": "enqueued, but already measured or running"})
                self.study.tell(trial, state=TrialState.FAIL)
                continue
            cost = {**self.cost.price(config).as_dict(), **_latency(self.settings, config)}
            record_attrs(self.study, trial, {**base, **cost})
            self.live[trial_id] = trial
            self.live_rho[trial_id] = config.rho_text
            self.remaining -= 1
            return {"rho": config.rho_text, "backbone": config.backbone, "number": trial.number}
        self.remaining = 0  # the space holds nothing feasible and new
        return self.FINISHED if not self.live else None

    def _scratch_study(self) -> tuple[optuna.Study, dict[str, float]]:
        """An in-memory copy of the study's record with the searcher's sampler, asked for
        proposals, and the seed means it was given (`_seed_means`, read once per suggestion):
        a proposal of a rho that is running or already measured is answered there, so it never
        becomes a row of the study (Optuna writes a row for every `ask`). Only a proposal that
        will train (or is infeasible) is enqueued into the study and asked for there, with its
        parameters fixed."""
        scratch = optuna.create_study(directions=self.study.directions,
                                      sampler=self.sampler)
        means = self._seed_means()
        scratch.add_trials([_at_seed_mean(t, means, self.study)
                            for t in self.study.get_trials(deepcopy=False)
                            if t.state != TrialState.WAITING])
        return scratch, means

    def _seed_means(self) -> dict[str, float]:
        """Each measured rho's top-1 averaged over every seed it has: its proxy trial, the
        resolve stage's paired seeds and, for the baseline, the noise floor's seeds."""
        runs: dict[str, list[float]] = {}
        studies = [self.study, self.noise_study,
                   stage_study(self.study, Stage.RESOLVE, create=False)]
        for study in filter(None, studies):
            for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
                top1 = t.user_attrs.get("top1")
                if study is self.study and t.user_attrs.get("stage") != STAGE:
                    continue  # a full-stage run: another recipe, not a seed of the proxy
                if "rho" in t.user_attrs and top1 is not None and math.isfinite(top1):
                    runs.setdefault(t.user_attrs["rho"], []).append(float(top1))
        return {rho: sum(values) / len(values) for rho, values in runs.items()}

    def on_trial_complete(self, trial_id: str, result: dict | None = None,
                          error: bool = False) -> None:
        if trial_id in self.live_noise:
            self._record_noise(self.live_noise.pop(trial_id), result or {}, error)
            return
        trial = self.live.pop(trial_id, None)
        if trial is None:
            return
        self.live_rho.pop(trial_id, None)
        config = config_from_params(self.space, trial.params)
        attrs, complete = self._result_attrs(result or {}, error, trial_job(trial.number, config))
        # Cost figures stay the ones priced at suggestion time (256 px, 1000 classes: the
        # paper's setting), whatever data set the proxy trains on.
        priced = trial.user_attrs
        attrs.update({k: priced[k] for k in ("params", "overhead_params", "overhead_pct",
                                             "gmacs", *LATENCY_COLUMNS) if k in priced})
        if complete:
            values = [float(attrs[name]) for name in self.settings.objectives]
            state = TrialState.COMPLETE
        elif attrs["status"] == Status.STOPPED:
            attrs["reason"] = (f"ASHA stopped it after {attrs['epochs_done']} of {self.epochs} "
                               "epochs")
            state, values = TrialState.PRUNED, None
        else:
            state, values = TrialState.FAIL, None
        record_attrs(self.study, trial, attrs)
        self.study.tell(trial, values, state=state)
        self.events.append(f"#{trial.number} {priced.get('name')} rho={priced.get('rho')}: "
                           f"{attrs['status']}" + (f" top1={values[0]:.2f}" if values else ""))

    def _record_noise(self, seed: int, result: dict[str, Any], error: bool) -> None:
        """Adds a finished baseline seed to the noise study (never seen by the sampler)."""
        baseline = baseline_config(self.space.backbone)
        attrs, complete = self._result_attrs(result, error, trial_job(seed, baseline,
                                                                      stage=Stage.NOISE))
        attrs.update({**self.cost.price(baseline).as_dict(), **_latency(self.settings, baseline),
                      **baseline.as_dict(),
                      "stage": str(Stage.NOISE), "seed": seed})
        self.noise_study.add_trial(self._finished_trial(attrs, complete))
        self.events.append(f"noise floor: baseline seed {seed}: {attrs['status']}"
                           + (f" top1={attrs['top1']:.2f}" if complete else ""))

    def _finished_trial(self, attrs: dict[str, Any],
                        complete: bool) -> optuna.trial.FrozenTrial:
        """A finished run (a noise seed, a resolve seed) as the trial its companion study adds:
        COMPLETE with the objectives' values, or FAIL with the reason it stopped."""
        if complete:
            values = [float(attrs[name]) for name in self.settings.objectives]
            return optuna.trial.create_trial(values=values, user_attrs=attrs)
        attrs.setdefault("reason", f"stopped after {attrs['epochs_done']} of {self.epochs} epochs")
        return optuna.trial.create_trial(state=TrialState.FAIL, user_attrs=attrs)

    def _result_attrs(self, result: dict[str, Any], error: bool,
                      job: str) -> tuple[dict[str, Any], bool]:
        """A finished trial's record from its last Tune result, and whether it completed; its
        files (metrics, result) are pulled from the store into `reports/<study>/`."""
        keep = () if self.settings.keep_checkpoints else CHECKPOINTS
        self.store.pull(job, study_dir(self.settings.study, self.settings.reports_dir) / job,
                        skip=keep)
        attrs = {k: v for k, v in result.items()
                 if k not in _TUNE_KEYS and isinstance(v, (int, float, str, bool))}
        epochs_done = int(result.get("epochs_done") or result.get("epoch") or 0)
        attrs.update(trained=True, n_val=self.n_val, epochs_done=epochs_done)
        status = result.get("status", Status.ERROR if error else Status.OK)
        if error or status in FAILED_STATUSES:
            attrs["status"] = status
            attrs.setdefault("reason", "the trial's worker died (see the Ray logs)")
        elif attrs.get("top1") is None:
            attrs.update(status=str(Status.ERROR), reason="the trial reported no top1")
        else:
            attrs["status"] = str(Status.OK if epochs_done >= self.epochs else Status.STOPPED)
        return attrs, attrs["status"] == Status.OK


def _at_seed_mean(trial: optuna.trial.FrozenTrial, means: dict[str, float],
                  study: optuna.Study) -> optuna.trial.FrozenTrial:
    """`trial` of `study` as the sampler should see it: a rho measured with several seeds is
    one point at its mean in `means` (Optuna cannot change a finished trial's values, so the
    study's row keeps its first seed's; the sampler is only ever asked through this copy)."""
    mean = means.get(trial.user_attrs.get("rho"))
    if (trial.state != TrialState.COMPLETE or trial.user_attrs.get("stage") != STAGE
            or mean is None or not trial.values):
        return trial
    values = list(trial.values)
    values[study_objectives(study).index("top1")] = mean
    return optuna.trial.create_trial(
        state=trial.state, values=values, params=trial.params,
        distributions=trial.distributions, user_attrs=trial.user_attrs,
        system_attrs=trial.system_attrs)


class ResolveSearcher(StudySearcher):
    """Hands Tune a fixed list of `(rho, seed)` runs (one round of the resolve stage,
    `stages.resolve.resolve_round`) and records each in the companion study `<study>::resolve`
    as a further seed of that configuration: never a new trial of the study, so the sampler
    keeps one point per rho."""

    def __init__(self, study: optuna.Study, settings: SearchSettings, *, epochs: int,
                 n_val: int | None, jobs: list[tuple[str, int]]) -> None:
        import dataclasses

        super().__init__(study, dataclasses.replace(settings, noise_seeds=0), epochs=epochs,
                         n_val=n_val)
        self.resolve_study = stage_study(study, Stage.RESOLVE)
        self.pending = list(jobs)
        self.live_jobs: dict[str, tuple[RhoConfig, int]] = {}

    @property
    def total(self) -> int:
        return len(self.pending)

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        if not self.pending:
            return self.FINISHED if not self.live_jobs else None
        rho, seed = self.pending.pop(0)
        config = RhoConfig.parse(rho, backbone=self.space.backbone)
        self.live_jobs[trial_id] = (config, seed)
        return {"rho": config.rho_text, "backbone": config.backbone, "number": seed,
                "seed": seed, "stage": str(Stage.RESOLVE)}

    def on_trial_complete(self, trial_id: str, result: dict | None = None,
                          error: bool = False) -> None:
        if trial_id not in self.live_jobs:
            return
        config, seed = self.live_jobs.pop(trial_id)
        attrs, complete = self._result_attrs(result or {}, error,
                                             trial_job(seed, config, stage=Stage.RESOLVE))
        attrs.update({**self.cost.price(config).as_dict(), **_latency(self.settings, config),
                      **config.as_dict(), "rho": config.rho_text, "stage": str(Stage.RESOLVE),
                      "seed": seed})
        self.resolve_study.add_trial(self._finished_trial(attrs, complete))
        self.events.append(f"resolve: {config.name} rho={config.rho_text} seed {seed}: "
                           f"{attrs['status']}"
                           + (f" top1={attrs['top1']:.2f}" if complete else ""))


def _noise_seeds_missing(noise_study: optuna.Study | None, settings: SearchSettings) -> list[int]:
    """The baseline seeds the noise floor still needs: search seed + 1 ... + noise_seeds."""
    if noise_study is None:
        return []
    done = {t.user_attrs.get("seed") for t in noise_study.get_trials(
        deepcopy=False, states=(TrialState.COMPLETE,))}
    wanted = range(settings.seed + 1, settings.seed + 1 + settings.noise_seeds)
    return [seed for seed in wanted if seed not in done]


def _tune_keys() -> frozenset[str]:
    """What Tune adds to every result; everything else a trial reports is recorded in the study.

    Ray (2.60) documents these keys but exports no public list of them: `AUTO_RESULT_KEYS` of
    `ray.tune.result` (not part of Tune's public API) is read here and nowhere else."""
    from ray.tune.result import AUTO_RESULT_KEYS

    return frozenset(AUTO_RESULT_KEYS) | {"done", "trial_id", "experiment_tag",
                                          "should_checkpoint", "epoch"}


_TUNE_KEYS = _tune_keys()


# ---------------------------------------------------------------------------------------------
# The trainable: one proxy trial inside a Ray worker.


def proxy_trial(config: dict[str, Any], *, settings: SearchSettings,
                data: BaseData | None = None) -> None:
    """Trains one configuration and reports each validated epoch to Tune (ASHA reads `top1`).

    With warm workers (`reuse_workers`, Tune's `reuse_actors`) one Ray worker runs trial after
    trial: imports and the cached data set (`data.build_datasets`) are paid once per worker,
    while everything a trial trains with (model, optimizer, RNG, loaders) is made afresh from
    its seed by `train_config`. The data set is the driver's copy (`data`, through Ray's object
    store), so no worker reads it. The trial works in a scratch folder on its node and copies
    it to the job store after every epoch; the driver pulls it into `reports/<study>/`.
    """
    import torch

    from rhosearch.training.data import adopt_base
    from rhosearch.training.train import load_recipe, train_config

    if data is not None:
        adopt_base(data)

    context = ray.get_runtime_context()
    assigned = context.get_assigned_resources()
    given = {"cpus": assigned.get("CPU", 0.0), "gpus": assigned.get("GPU", 0.0),
             "node": context.get_node_id(), "worker_pid": os.getpid(),
             "started_at": time.time()}
    torch.set_num_threads(max(1, int(given["cpus"])))
    rho = RhoConfig.parse(config["rho"], backbone=config["backbone"])
    stage = config.get("stage", STAGE)
    # Common random numbers: every trial with seed s shares the baseline's data order and trunk
    # initialisation with seed s, so differences against it are paired.
    seed = config.get("seed", settings.seed)
    store, job = settings.job_store(), trial_job(config["number"], rho, stage=stage)
    # Nothing resumes a proxy trial (an interrupted one runs again): no checkpoint is written
    # unless --keep-checkpoints, and none leaves the node.
    skip = () if settings.keep_checkpoints else CHECKPOINTS
    done = {"epochs_done": 0}
    with store.workdir(job) as out_dir:

        def on_epoch(metrics: dict[str, Any]) -> None:
            done["epochs_done"] = metrics["epoch"]
            store.push(out_dir, job, skip=skip)
            if "top1" in metrics:  # a validated epoch (`Recipe.val_every`): ASHA may stop the
                # trial here (or max_t end it), and Tune keeps the last report for the record
                _report({**metrics, **given, "epochs_done": metrics["epoch"],
                         "wall_s": round(time.time() - given["started_at"], 2)})

        failure = None
        try:
            recipe = load_recipe(settings.recipe, settings.recipe_overrides)
            result = train_config(
                rho, data=settings.data, recipe=recipe, out_dir=out_dir, seed=seed,
                data_root=settings.data_root, download=settings.download, progress=False,
                on_epoch=on_epoch, checkpoint=settings.keep_checkpoints,
            )
        except Exception as exc:  # recorded as the trial's failure reason; the search goes on
            failure = " ".join(f"{type(exc).__name__}: {exc}".split())[:500]
        finally:
            store.push(out_dir, job, skip=skip)
    if failure is not None:
        _report({**given, **done, "status": str(Status.FAILED), "reason": failure})
    else:
        _report({**result, **given, "ended_at": time.time(), "epoch": result["epochs_done"]})


def _report(metrics: dict[str, Any]) -> None:
    """Reports to Tune only what its scheduler can read. Tune refuses a result without the
    searcher's metric (`top1`) and ASHA multiplies it with its sign, so a result without a
    finite top-1 (a failure, a run diverged in its first epoch) carries `top1: None` and no
    `epoch`, which ASHA skips; the searcher records it as FAIL with its reason."""
    top1 = metrics.get("top1")
    if isinstance(top1, bool) or not isinstance(top1, (int, float)) or not math.isfinite(top1):
        metrics = {**{k: v for k, v in metrics.items() if k != "epoch"}, "top1": None}
    tune.report(metrics)


def trial_job(number: int, config: RhoConfig, *, stage: str = STAGE) -> str:
    """A proxy trial's folder name, `trials/<number>_<key>`, a noise-floor run's,
    `noise/seed<seed>_<key>`, or a resolve run's, `resolve/seed<seed>_<key>`: the same under
    `reports/<study>/` and in the job store."""
    if stage == Stage.NOISE:
        return f"noise/seed{number:03d}_{config.key}"
    if stage == Stage.RESOLVE:  # `number` is the seed: one run per (rho, seed)
        return f"resolve/seed{number:03d}_{config.key}"
    return f"trials/{number:04d}_{config.key}"


class Progress(tune.Callback):
    """Tune callback printing trials done/running/failed and the front after each trial."""

    def __init__(self, searcher: StudySearcher, settings: SearchSettings,
                 log: Callable[[str], None]) -> None:
        self.searcher = searcher
        self.settings = settings
        self.log = log

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._report(trials)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._report(trials)

    def _report(self, trials: list) -> None:
        while self.searcher.events:
            event = self.searcher.events.pop(0)
            frame = trials_frame(self.searcher.study)
            proxy = frame[(frame["stage"] == STAGE) & frame["status"].notna()]
            trained = proxy[proxy["status"].isin(TRAINED_STATUSES)]
            failed = int(trained["status"].isin(FAILED_STATUSES).sum())
            # Tune still lists the trial that just ended as RUNNING; the searcher has let it go.
            # The noise seeds run beside the trials: counted apart, as what they are.
            running = len(self.searcher.live) + len(self.searcher.live_noise)
            noise = int((frame["stage"] == Stage.NOISE).sum())
            seeds = noise + len(self.searcher.live_noise) + len(self.searcher.noise_pending)
            front = pareto_front(frame)
            front_text = ", ".join(f"{r.name}({r.top1:.1f}%)" for r in front.itertuples())
            self.log(f"[{len(trained)}/{self.settings.trials} trials done"
                     + (f", noise seeds {noise}/{seeds}" if seeds else "")
                     + f", {running} running, {failed} failed] {event} | front: "
                     f"{front_text or '-'}")
