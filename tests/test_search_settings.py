"""The search's and train-best's settings check their own values when they are made."""

from __future__ import annotations

import dataclasses

import pytest

from rhosearch.core.space import parse_search_space
from rhosearch.drivers.finalists import FinalistSettings
from rhosearch.drivers.search_settings import SearchSettings
from rhosearch.errors import RhoSearchError

SPACE = parse_search_space({"backbone": "mobilevit_xxs", "rho": {"rho_5": [3, 4]}})


@pytest.mark.parametrize("field, value, message", [
    ("stage", "bogus", "unknown stage 'bogus'; choose one of: oneshot, head, proxy, resolve, all"),
    ("sampler", "cmaes", "unknown sampler 'cmaes'"),
    ("early_stop", "hyperband", "unknown --early-stop 'hyperband'; choose one of: none, asha"),
    ("noise_seeds", -1, "--noise-seeds -1: give 0"),
    ("resolve_seeds", -1, "--resolve-seeds -1: give 0"),
    ("resolve_contenders", 0, "--resolve-contenders 0: give 1 or more"),
    ("head_seeds", 0, "--head-seeds 0: give 1 or more"),
    ("head_trunks", -1, "--head-trunks -1: give 0"),
])
def test_a_bad_search_setting_is_refused_when_made(field, value, message):
    with pytest.raises(RhoSearchError, match=message.replace("(", r"\(")) as refused:
        SearchSettings(study="s", space=SPACE, **{field: value})
    assert "\n" not in str(refused.value)
    good = SearchSettings(study="s", space=SPACE)
    with pytest.raises(RhoSearchError, match=message.replace("(", r"\(")):
        dataclasses.replace(good, **{field: value})  # a changed copy is checked too


def test_the_default_stage_is_the_clis():
    assert SearchSettings(study="s", space=SPACE).stage == "all"


@pytest.mark.parametrize("budget, per_trial, asked, raced", [
    ("2cpus", {}, None, 2),           # a round of the resolve stage takes one run's time
    ("1cpu", {}, None, 2),            # at least 2: one contender alone is no race
    ("6gpus", {}, None, 6),
    ("6gpus", {"gpus_per_trial": 0.5}, None, 12),
    ("8cpus", {"cpus_per_trial": 2}, None, 4),
    ("2cpus", {}, 3, 3),              # --resolve-contenders decides when given
])
def test_the_resolve_stage_races_as_many_contenders_as_run_at_once(budget, per_trial, asked,
                                                                   raced):
    from rhosearch.execution.resources import parse_budget

    settings = SearchSettings(study="s", space=SPACE, budget=parse_budget(budget),
                              resolve_contenders=asked, **per_trial)
    assert settings.contenders_raced() == raced


@pytest.mark.parametrize("field, value, message", [
    ("seeds", 0, "--seeds 0: give at least 1"),
    ("workers_per_finalist", 0, "--workers-per-finalist 0: give at least 1"),
])
def test_a_bad_finalist_setting_is_refused_when_made(field, value, message):
    with pytest.raises(RhoSearchError, match=message):
        FinalistSettings(study="s", **{field: value})
