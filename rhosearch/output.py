"""Printing tables for people (rich) and for programs (csv, json)."""

from __future__ import annotations

import json
import sys
from typing import Any

import pandas as pd
from rich.console import Console
from rich.table import Table

__all__ = ["print_frame"]


def _cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and pd.isna(value)):
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
    """Prints a table as a rich table (notes beneath, on stderr for csv/json), CSV or JSON."""
    if fmt == "csv":
        frame.to_csv(sys.stdout, index=False)
    elif fmt == "json":
        records = json.loads(frame.to_json(orient="records"))
        print(json.dumps(records, indent=2))
    else:
        table = Table(title=title)
        for column in frame.columns:
            numeric = frame[column].dtype.kind in "if"
            table.add_column(str(column), justify="right" if numeric else "left")
        for row in frame.itertuples(index=False):
            table.add_row(*(_cell(v) for v in row))
        console = Console(width=max(Console().width, 160))
        console.print(table)
        for note in notes or []:
            console.print(f"[dim]{note}[/dim]")
        return
    for note in notes or []:
        print(note, file=sys.stderr)
