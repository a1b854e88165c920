"""Correlate metric scores with human scores: SRCC, PLCC and KRCC per score column of SCORES
(e.g. written by percepfid score), optionally the PLCC and RMSE after a logistic fit (--fit),
the per-source-image SRCC (--group-col) and a scatter plot (--plot, needs matplotlib). The
human scores are a column of SCORES, or of a second CSV given with --human and joined on --key.
"""

from __future__ import annotations

import argparse
import math
import os
import warnings
from functools import partial
from pathlib import Path
from typing import Any

from .._imports import require
from .._vocab import MATCH_MODES
from ..data import parse_number, read_table, require_columns
from ._common import (
    EXIT_OK,
    FIRST_DATA_ROW,
    InputError,
    add_output_options,
    output_file,
    warn,
    write_records,
)

_FIT_PARAMETERS = {"logistic4": 4, "logistic5": 5}


NAME = "correlate"
HELP = "correlate metric scores with human scores (SRCC/PLCC/KRCC)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("scores", help="CSV of metric scores (e.g. written by 'percepfid score')")
    parser.add_argument("--human", help="CSV of human scores; default: they are in SCORES")
    parser.add_argument(
        "--score-col",
        action="append",
        dest="score_cols",
        metavar="COL",
        help="score column(s) to evaluate; repeat for several metrics (default: score)",
    )
    parser.add_argument("--human-col", default="mos", help="human score column")
    parser.add_argument("--key", default="distorted", help="join column of SCORES")
    parser.add_argument("--human-key", help="join column of --human (default: same as --key)")
    parser.add_argument(
        "--match",
        choices=MATCH_MODES,
        default="exact",
        help="compare join keys exactly, by file name, or by file name without extension",
    )
    parser.add_argument("--group-col", help="source-image column: adds the per-source SRCC")
    parser.add_argument(
        "--fit",
        choices=tuple(_FIT_PARAMETERS),
        help="also report PLCC and RMSE after a logistic fit (needs scipy); --plot draws it",
    )
    parser.add_argument(
        "--plot",
        metavar="FILE",
        type=output_file,
        help="write a scatter plot, e.g. scatter.png or .pdf/.svg (needs matplotlib)",
    )
    add_output_options(parser, formats=("table", "csv", "json"), default_format="table")


def _join_key(value: str, mode: str) -> str:
    if mode == "exact":
        return value
    name = os.path.basename(value.replace("\\", "/"))
    return name if mode == "name" else os.path.splitext(name)[0]


# A row to correlate: its cells, and its row numbers in SCORES and in the human CSV.
_Row = tuple[dict[str, str], int, int]


def _load(args: argparse.Namespace, score_cols: list[str]) -> list[_Row]:
    """The rows of SCORES, each joined with its row of --human when that is given."""
    score_fields, score_rows = read_table(args.scores, what="scores CSV", error=InputError)
    numbered = list(enumerate(score_rows, start=FIRST_DATA_ROW))
    needed = dict.fromkeys(score_cols, "--score-col")
    if args.human is None:
        needed.setdefault(args.human_col, "--human-col")
    else:
        needed.setdefault(args.key, "--key")
    require_columns(score_fields, needed, what=f"scores CSV {args.scores}", error=InputError)
    if args.human is None:
        return [(row, n, n) for n, row in numbered]
    human_fields, human_rows = read_table(args.human, what="human CSV", error=InputError)
    human_key = args.human_key or args.key
    require_columns(
        human_fields,
        {human_key: "--human-key", args.human_col: "--human-col"},
        what=f"human CSV {args.human}",
        error=InputError,
    )
    table: dict[str, tuple[int, dict[str, str]]] = {}
    for number, row in enumerate(human_rows, start=FIRST_DATA_ROW):
        key = _join_key(row[human_key], args.match)
        if key in table:
            raise InputError(
                f"human CSV {args.human}: key {key!r} appears twice in column {human_key!r} "
                f"(rows {table[key][0]} and {number}, with --match {args.match}); keys must "
                "be unique"
            )
        table[key] = (number, row)
    joined, unmatched = [], []
    for number, row in numbered:
        found = table.get(_join_key(row[args.key], args.match))
        if found is None:
            unmatched.append(row[args.key])
            continue
        cells = found[1] | {k: v for k, v in row.items() if k not in found[1] or k in score_cols}
        joined.append((cells, number, found[0]))
    if not joined:
        hint = "" if args.match != "exact" else "; try --match name or --match stem"
        raise InputError(
            f"no row of {args.scores} (column {args.key!r}) matches a row of {args.human} "
            f"(column {human_key!r}){hint}. First keys: scores {score_rows[0][args.key]!r}, "
            f"human {human_rows[0][human_key]!r}"
        )
    if unmatched:
        shown = ", ".join(repr(u) for u in unmatched[:3])
        warn(f"{len(unmatched)} score row(s) have no human score and are left out: {shown}")
    return joined


def _numbers(rows: list[_Row], column: str, source: str, *, human: bool) -> list[float]:
    """The cells of ``column`` as finite floats; an empty or bad cell names its row."""
    numbers = []
    for cells, score_row, human_row in rows:
        number = human_row if human else score_row
        if not cells[column]:
            raise InputError(
                f"{source}: row {number}, column {column!r} is empty; expected a number"
            )
        numbers.append(
            parse_number(cells[column], what=source, row=number, column=column, error=InputError)
        )
    return numbers


def _statistics(
    name: str, pred: list[float], human: list[float], groups: list[str] | None, fit: str | None
) -> dict[str, Any]:
    from ..eval import ConstantInputWarning, grouped_correlation, krcc, plcc, rmse, srcc

    measures: dict[str, Any] = {"srcc": srcc, "plcc": plcc, "krcc": krcc}
    if fit is not None:
        measures |= {f"plcc_{fit}": partial(plcc, fit=fit), f"rmse_{fit}": partial(rmse, fit=fit)}
    if groups is not None:
        measures["grouped_srcc"] = partial(grouped_correlation, groups=groups)
    defined = len(set(pred)) > 1  # a constant column has no correlation (warned before)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConstantInputWarning)
        record = {key: f(pred, human) if defined else math.nan for key, f in measures.items()}
    if defined and math.isnan(record.get("grouped_srcc", 0.0)):
        warn(
            f"grouped SRCC of {name!r} is undefined: no source image (--group-col) has "
            "two rows with different scores and human scores"
        )
    return {"metric": name, "n": len(pred)} | record


def _plot_format(path: str) -> str:
    """The file format of ``--plot``, from its suffix; refused when matplotlib cannot write it."""
    require("matplotlib", "percepfid correlate --plot")
    from matplotlib.backend_bases import FigureCanvasBase

    supported = FigureCanvasBase.get_supported_filetypes()
    suffix = Path(path).suffix.lower().lstrip(".")
    if suffix not in supported:
        raise InputError(
            f"--plot {path}: cannot tell the image format from "
            f"{'the suffix ' + repr('.' + suffix) if suffix else 'a name without a suffix'}; "
            f"end the name with one of {', '.join('.' + s for s in sorted(supported))}"
        )
    return suffix


def _plot(
    path: str, columns: dict[str, list[float]], human: list[float], human_col: str, fit: str | None
) -> None:
    import numpy as np
    from matplotlib.figure import Figure

    from .._atomic import atomic_path
    from ..eval import fit_logistic

    figure = Figure(figsize=(4.0 * len(columns), 4.0))
    for index, (name, values) in enumerate(columns.items()):
        axes = figure.add_subplot(1, len(columns), index + 1)
        axes.scatter(values, human, s=8, alpha=0.6)
        if fit is not None and len(set(values)) > 1:
            xs = np.linspace(min(values), max(values), 200)
            axes.plot(xs, fit_logistic(values, human, fit)(xs), color="C1", label=f"{fit} fit")
            axes.legend(loc="best")
        axes.set(xlabel=name, ylabel=human_col, title=name)
    figure.tight_layout()
    with atomic_path(path) as partial_file:
        figure.savefig(partial_file, dpi=100, format=_plot_format(path))


def run(args: argparse.Namespace) -> int:
    """Handler of ``percepfid correlate``."""
    if args.plot:
        _plot_format(args.plot)  # fail before any work
    if args.fit:
        require("scipy", f"percepfid correlate --fit {args.fit}")
    score_cols = args.score_cols or ["score"]
    rows = _load(args, score_cols)
    human_source = args.scores if args.human is None else args.human
    if args.group_col is not None and args.group_col not in rows[0][0]:
        raise InputError(
            f"no column {args.group_col!r} for --group-col in {args.scores} or {human_source}"
        )
    human = _numbers(rows, args.human_col, human_source, human=args.human is not None)
    if len(rows) < 2:
        raise InputError(f"need at least two scored rows to correlate; got {len(rows)}")
    if len(set(human)) == 1:
        raise InputError(
            f"{human_source}: the human scores (--human-col {args.human_col}) are all "
            f"{human[0]:g}: a correlation with a constant is undefined"
        )
    needed = _FIT_PARAMETERS.get(args.fit, 0)
    if len(rows) < needed:
        raise InputError(
            f"--fit {args.fit} fits {needed} parameters and needs at least {needed} rows; "
            f"got {len(rows)}: leave out --fit for the raw PLCC"
        )
    groups = [cells[args.group_col] for cells, _, _ in rows] if args.group_col else None
    columns = {column: _numbers(rows, column, args.scores, human=False) for column in score_cols}
    records = []
    for column, values in columns.items():
        if len(set(values)) == 1:
            warn(
                f"{args.scores}: column {column!r} (--score-col) is {values[0]:g} in every "
                "row: its correlations are undefined (reported as nan)"
            )
        records.append(_statistics(column, values, human, groups, args.fit))
    if args.plot:
        _plot(args.plot, columns, human, args.human_col, args.fit)
    metadata = {"scores": str(args.scores), "human": str(human_source)}
    write_records(records, args.output, fmt=args.format, metadata=metadata)
    return EXIT_OK
