"""What this machine lends this process: the CPUs it may run on.

`os.cpu_count()` counts the machine's CPUs, not this process's: a container limited by a
cgroup CPU quota, or a job pinned to some cores (`taskset`, Slurm), would start as many Ray
workers or data loaders as the whole machine has, and they would time-share the few it got.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

__all__ = ["usable_cpus"]

_CGROUP_V2_MAX = Path("/sys/fs/cgroup/cpu.max")  # "max 100000" or "<quota> <period>"
_CGROUP_V1 = Path("/sys/fs/cgroup/cpu")  # cpu.cfs_quota_us (-1: none), cpu.cfs_period_us


def _cgroup_quota() -> float | None:
    """CPUs' worth of time the cgroup allows (1.5 = one and a half CPUs), None when unlimited."""
    try:
        if _CGROUP_V2_MAX.is_file():
            quota, period = _CGROUP_V2_MAX.read_text().split()[:2]
            return None if quota == "max" else int(quota) / int(period)
        quota_file = _CGROUP_V1 / "cpu.cfs_quota_us"
        if quota_file.is_file():
            quota = int(quota_file.read_text())
            period = int((_CGROUP_V1 / "cpu.cfs_period_us").read_text())
            return None if quota <= 0 else quota / period
    except (OSError, ValueError):
        pass
    return None


def usable_cpus() -> int:
    """CPUs this process may use: its affinity mask, capped by a cgroup quota (at least 1)."""
    if hasattr(os, "sched_getaffinity"):
        count = len(os.sched_getaffinity(0))
    else:  # macOS and Windows have no affinity call
        count = os.cpu_count() or 1
    quota = _cgroup_quota()
    if quota is not None:
        count = min(count, math.floor(quota))  # a half CPU of quota is not a worker's worth
    return max(1, count)
