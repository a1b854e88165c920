"""Pieces every trainer shares: seeding without touching the global RNG, rating CSVs with
errors that name what is missing, a small image loader, atomic checkpoints, group splits,
progress bars."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch

from .._atomic import atomic_path
from .._csv import parse_number, read_table, require_columns, shorten
from .._errors import ArgumentError, WeightsError

logger = logging.getLogger(__name__)

__all__ = [
    "RatingRow",
    "read_rating_csv",
    "load_image",
    "cached_loader",
    "seeded",
    "split_groups",
    "save_checkpoint",
    "load_checkpoint",
    "progress",
]


@dataclass(frozen=True)
class RatingRow:
    """One rated image: its file, its group (scene / reference id) and its score."""

    image: Path
    group: str
    score: float


def read_rating_csv(
    path: str | os.PathLike[str],
    *,
    image_column: str = "image",
    group_column: str = "scene",
    score_column: str = "mos",
    root: str | os.PathLike[str] | None = None,
) -> list[RatingRow]:
    """Read a CSV of rated images (header row required).

    Args:
        path: the CSV file.
        image_column: the column with image paths (relative to ``root``).
        group_column: the column with the scene / reference id.
        score_column: the column with the score (MOS).
        root: the folder image paths are relative to; default the CSV's folder.

    Returns:
        One :class:`RatingRow` per data row.

    Raises:
        ArgumentError: the CSV is missing or empty, a column is missing (the message names
            it and lists the columns present), a score is not a number (with the row), or
            image files are missing (the message names them).
    """
    file = Path(path)
    what = f"rating CSV {file}"
    fields, table = read_table(file, what="rating CSV")
    require_columns(
        fields,
        {
            image_column: "image_column=",
            group_column: "group_column=",
            score_column: "score_column=",
        },
        what=what,
    )
    base = Path(root) if root is not None else file.parent
    rows = [
        RatingRow(
            base / row[image_column],
            row[group_column],
            parse_number(row[score_column], what=what, row=line, column=score_column),
        )
        for line, row in enumerate(table, start=2)
    ]
    absent = [str(r.image) for r in rows if not r.image.is_file()]
    if absent:
        raise ArgumentError(
            f"{file}: image files not found (paths are relative to {base}): {shorten(absent)}"
        )
    return rows


def load_image(path: str | os.PathLike[str]) -> torch.Tensor:
    """Read an image file as a float RGB tensor ``(3, H, W)`` in ``[0, 1]``.

    Raises:
        ArgumentError: the file is missing or cannot be decoded.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            rgb = image.convert("RGB")
            data = torch.frombuffer(bytearray(rgb.tobytes()), dtype=torch.uint8)
            width, height = rgb.size
    except FileNotFoundError:
        raise ArgumentError(f"image file not found: {path}") from None
    except (UnidentifiedImageError, OSError) as error:
        raise ArgumentError(f"cannot read image {path}: {error}") from error
    return data.reshape(height, width, 3).permute(2, 0, 1).float().div_(255)


def cached_loader(size: int = 256) -> Any:
    """:func:`load_image` with an LRU cache of ``size`` decoded images."""
    return lru_cache(maxsize=size)(load_image)


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Run a block with the global torch RNG seeded, restoring the caller's state after."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def split_groups(
    groups: Iterable[str], val_fraction: float, generator: torch.Generator
) -> tuple[list[str], list[str]]:
    """Split group ids into train and validation (at least one of each when possible).

    Args:
        groups: the ids (duplicates ignored; order does not matter).
        val_fraction: the share of groups kept for validation, in ``[0, 1)``.
        generator: the shuffle's generator.

    Returns:
        ``(train, val)`` lists of ids.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ArgumentError(f"val_fraction must be in [0, 1); got {val_fraction!r}")
    unique = sorted(set(groups))
    order = torch.randperm(len(unique), generator=generator).tolist()
    shuffled = [unique[i] for i in order]
    count = round(len(unique) * val_fraction)
    if val_fraction > 0 and len(unique) >= 2:
        count = min(max(count, 1), len(unique) - 1)
    return shuffled[count:], shuffled[:count]


def save_checkpoint(path: str | os.PathLike[str], state: dict[str, Any]) -> Path:
    """Write ``state`` with ``torch.save`` atomically (a crash never leaves half a file)."""
    target = Path(path)
    with atomic_path(target) as partial:
        torch.save(state, partial)
    return target


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` (``weights_only=True``).

    Raises:
        WeightsError: the file is missing, corrupt or not a checkpoint mapping.
    """
    target = Path(path)
    if not target.is_file():
        raise WeightsError(f"checkpoint not found: {target}")
    try:
        state = torch.load(target, map_location="cpu", weights_only=True)
    except Exception as error:  # UnpicklingError, RuntimeError on truncated archives
        raise WeightsError(
            f"cannot read checkpoint {target}: {type(error).__name__}: {error}"
        ) from error
    if not isinstance(state, dict):
        raise WeightsError(f"{target} holds a {type(state).__name__}, not a checkpoint")
    return state


def progress(iterable: Sequence[Any], *, enabled: bool, desc: str) -> Iterable[Any]:
    """Wrap ``iterable`` in a tqdm bar when ``enabled`` (tqdm writes to stderr)."""
    if not enabled:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=desc, leave=False, dynamic_ncols=True)
