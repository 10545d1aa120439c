"""The words every layer shares: stage names, objectives, the pricing point, run-file names.

One home for each fact, so that no module decides anything by comparing with a string literal
written somewhere else (or by parsing a sentence made for people). `StrEnum` members compare
equal to their values, so a value read back from a study or a CSV file (`"proxy"`) and the
member (`Stage.PROXY`) are the same key.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = [
    "OBJECTIVES",
    "PRICED",
    "PRICED_CLASSES",
    "PRICED_RESOLUTION",
    "RunFile",
    "Stage",
]


class Stage(StrEnum):
    """The stages that write trials, in the order a search runs them."""

    ONESHOT = "oneshot"  # the weight-sharing supernet's scores (a screen, not a measurement)
    HEAD = "head"  # every configuration's head trained on frozen, cached trunks
    NOISE = "noise"  # the baseline's extra seeds, measured beside the proxy stage
    PROXY = "proxy"  # one short training per configuration, proposed by the sampler
    RESOLVE = "resolve"  # further paired seeds of the contenders, raced to a decision
    FULL = "full"  # the finalists, trained with the full recipe (`train-best`)


# The objectives and their directions, in the order Optuna stores a trial's values.
OBJECTIVES = {"top1": "maximize", "overhead_params": "minimize", "gmacs": "minimize"}

# Every search and report prices a configuration at the paper's point (Tables 1, 2 and 5),
# whatever resolution and class count it was trained at, so costs compare across data sets.
PRICED_RESOLUTION = 256
PRICED_CLASSES = 1000
PRICED = f"priced at {PRICED_RESOLUTION} px, {PRICED_CLASSES} classes"


class RunFile(StrEnum):
    """The files a training run (or a stage) leaves in its folder."""

    CHECKPOINT = "checkpoint.pt"
    RESULT = "result.json"
    METRICS = "metrics.jsonl"
    SCORES = "scores.csv"
    TRIALS = "trials.csv"
    WEIGHTS = "model.safetensors"
