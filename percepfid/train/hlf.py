"""Fit an HLF calibration head on human fidelity scores.

The backbone stays frozen: the cosine fidelity of every (SR, GT) pair is computed once,
then the two parameters of :class:`~percepfid.heads.CalibrationHead`
(``sigmoid(scale * cos + bias)``) are fitted to the human scores, normalised to [0, 1], by
least squares. Pairs are split into train and validation sets *by group* (the source
image), so no GT is seen on both sides, and SRCC/PLCC of the raw cosine and of the head
are reported on both.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .._checks import check_choice
from .._errors import ArgumentError, EmptyBatchError, PercepfidError, ShapeError
from ._common import load_image

__all__ = ["HLFFitResult", "HumanRating", "fit_hlf_head", "read_ratings"]

logger = logging.getLogger(__name__)


class RatingsError(PercepfidError, ValueError):
    """The human-ratings file or rows are unusable (missing columns, files, numbers)."""


@dataclass(frozen=True)
class HumanRating:
    """One human judgement: how faithful ``sr`` is to ``gt``.

    Attributes:
        sr: path of the super-resolved (or distorted) image.
        gt: path of its ground truth.
        score: the human fidelity score (any scale; higher = more faithful).
        group: the source image; pairs of one group never cross the train/val split.
    """

    sr: Path
    gt: Path
    score: float
    group: str


@dataclass
class HLFFitResult:
    """What :func:`fit_hlf_head` returns.

    Attributes:
        head: the fitted :class:`~percepfid.heads.CalibrationHead` (eval mode, on the CPU).
        train, val: statistics per split: ``n``, ``groups``, ``srcc_cosine``,
            ``plcc_cosine``, ``srcc_head``, ``plcc_head``, ``rmse_head`` (``val`` is empty
            when ``val_fraction`` is 0).
        score_range: the (low, high) human scores mapped to 0 and 1 for fitting.
        train_groups, val_groups: the groups of each split.
        output_dir: where the head was saved, if it was.
        repo_id: where it was pushed, if it was.
    """

    head: nn.Module
    train: dict[str, float]
    val: dict[str, float]
    score_range: tuple[float, float]
    train_groups: list[str] = field(default_factory=list)
    val_groups: list[str] = field(default_factory=list)
    output_dir: str | None = None
    repo_id: str | None = None

    def report(self) -> dict[str, Any]:
        """The JSON-serialisable part (no module)."""
        data = asdict(self)
        data.pop("head")
        data["head_config"] = {
            "scale": float(self.head.scale.detach()),
            "bias": float(self.head.bias.detach()),
        }
        return data


# --------------------------------------------------------------------------- data


def read_ratings(
    csv_path: str | os.PathLike[str],
    *,
    sr_col: str = "sr",
    gt_col: str = "gt",
    score_col: str = "score",
    group_col: str | None = "group",
    root: str | os.PathLike[str] | None = None,
) -> list[HumanRating]:
    """Read human ratings from a CSV with a header row.

    Relative image paths are taken relative to ``root`` (default: the CSV's folder). When
    ``group_col`` is None or absent from the file, the GT path is the group.

    Raises:
        RatingsError: the file, a column or an image is missing, or a score is not a number.
    """
    path = Path(csv_path)
    if not path.is_file():
        raise RatingsError(f"ratings CSV not found: {path}")
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        fields = [f.strip() for f in (reader.fieldnames or [])]
        rows = [{(k or "").strip(): (v or "").strip() for k, v in row.items()} for row in reader]
    for column, option in ((sr_col, "sr_col"), (gt_col, "gt_col"), (score_col, "score_col")):
        if column not in fields:
            raise RatingsError(
                f"ratings CSV {path} has no column {column!r} (columns: {', '.join(fields)}); "
                f"set {option}"
            )
    use_group = group_col is not None and group_col in fields
    if group_col is not None and not use_group:
        logger.info("no %r column in %s: grouping pairs by their GT", group_col, path)
    base = Path(root) if root is not None else path.parent
    ratings, missing = [], []
    for number, row in enumerate(rows, start=2):
        try:
            score = float(row[score_col])
        except ValueError:
            raise RatingsError(
                f"{path}: row {number}, column {score_col!r}: expected a number; got "
                f"{row[score_col]!r}"
            ) from None
        if not math.isfinite(score):
            raise RatingsError(f"{path}: row {number}: score {score} is not finite")
        sr, gt = (Path(row[c]).expanduser() for c in (sr_col, gt_col))
        sr, gt = (p if p.is_absolute() else base / p for p in (sr, gt))
        missing += [str(p) for p in (sr, gt) if not p.is_file()]
        group = row[group_col] if use_group else str(gt)
        ratings.append(HumanRating(sr, gt, score, group))
    if missing:
        shown = ", ".join(missing[:5]) + ("" if len(missing) <= 5 else f", ... ({len(missing)})")
        raise RatingsError(f"{len(missing)} image(s) named in {path} do not exist: {shown}")
    if not ratings:
        raise RatingsError(f"ratings CSV {path} has no rows")
    return ratings


@torch.no_grad()
def _cosines(
    loss: nn.Module,
    ratings: Sequence[HumanRating],
    *,
    batch_size: int,
    device: torch.device,
    progress: bool,
) -> np.ndarray:
    """Raw cosine fidelity of every rating, batched by image size (bounded memory)."""
    from tqdm.auto import tqdm

    values = np.full(len(ratings), np.nan)
    buckets: dict[tuple[int, ...], list[tuple[int, torch.Tensor, torch.Tensor]]] = {}

    def flush(key: tuple[int, ...]) -> None:
        items = buckets.pop(key)
        sr = torch.stack([item[1] for item in items]).to(device)
        gt = torch.stack([item[2] for item in items]).to(device)
        cos = loss.cosine(sr, gt).float().cpu().numpy()
        for (index, _, _), value in zip(items, cos, strict=True):
            values[index] = value

    with tqdm(total=len(ratings), desc="cosine", unit="pair", disable=not progress) as bar:
        for index, rating in enumerate(ratings):
            sr, gt = load_image(rating.sr), load_image(rating.gt)
            if sr.shape != gt.shape:
                raise ShapeError(
                    f"{rating.sr} is {tuple(sr.shape[1:])} but its GT {rating.gt} is "
                    f"{tuple(gt.shape[1:])}; HLF compares images of the same size"
                )
            key = tuple(sr.shape)
            buckets.setdefault(key, []).append((index, sr, gt))
            if len(buckets[key]) >= batch_size:
                flush(key)
            bar.update(1)
        for key in list(buckets):
            flush(key)
    return values


# --------------------------------------------------------------------------- fitting


def _split(groups: Sequence[str], val_fraction: float, seed: int) -> tuple[list[str], list[str]]:
    unique = sorted(set(groups))
    if val_fraction == 0:
        return unique, []
    if len(unique) < 2:
        raise ArgumentError(
            f"a validation split needs at least 2 groups (source images); got {len(unique)}. "
            "Pass val_fraction=0 to fit on everything."
        )
    random.Random(seed).shuffle(unique)
    n_val = min(len(unique) - 1, max(1, round(val_fraction * len(unique))))
    return sorted(unique[n_val:]), sorted(unique[:n_val])


def _fit_calibration(
    head: nn.Module, cosine: torch.Tensor, target: torch.Tensor, steps: int
) -> None:
    """Least-squares fit of ``sigmoid(scale * cos + bias)`` to targets in [0, 1]."""
    # Start from the linear fit of logit(target) on the cosine: close to the optimum even
    # when random-weight cosines crowd near 1 and need a large slope.
    clipped = target.clamp(0.02, 0.98)
    logits = torch.log(clipped / (1 - clipped))
    centred = cosine - cosine.mean()
    variance = float((centred * centred).mean())
    slope = float((centred * (logits - logits.mean())).mean()) / variance if variance > 0 else 0.0
    with torch.no_grad():
        head.scale.fill_(slope)
        head.bias.fill_(float(logits.mean()) - slope * float(cosine.mean()))
    optimiser = torch.optim.LBFGS(
        head.parameters(), lr=1.0, max_iter=steps, line_search_fn="strong_wolfe"
    )

    def closure() -> torch.Tensor:
        optimiser.zero_grad()
        loss = nn.functional.mse_loss(head(cosine), target)
        loss.backward()
        return loss

    head.train()
    optimiser.step(closure)
    head.eval()


def _statistics(
    cosine: np.ndarray, predicted: np.ndarray, human: np.ndarray, target: np.ndarray
) -> dict[str, float]:
    from ..eval import plcc, srcc

    return {
        "n": int(len(cosine)),
        "srcc_cosine": srcc(cosine, human),
        "plcc_cosine": plcc(cosine, human),
        "srcc_head": srcc(predicted, human),
        "plcc_head": plcc(predicted, human),
        "rmse_head": float(np.sqrt(np.mean((predicted - target) ** 2))),
    }


def fit_hlf_head(
    ratings: str | os.PathLike[str] | Sequence[HumanRating],
    backbone: str | nn.Module = "dinov2",
    *,
    pretrained: bool = True,
    embedding: str = "cls",
    image_size: int | None = None,
    val_fraction: float = 0.2,
    seed: int = 0,
    score_range: tuple[float, float] | None = None,
    steps: int = 100,
    batch_size: int = 16,
    device: str | torch.device | None = None,
    output_dir: str | os.PathLike[str] | None = None,
    push_to_hub: str | None = None,
    private: bool = True,
    progress: bool = False,
    csv_columns: dict[str, str | None] | None = None,
) -> HLFFitResult:
    """Fit a :class:`~percepfid.heads.CalibrationHead` to human fidelity scores.

    Args:
        ratings: a CSV path (columns ``sr``, ``gt``, ``score``, ``group``; see
            :func:`read_ratings`) or a sequence of :class:`HumanRating`.
        backbone: the HLF backbone (name, full spec or module), as for ``HLFLoss``.
        pretrained: load the backbone's weights; ``False`` for random weights (tests only:
            the fitted head then means nothing).
        embedding: ``'cls'``, ``'patch'`` or ``'cls+patch'``, as for ``HLFLoss``.
        image_size: override the backbone input size.
        val_fraction: fraction of groups held out for validation (0 fits on everything).
        seed: seed of the group split.
        score_range: human scores mapped to 0 and 1; default the min and max of the
            training scores (scores already in [0, 1] are kept as they are).
        steps: maximum L-BFGS iterations.
        batch_size: pairs per backbone forward pass.
        device: where the backbone runs; default CUDA when available, else CPU.
        output_dir: save the head there with ``save_pretrained`` (plus ``fit_report.json``).
        push_to_hub: a Hub repo id to push the head to (needs a Hub login).
        private: create the pushed repository as private.
        progress: show a progress bar while embedding.
        csv_columns: column names for a CSV: keys ``sr_col``, ``gt_col``, ``score_col``,
            ``group_col``, ``root`` (see :func:`read_ratings`).

    Returns:
        An :class:`HLFFitResult`; ``HLFLoss(backbone, head=output_dir)`` then predicts
        human fidelity in [0, 1].

    Raises:
        RatingsError: unusable ratings (missing columns or images, bad numbers).
        ArgumentError: bad options (fewer than 2 groups for a split, bad fraction, ...).
        EmptyBatchError: no ratings.

    Example:
        >>> result = fit_hlf_head("ratings.csv", "dinov2", output_dir="my-head")  # doctest: +SKIP
        >>> result.val["plcc_head"]  # doctest: +SKIP
    """
    from ..heads import CalibrationHead
    from ..losses.hlf import HLFLoss

    if not 0.0 <= val_fraction < 1.0:
        raise ArgumentError(f"val_fraction must lie in [0, 1); got {val_fraction!r}")
    if batch_size < 1:
        raise ArgumentError(f"batch_size must be >= 1; got {batch_size!r}")
    check_choice(embedding, "embedding", ("cls", "patch", "cls+patch"))
    if isinstance(ratings, (str, os.PathLike)):
        ratings = read_ratings(ratings, **(csv_columns or {}))
    ratings = list(ratings)
    if not ratings:
        raise EmptyBatchError("ratings is empty; expected at least a few human-rated pairs")
    train_groups, val_groups = _split([r.group for r in ratings], val_fraction, seed)
    in_val = set(val_groups)

    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    loss = HLFLoss(backbone, pretrained=pretrained, embedding=embedding, image_size=image_size)
    loss = loss.to(device).eval()
    cosine = _cosines(loss, ratings, batch_size=batch_size, device=device, progress=progress)
    human = np.array([r.score for r in ratings], dtype=np.float64)
    is_val = np.array([r.group in in_val for r in ratings])
    train_human = human[~is_val]

    if score_range is None:
        low, high = float(train_human.min()), float(train_human.max())
        if low >= 0.0 and high <= 1.0:
            low, high = 0.0, 1.0
    else:
        low, high = map(float, score_range)
    if not high > low:
        raise ArgumentError(
            f"score_range must have high > low; got ({low}, {high}) (are all training scores equal?)"
        )
    target = np.clip((human - low) / (high - low), 0.0, 1.0)

    head = CalibrationHead()
    _fit_calibration(
        head,
        torch.tensor(cosine[~is_val], dtype=torch.float32),
        torch.tensor(target[~is_val], dtype=torch.float32),
        steps,
    )
    with torch.no_grad():
        predicted = head(torch.tensor(cosine, dtype=torch.float32)).double().numpy()

    def stats_for(mask: np.ndarray) -> dict[str, float]:
        if not mask.any():
            return {}
        return _statistics(cosine[mask], predicted[mask], human[mask], target[mask])

    result = HLFFitResult(
        head=head,
        train=stats_for(~is_val),
        val=stats_for(is_val),
        score_range=(low, high),
        train_groups=train_groups,
        val_groups=val_groups,
    )
    backbone_name = loss.backbone.spec.name
    if output_dir is not None:
        folder = Path(output_dir)
        head.save_pretrained(folder)
        report = result.report() | {"backbone": backbone_name, "embedding": embedding}
        (folder / "fit_report.json").write_text(json.dumps(report, indent=2) + "\n")
        result.output_dir = str(folder)
        logger.info("saved the head to %s", folder)
    if push_to_hub is not None:
        head.push_to_hub(push_to_hub, private=private)
        result.repo_id = push_to_hub
        logger.info("pushed the head to %s", push_to_hub)
    return result
