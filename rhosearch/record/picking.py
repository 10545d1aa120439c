"""Picking finalists from a stage's Pareto front: the knee, the best, the best under a size.

    picks_with_reasons(trials_frame(study), pick="knee,best")  # [(config, "knee"), ...]

Plain pandas over the trials table; `train-best` (drivers/finalists.py) trains what this picks.
"""

from __future__ import annotations

import math
import re

import pandas as pd

from rhosearch.core.space import RhoConfig, baseline_config
from rhosearch.errors import RhoSearchError
from rhosearch.record.study import pareto_front
from rhosearch.vocab import Stage

__all__ = ["DEFAULT_PICK", "knee_order", "parse_param_count", "pick_finalists",
           "picks_with_reasons"]

DEFAULT_PICK = "knee,best"


_COUNT = re.compile(r"^(\d+(?:\.\d+)?)([kmg]?)$")
_SCALE = {"": 1, "k": 1e3, "m": 1e6, "g": 1e9}


def parse_param_count(text: str) -> int:
    """Reads a parameter count: `5.7M`, `5700000`, `300k` (case-insensitive, `_` allowed)."""
    match = _COUNT.match(text.strip().lower().replace("_", ""))
    if not match:
        raise RhoSearchError(f"cannot read {text!r} as a parameter count; write e.g. 5.7M, "
                             "300k or 5700000")
    return round(float(match.group(1)) * _SCALE[match.group(2)])


def knee_order(front: pd.DataFrame) -> pd.DataFrame:
    """The front sorted knee first, with its `knee_distance`.

    The knee is the front point farthest above the straight line joining the front's two
    extremes (cheapest and most accurate) once both axes are scaled to [0, 1] by the front's
    own ranges: with x = scaled overhead params and y = scaled top-1 the line is y = x and the
    distance is (y - x) / sqrt(2). It is the point where extra parameters stop buying accuracy
    at the front's average rate. Ties (e.g. a front of one or two points, where every distance
    is 0) go to fewer overhead params.
    """
    def scaled(column: pd.Series) -> pd.Series:
        values = column.astype(float)
        span = values.max() - values.min()
        return (values - values.min()) / span if span > 0 else values * 0.0

    ordered = front.assign(
        knee_distance=(scaled(front["top1"]) - scaled(front["overhead_params"])) / math.sqrt(2))
    return ordered.sort_values(["knee_distance", "overhead_params"], ascending=[False, True],
                               kind="stable")


def _best_order(front: pd.DataFrame) -> pd.DataFrame:
    return front.sort_values(["top1", "overhead_params"], ascending=[False, True], kind="stable")


def _ordered_for(part: str, front: pd.DataFrame) -> pd.DataFrame:
    if part == "knee":
        return knee_order(front)
    if part == "best":
        return _best_order(front)
    if part.startswith("under="):
        limit = parse_param_count(part.removeprefix("under="))
        under = front[front["params"].astype(float) <= limit]
        if under.empty:
            smallest = int(front["params"].min())
            raise RhoSearchError(f"no configuration on the front has <= {limit:,} params (the "
                                 f"smallest has {smallest:,}); raise the under= limit")
        return _best_order(under)
    raise RhoSearchError(f"unknown --pick {part!r}; use knee, best, under=PARAMS (e.g. "
                         "under=5.7M) or several comma-separated, e.g. knee,best")


def picks_with_reasons(
    frame: pd.DataFrame, *, pick: str = DEFAULT_PICK, top: int = 1, stage: str = Stage.PROXY
) -> list[tuple[RhoConfig, str]]:
    """`pick_finalists` with why each was picked (`knee`, `best#2`, `under=5.7M`, `baseline`)."""
    if top < 1:
        raise RhoSearchError(f"--top {top}: give at least 1")
    parts = [p.strip().lower() for p in pick.split(",") if p.strip()]
    if not parts:
        raise RhoSearchError("--pick is empty; use knee, best or under=PARAMS")
    front = pareto_front(frame, stage=stage)
    if front.empty:
        raise RhoSearchError(f"the study has no completed {stage} trials, so no front to pick "
                             "from; run `rhosearch search` first")
    picked: dict[str, tuple[RhoConfig, str]] = {}
    for part in parts:
        for rank, row in enumerate(_ordered_for(part, front).head(top).itertuples(), start=1):
            config = RhoConfig.parse(row.rho, backbone=row.backbone)
            picked.setdefault(config.key, (config, part if rank == 1 else f"{part}#{rank}"))
    for backbone in dict.fromkeys(config.backbone for config, _ in picked.values()):
        baseline = baseline_config(backbone)
        if baseline.key in picked:
            config, reason = picked[baseline.key]
            picked[baseline.key] = (config, f"{reason}+baseline")
        else:
            picked[baseline.key] = (baseline, "baseline")
    return list(picked.values())


def pick_finalists(
    frame: pd.DataFrame, *, pick: str = DEFAULT_PICK, top: int = 1, stage: str = Stage.PROXY
) -> list[RhoConfig]:
    """Configurations to train in full, picked from one stage's Pareto front of `frame`.

    Args:
        frame: a `study.trials_frame`.
        pick: comma-separated picks, each an order over the front: `knee` (see `knee_order`),
            `best` (highest top-1) or `under=PARAMS` (highest top-1 with params <= PARAMS,
            e.g. `under=5.7M`). Default: the knee and the best, deduplicated.
        top: how many to take from the head of each pick's order.
        stage: whose front to pick from.

    The baseline MobileViT (rho = 0,0,0,0,4) of each picked backbone is always added last
    (unless picked already), as a control trained under the same recipe.
    """
    return [config for config, _ in picks_with_reasons(frame, pick=pick, top=top, stage=stage)]
