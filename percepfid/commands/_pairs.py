"""Pairs of (distorted, reference) images for ``percepfid score``, from folders or a CSV;
image headers are read up front, so a bad file is reported before any model is built."""

from __future__ import annotations

import argparse
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from ..data import image_size, list_images, read_table, require_columns, shorten_list
from ._common import FIRST_DATA_ROW, InputError

logger = logging.getLogger(__name__)

# a pairs-CSV column: how messages name it, its option, the names it is looked for under
_DISTORTED = ("distorted-image", "--dist-col", ("distorted", "dist", "sr", "image"))
_REFERENCE = ("reference", "--ref-col", ("reference", "ref", "gt", "hr"))


@dataclass(frozen=True)
class Pair:
    """One image to score (the ``index``-th of the output), with its reference (None for
    no-reference metrics) and the ``(H, W)`` of both."""

    index: int
    distorted: Path
    reference: Path | None
    distorted_size: tuple[int, int]
    reference_size: tuple[int, int] | None


def _key(path: Path, root: Path, match: str) -> str:
    relative = path.relative_to(root)
    return (relative.with_suffix("") if match == "stem" else relative).as_posix()


def _with_sizes(items: list[tuple[Path, Path | None]]) -> list[Pair]:
    """The pairs with their image sizes; raises when a pair's images differ in size."""
    pairs = []
    mismatched = []
    for index, (distorted, reference) in enumerate(items):
        distorted_size = image_size(distorted)
        reference_size = image_size(reference) if reference is not None else None
        if reference_size not in (None, distorted_size):
            mismatched.append(
                f"{distorted} {distorted_size[0]}x{distorted_size[1]} vs {reference} "
                f"{reference_size[0]}x{reference_size[1]}"
            )
        pairs.append(Pair(index, distorted, reference, distorted_size, reference_size))
    if mismatched:
        raise InputError(
            f"{len(mismatched)} pair(s) have images of different sizes (H x W), which this "
            f"full-reference metric cannot compare: {shorten_list(mismatched)}"
        )
    return pairs


def pairs_from_folders(
    dist_dir: str | os.PathLike[str],
    ref_dir: str | os.PathLike[str] | None,
    *,
    match: str = "name",
    recursive: bool = False,
    skip_unmatched: bool = False,
) -> list[Pair]:
    """Every image of ``dist_dir`` (sorted by name) with the image of ``ref_dir`` (None for
    no-reference metrics) of the same name, or with ``match='stem'`` the same name without
    extension (the relative path with ``recursive``); unmatched images raise
    :class:`InputError` unless ``skip_unmatched`` (then they are left out, if any match).
    """
    distorted_root = Path(dist_dir)
    distorted = list_images(
        distorted_root, recursive=recursive, what="--dist folder", error=InputError
    )
    if ref_dir is None:
        return _with_sizes([(path, None) for path in distorted])
    reference_root = Path(ref_dir)
    references: dict[str, Path] = {}
    for path in list_images(
        reference_root, recursive=recursive, what="--ref folder", error=InputError
    ):
        key = _key(path, reference_root, match)
        if key in references:
            raise InputError(
                f"--ref folder {reference_root}: {references[key].name} and {path.name} both "
                f"match as {key!r} with --match {match}; rename one or use --match name"
            )
        references[key] = path
    items, unmatched = [], []
    for path in distorted:
        reference = references.get(_key(path, distorted_root, match))
        if reference is None:
            unmatched.append(path.relative_to(distorted_root).as_posix())
        else:
            items.append((path, reference))
    if unmatched and (not skip_unmatched or not items):
        hint = " Try --match stem," if match == "name" else ""
        raise InputError(
            f"{len(unmatched)} image(s) in {distorted_root} have no reference of the same "
            f"{'name' if match == 'name' else 'name (ignoring the extension)'} in "
            f"{reference_root}: {shorten_list(unmatched)}.{hint} pass --pairs CSV to name the "
            "pairs explicitly, or --skip-unmatched to leave them out."
        )
    if unmatched:
        logger.warning("left out %d image(s) without a reference", len(unmatched))
    return _with_sizes(items)


def _pick_column(
    fields: list[str],
    given: str | None,
    column: tuple[str, str, tuple[str, ...]],
    *,
    what: str,
    required: bool,
) -> str | None:
    """The column ``given`` with its option, else the first of its usual names (in any case)."""
    role, option, candidates = column
    if given is not None:
        require_columns(fields, {given: option}, what=what, error=InputError)
        return given
    lowered = {field.lower(): field for field in fields}
    found = next((lowered[name] for name in candidates if name in lowered), None)
    if found is None and required:
        raise InputError(
            f"{what} has no {role} column (looked for {', '.join(candidates)}; columns: "
            f"{', '.join(fields)}); name it with {option}"
        )
    return found


def _pairs_from_csv(args: argparse.Namespace, needs_reference: bool) -> list[Pair]:
    """The pairs of the --pairs CSV in file order (columns --dist-col and --ref-col, else
    their usual names); relative paths start at --dist / --ref, else at the CSV's folder."""
    csv_file = Path(args.pairs)
    fields, rows = read_table(csv_file, what="--pairs", error=InputError)
    what = f"the pairs CSV {csv_file}"
    distorted_col = _pick_column(fields, args.dist_col, _DISTORTED, what=what, required=True)
    reference_col = _pick_column(
        fields, args.ref_col, _REFERENCE, what=what, required=needs_reference
    )
    missing = []

    def locate(row: dict[str, str], number: int, column: str, root: str | None) -> Path:
        if not row.get(column):
            raise InputError(f"{csv_file}: row {number} has an empty {column!r}")
        path = Path(row[column]).expanduser()
        if not path.is_absolute():
            path = Path(root if root is not None else csv_file.parent) / path
        if not path.is_file():
            missing.append(str(path))
        return path

    items: list[tuple[Path, Path | None]] = []
    for number, row in enumerate(rows, start=FIRST_DATA_ROW):
        distorted = locate(row, number, distorted_col, args.dist)
        reference = locate(row, number, reference_col, args.ref) if needs_reference else None
        items.append((distorted, reference))
    if missing:
        raise InputError(
            f"{len(missing)} image(s) named in {csv_file} do not exist: {shorten_list(missing)}"
        )
    return _with_sizes(items)


def find_pairs(args: argparse.Namespace, *, needs_reference: bool) -> list[Pair]:
    """The pairs ``percepfid score`` scores: those of ``--pairs``, else the images of
    ``--dist`` with those of ``--ref`` (when ``needs_reference``)."""
    if args.pairs is not None:
        return _pairs_from_csv(args, needs_reference)
    if args.dist is None:
        raise InputError("give the images to score with --dist DIR (and --ref DIR) or --pairs CSV")
    if needs_reference and args.ref is None:
        raise InputError(f"--metric {args.metric} compares against references: pass --ref DIR")
    return pairs_from_folders(
        args.dist,
        args.ref if needs_reference else None,
        match=args.match,
        recursive=args.recursive,
        skip_unmatched=args.skip_unmatched,
    )
