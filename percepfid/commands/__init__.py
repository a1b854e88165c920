"""Subcommands of the ``percepfid`` command line, one module each (see
:mod:`percepfid.commands._common` for what a command module defines)."""

from __future__ import annotations

from ._common import EXIT_FAILURE, EXIT_USAGE, run_command, show_defaults

#: Command modules, in the order ``percepfid --help`` lists them.
COMMANDS = ("score", "correlate", "fit_hlf", "train_rqi", "nriqa", "backbones", "weights")

__all__ = ["COMMANDS", "EXIT_FAILURE", "EXIT_USAGE", "run_command", "show_defaults"]
