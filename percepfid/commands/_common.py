"""Helpers shared by the ``percepfid`` subcommands: options, exit codes, output paths and
files, CSV reading, stdout for data only, flag names in messages.

A command module defines ``NAME``, ``HELP`` (one line), ``add_arguments(parser)`` and
``run(args) -> exit code``; its docstring is the description ``--help`` shows, and
:mod:`percepfid.cli` makes its parser. Heavy imports (torch, models, scipy) happen inside
``run``, never at module level, so ``percepfid --help`` and argument errors answer without
importing torch (a test guards this).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import math
import os
import re
import sys
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from .._atomic import atomic_path
from .._errors import ArgumentError, MissingDependencyError, PercepfidError, WeightsError

if TYPE_CHECKING:
    import torch

#: Exit codes of the ``percepfid`` command (documented in the README). An error is one stderr
#: line, ``percepfid <command>: error: ...``, naming the flags to change.
EXIT_OK = 0
EXIT_FAILURE = 1  # the command ran but what it checked failed (e.g. a weights mismatch)
EXIT_USAGE = 2  # bad arguments, input data or paths (argparse uses 2 as well)
EXIT_DEPENDENCY = 3  # an optional dependency is missing
EXIT_WEIGHTS = 4  # weights missing (offline, not cached), corrupt or not matching

#: The row number of a CSV's first data row: rows are counted as a spreadsheet shows
#: them, the header being row 1 (every command and reader counts this way).
FIRST_DATA_ROW = 2


class InputError(ArgumentError):
    """Bad input data given to a command: a missing folder, unmatched names, a bad CSV."""


# --------------------------------------------------------------------------- options


def show_defaults(parser: argparse.ArgumentParser) -> None:
    """End the help of each option of ``parser`` with ``(default: X)`` when it has a default
    its text does not already speak of."""
    for action in parser._actions:
        shown = action.default not in (None, argparse.SUPPRESS) and action.default is not False
        if shown and "default" not in (action.help or ""):
            action.help = f"{action.help or ''} (default: %(default)s)"


def int_type(low: int, high: int | None = None) -> Callable[[str], int]:
    """An argparse type of an integer in ``[low, high)`` (no upper bound when ``high`` is None)."""
    wanted = f"an integer >= {low}" if high is None else f"an integer in [{low}, {high})"

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {wanted}; got {text!r}") from None
        if value < low or (high is not None and value >= high):
            raise argparse.ArgumentTypeError(f"expected {wanted}; got {value}")
        return value

    return parse


positive_int = int_type(1)
seed_int = int_type(0, 2**64)  # the seeds torch accepts


def _output_path(text: str, *, folder: bool) -> str:
    """``text`` as a path a command can write a file (or folder) at, else an argparse error
    saying why not: checked before any work starts."""
    path = Path(text).expanduser()
    start = path if folder else path.parent
    existing = next((p for p in (start, *start.parents) if p.exists()), start)
    if folder and path.exists() and not path.is_dir():
        problem = f"{path} is a file, not a folder"
    elif not folder and path.is_dir():
        problem = f"{path} is a folder; name a file (e.g. {path / 'out.csv'})"
    elif not existing.is_dir():
        problem = f"cannot write {path}: {existing} is a file, not a folder"
    elif not os.access(existing, os.W_OK | os.X_OK):
        problem = f"cannot write {path}: no permission to write in {existing}"
    else:
        return str(path)
    raise argparse.ArgumentTypeError(problem)


def output_file(text: str) -> str:
    """argparse type of an output file: ``-`` (stdout) or a path that can be written (not a
    folder, under no file, with write permission); missing folders are made on writing."""
    return text if text == "-" else _output_path(text, folder=False)


def output_folder(text: str) -> str:
    """argparse type of an output folder: not a file, under no file, with write permission;
    a missing folder is made by the command."""
    return _output_path(text, folder=True)


def add_runtime_options(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup, *, batch_size: int, unit: str
) -> None:
    """Add the options of every command that runs a model: ``--batch-size``, ``--device``
    (see :func:`resolve_device`), ``--random-weights`` and ``--no-progress``."""
    parser.add_argument(
        "--batch-size", type=positive_int, default=batch_size, help=f"{unit} per forward pass"
    )
    parser.add_argument("--device", default="auto", help="auto (CUDA if any), cpu, cuda or cuda:N")
    parser.add_argument(
        "--random-weights",
        action="store_true",
        help="random weights, no download: plumbing tests only, the numbers mean nothing",
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def add_training_options(
    parser: argparse.ArgumentParser,
    *,
    columns: Mapping[str, tuple[Sequence[str], str, str]],
    batch_size: tuple[int, str],
    epochs: tuple[int, str],
    lr: tuple[float, str],
    seed: str,
    cache_mb: str,
) -> None:
    """Add the options of the commands that train on a rating CSV (read back by
    :func:`training_arguments`): one per column (``columns``: a field of
    :class:`percepfid.train.RatingColumns` -> its flags, default and help), ``--root``,
    ``--backbone``, ``--image-size``, ``--epochs`` and ``--lr`` (default and help),
    ``--val-fraction``, ``--seed`` and ``--cache-mb`` (help) and the runtime options
    (``batch_size``: the default and the unit)."""
    for name, (flags, default, text) in columns.items():
        parser.add_argument(
            *flags, dest=f"{name}_column", metavar="COLUMN", default=default, help=text
        )
    parser.set_defaults(column_flags={name: flags[0] for name, (flags, _, _) in columns.items()})
    parser.add_argument("--root", help="folder image paths are relative to (default: the CSV's)")
    parser.add_argument("--backbone", default="dinov2", help="registered backbone name")
    parser.add_argument(
        "--image-size", type=positive_int, help="backbone input size (default: its own)"
    )
    parser.add_argument("--epochs", type=int, default=epochs[0], help=epochs[1])
    parser.add_argument("--lr", type=float, default=lr[0], help=lr[1])
    parser.add_argument("--val-fraction", type=float, default=0.2, help="held-out share of groups")
    parser.add_argument("--seed", type=seed_int, default=0, help=seed)
    parser.add_argument("--cache-mb", type=float, default=1024.0, help=cache_mb)
    add_runtime_options(parser, batch_size=batch_size[0], unit=batch_size[1])


def runtime_arguments(args: argparse.Namespace, results: str) -> dict[str, Any]:
    """The keyword arguments that the options of :func:`add_runtime_options` set
    (``batch_size``, ``device``, ``pretrained``, ``progress``); under ``--random-weights``,
    warns that ``results`` mean nothing."""
    warn_random_weights(args, results)
    return {
        "batch_size": args.batch_size,
        "device": resolve_device(args.device),
        "pretrained": not args.random_weights,
        "progress": not args.no_progress,
    }


def training_arguments(args: argparse.Namespace, results: str) -> dict[str, Any]:
    """The keyword arguments of the trainers (:func:`percepfid.train.fit_hlf_head`,
    :func:`percepfid.train.train_rqi`) that the options of :func:`add_training_options` set
    (with the warning of :func:`runtime_arguments`)."""
    from ..train import RatingColumns

    columns = {name: getattr(args, f"{name}_column") for name in args.column_flags}
    same = ("image_size", "epochs", "lr", "val_fraction", "seed", "cache_mb")
    return (
        {name: getattr(args, name) for name in same}
        | runtime_arguments(args, results)
        | {"columns": RatingColumns(**columns, root=args.root, flags=args.column_flags)}
    )


def add_output_options(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    *,
    formats: Sequence[str] = ("csv", "json"),
    default_format: str | None = None,
) -> None:
    """Add ``--output/-o`` (an :func:`output_file`; default stdout) and ``--format``
    (default: ``default_format``, else by the output's suffix, see :func:`write_records`)."""
    parser.add_argument("--output", "-o", type=output_file, help="default: stdout (also '-')")
    parser.add_argument(
        "--format",
        choices=formats,
        default=default_format,
        help="output format" if default_format else "default: json for a .json output, else csv",
    )


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


# --------------------------------------------------------------------------- talking

_data_stream: TextIO | None = None  # stdout while run_command sends other prints to stderr


def echo(text: str = "") -> None:
    """Write one line of the command's output to stdout."""
    (_data_stream or sys.stdout).write(text + "\n")


def warn(text: str) -> None:
    """Write a warning line to stderr."""
    sys.stderr.write(f"percepfid: warning: {text}\n")


def warn_random_weights(args: argparse.Namespace, results: str, *, show: bool = True) -> str:
    """Under ``--random-weights`` (and ``show``), warn that ``results`` mean nothing;
    return the warning's text."""
    text = (
        f"--random-weights: the model has random weights, so {results} mean nothing; "
        "use this only to test the plumbing"
    )
    if args.random_weights and show:
        warn(text)
    return text


_NOT_A_NAME = r"[\w./\\'\"-]"  # a keyword next to one of these is part of a path or a quote


def as_flags(message: str, parser: argparse.ArgumentParser) -> str:
    """``message`` with the Python keywords of the library (``image_column=``,
    ``batch_size``) replaced by the flags of ``parser`` that set them
    (``--image-column``, ``--batch-size``): a message from a library function reached
    through the command line names what the user can type."""
    flags: dict[str, str] = {}
    for action in parser._actions:
        longs = [s for s in action.option_strings if s.startswith("--")]
        if longs and action.dest != "help":
            flags.setdefault(action.dest, longs[0])
    if not flags:
        return message
    if "--random-weights" in flags.values():
        message = message.replace("pretrained=False", "--random-weights")
    names = "|".join(map(re.escape, sorted(flags, key=len, reverse=True)))
    keyword = re.compile(rf"(?<!{_NOT_A_NAME})({names})(?:=(?=([<\w'\"])?)|(?!{_NOT_A_NAME}))")

    def flag(match: re.Match[str]) -> str:
        dest = match[1]
        if match[0].endswith("="):  # ``dest=value`` -> ``--flag value``; ``dest=`` -> ``--flag``
            return flags[dest] + (" " if match[2] else "")
        # an identifier such as batch_size; a plain word only as the subject of a check
        subject = match.start() == 0 and message.startswith(" must ", match.end())
        return flags[dest] if "_" in dest or subject else match[0]

    return keyword.sub(flag, message)


def format_table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """Render rows as an aligned plain-text table; floats with 4 decimals, booleans as yes/no."""

    def cell(value: Any) -> str:
        if isinstance(value, bool):
            return "yes" if value else "no"
        if isinstance(value, float):
            return "nan" if value != value else f"{value:.4f}"
        return str(value)

    lines = [list(header), *([cell(value) for value in row] for row in rows)]
    widths = [max(map(len, column)) for column in zip(*lines, strict=True)]
    lines.insert(1, ["-" * width for width in widths])
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in lines
    )


# --------------------------------------------------------------------------- files


def write_records(
    records: Sequence[dict[str, Any]],
    path: str | os.PathLike[str] | None,
    *,
    fmt: str | None,
    metadata: dict[str, Any] | None = None,
) -> None:
    """Write records as a table (:func:`format_table`), CSV (one row per record) or JSON
    (``{"metadata": {...}, "rows": [...]}``; ``fmt`` None: JSON for a ``.json`` path, else
    CSV) to stdout when ``path`` is None or ``-``, else to ``path`` atomically (the old file
    stays whole when anything fails; ``InputError`` when it cannot be written). NaN is
    written as JSON null and an empty CSV cell."""
    if fmt is None:
        fmt = "json" if str(path).lower().endswith(".json") else "csv"
    buffer = io.StringIO()
    if fmt == "table":
        header = list(records[0])
        buffer.write(format_table(header, [[r[h] for h in header] for r in records]) + "\n")
    else:
        records = [
            {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in r.items()}
            for r in records
        ]
        if fmt == "json":
            json.dump({"metadata": metadata or {}, "rows": records}, buffer, indent=2)
            buffer.write("\n")
        else:
            fields = list(dict.fromkeys(key for record in records for key in record))
            writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n")
            writer.writeheader()
            writer.writerows(records)
    if path is None or str(path) == "-":
        (_data_stream or sys.stdout).write(buffer.getvalue())
        return
    try:
        with atomic_path(path) as partial:
            partial.write_text(buffer.getvalue(), encoding="utf-8", newline="")
    except OSError as error:
        raise InputError(f"cannot write {path}: {error.strerror or error}") from None


def run_command(args: argparse.Namespace) -> int:
    """Run the command ``args`` chose and return its exit code: stdout carries its data only
    (anything else printed meanwhile goes to stderr), a library warning is one stderr line
    (``-v`` shows it in full), and so is an error, naming the flags to change."""
    global _data_stream  # noqa: PLW0603 - one command runs at a time
    _data_stream = sys.stdout
    try:
        with contextlib.redirect_stdout(sys.stderr), warnings.catch_warnings():
            if not args.verbose:
                warnings.showwarning = lambda message, *_, **__: sys.stderr.write(
                    f"percepfid {args.command}: warning: {message}\n"
                )
            return int(args.handler(args) or 0)
    except PercepfidError as error:
        message, code = as_flags(str(error), args.command_parser), EXIT_USAGE
        if isinstance(error, MissingDependencyError):
            code = EXIT_DEPENDENCY
        elif isinstance(error, WeightsError):
            code = EXIT_WEIGHTS
    except OSError as error:  # a file that vanished, a full disk, no permission
        where = f"{error.filename}: " if error.filename else ""
        message, code = f"{where}{error.strerror or error}", EXIT_USAGE
    except UnicodeDecodeError as error:
        message = (
            f"a text file is not UTF-8 ({error.reason} at byte {error.start}); save it as UTF-8"
        )
        code = EXIT_USAGE
    except KeyboardInterrupt:
        sys.stderr.write(f"percepfid {args.command}: interrupted\n")
        return 130
    finally:
        _data_stream = None
    sys.stderr.write(f"percepfid {args.command}: error: {message}\n")
    return code
