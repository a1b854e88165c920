"""``percepfid weights list|download|verify``: manage the weights percepfid knows.

``download`` pre-fetches manifest entries into the Hugging Face cache (for clusters whose
compute nodes are offline: run it on a login node with the same ``HF_HOME``); ``verify``
checks the cached files against the sha256 pinned in the manifest, and prints the sha256
of files whose hash is not pinned yet.
"""

from __future__ import annotations

import argparse
from typing import Any

from .._errors import PercepfidError, UnknownNameError, WeightsError
from ._common import EXIT_FAILURE, EXIT_OK, EXIT_WEIGHTS, echo, format_table
from ._weights_status import cached_path, status


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``weights`` subcommand with its ``list``, ``download`` and ``verify`` actions."""
    parser = subparsers.add_parser(
        "weights",
        help="list, pre-download and verify weights",
        description="List, pre-download (for offline machines) and verify weights files.",
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    def common(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--kind", choices=("backbone", "head", "rqi"), help="only this kind")
        sub.add_argument("--cache-dir", help="the Hugging Face cache folder (default: HF cache)")
        sub.add_argument("--manifest", help="a weights manifest file instead of the packaged one")

    listing = actions.add_parser("list", help="list the manifest entries and their status")
    listing.add_argument("pattern", nargs="?", default=None, help="shell pattern of names")
    common(listing)
    listing.set_defaults(handler=run_list)

    download = actions.add_parser("download", help="download entries into the cache")
    download.add_argument("names", nargs="*", help="manifest names or backbone aliases")
    download.add_argument("--all", action="store_true", help="every entry (of --kind)")
    common(download)
    download.set_defaults(handler=run_download)

    verify = actions.add_parser("verify", help="check cached files against their sha256")
    verify.add_argument("names", nargs="*", help="manifest names or aliases (default: all)")
    common(verify)
    verify.set_defaults(handler=run_verify)
    return parser


def _manifest(args: argparse.Namespace) -> Any:
    from .. import hub

    return hub.load_manifest(args.manifest)


def _canonical(name: str, manifest: Any) -> str:
    """A manifest name for ``name``, which may also be a backbone alias such as 'dinov2'."""
    if name in manifest:
        return name
    try:
        from ..backbones import get_spec

        canonical = get_spec(name).name
    except (PercepfidError, ImportError):
        canonical = None
    if canonical in manifest:
        return canonical
    raise UnknownNameError(
        "weights entry",
        name,
        manifest.keys(),
        hint="See `percepfid weights list` for every known name.",
    )


def _select(args: argparse.Namespace, manifest: Any, *, default_all: bool) -> list[str]:
    if args.names:
        names = [_canonical(name, manifest) for name in args.names]
    elif default_all or getattr(args, "all", False):
        names = list(manifest)
    else:
        raise WeightsError("name the entries to download, or pass --all")
    if args.kind is not None:
        names = [name for name in names if manifest[name].kind == args.kind]
    return names


def run_list(args: argparse.Namespace) -> int:
    """Handler of ``percepfid weights list``."""
    from .. import hub

    manifest = _manifest(args)
    names = hub.list_weights(args.kind, pattern=args.pattern, manifest=manifest)
    rows = []
    for name in names:
        entry = manifest[name]
        rows.append(
            [
                name,
                entry.kind,
                f"{entry.repo_id}/{entry.filename}",
                entry.revision or "-",
                (entry.sha256[:12] + "...") if entry.sha256 else "not pinned",
                status(entry, args.cache_dir),
            ]
        )
    echo(format_table(["name", "kind", "file", "revision", "sha256", "status"], rows))
    return EXIT_OK


def run_download(args: argparse.Namespace) -> int:
    """Handler of ``percepfid weights download``."""
    from .. import hub

    manifest = _manifest(args)
    failures = 0
    for name in _select(args, manifest, default_all=False):
        try:
            path = hub.resolve(
                name, cache_dir=args.cache_dir, local_files_only=None, manifest=manifest
            )
        except WeightsError as error:
            failures += 1
            echo(f"FAILED  {name}: {error}")
            continue
        echo(f"ok      {name} -> {path}")
    return EXIT_WEIGHTS if failures else EXIT_OK


def run_verify(args: argparse.Namespace) -> int:
    """Handler of ``percepfid weights verify``."""
    from .. import hub

    manifest = _manifest(args)
    explicit = bool(args.names)
    failures = 0
    for name in _select(args, manifest, default_all=True):
        entry = manifest[name]
        path = cached_path(entry, args.cache_dir)
        if path is None:
            if explicit:
                failures += 1
                echo(f"MISSING {name}: not in the cache (`percepfid weights download {name}`)")
            else:
                echo(f"-       {name}: not cached")
            continue
        try:
            # resolve() re-checks size and sha256 and evicts a corrupt file from the cache.
            hub.resolve(name, cache_dir=args.cache_dir, local_files_only=True, manifest=manifest)
        except WeightsError as error:
            failures += 1
            echo(f"BAD     {name}: {error}")
            continue
        if entry.sha256:
            echo(f"ok      {name}: sha256 matches")
        else:
            echo(f"unpinned {name}: sha256 {hub.sha256_file(path)} (not in the manifest yet)")
    return EXIT_FAILURE if failures else EXIT_OK
