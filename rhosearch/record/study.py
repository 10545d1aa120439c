"""The record of a search: an Optuna study and its companions, what they hold and how a
search space maps onto their parameters. The record's parts live beside it: `storage` (where a
study lives, opening it, its companions, writing a trial), `table` (the trials table, each
top-1 with its uncertainty) and `fronts` (the dominance rule and the Pareto front); their names
are importable from here too.

A search is one Optuna study (`<study>`: the proxy and full stages, what the sampler learns
from) and companion studies in the same storage that the sampler must not learn from:
`<study>::oneshot` (one-shot scores: cheap and much noisier than a proxy measurement, so they
would drown TPE/GP's history), `<study>::head`, `<study>::noise` (the baseline retrained with
other seeds: repeated measurements of one configuration) and `<study>::resolve`. Each trial's
user attrs say which stage measured it and what it measured; `trials_frame` reads them all, so
`optuna.load_study` in any other process sees the whole search. Objective values are in
`vocab.OBJECTIVES` order: `[top1, overhead_params]` (+ `gmacs`, `overhead_ms`).
"""

from __future__ import annotations

import optuna
import pandas as pd

from rhosearch import values
from rhosearch.core.space import RhoConfig, SearchSpace
from rhosearch.record.fronts import FRONT_STAGES, dominated, pareto_front
from rhosearch.record.storage import (
    COMPANION_STAGES,
    default_storage_url,
    load_study,
    open_storage,
    record_attrs,
    stage_study,
    storage_of,
    study_dir,
    trial_params,
)
from rhosearch.record.table import (
    PROXY_FAMILY,
    SEED_SUMMARY_COLUMNS,
    TRIAL_COLUMNS,
    noise_floor,
    stage_agreement,
    stage_family,
    stage_noise,
    stage_runs,
    summarize_seeds,
    trials_frame,
)
from rhosearch.vocab import LATENCY_COLUMNS, OBJECTIVES, Stage, Status

__all__ = [
    "COMPANION_STAGES",
    "FRONT_STAGES",
    "PROXY_FAMILY",
    "TRIAL_COLUMNS",
    "record_scores",
    "OBJECTIVES",
    "objective_names",
    "study_objectives",
    "default_storage_url",
    "open_storage",
    "load_study",
    "study_dir",
    "trials_frame",
    "record_attrs",
    "storage_of",
    "dominated",
    "pareto_front",
    "trials_done",
    "STAGES",
    "stage_study",
    "stage_noise",
    "stage_family",
    "stage_runs",
    "noise_floor",
    "stage_agreement",
    "SEED_SUMMARY_COLUMNS",
    "summarize_seeds",
    "space_distributions",
    "params_of",
    "config_from_params",
    "trial_params",
    "make_sampler",
]

# The stages that write trials, in the order a search runs them ("noise": the baseline's extra
# seeds, measured beside the proxy stage).
STAGES = tuple(Stage)


def objective_names(*, gmacs: bool = False, latency: bool = False) -> list[str]:
    """The search's objectives in value order (`vocab.OBJECTIVES`): top-1, overhead params (and
    GMACs, latency overhead in ms, when asked)."""
    asked = {"gmacs": gmacs, "overhead_ms": latency}
    return [name for name in OBJECTIVES if asked.get(name, True)]


def study_objectives(study: optuna.Study) -> list[str]:
    """A study's objectives in value order: the metric names the search gave it, else (a
    companion study, or one written before metric names) the first `len(study.directions)` of
    `vocab.OBJECTIVES`."""
    return list(study.metric_names or list(OBJECTIVES)[:len(study.directions)])


def trials_done(study: optuna.Study, *, stage: str = Stage.PROXY) -> int:
    """Trials that cost training in a stage (finished, pruned or failed while training).

    An interrupted trial is not one: it runs again, and counts then. (A driver killed between
    recording a finished trial's result and telling Optuna leaves it `trained` and RUNNING;
    the resume marks it interrupted and queues its rho again.)
    """
    return sum(
        1 for t in study.get_trials(deepcopy=False)
        if t.user_attrs.get("stage") == stage and t.user_attrs.get("trained")
        and t.state.is_finished() and t.user_attrs.get("status") != Status.INTERRUPTED
    )


# How a search space maps onto Optuna parameters (shared by every stage that writes trials).


def space_distributions(space: SearchSpace) -> dict[str, optuna.distributions.BaseDistribution]:
    """One categorical per block with a choice (ratios as exact strings like '4/3')."""
    return {
        f"rho_{k}": optuna.distributions.CategoricalDistribution([str(c) for c in choices])
        for k, choices in enumerate(space.choices, start=1)
        if len(choices) > 1
    }


def config_from_params(space: SearchSpace, params: dict[str, str]) -> RhoConfig:
    rho = [params.get(f"rho_{k}", str(c[0])) for k, c in enumerate(space.choices, start=1)]
    return RhoConfig(space.backbone, tuple(rho))


def params_of(space: SearchSpace, config: RhoConfig) -> dict[str, str]:
    return {name: str(config.rho[int(name[4:]) - 1]) for name in space_distributions(space)}


def record_scores(study: optuna.Study, space: SearchSpace, scores: pd.DataFrame, *,
                  objectives: list[str] | None = None) -> None:
    """Records each scored configuration as a COMPLETE trial of the one-shot stage.

    Configurations the study already holds from this stage are not written again, so a rerun
    after an interruption completes the record. `objectives`: the study's objective names (by
    default the first of top-1, overhead params, GMACs); each is a column of `scores`.
    """
    recorded = {t.user_attrs.get("rho") for t in study.get_trials(deepcopy=False)
                if t.user_attrs.get("stage") == Stage.ONESHOT}
    distributions = space_distributions(space)
    names = objectives or study_objectives(study)
    latency = [k for k in LATENCY_COLUMNS if k in scores]
    trials = []
    for row in scores.itertuples(index=False):
        config = RhoConfig.parse(row.rho, backbone=row.backbone)
        if config.rho_text in recorded:
            continue
        values = [float(getattr(row, name)) for name in names]
        attrs = {"stage": str(Stage.ONESHOT), "name": config.name, "rho": config.rho_text,
                 "backbone": config.backbone, "classifier_channels": config.classifier_channels,
                 "params": int(row.params), "overhead_params": int(row.overhead_params),
                 "overhead_pct": float(row.overhead_pct), "gmacs": float(row.gmacs),
                 "top1": float(row.top1), "top5": float(row.top5), "status": str(Status.OK),
                 **{k: getattr(row, k) for k in latency}}
        trials.append(optuna.trial.create_trial(
            values=values, distributions=distributions, user_attrs=attrs,
            params=params_of(space, config),
        ))
    study.add_trials(trials)


def make_sampler(name: str, seed: int, trials: int) -> optuna.samplers.BaseSampler:
    """A new sampler of the kind `--sampler` names, sized for a search of `trials` trials.

    A new one each time it is called: GP and NSGA-II (and a multivariate TPE, not this one)
    remember the one study they were first asked about (Optuna's `IntersectionSearchSpace`) and
    refuse any other, so the study and the searcher's scratch studies each need their own.
    """
    if name == "nsga2":
        # A population near a third of the budget lets a small search reach its second
        # generation; Optuna's default of 50 would make any search under 50 trials random.
        population = max(4, min(50, trials // 3))
        return optuna.samplers.NSGAIISampler(population_size=population, seed=seed)
    if name == "tpe":
        # constant_liar: trials still running count as bad results, so 6 slots at once are not
        # handed the same promising rho six times (without it a 40-trial search on 6 slots
        # proposed running configurations hundreds of times).
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=max(4, trials // 4),
                                          constant_liar=True)
    if name == "gp":
        return optuna.samplers.GPSampler(seed=seed, n_startup_trials=max(4, trials // 4))
    values.one_of(name, values.SAMPLERS, what="sampler")
    return optuna.samplers.RandomSampler(seed=seed)
