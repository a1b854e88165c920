"""The ``percepfid`` command line (exit codes: :mod:`percepfid.commands._common`); each
subcommand is a module of :mod:`percepfid.commands`, left out when absent or when an optional
dependency it needs is missing."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from ._errors import PercepfidError
from ._version import __version__
from .commands import COMMANDS, EXIT_FAILURE, EXIT_USAGE, run_command, show_defaults

logger = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    """The top-level argument parser with every available subcommand registered."""
    parser = argparse.ArgumentParser(
        prog="percepfid",
        description=(
            "Image-quality metrics for super-resolution: score folders, correlate with human "
            "judgements, fit heads, manage weights."
        ),
    )
    parser.add_argument("--version", action="version", version=f"percepfid {__version__}")
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="more log output (-v info, -vv debug)"
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        module_name = f"percepfid.commands.{name}"
        try:
            module = importlib.import_module(module_name)
        except (ModuleNotFoundError, PercepfidError) as error:  # absent, or a missing extra
            if isinstance(error, ModuleNotFoundError) and error.name != module_name:
                raise
            logger.debug("subcommand module %s left out: %s", module_name, error)
            continue
        command = subparsers.add_parser(module.NAME, help=module.HELP, description=module.__doc__)
        module.add_arguments(command)
        show_defaults(command)
        command.set_defaults(handler=module.run, command_parser=command)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line on ``argv`` (default ``sys.argv[1:]``) and return its exit code,
    which the console script exits with."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as stop:  # --help, --version and usage errors
        return stop.code if isinstance(stop.code, int) else EXIT_FAILURE
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    if args.verbose:
        logging.basicConfig(
            level=logging.DEBUG if args.verbose > 1 else logging.INFO,
            format="%(levelname)s %(name)s: %(message)s",
        )
    return run_command(args)


if __name__ == "__main__":  # pragma: no cover - ``python -m percepfid.cli``
    sys.exit(main())
