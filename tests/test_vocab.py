"""The shared words: one schema for the tables' columns, enums that compare as their values."""

from __future__ import annotations

import io

import pandas as pd
import pytest

from rhosearch.output import INTEGER_COLUMNS, write_csv
from rhosearch.record.table import TRIAL_COLUMNS
from rhosearch.vocab import COLUMN_DTYPES, SEARCH_STAGES, Stage, Status
from rhosearch.vocab import TRIAL_COLUMNS as TRIAL_DTYPES


def test_the_trials_table_is_built_and_written_by_the_one_schema():
    assert TRIAL_COLUMNS == list(TRIAL_DTYPES)
    assert {pd.api.types.pandas_dtype(d).name for d in TRIAL_DTYPES.values()} == {
        "Int64", "float64", "object"}
    # Every count of the trials table (and every stage's trial number in the front table) is
    # written as an integer; no measurement is.
    assert {c for c, d in TRIAL_DTYPES.items() if d == "Int64"} <= INTEGER_COLUMNS
    assert {f"trial_{stage}" for stage in Stage} <= INTEGER_COLUMNS
    assert not {"top1", "top5", "gmacs", "wall_s", "overhead_ms"} & INTEGER_COLUMNS
    assert INTEGER_COLUMNS == {c for c, d in COLUMN_DTYPES.items() if d == "Int64"}


def test_a_trials_row_with_missing_values_keeps_its_counts_whole():
    # As Optuna's user attrs come back: a missing seed makes pandas store the column as floats.
    frame = pd.DataFrame([{"number": 0, "seed": 3, "n_val": 360, "epochs_done": 3,
                           "top1": 71.0, "wall_s": 12.0},
                          {"number": 1, "seed": None, "n_val": None, "epochs_done": None,
                           "top1": None, "wall_s": 3.5}], columns=TRIAL_COLUMNS)
    assert frame["seed"].dtype == "float64"
    text = io.StringIO()
    write_csv(frame, text)
    back = pd.read_csv(io.StringIO(text.getvalue()))
    row = text.getvalue().splitlines()[1].split(",")
    assert row[TRIAL_COLUMNS.index("seed")] == "3" and row[TRIAL_COLUMNS.index("n_val")] == "360"
    assert row[TRIAL_COLUMNS.index("top1")] == "71.0"  # a measurement stays a float
    assert back["epochs_done"].tolist()[0] == 3


@pytest.mark.parametrize("member, value", [(Stage.PROXY, "proxy"), (Status.NOT_RUN, "not run"),
                                           (Status.OK, "ok")])
def test_members_are_their_values_for_data_read_back(member, value):
    # A stage or status read back from a study or a CSV file is a plain string.
    assert member == value and {value: 1}[member] == 1 and f"{member}" == value
    assert pd.Series([value, "other"]).isin([member]).tolist() == [True, False]


def test_search_stages_are_stage_names_and_all():
    assert SEARCH_STAGES[-1] == "all"
    assert all(Stage(name) for name in SEARCH_STAGES[:-1])
