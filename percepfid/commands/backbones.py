"""List the registered backbones: canonical name, aliases, library, and whether their weights
are in the local Hugging Face cache (no network access).
"""

from __future__ import annotations

import argparse
import json

from ._common import EXIT_OK, echo, format_table
from .weights import status

NAME = "backbones"
HELP = "list the registered backbones with their weights status"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("pattern", nargs="?", default="*", help="shell pattern, e.g. '*dinov2*'")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--cache-dir", help="the Hugging Face cache folder to look in")


def run(args: argparse.Namespace) -> int:
    """Handler of ``percepfid backbones``."""
    from .. import hub
    from ..backbones import get_spec, list_backbones

    manifest = hub.load_manifest()
    # a pattern that matches an alias lists its backbone too
    names = sorted({get_spec(name).name for name in list_backbones(args.pattern)})
    records, rows = [], []
    for spec in map(get_spec, names):
        entry = manifest.get(spec.name)
        weights, pinned = status(entry, args.cache_dir), bool(entry is not None and entry.sha256)
        records.append(
            {
                "name": spec.name,
                "aliases": list(spec.aliases),
                "source": spec.source,
                "weights": weights,
                "sha256_pinned": pinned,
                "description": spec.description or "",
            }
        )
        rows.append([spec.name, ", ".join(spec.aliases) or "-", spec.source, weights, pinned])
    if args.json:
        echo(json.dumps(records, indent=2))
    elif not records:
        echo(f"no backbone matches {args.pattern!r}")
    else:
        echo(format_table(["name", "aliases", "source", "weights", "sha256"], rows))
    return EXIT_OK
