"""The words every layer shares: stage names, objectives, the pricing point, run-file names.

One home for each fact, so that no module decides anything by comparing with a string literal
written somewhere else (or by parsing a sentence made for people). `StrEnum` members compare
equal to their values, so a value read back from a study or a CSV file (`"proxy"`) and the
member (`Stage.PROXY`) are the same key.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = [
    "LATENCY_COLUMNS",
    "OBJECTIVES",
    "PRICED",
    "PRICED_CLASSES",
    "PRICED_RESOLUTION",
    "RunFile",
    "Stage",
    "Verdict",
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
OBJECTIVES = {"top1": "maximize", "overhead_params": "minimize", "gmacs": "minimize",
              "overhead_ms": "minimize"}
# A priced configuration's latency: overhead over the baseline (ms), its interval, and where it
# came from ("table": measured on this machine; "model": the latency model's price).
LATENCY_COLUMNS = ("overhead_ms", "overhead_ms_lo", "overhead_ms_hi", "latency_source")

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


class Verdict(StrEnum):
    """What a comparison with the baseline concluded (`stats.verdicts`): the `vs_baseline`
    column of `trials.csv`, the printed front, the report and `finalists.csv`. A label is data:
    code compares with these members, never with the sentence printed beside them."""

    BETTER = "better"  # the calibrated test (Holm over the family) rejects, difference > 0
    WORSE = "worse"  # the same, difference < 0
    WITHIN_NOISE = "within noise"  # not rejected: the difference is not told from noise
    NO_TEST = "no test"  # nothing to test with (no baseline, no variance, no seed in common)
    SCREENING = "screening score"  # a one-shot score: a screen, no interval test it supports
    CONTROL = "baseline control"  # the baseline itself
