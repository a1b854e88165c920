"""Reading user CSV files (header row required) with errors that name the file, the row,
the column and the fix. Every command and trainer reads its tables through these."""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from ._errors import ArgumentError


def read_table(
    path: str | os.PathLike[str], *, what: str, error: type[Exception] = ArgumentError
) -> tuple[list[str], list[dict[str, str]]]:
    """The column names and rows of a CSV file, names and cells stripped of spaces (a
    UTF-8 byte-order mark is ignored).

    Args:
        path: the file.
        what: how messages name the file (e.g. ``"ratings CSV"``).
        error: the exception class to raise.

    Raises:
        error: the file is missing, empty, has no header or no rows.
    """
    file = Path(path)
    if not file.is_file():
        raise error(f"{what} not found: {file}")
    with file.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        if not reader.fieldnames:
            raise error(f"{what} {file} is empty; expected a CSV with a header row")
        rows = [
            {(k or "").strip(): (v or "").strip() for k, v in row.items() if k is not None}
            for row in reader
        ]
    if not rows:
        raise error(f"{what} {file} has a header but no rows")
    return [name.strip() for name in reader.fieldnames], rows


def require_columns(
    fields: Sequence[str],
    columns: Mapping[str, str],
    *,
    what: str,
    error: type[Exception] = ArgumentError,
) -> None:
    """Raise unless every key of ``columns`` (column -> the option that names it) is one
    of ``fields``; the message lists the columns present and the option to change."""
    for column, option in columns.items():
        if column not in fields:
            raise error(
                f"{what} has no column {column!r} (columns: {', '.join(map(repr, fields))}); "
                f"choose one with {option}"
            )


def parse_number(
    value: str,
    *,
    what: str,
    row: int,
    column: str,
    finite: bool = True,
    error: type[Exception] = ArgumentError,
) -> float:
    """A CSV cell as a float (finite unless ``finite=False``), naming the cell on failure."""
    try:
        number = float(value)
    except ValueError:
        raise error(
            f"{what}: row {row}, column {column!r}: expected a number; got {value!r}"
        ) from None
    if finite and not math.isfinite(number):
        raise error(
            f"{what}: row {row}, column {column!r}: expected a finite number; got {value!r}"
        )
    return number


def shorten(items: Sequence[str], limit: int = 5) -> str:
    """The first ``limit`` items, comma-separated, and how many there are in all."""
    shown = ", ".join(items[:limit])
    return shown if len(items) <= limit else f"{shown}, ... ({len(items)} in all)"
