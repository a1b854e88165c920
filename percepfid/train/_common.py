"""The steps every trainer shares: reading a rating table, checking settings, the group
split, seeding without touching the global RNG, the epoch loop, validation statistics,
history rows and the best epoch, JSON reports."""

from __future__ import annotations

import contextlib
import logging
import math
import os
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from .._checks import check_positive, check_positive_int
from .._errors import ArgumentError, EmptyBatchError

logger = logging.getLogger(__name__)

# settings checked as ints >= 1, and as numbers >= 0 (every other one: a number > 0)
_COUNTS = {"epochs", "batch_size", "crop_size", "crop_positions", "hidden"}
_MAY_BE_ZERO = {"weight_decay", "cache_mb"}


@dataclass(frozen=True)
class RatingColumns:
    """Where a rating CSV keeps each field, for every trainer.

    Attributes:
        image, score: the columns of the rated (SR or distorted) images and of their scores.
        group: the column of the group id (source image or scene), or None.
        reference: the column of the reference (GT) images, or None (no-reference data).
        root: the folder relative image paths start from (default: the CSV's folder).
        flags: how error messages name the option that sets each field (e.g.
            ``{"score": "--score-column"}``); default ``columns.<field>``.
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

        fields = ("image", "score", "group", "reference")
        return read_rating_table(
            path,
            root=self.root,
            options={f"{f}_column": self.flags.get(f, f"columns.{f}") for f in fields},
            **{f"{f}_column": getattr(self, f) for f in fields},
            **options,
        )


def read_rows(ratings: str | os.PathLike[str] | Iterable[Any], read: Callable) -> list:
    """``read(ratings)`` for a CSV path, else the rows given; EmptyBatchError when none."""
    rows = read(ratings) if isinstance(ratings, (str, os.PathLike)) else list(ratings)
    if not rows:
        raise EmptyBatchError("ratings is empty; expected at least a few rated images")
    return rows


def check_settings(**settings: float | None) -> None:
    """Check numeric settings by their shared names (see ``_COUNTS``); None is not checked."""
    for name, value in settings.items():
        if value is not None and name in _COUNTS:
            check_positive_int(value, name)
        elif value is not None:
            check_positive(value, name, allow_zero=name in _MAY_BE_ZERO)


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


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Run a block with the global torch RNG seeded, restoring the caller's state after."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def split_groups(
    groups: Iterable[str], val_fraction: float, generator: torch.Generator
) -> tuple[list[str], list[str]]:
    """Split group ids (duplicates ignored) into shuffled ``(train, val)`` lists, with
    ``val_fraction`` in ``[0, 1)`` of them held out (at least one of each when possible)."""
    if not 0.0 <= val_fraction < 1.0:
        raise ArgumentError(f"val_fraction must be in [0, 1); got {val_fraction!r}")
    unique = sorted(set(groups))
    shuffled = [unique[i] for i in torch.randperm(len(unique), generator=generator).tolist()]
    count = round(len(unique) * val_fraction)
    if val_fraction > 0 and len(unique) >= 2:
        count = min(max(count, 1), len(unique) - 1)
    return shuffled[count:], shuffled[:count]


def with_progress(iterable: Sequence[Any], *, enabled: bool, desc: str) -> Iterable[Any]:
    """Wrap ``iterable`` in a tqdm bar when ``enabled`` (tqdm writes to stderr)."""
    if not enabled:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=desc, leave=False, dynamic_ncols=True)


def shuffled_batches(
    count: int, batch_size: int, generator: torch.Generator, limit: int | None = None
) -> list[list[int]]:
    """The indices ``0 .. count - 1`` shuffled, cut to the first ``limit``, in batches."""
    order = torch.randperm(count, generator=generator).tolist()[:limit]
    return [order[k : k + batch_size] for k in range(0, len(order), batch_size)]


def train_epoch(
    batches: Sequence[Sequence[int]],
    loss_of: Callable[[Sequence[int]], torch.Tensor],
    optimizer: torch.optim.Optimizer,
    *,
    progress: bool,
    desc: str,
) -> float:
    """One optimiser step per batch on ``loss_of(batch)``; the loss's mean over the items."""
    total, seen = 0.0, 0
    for batch in with_progress(batches, enabled=progress, desc=desc):
        loss = loss_of(batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total += float(loss.detach()) * len(batch)
        seen += len(batch)
    return total / max(seen, 1)


def agreement(predicted: Any, truth: Any) -> tuple[float, float]:
    """SRCC and PLCC of ``predicted`` against ``truth`` (NaN when undefined, e.g. constant
    predictions, without a warning)."""
    from ..eval import plcc, srcc

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(srcc(predicted, truth)), float(plcc(predicted, truth))


@dataclass
class Selection:
    """The ``history`` rows of a run (one dict per epoch: its ``epoch`` and what the trainer
    measured), the best validation ``score`` so far (``-inf`` while none is defined) and its
    ``epoch`` (None before the first row)."""

    history: list[dict[str, Any]] = field(default_factory=list)
    score: float = -math.inf
    epoch: int | None = None

    def log(self, row: dict[str, Any], score: float) -> bool:
        """Append ``row``; whether its epoch is the new best: the first one logged, or one
        whose score beats the best (NaN never does)."""
        self.history.append(row)
        logger.info("epoch %s: %s", row["epoch"], row)
        value = -math.inf if math.isnan(score) else score
        if self.epoch is None or value > self.score:
            self.score, self.epoch = value, row["epoch"]
            return True
        return False
