"""The record: what the searcher writes into the study, read back through Optuna's public API."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest

from rhosearch.core.space import parse_search_space
from rhosearch.drivers.search import SearchSettings
from rhosearch.execution.resources import Budget
from rhosearch.execution.searcher import StudySearcher
from rhosearch.record.study import default_storage_url, open_storage, record_attrs

# One configuration: every ask proposes the same rho, as a sampler may after a pruned trial.
ONE_CONFIG = parse_search_space({"backbone": "mobilevit_xxs", "rho": {"rho_5": [4]}})


@pytest.fixture(params=["memory", "sqlite"])
def study(request, tmp_path) -> optuna.Study:
    storage = None if request.param == "memory" else open_storage(
        default_storage_url("t", tmp_path))
    return optuna.create_study(study_name="t", storage=storage,
                               directions=["maximize", "minimize"])


def _searcher(study: optuna.Study, reports: Path, *, trials: int = 3) -> StudySearcher:
    settings = SearchSettings(study="t", space=ONE_CONFIG, trials=trials, budget=Budget(cpus=1),
                              noise_seeds=0, reports_dir=reports)
    return StudySearcher(study, settings, epochs=3)


def test_a_pruned_rho_proposed_again_runs_again(study, tmp_path):
    searcher = _searcher(study, tmp_path)
    first = searcher.suggest("a")
    assert isinstance(first, dict) and first["rho"] == "0,0,0,0,4"
    searcher.on_trial_complete("a", {"top1": 50.0, "epoch": 1, "epochs_done": 1})  # ASHA

    again = searcher.suggest("b")
    assert isinstance(again, dict) and again["rho"] == "0,0,0,0,4"
    trials = study.get_trials()
    assert [t.state.name for t in trials] == ["PRUNED", "RUNNING"]
    assert trials[0].user_attrs["status"] == "stopped" and trials[0].user_attrs["rho"]
    assert not [t for t in trials if t.user_attrs.get("status") == "duplicate"]


def test_a_running_or_measured_rho_proposed_again_writes_no_row(tmp_path):
    study = optuna.create_study(directions=["maximize", "minimize"])  # 1000 asks: in memory
    searcher = _searcher(study, tmp_path, trials=1)
    assert isinstance(searcher.suggest("a"), dict)
    searcher.remaining = 1  # one more, while "a" still runs
    assert searcher.suggest("b") is None  # the single config is busy: nothing new to run
    assert [t.state.name for t in study.get_trials()] == ["RUNNING"]
    searcher.on_trial_complete("a", {"top1": 50.0, "epochs_done": 3})
    searcher.remaining = 1
    assert searcher.suggest("c") is searcher.FINISHED  # measured: answered without a row
    assert [t.state.name for t in study.get_trials()] == ["COMPLETE"]


def test_record_attrs_is_seen_by_the_live_trial_and_the_study(study):
    trial = study.ask()
    record_attrs(study, trial, {"rho": "0,0,0,0,4", "top1": 1.5})
    assert trial.user_attrs["rho"] == "0,0,0,0,4"
    assert study.get_trials()[0].user_attrs == {"rho": "0,0,0,0,4", "top1": 1.5}


def test_a_trial_recorded_but_not_told_when_the_driver_died_runs_again():
    """A driver killed between recording a trial's result and telling Optuna leaves it RUNNING
    and `trained`: the resume marks it interrupted, does not count it, and queues its rho."""
    from rhosearch.core.space import load_search_space
    from rhosearch.drivers.search_study import fail_interrupted
    from rhosearch.record.study import space_distributions, trials_done

    space = load_search_space("exmobilevit_xxs")
    study = optuna.create_study(directions=["maximize", "minimize"])
    trial = study.ask(space_distributions(space))
    for key, value in {"stage": "proxy", "rho": "0,0,1,0,4", "trained": True, "status": "ok",
                       "top1": 50.0}.items():
        trial.set_user_attr(key, value)
    assert fail_interrupted(study, space) == 1
    assert trials_done(study) == 0
    waiting = study.get_trials(states=(optuna.trial.TrialState.WAITING,))
    assert [t.system_attrs["fixed_params"] for t in waiting] == [trial.params]


def test_a_trial_killed_before_all_its_parameters_were_set_is_not_queued_again():
    """A rho with some parameters unset is no rho: queued, the study's own sampler would have
    to fill them in (and GP would then refuse the searcher's scratch studies, as CI found)."""
    from rhosearch.core.space import load_search_space
    from rhosearch.drivers.search_study import fail_interrupted
    from rhosearch.record.study import space_distributions

    space = load_search_space("exmobilevit_xxs")
    study = optuna.create_study(directions=["maximize", "minimize"])
    name, distribution = next(iter(space_distributions(space).items()))
    study.ask({name: distribution})  # killed inside ask: one parameter set, the rest not
    assert fail_interrupted(study, space) == 1
    assert not study.get_trials(states=(optuna.trial.TrialState.WAITING,))


def test_a_studys_objectives_come_in_vocab_order(tmp_path):
    import warnings

    from rhosearch.record.study import study_objectives

    study = optuna.create_study(study_name="o", directions=["maximize", "minimize", "minimize"],
                                storage=open_storage(default_storage_url("o", tmp_path)))
    assert study_objectives(study) == ["top1", "overhead_params", "gmacs"]  # no metric names
    with warnings.catch_warnings():  # experimental in Optuna, as the search sets them
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names(["top1", "overhead_params", "overhead_ms"])  # a latency search
    assert study_objectives(study) == ["top1", "overhead_params", "overhead_ms"]
