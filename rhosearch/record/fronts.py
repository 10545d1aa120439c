"""The one dominance rule of rhosearch and the Pareto front it gives (max top-1, min a cost).

    front = pareto_front(trials_frame(study), stage=Stage.PROXY)
"""

from __future__ import annotations

import pandas as pd

from rhosearch.vocab import Stage

__all__ = ["FRONT_STAGES", "dominated", "pareto_front"]


# The stages with a front of their own (the noise stage only repeats the baseline).
FRONT_STAGES = (Stage.ONESHOT, Stage.HEAD, Stage.PROXY, Stage.FULL)


def dominated(top1: pd.Series, cost: pd.Series) -> pd.Series:
    """True where another point has top1 >= and cost <=, one of them strictly.

    The one dominance rule of rhosearch (maximise top-1, minimise a cost): the search's
    printed front, finalist picking and the report all use it.
    """
    values = list(zip(top1, cost, strict=True))
    flags = [
        any(t >= t0 and c <= c0 and (t > t0 or c < c0) for t, c in values) for t0, c0 in values
    ]
    return pd.Series(flags, index=top1.index, dtype=bool)


def pareto_front(frame: pd.DataFrame, *, stage: str = Stage.PROXY) -> pd.DataFrame:
    """Non-dominated COMPLETE trials of one stage (max top1, min overhead_params)."""
    done = frame[(frame["stage"] == stage) & (frame["state"] == "COMPLETE")]
    done = done.dropna(subset=["top1", "overhead_params"]).drop_duplicates("rho")
    numbers = done[["top1", "overhead_params"]].astype(float)
    front = done[~dominated(numbers["top1"], numbers["overhead_params"])]
    return front.astype({"overhead_params": int, "params": int}).sort_values("overhead_params")
