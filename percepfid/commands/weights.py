"""List, pre-download (for offline machines) and verify weights files; see the --help of
each action."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from .._errors import PercepfidError, UnknownNameError, WeightsError
from .._vocab import WEIGHT_KINDS
from ._common import EXIT_FAILURE, EXIT_OK, EXIT_WEIGHTS, echo, format_table

NAME = "weights"
HELP = "list, pre-download and verify weights"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    sub = {}
    for handler, text in (
        (run_list, "list the manifest entries and their status"),
        (run_download, "download entries into the cache"),
        (run_verify, "check cached files against their sha256"),
    ):
        name = handler.__name__.removeprefix("run_")
        action = sub[name] = actions.add_parser(name, help=text, description=handler.__doc__)
        action.set_defaults(action_handler=handler)
        action.add_argument(
            "--kind",
            choices=WEIGHT_KINDS,
            help="only this kind (iqa: the towers of NR-IQA models)",
        )
        action.add_argument("--cache-dir", help="the Hugging Face cache folder (default: HF cache)")
        action.add_argument(
            "--manifest", help="a weights manifest file instead of the packaged one"
        )
    sub["list"].add_argument("pattern", nargs="?", default=None, help="shell pattern of names")
    sub["download"].add_argument(
        "names", nargs="*", help="manifest names or aliases (dinov2, clip, clipiqa, ...)"
    )
    sub["download"].add_argument("--all", action="store_true", help="every entry (of --kind)")
    sub["verify"].add_argument("names", nargs="*", help="manifest names or aliases (default: all)")


def run(args: argparse.Namespace) -> int:
    """Handler of ``percepfid weights``: runs the chosen action on the manifest."""
    from .. import hub

    return args.action_handler(args, hub.load_manifest(args.manifest))


def cached_path(entry: Any, cache_dir: str | os.PathLike[str] | None = None) -> Path | None:
    """The cached file of a :class:`~percepfid.hub.ManifestEntry`, or None (no download)."""
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(
        entry.repo_id,
        entry.filename,
        cache_dir=None if cache_dir is None else str(cache_dir),
        revision=entry.revision,
    )
    return Path(found) if isinstance(found, str) and os.path.isfile(found) else None


def status(entry: Any | None, cache_dir: str | os.PathLike[str] | None = None) -> str:
    """``'cached'``, ``'not cached'`` or ``'no manifest entry'`` (no network access)."""
    if entry is None:
        return "no manifest entry"
    return "cached" if cached_path(entry, cache_dir) is not None else "not cached"


def _canonical(name: str, manifest: Any) -> str:
    """The manifest name of ``name``, which may also be a backbone alias ('dinov2') or an
    NR-IQA model, ``clipiqa[:<arch>[/<tag>]]``: the tower ``open_clip:<arch>/<tag>``, with
    CLIP-IQA's own defaults for what is left out."""
    family, _, rest = name.partition(":")
    canonical = name
    try:
        if family == "clipiqa" and name not in manifest:
            import inspect

            from ..iqa import CLIPIQA

            defaults = inspect.signature(CLIPIQA).parameters
            arch, _, tag = rest.partition("/")
            arch, tag = arch or defaults["model"].default, tag or defaults["pretrained"].default
            canonical = f"open_clip:{arch}/{tag}"
        elif name not in manifest:
            from ..backbones import get_spec

            canonical = get_spec(name).name
    except (PercepfidError, ImportError):
        pass
    if canonical in manifest:
        return canonical
    hint = "See `percepfid weights list` for every known name."
    raise UnknownNameError("weights entry", name, manifest.keys(), hint=hint)


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


def run_list(args: argparse.Namespace, manifest: Any) -> int:
    """List the weights in the manifest: kind, Hub file, pinned revision and sha256, and
    whether each is in the local Hugging Face cache (no network access)."""
    from .. import hub

    rows = []
    for name in hub.list_weights(args.kind, pattern=args.pattern, manifest=manifest):
        entry = manifest[name]
        sha256 = (entry.sha256[:12] + "...") if entry.sha256 else "not pinned"
        file, revision = f"{entry.repo_id}/{entry.filename}", entry.revision or "-"
        rows.append([name, entry.kind, file, revision, sha256, status(entry, args.cache_dir)])
    echo(format_table(["name", "kind", "file", "revision", "sha256", "status"], rows))
    return EXIT_OK


def run_download(args: argparse.Namespace, manifest: Any) -> int:
    """Download manifest entries into the Hugging Face cache and check their sha256 where
    pinned: run it on a connected machine, then share HF_HOME with offline ones. Exit 4 when
    an entry cannot be downloaded or does not match."""
    from .. import hub

    failures = 0
    for name in _select(args, manifest, default_all=False):
        try:
            path = hub.resolve(
                name, cache_dir=args.cache_dir, local_files_only=None, manifest=manifest
            )
            echo(f"ok      {name} -> {path}")
        except WeightsError as error:
            failures += 1
            echo(f"FAILED  {name}: {error}")
    return EXIT_WEIGHTS if failures else EXIT_OK


def run_verify(args: argparse.Namespace, manifest: Any) -> int:
    """Check the cached files of manifest entries against their pinned sha256 (a file that
    fails is removed from the cache) and print the sha256 of unpinned ones. Without names,
    every cached entry is checked. Exit 1 when a check fails, a named entry is not cached,
    or nothing at all is cached."""
    from .. import hub

    failures, missing = 0, []
    selected = _select(args, manifest, default_all=True)
    for name in selected:
        path = cached_path(manifest[name], args.cache_dir)
        if path is None:
            missing.append(name)
            failures += bool(args.names)  # a named entry must be cached
            echo(
                f"MISSING {name}: not in the cache (`percepfid weights download {name}`)"
                if args.names
                else f"-       {name}: not cached"
            )
            continue
        try:  # re-checks size and sha256, and evicts a corrupt file from the cache
            hub.resolve(name, cache_dir=args.cache_dir, local_files_only=True, manifest=manifest)
        except WeightsError as error:
            failures += 1
            echo(f"BAD     {name}: {error}")
            continue
        if manifest[name].sha256:
            echo(f"ok      {name}: sha256 matches")
        else:
            echo(f"unpinned {name}: sha256 {hub.sha256_file(path)} (not in the manifest yet)")
    if not args.names and selected and len(missing) == len(selected):
        echo(
            f"nothing to verify: none of the {len(missing)} entries is cached; fetch them "
            "with `percepfid weights download NAME` (or --all)"
        )
        return EXIT_FAILURE
    return EXIT_FAILURE if failures else EXIT_OK
