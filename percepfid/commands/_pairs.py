"""Pairs of (distorted, reference) images for ``percepfid score``: from folders or a CSV.

Folders are matched by file name (or by name without extension); a CSV names the pairs
explicitly. Image headers are read up front, so a missing or unreadable file is reported
before any model is built, and pairs are batched by image size so folders with images of
different sizes work at any batch size.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..data import image_size, list_images
from ._common import InputError, read_csv

logger = logging.getLogger(__name__)

MATCH_MODES = ("name", "stem")
_REFERENCE_COLUMNS = ("reference", "ref", "gt", "hr")
_DISTORTED_COLUMNS = ("distorted", "dist", "sr", "image")
_SHOWN = 5


@dataclass(frozen=True)
class Pair:
    """One image to score, with its reference (None for no-reference metrics).

    Attributes:
        index: position in the output (pairs are written in this order).
        distorted: the image under test.
        reference: its reference image, or None.
        distorted_size: ``(H, W)`` of ``distorted``.
        reference_size: ``(H, W)`` of ``reference``, or None.
    """

    index: int
    distorted: Path
    reference: Path | None
    distorted_size: tuple[int, int]
    reference_size: tuple[int, int] | None


def _shown(items: Sequence[object]) -> str:
    text = ", ".join(str(item) for item in items[:_SHOWN])
    return text + (f", ... ({len(items)} in all)" if len(items) > _SHOWN else "")


def _key(path: Path, root: Path, match: str) -> str:
    relative = path.relative_to(root)
    if match == "stem":
        relative = relative.with_suffix("")
    return relative.as_posix()


def _index(images: list[Path], root: Path, match: str, what: str) -> dict[str, Path]:
    table: dict[str, Path] = {}
    for path in images:
        key = _key(path, root, match)
        if key in table:
            raise InputError(
                f"{what} {root}: {table[key].name} and {path.name} both match as {key!r} "
                f"with --match {match}; rename one or use --match name"
            )
        table[key] = path
    return table


def _with_sizes(items: list[tuple[Path, Path | None]], *, same_size: bool) -> list[Pair]:
    pairs = []
    mismatched = []
    for index, (distorted, reference) in enumerate(items):
        distorted_size = image_size(distorted)
        reference_size = image_size(reference) if reference is not None else None
        if same_size and reference_size is not None and reference_size != distorted_size:
            mismatched.append(
                f"{distorted} {distorted_size[0]}x{distorted_size[1]} vs {reference} "
                f"{reference_size[0]}x{reference_size[1]}"
            )
        pairs.append(Pair(index, distorted, reference, distorted_size, reference_size))
    if mismatched:
        raise InputError(
            f"{len(mismatched)} pair(s) have images of different sizes (H x W), which this "
            f"full-reference metric cannot compare: {_shown(mismatched)}"
        )
    return pairs


def pairs_from_folders(
    dist_dir: str | os.PathLike[str],
    ref_dir: str | os.PathLike[str] | None,
    *,
    match: str = "name",
    recursive: bool = False,
    skip_unmatched: bool = False,
    same_size: bool = True,
) -> list[Pair]:
    """Pair every image of ``dist_dir`` with the image of the same name in ``ref_dir``.

    Args:
        dist_dir: folder of images to score (e.g. SR outputs).
        ref_dir: folder of references (e.g. ground truths); None for no-reference metrics.
        match: ``'name'`` (same file name) or ``'stem'`` (same name without extension, e.g.
            ``0001.png`` with ``0001.jpg``). With ``recursive`` the relative path is used.
        recursive: include sub-folders.
        skip_unmatched: leave out distorted images without a reference (logged) instead of
            raising.
        same_size: require each pair's images to have the same size.

    Returns:
        The pairs, sorted by distorted file name.

    Raises:
        InputError: a folder is missing or empty, names do not match, or images are of
            different sizes.
        ImageReadError: an image header cannot be read.
    """
    distorted_root = Path(dist_dir)
    distorted = list_images(
        distorted_root, recursive=recursive, what="--dist folder", error=InputError
    )
    if ref_dir is None:
        return _with_sizes([(path, None) for path in distorted], same_size=same_size)
    reference_root = Path(ref_dir)
    references = _index(
        list_images(reference_root, recursive=recursive, what="--ref folder", error=InputError),
        reference_root,
        match,
        "--ref folder",
    )
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
            f"{reference_root}: {_shown(unmatched)}.{hint} pass --pairs CSV to name the "
            "pairs explicitly, or --skip-unmatched to leave them out."
        )
    if unmatched:
        logger.warning("left out %d image(s) without a reference", len(unmatched))
    return _with_sizes(items, same_size=same_size)


def _pick_column(
    fields: list[str], given: str | None, candidates: Sequence[str], option: str
) -> str | None:
    if given is not None:
        if given not in fields:
            raise InputError(
                f"the pairs CSV has no column {given!r} (columns: {', '.join(fields)}); "
                f"check {option}"
            )
        return given
    lowered = {field.lower(): field for field in fields}
    for candidate in candidates:
        if candidate in lowered:
            return lowered[candidate]
    return None


def pairs_from_csv(
    csv_path: str | os.PathLike[str],
    *,
    ref_root: str | os.PathLike[str] | None = None,
    dist_root: str | os.PathLike[str] | None = None,
    ref_col: str | None = None,
    dist_col: str | None = None,
    needs_reference: bool = True,
    same_size: bool = True,
) -> list[Pair]:
    """Pairs listed in a CSV file, in file order.

    The distorted column is ``distorted``, ``dist``, ``sr`` or ``image`` and the reference
    column ``reference``, ``ref``, ``gt`` or ``hr`` unless named. Relative paths are taken
    relative to ``dist_root`` / ``ref_root`` when given, else to the CSV's folder.

    Raises:
        InputError: the CSV or a column is missing, or an image is missing.
        ImageReadError: an image header cannot be read.
    """
    csv_file = Path(csv_path)
    fields, rows = read_csv(csv_file, what="--pairs")
    distorted_col = _pick_column(fields, dist_col, _DISTORTED_COLUMNS, "--dist-col")
    if distorted_col is None:
        raise InputError(
            f"the pairs CSV {csv_file} has no distorted-image column (looked for "
            f"{', '.join(_DISTORTED_COLUMNS)}; columns: {', '.join(fields)}); name it with --dist-col"
        )
    reference_col = _pick_column(fields, ref_col, _REFERENCE_COLUMNS, "--ref-col")
    if needs_reference and reference_col is None:
        raise InputError(
            f"the pairs CSV {csv_file} has no reference column (looked for "
            f"{', '.join(_REFERENCE_COLUMNS)}; columns: {', '.join(fields)}); name it with --ref-col"
        )
    base = csv_file.parent

    def locate(value: str, root: str | os.PathLike[str] | None) -> Path:
        path = Path(value).expanduser()
        return path if path.is_absolute() else Path(root if root is not None else base) / path

    items: list[tuple[Path, Path | None]] = []
    missing = []
    for number, row in enumerate(rows, start=2):  # row 1 is the header
        if not row.get(distorted_col):
            raise InputError(f"{csv_file}: row {number} has an empty {distorted_col!r}")
        distorted = locate(row[distorted_col], dist_root)
        reference = None
        if needs_reference:
            if not row.get(reference_col):
                raise InputError(f"{csv_file}: row {number} has an empty {reference_col!r}")
            reference = locate(row[reference_col], ref_root)
        for path in (distorted, reference):
            if path is not None and not path.is_file():
                missing.append(str(path))
        items.append((distorted, reference))
    if missing:
        raise InputError(
            f"{len(missing)} image(s) named in {csv_file} do not exist: {_shown(missing)}"
        )
    return _with_sizes(items, same_size=same_size)
