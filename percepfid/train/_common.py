"""Pieces every trainer shares: the rating-table layout (:class:`RatingColumns`), seeding
without touching the global RNG, a cached image loader, the device default, atomic
checkpoints, group splits, progress bars and JSON reports.

The trainers share one vocabulary: ``ratings`` (a CSV path or rows), ``columns`` (a
:class:`RatingColumns`), ``backbone``, ``pretrained``, ``embedding``, ``image_size``,
``epochs``, ``batch_size``, ``lr``, ``val_fraction``, ``seed``, ``device``, ``progress``,
``cache_mb`` and ``output_dir``; the same word means the same thing in each."""

from __future__ import annotations

import contextlib
import logging
import math
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch

from .._atomic import atomic_path
from .._errors import ArgumentError, WeightsError
from ..data import read_image

logger = logging.getLogger(__name__)

__all__ = [
    "RatingColumns",
    "cached_loader",
    "json_safe",
    "pick_device",
    "seeded",
    "split_groups",
    "save_checkpoint",
    "load_checkpoint",
    "with_progress",
]


@dataclass(frozen=True)
class RatingColumns:
    """Where a rating CSV keeps each field, for every trainer (the argument names of
    :func:`percepfid.data.read_rating_table`).

    Attributes:
        image: the column of the rated (SR or distorted) images.
        score: the column of the human scores.
        group: the column of the group id (the source image or scene; pairs of one group
            never cross the train/validation split), or None.
        reference: the column of the reference (GT) images, or None (no-reference data).
        root: the folder relative image paths start from (default: the CSV's folder).
        flags: how error messages name the option that sets each field, keyed by field
            (e.g. ``{"score": "--score-column"}``, as the command line does); default
            ``columns.<field>``.
    """

    image: str = "image"
    score: str = "score"
    group: str | None = "group"
    reference: str | None = None
    root: str | os.PathLike[str] | None = None
    flags: Mapping[str, str] = field(default_factory=dict, compare=False, hash=False)

    def read(self, path: str | os.PathLike[str], **options: object) -> list:
        """The rows of ``path`` (:func:`percepfid.data.read_rating_table` with these columns;
        ``options`` are passed on)."""
        from ..data import read_rating_table

        names = {
            f"{name}_column": self.flags.get(name, f"columns.{name}")
            for name in ("image", "score", "group", "reference")
        }
        return read_rating_table(
            path,
            image_column=self.image,
            score_column=self.score,
            group_column=self.group,
            reference_column=self.reference,
            root=self.root,
            options=names,
            **options,
        )


def pick_device(device: str | torch.device | None) -> torch.device:
    """``device``, or CUDA when available and the CPU otherwise."""
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(device)


def json_safe(value: object) -> object:
    """``value`` with every NaN or infinite float replaced by None (JSON has no NaN)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def cached_loader(size: int = 256) -> Any:
    """:func:`percepfid.data.read_image` with an LRU cache of ``size`` decoded images."""
    return lru_cache(maxsize=size)(read_image)


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


def with_progress(iterable: Sequence[Any], *, enabled: bool, desc: str) -> Iterable[Any]:
    """Wrap ``iterable`` in a tqdm bar when ``enabled`` (tqdm writes to stderr)."""
    if not enabled:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=desc, leave=False, dynamic_ncols=True)
