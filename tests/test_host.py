"""The CPUs this process may use: its affinity mask and its cgroup's quota, not the machine's."""

from __future__ import annotations

import os

import pytest

from rhosearch import host
from rhosearch.errors import RhoSearchError
from rhosearch.execution.resources import (
    Budget,
    budget_cpus,
    concurrent_trials,
    parse_budget,
    trial_resources,
)
from rhosearch.training.data import worker_count


@pytest.fixture
def one_cpu():
    """This process pinned to one CPU (as `taskset -c 0` or a Slurm job of one core would)."""
    before = os.sched_getaffinity(0)
    if len(before) < 2:
        pytest.skip("needs a machine with two CPUs to pin to one")
    os.sched_setaffinity(0, {min(before)})
    yield
    os.sched_setaffinity(0, before)


def test_a_pinned_process_counts_its_cpus_not_the_machines(one_cpu):
    assert host.usable_cpus() == 1
    budget = parse_budget(None)  # "all local CPUs" was os.cpu_count(): the machine's
    assert budget.cpus == 1
    unsized = Budget()  # a budget of GPUs or time only: the CPUs are what this process has
    assert budget_cpus(unsized) == 1
    assert concurrent_trials(unsized, {"cpu": 1.0, "gpu": 0.0}) == 1
    with pytest.raises(RhoSearchError, match="exceeds the budget's 1 CPUs"):
        trial_resources(unsized, cpus_per_trial=2)
    assert worker_count(4) == 0


@pytest.mark.parametrize("text, expected", [("max 100000", 2), ("150000 100000", 1),
                                            ("100000 100000", 1), ("50000 100000", 1)])
def test_a_cgroup_quota_caps_the_count(tmp_path, monkeypatch, text, expected):
    cpu_max = tmp_path / "cpu.max"
    cpu_max.write_text(text + "\n")  # cgroup v2's format
    monkeypatch.setattr(host, "_CGROUP_V2_MAX", cpu_max)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})
    assert host.usable_cpus() == expected
