"""The words every layer shares: stages, statuses, objectives, the pricing point, run-file
names and the columns of the tables rhosearch writes, with their dtypes.

One home for each fact, so that no module decides anything by comparing with a string literal
written somewhere else (or by parsing a sentence made for people). `StrEnum` members compare
equal to their values, so a value read back from a study or a CSV file (`"proxy"`) and the
member (`Stage.PROXY`) are the same key.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = [
    "ALL_STAGES",
    "COLUMN_DTYPES",
    "FAILED_STATUSES",
    "LATENCY_COLUMNS",
    "Method",
    "NOT_TRAINED_STATUSES",
    "OBJECTIVES",
    "PRICED",
    "PRICED_CLASSES",
    "PRICED_RESOLUTION",
    "RunFile",
    "SEARCH_STAGES",
    "Stage",
    "Status",
    "TRAINED_STATUSES",
    "TRIAL_COLUMNS",
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


# What `rhosearch search --stage` may name: one stage alone (resolve: on an existing study's
# proxy trials), or all of them in turn.
ALL_STAGES = "all"
SEARCH_STAGES = (*(str(stage) for stage in (Stage.ONESHOT, Stage.HEAD, Stage.PROXY,
                                             Stage.RESOLVE)), ALL_STAGES)


class Status(StrEnum):
    """What became of one run: the `status` column of `trials.csv` and of a run's result."""

    OK = "ok"  # trained to its last epoch; its top-1 counts
    STOPPED = "stopped"  # stopped early by the scheduler (pruned): a top-1, not a full run
    DIVERGED = "diverged"  # a loss stopped being finite
    FAILED = "failed"  # the run raised (its reason says what)
    ERROR = "error"  # the trial reported nothing usable (no top-1)
    INFEASIBLE = "infeasible"  # refused before training (outside the space's rule)
    NOT_RUN = "not run"  # queued, but the stage ended without running it
    INTERRUPTED = "interrupted"  # its driver was killed mid-trial; the rho is queued again
    CACHED = "cached"  # a copy of an earlier run's result (older studies): not another seed
    DUPLICATE = "duplicate"  # a rho already measured (older studies): not trained again


# Statuses of trials that trained (a top-1 came back, or the run failed while training).
TRAINED_STATUSES = (Status.OK, Status.STOPPED, Status.FAILED, Status.DIVERGED, Status.ERROR)
# Statuses of trained runs that failed.
FAILED_STATUSES = (Status.FAILED, Status.DIVERGED, Status.ERROR)
# Statuses of proxy trials that did not train: answered from the record, refused, or skipped.
NOT_TRAINED_STATUSES = (Status.INFEASIBLE, Status.CACHED, Status.DUPLICATE, Status.NOT_RUN)


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


class Method(StrEnum):
    """Which test compared a configuration with the baseline (`stats.Comparison.method`): the
    `test` column of `trials.csv`."""

    PAIRED_T = "paired t"  # over shared seeds, with the family's pooled variance
    UNPAIRED_T = "unpaired t"  # no seed in common
    SIGN_FLIP = "sign-flip"  # exact permutation test, when every paired difference ties
    NONE = "none"  # nothing to test with


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


# The trials table (`trials.csv`, what reports and picking read), in its column order, with
# each column's dtype: counts and identifiers are integers ("Int64": a missing value stays
# missing instead of turning the column into floats, `640.0`), measurements floats, the rest
# text. `record.study.trials_frame` builds the table with it; `output.write_csv` casts by it.
TRIAL_COLUMNS = {
    "number": "Int64", "stage": "object", "state": "object", "name": "object",
    "backbone": "object", "rho": "object", "classifier_channels": "Int64", "params": "Int64",
    "overhead_params": "Int64", "overhead_pct": "float64", "gmacs": "float64",
    "overhead_ms": "float64", "overhead_ms_lo": "float64", "overhead_ms_hi": "float64",
    "latency_source": "object", "top1": "float64", "top1_lo": "float64", "top1_hi": "float64",
    "vs_baseline": "object", "top1_diff": "float64", "p_value": "float64", "test": "object",
    "n_val": "Int64", "seed": "Int64", "top5": "float64", "epochs_done": "Int64",
    "wall_s": "float64", "status": "object", "reason": "object",
}
# The integer columns of the other tables rhosearch writes (finalists, their runs, the front
# and Table 5, stage summaries, metrics): with the trials table's, every column `write_csv`
# writes as integers. A column name means the same thing in every table.
_OTHER_COUNTS = ("trial", "epoch", "steps", "n", "seeds", "workers", "configs", "runs", "trunks",
                 "paper_params", "paper_diff", *(f"trial_{stage}" for stage in Stage))
COLUMN_DTYPES = {**TRIAL_COLUMNS, **{name: "Int64" for name in _OTHER_COUNTS}}
