"""``percepfid correlate``: how well metric scores agree with human scores.

Reads a scores CSV (such as ``percepfid score`` writes) and human scores (in the same file
or a second CSV joined on a key column), and reports SRCC, PLCC and KRCC per score column,
optionally the logistic-fitted PLCC and RMSE and the per-source-image (grouped) SRCC, and
draws a scatter plot when matplotlib is installed.
"""

from __future__ import annotations

import argparse
import math
import os
from pathlib import Path
from typing import Any

from .._imports import require
from .._vocab import MATCH_MODES
from ._common import (
    EXIT_OK,
    InputError,
    echo,
    format_table,
    parse_float,
    read_csv,
    require_column,
    warn,
    write_records,
)


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``correlate`` subcommand."""
    parser = subparsers.add_parser(
        "correlate",
        help="correlate metric scores with human scores (SRCC/PLCC/KRCC)",
        description=(
            "Correlate metric scores with human scores. The human scores are a column of "
            "SCORES, or of a second CSV given with --human and joined on --key."
        ),
    )
    parser.add_argument("scores", help="CSV of metric scores (e.g. written by 'percepfid score')")
    parser.add_argument("--human", help="CSV of human scores; default: they are in SCORES")
    parser.add_argument(
        "--score-col",
        action="append",
        dest="score_cols",
        metavar="COL",
        help="score column(s) to evaluate; repeat for several metrics (default: score)",
    )
    parser.add_argument("--human-col", default="mos", help="human score column (default: mos)")
    parser.add_argument(
        "--key", default="distorted", help="join column of SCORES (default: distorted)"
    )
    parser.add_argument("--human-key", help="join column of --human (default: same as --key)")
    parser.add_argument(
        "--match",
        choices=MATCH_MODES,
        default="exact",
        help="compare join keys exactly, by file name, or by file name without extension",
    )
    parser.add_argument(
        "--group-col", help="source-image column: adds the grouped (per-source) SRCC"
    )
    parser.add_argument(
        "--fit",
        choices=("logistic4", "logistic5"),
        help="also report PLCC and RMSE after a logistic fit (needs scipy)",
    )
    parser.add_argument("--plot", metavar="PNG", help="write a scatter plot (needs matplotlib)")
    parser.add_argument(
        "--format",
        choices=("table", "csv", "json"),
        default="table",
        help="output format (default: table)",
    )
    parser.add_argument("--output", "-o", help="write the results here instead of stdout")
    parser.set_defaults(handler=run)
    return parser


def _join_key(value: str, mode: str) -> str:
    if mode == "exact":
        return value
    name = os.path.basename(value.replace("\\", "/"))
    return name if mode == "name" else os.path.splitext(name)[0]


def _load(args: argparse.Namespace) -> tuple[list[dict[str, str]], list[str], str]:
    """Rows holding score columns and the human column (joined when --human is given)."""
    score_fields, score_rows = read_csv(args.scores, what="scores CSV")
    score_cols = args.score_cols or ["score"]
    for column in score_cols:
        require_column(score_fields, column, what=f"scores CSV {args.scores}", option="--score-col")
    if args.human is None:
        require_column(
            score_fields, args.human_col, what=f"scores CSV {args.scores}", option="--human-col"
        )
        return score_rows, score_cols, args.scores
    human_fields, human_rows = read_csv(args.human, what="human CSV")
    human_key = args.human_key or args.key
    require_column(score_fields, args.key, what=f"scores CSV {args.scores}", option="--key")
    require_column(human_fields, human_key, what=f"human CSV {args.human}", option="--human-key")
    require_column(
        human_fields, args.human_col, what=f"human CSV {args.human}", option="--human-col"
    )
    table: dict[str, dict[str, str]] = {}
    for row in human_rows:
        key = _join_key(row[human_key], args.match)
        if key in table:
            raise InputError(
                f"human CSV {args.human}: key {key!r} appears twice in column {human_key!r} "
                f"(with --match {args.match}); keys must be unique"
            )
        table[key] = row
    joined, unmatched = [], []
    for row in score_rows:
        partner = table.get(_join_key(row[args.key], args.match))
        if partner is None:
            unmatched.append(row[args.key])
            continue
        merged = dict(partner)
        merged.update({k: v for k, v in row.items() if k not in partner or k in score_cols})
        joined.append(merged)
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
    return joined, score_cols, args.human


def _statistics(
    name: str, pred: list[float], human: list[float], groups: list[str] | None, fit: str | None
) -> dict[str, Any]:
    from ..eval import grouped_correlation, krcc, plcc, rmse, srcc

    record: dict[str, Any] = {
        "metric": name,
        "n": len(pred),
        "srcc": srcc(pred, human),
        "plcc": plcc(pred, human),
        "krcc": krcc(pred, human),
    }
    if fit is not None:
        record[f"plcc_{fit}"] = plcc(pred, human, fit=fit)
        record[f"rmse_{fit}"] = rmse(pred, human, fit=fit)
    if groups is not None:
        record["grouped_srcc"] = grouped_correlation(pred, human, groups)
    return record


def _plot(path: str, columns: dict[str, list[float]], human: list[float], human_col: str) -> None:
    require("matplotlib", "percepfid correlate --plot")
    from matplotlib.figure import Figure

    count = len(columns)
    figure = Figure(figsize=(4.0 * count, 4.0))
    for index, (name, values) in enumerate(columns.items()):
        axes = figure.add_subplot(1, count, index + 1)
        axes.scatter(values, human, s=8, alpha=0.6)
        axes.set_xlabel(name)
        axes.set_ylabel(human_col)
        axes.set_title(name)
    figure.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)


def run(args: argparse.Namespace) -> int:
    """Handler of ``percepfid correlate``."""
    if args.plot:
        require("matplotlib", "percepfid correlate --plot")  # fail before any work
    if args.fit:
        require("scipy", f"percepfid correlate --fit {args.fit}")
    rows, score_cols, human_source = _load(args)
    if args.group_col is not None and args.group_col not in rows[0]:
        raise InputError(
            f"no column {args.group_col!r} for --group-col in {args.scores} or {human_source}"
        )
    human = [
        parse_float(row[args.human_col], column=args.human_col, row=i + 1, what=human_source)
        for i, row in enumerate(rows)
    ]
    groups = [row[args.group_col] for row in rows] if args.group_col else None
    columns: dict[str, list[float]] = {}
    records = []
    for column in score_cols:
        values = [
            parse_float(row[column], column=column, row=i + 1, what=args.scores)
            for i, row in enumerate(rows)
        ]
        if len(values) < 2:
            raise InputError(f"need at least two scored rows to correlate; got {len(values)}")
        columns[column] = values
        records.append(_statistics(column, values, human, groups, args.fit))
    if args.format == "table":
        header = list(records[0])
        table = format_table(header, [[record[h] for h in header] for record in records])
        if args.output:
            Path(args.output).write_text(table + "\n", encoding="utf-8")
        else:
            echo(table)
    else:
        clean = [
            {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()}
            for r in records
        ]
        write_records(
            clean,
            args.output,
            fmt=args.format,
            metadata={"scores": str(args.scores), "human": str(human_source)},
        )
    if args.plot:
        _plot(args.plot, columns, human, args.human_col)
    return EXIT_OK
