"""Pieces every trainer shares: seeding without touching the global RNG, a cached image
loader, atomic checkpoints, group splits, progress bars."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterable, Iterator, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch

from .._atomic import atomic_path
from .._errors import ArgumentError, WeightsError
from ..data import read_image

logger = logging.getLogger(__name__)

__all__ = [
    "cached_loader",
    "seeded",
    "split_groups",
    "save_checkpoint",
    "load_checkpoint",
    "progress",
]


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


def progress(iterable: Sequence[Any], *, enabled: bool, desc: str) -> Iterable[Any]:
    """Wrap ``iterable`` in a tqdm bar when ``enabled`` (tqdm writes to stderr)."""
    if not enabled:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=desc, leave=False, dynamic_ncols=True)
