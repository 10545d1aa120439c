"""Printing tables for people (rich) and for programs (csv, json); sizes of what a run leaves."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import IO, Any

import pandas as pd

from rhosearch.vocab import COLUMN_DTYPES

__all__ = ["INTEGER_COLUMNS", "cast_counts", "folder_size", "human_size", "print_frame",
           "write_csv"]

# Counts and identifiers (by the one schema, `vocab.COLUMN_DTYPES`): written as integers even
# when a missing value made pandas store them as floats (`640.0`). Measurements such as top-1
# stay floats even when they happen to be whole.
INTEGER_COLUMNS = frozenset(name for name, dtype in COLUMN_DTYPES.items() if dtype == "Int64")


# Percentages (accuracies, their intervals, overheads): measured on at most a few million
# images, so 4 decimals hold every digit that means something; float32 sums leave
# `100.00000762939453` where the count was exactly 100 %.
PERCENT_DECIMALS = 4


def _is_percentage(name: str) -> bool:
    return "top1" in name or "top5" in name or name.endswith("_pct")


def cast_counts(frame: pd.DataFrame, columns: list[str] | None = None) -> pd.DataFrame:
    """`frame` with its count columns (`INTEGER_COLUMNS`; only those in `columns` when given)
    as Int64: numbers held as objects or floats become integers, a missing value stays NA."""
    names = [c for c in (frame.columns if columns is None else columns)
             if str(c) in INTEGER_COLUMNS]
    return frame.assign(**{str(c): pd.to_numeric(frame[c]).astype("Int64") for c in names})


def _integers(frame: pd.DataFrame) -> pd.DataFrame:
    """`frame` with its whole-valued float counts (`INTEGER_COLUMNS`) as Int64 and its
    percentages rounded to `PERCENT_DECIMALS`."""
    percent = [c for c in frame.columns
               if _is_percentage(str(c)) and frame[c].dtype.kind == "f"]
    if percent:
        frame = frame.assign(**{str(c): frame[c].round(PERCENT_DECIMALS) for c in percent})
    columns = {}
    for column in frame.columns:
        name = str(column)
        if name not in INTEGER_COLUMNS:
            continue
        values = frame[column]
        if values.dtype.kind != "f":
            continue
        present = values.dropna()
        if (present == present.round()).all():
            columns[column] = "Int64"
    return frame.astype(columns) if columns else frame


def write_csv(frame: pd.DataFrame, path: Path | str | IO[str]) -> None:
    """Writes `frame` as CSV without its index, counts as integers (see `INTEGER_COLUMNS`)."""
    _integers(frame).to_csv(path, index=False)


def _cell(value: Any) -> str:
    if value is None or value is pd.NA or (isinstance(value, float) and pd.isna(value)):
        return "-"
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    if isinstance(value, int) and abs(value) >= 1_000:
        return f"{value:,}"
    return str(value)


def print_frame(
    frame: pd.DataFrame, *, fmt: str = "table", notes: list[str] | None = None,
    title: str | None = None,
) -> None:
    """Prints a table as a rich table (notes beneath, on stderr for csv/json), CSV or JSON.

    The rich table is never squeezed: the console is made as wide as the table needs, so no
    header or cell is cut to `…` (a narrow terminal wraps the lines instead).
    """
    if fmt == "csv":
        write_csv(frame, sys.stdout)
    elif fmt == "json":
        records = json.loads(_integers(frame).to_json(orient="records"))
        print(json.dumps(records, indent=2))
    else:
        from rich.console import Console
        from rich.table import Table

        table = Table(title=title)
        frame = _integers(frame)
        for column in frame.columns:
            numeric = frame[column].dtype.kind in "ifu" or str(frame[column].dtype) == "Int64"
            table.add_column(str(column), justify="right" if numeric else "left", no_wrap=True)
        for row in frame.itertuples(index=False):
            table.add_row(*(_cell(v) for v in row))
        needed = max(Console(width=100_000).measure(table).maximum, len(title or ""))
        console = Console(width=max(Console().width, needed))
        console.print(table)
        for note in notes or []:
            console.print(f"[dim]{note}[/dim]")
        return
    for note in notes or []:
        print(note, file=sys.stderr)


def folder_size(path: Path | str) -> int:
    """Bytes held by the files under `path` (0 when it does not exist)."""
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


def human_size(size: float) -> str:
    """`48.2 MB`, `1.1 GB` (decimal units, as `du --si` prints them; rich's `filesize`)."""
    from rich.filesize import decimal

    return decimal(int(size))
