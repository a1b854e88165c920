"""Subcommands of the ``percepfid`` command line, one module each.

A command module defines ``register(subparsers)``: it adds its parser with
``subparsers.add_parser(...)`` and sets ``handler`` to a function
``(argparse.Namespace) -> int`` returning the exit code. Heavy imports (torch, models,
scipy) happen inside the handler, never at module level, so ``percepfid --help`` and
argument errors answer without importing torch (a test guards this).

Modules listed in :data:`COMMANDS` that are not present are skipped by the CLI.
"""

from __future__ import annotations

from ._common import EXIT_FAILURE, EXIT_USAGE, as_flags, data_only_stdout, exit_code_for

#: Command modules, in the order ``percepfid --help`` lists them.
COMMANDS: tuple[str, ...] = (
    "score",
    "correlate",
    "fit_hlf",
    "train_rqi",
    "nriqa",
    "backbones",
    "weights",
)

__all__ = [
    "COMMANDS",
    "EXIT_FAILURE",
    "EXIT_USAGE",
    "as_flags",
    "data_only_stdout",
    "exit_code_for",
]
