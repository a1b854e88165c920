"""Helpers shared by the ``percepfid`` subcommands: exit codes, output, CSV reading."""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from .._errors import ArgumentError, PercepfidError
from ..data import parse_number, read_table, require_columns

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

#: Exit codes of the ``percepfid`` command (documented in the README).
EXIT_OK = 0
EXIT_FAILURE = 1  # the command ran but what it checked failed (e.g. a weights mismatch)
EXIT_USAGE = 2  # bad arguments or bad input data (argparse uses 2 as well)
EXIT_DEPENDENCY = 3  # an optional dependency is missing
EXIT_WEIGHTS = 4  # weights missing (offline, not cached), corrupt or not matching


class InputError(ArgumentError):
    """Bad input data given to a command: a missing folder, unmatched names, a bad CSV."""


def echo(text: str = "", *, file: TextIO | None = None) -> None:
    """Write one line to stdout (or ``file``). Commands talk to the user through this."""
    stream = sys.stdout if file is None else file
    stream.write(text + "\n")


def warn(text: str) -> None:
    """Write a warning line to stderr."""
    sys.stderr.write(f"percepfid: warning: {text}\n")


def random_weights_warning(results: str) -> str:
    """The warning every command prints under ``--random-weights``."""
    return (
        f"--random-weights: the model has random weights, so {results} mean nothing; "
        "use this only to test the plumbing"
    )


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1; got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1; got {value}")
    return value


def add_runtime_options(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup, *, batch_size: int, unit: str
) -> None:
    """Add the options of every command that runs a model: ``--batch-size``, ``--device``
    (see :func:`resolve_device`), ``--random-weights`` and ``--no-progress``."""
    parser.add_argument(
        "--batch-size",
        type=_positive_int,
        default=batch_size,
        help=f"{unit} per forward pass (default: {batch_size})",
    )
    parser.add_argument(
        "--device",
        default="auto",
        help="auto (CUDA when available), cpu, cuda or cuda:N (default: auto)",
    )
    parser.add_argument(
        "--random-weights",
        action="store_true",
        help="random weights, no download: plumbing tests only, the numbers mean nothing",
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def resolve_device(requested: str, local_rank: int | None = None) -> torch.device:
    """The device of a ``--device`` value: ``auto`` is CUDA when available, else the CPU;
    a bare ``cuda`` is ``cuda:LOCAL_RANK`` under torchrun (``cuda:0`` otherwise).

    Raises:
        ArgumentError: not a device, or CUDA asked for on a machine without it.
    """
    import torch

    if requested == "auto":
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(requested)
    except RuntimeError as error:
        raise ArgumentError(f"--device {requested!r} is not a device: {error}") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ArgumentError(f"--device {requested}: CUDA is not available on this machine")
        if device.index is None:
            device = torch.device("cuda", local_rank or 0)
    return device


def format_table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """Render rows as an aligned plain-text table; floats with 4 decimals."""

    def cell(value: Any) -> str:
        if isinstance(value, float):
            return "nan" if value != value else f"{value:.4f}"
        return str(value)

    body = [[cell(value) for value in row] for row in rows]
    widths = [len(h) for h in header]
    for row in body:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in body]
    return "\n".join(line.rstrip() for line in lines)


def read_csv(path: str | os.PathLike[str], *, what: str) -> tuple[list[str], list[dict[str, str]]]:
    """Column names and rows of a CSV with a header row (see :func:`percepfid.data.read_table`).

    Raises:
        InputError: the file is missing, empty or has no header or no rows.
    """
    return read_table(path, what=what, error=InputError)


def require_column(fields: Sequence[str], column: str, *, what: str, option: str) -> str:
    """Raise :class:`InputError` unless ``column`` is one of ``fields``."""
    require_columns(fields, {column: option}, what=what, error=InputError)
    return column


def parse_float(value: str, *, column: str, row: int, what: str) -> float:
    """Parse a CSV cell as a float (NaN and infinities allowed), naming the cell on failure."""
    return parse_number(value, what=what, row=row, column=column, finite=False, error=InputError)


def write_records(
    records: Sequence[dict[str, Any]],
    path: str | os.PathLike[str] | None,
    *,
    fmt: str,
    metadata: dict[str, Any] | None = None,
) -> None:
    """Write records as CSV or JSON to ``path`` (or stdout when ``path`` is None or ``-``).

    JSON output is ``{"metadata": {...}, "rows": [...]}``; CSV output is one row per record.
    """
    if path is None or str(path) == "-":
        _write_records(records, sys.stdout, fmt=fmt, metadata=metadata)
        return
    target = Path(path)
    if target.parent and not target.parent.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
    with target.open("w", newline="", encoding="utf-8") as handle:
        _write_records(records, handle, fmt=fmt, metadata=metadata)


def _write_records(
    records: Sequence[dict[str, Any]],
    handle: TextIO,
    *,
    fmt: str,
    metadata: dict[str, Any] | None,
) -> None:
    if fmt == "json":
        json.dump({"metadata": metadata or {}, "rows": list(records)}, handle, indent=2)
        handle.write("\n")
        return
    fields: list[str] = []
    for record in records:
        fields += [key for key in record if key not in fields]
    writer = csv.DictWriter(handle, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for record in records:
        writer.writerow(record)


def output_format(path: str | None, fmt: str | None) -> str:
    """``fmt`` when given, else ``'json'`` for a ``.json`` path and ``'csv'`` otherwise."""
    if fmt is not None:
        return fmt
    if path is not None and str(path).lower().endswith(".json"):
        return "json"
    return "csv"


def exit_code_for(error: BaseException) -> int:
    """The exit code the CLI returns for a typed percepfid error."""
    from .._errors import MissingDependencyError, WeightsError

    if isinstance(error, MissingDependencyError):
        return EXIT_DEPENDENCY
    if isinstance(error, WeightsError):
        return EXIT_WEIGHTS
    if isinstance(error, PercepfidError):
        return EXIT_USAGE
    return EXIT_FAILURE
