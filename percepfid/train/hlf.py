"""Fit an HLF calibration head on human fidelity scores.

Every (SR, GT) pair is embedded once with the frozen backbone, then the head is fitted to
the human scores, normalised to [0, 1], by least squares: the two parameters of
:class:`~percepfid.heads.CalibrationHead` (``sigmoid(scale * cos + bias)``) or the small MLP
of :class:`~percepfid.heads.MLPCalibrationHead`. Optionally the head and the backbone's last
N blocks are then fine-tuned end to end. Pairs are split into train and validation sets
*by group* (the source image), so no GT is seen on both sides, and SRCC/PLCC of the raw
cosine and of the head are reported on both.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .._checks import check_choice, check_positive, check_positive_int
from .._errors import ArgumentError, EmptyBatchError, ShapeError
from .._vocab import EMBEDDINGS
from ..data import batches_by_size, image_size, read_image, read_rating_table
from ._common import progress as progress_bar
from ._common import seeded, split_groups

__all__ = ["HLFFitResult", "HumanRating", "fit_hlf_head", "read_ratings"]

logger = logging.getLogger(__name__)


class RatingsError(ArgumentError):
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
        head: the fitted :class:`~percepfid.heads.CalibrationHead` or
            :class:`~percepfid.heads.MLPCalibrationHead` (eval mode, on the CPU), with its
            ``backbone_update`` when blocks were fine-tuned.
        train, val: statistics per split: ``n``, ``groups``, ``srcc_cosine``,
            ``plcc_cosine``, ``srcc_head``, ``plcc_head``, ``rmse_head`` (``val`` is empty
            when ``val_fraction`` is 0).
        score_range: the (low, high) human scores mapped to 0 and 1 for fitting.
        train_groups, val_groups: the groups of each split.
        output_dir: where the head was saved, if it was.
        repo_id: where it was pushed, if it was.
        unfreeze_blocks: how many backbone blocks were fine-tuned with the head.
        history: per fine-tuning epoch, ``epoch``, ``train_mse``, ``val_srcc_head``,
            ``val_plcc_head`` and ``val_score`` (their sum, the selection score). Epoch 0 is
            the frozen fit, with no ``train_mse``; the validation values are None without a
            validation split. Empty without fine-tuning.
        best_epoch: the fine-tuning epoch kept (best validation SRCC + PLCC of the head;
            the last epoch without a validation split); None without fine-tuning.
    """

    head: nn.Module
    train: dict[str, float]
    val: dict[str, float]
    score_range: tuple[float, float]
    train_groups: list[str] = field(default_factory=list)
    val_groups: list[str] = field(default_factory=list)
    output_dir: str | None = None
    repo_id: str | None = None
    history: list[dict[str, float | None]] = field(default_factory=list)
    best_epoch: int | None = None

    @property
    def unfreeze_blocks(self) -> int:
        """How many backbone blocks were fine-tuned with the head (0: none)."""
        update = getattr(self.head, "backbone_update", None)
        return 0 if update is None else update.blocks

    def report(self) -> dict[str, Any]:
        """The JSON-serialisable part (no module)."""
        data = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "head"}
        data["unfreeze_blocks"] = self.unfreeze_blocks
        config: dict[str, Any] = {"class": type(self.head).__name__}
        config |= dict(getattr(self.head, "_hub_mixin_config", None) or {})
        if hasattr(self.head, "scale") and hasattr(self.head, "bias"):  # the fitted values
            config |= {
                "scale": float(self.head.scale.detach()),
                "bias": float(self.head.bias.detach()),
            }
        data["head_config"] = config
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
        EmptyBatchError: the file has a header but no rows.
    """
    ratings = read_rating_table(
        csv_path,
        image_column=sr_col,
        reference_column=gt_col,
        score_column=score_col,
        group_column=group_col,
        group_optional=True,
        root=root,
        options={
            "image_column": "sr_col",
            "reference_column": "gt_col",
            "score_column": "score_col",
            "group_column": "group_col",
        },
        error=RatingsError,
    )
    if group_col is not None and ratings[0].group is None:
        logger.info("no %r column in %s: grouping pairs by their GT", group_col, csv_path)
    return [
        HumanRating(r.image, r.reference, r.score, str(r.reference) if r.group is None else r.group)
        for r in ratings
    ]


def _image_sizes(ratings: Sequence[HumanRating]) -> list[tuple[int, int]]:
    """(height, width) of every pair, read from the file headers; SR and GT must agree."""
    sizes = []
    for rating in ratings:
        sr, gt = image_size(rating.sr), image_size(rating.gt)
        if sr != gt:
            raise ShapeError(
                f"{rating.sr} is {sr} but its GT {rating.gt} is {gt}; HLF compares images of "
                "the same size"
            )
        sizes.append(sr)
    return sizes


def _load_batch(
    ratings: Sequence[HumanRating], batch: Sequence[int], device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    sr = torch.stack([read_image(ratings[i].sr) for i in batch]).to(device)
    gt = torch.stack([read_image(ratings[i].gt) for i in batch]).to(device)
    return sr, gt


def _pair_forward(
    loss: nn.Module, ratings: Sequence[HumanRating], batch: Sequence[int], device: torch.device
) -> tuple[torch.Tensor, Any, Any]:
    """Cosine and both embeddings of a batch of pairs; unlike ``HLFLoss.fidelity`` the GT
    branch keeps its graph too, so tuned blocks learn from both images."""
    sr, gt = _load_batch(ratings, batch, device)
    current, reference = loss.encode(sr), loss.encode(gt)
    return loss.compare(current, reference), current, reference


@torch.no_grad()
def _embed_pass(
    loss: nn.Module,
    head: nn.Module,
    ratings: Sequence[HumanRating],
    shapes: Sequence[tuple[int, int]],
    *,
    batch_size: int,
    device: torch.device,
    progress: bool,
) -> tuple[np.ndarray, np.ndarray]:
    """Raw cosine ``(N,)`` and the head's input features ``(N, F)`` (``head.features``) of
    every pair, batched by image size (bounded memory)."""
    from tqdm.auto import tqdm

    cosine = np.full(len(ratings), np.nan)
    features = np.full((len(ratings), head.num_features), np.nan)
    batches = batches_by_size(shapes, batch_size)
    with tqdm(total=len(ratings), desc="embed", unit="pair", disable=not progress) as bar:
        for batch in batches:
            cos, current, reference = _pair_forward(loss, ratings, batch, device)
            feats = head.features(cos, current.pooled, reference.pooled)
            cosine[batch] = cos.float().cpu().numpy()
            features[batch] = feats.float().cpu().numpy()
            bar.update(len(batch))
    return cosine, features


# --------------------------------------------------------------------------- fitting


def _fit_calibration(
    head: nn.Module, features: torch.Tensor, target: torch.Tensor, steps: int
) -> None:
    """Least-squares fit of ``sigmoid(scale * cos + bias)`` to targets in [0, 1]."""
    cosine = features[:, 0]
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
    _lbfgs(head, features, target, steps)


def _lbfgs(head: nn.Module, features: torch.Tensor, target: torch.Tensor, steps: int) -> None:
    """Full-batch least squares of ``head.from_features(features)`` on ``target`` (L-BFGS)."""
    optimiser = torch.optim.LBFGS(
        head.parameters(), lr=1.0, max_iter=steps, line_search_fn="strong_wolfe"
    )

    def closure() -> torch.Tensor:
        optimiser.zero_grad()
        loss = nn.functional.mse_loss(head.from_features(features), target)
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


@torch.no_grad()
def _head_predict(head: nn.Module, features: np.ndarray) -> np.ndarray:
    head.eval()
    inputs = torch.tensor(features, dtype=torch.float32)
    device = next(head.parameters()).device
    return head.from_features(inputs.to(device)).double().cpu().numpy()


def _fine_tune(
    loss: nn.Module,
    head: nn.Module,
    ratings: Sequence[HumanRating],
    shapes: Sequence[tuple[int, int]],
    target: np.ndarray,
    human: np.ndarray,
    train_index: np.ndarray,
    val_index: np.ndarray,
    *,
    unfreeze_blocks: int,
    epochs: int,
    lr: float,
    backbone_lr: float,
    batch_size: int,
    device: torch.device,
    seed: int,
    progress: bool,
) -> tuple[list[str], list[dict[str, float | None]], int]:
    """Train the head and the last ``unfreeze_blocks`` backbone blocks end to end (MSE on
    the normalised human scores), keeping the epoch with the best validation SRCC + PLCC
    (epoch 0 is the frozen fit, so fine-tuning never ends worse on that score than it)."""
    from ..backbones import last_block_parameters
    from ..eval import plcc, srcc

    encoder = loss.backbone.encoder
    names = last_block_parameters(encoder, unfreeze_blocks)
    params = dict(encoder.named_parameters())
    tuned = [params[name] for name in names]
    head.to(device)
    generator = torch.Generator().manual_seed(seed)
    targets = torch.tensor(target, dtype=torch.float32)

    def snapshot() -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        blocks = {n: params[n].detach().clone() for n in names}
        return blocks, {k: v.detach().clone() for k, v in head.state_dict().items()}

    def validate() -> dict[str, float | None]:
        """SRCC and PLCC of the head against the human scores on validation, and their sum
        (the selection score; None when either is undefined or there is no split)."""
        if len(val_index) == 0:
            return {"val_srcc_head": None, "val_plcc_head": None, "val_score": None}
        _, feats = _embed_pass(
            loss,
            head,
            [ratings[i] for i in val_index],
            [shapes[i] for i in val_index],
            batch_size=batch_size,
            device=device,
            progress=False,
        )
        predicted = _head_predict(head, feats)
        values = [srcc(predicted, human[val_index]), plcc(predicted, human[val_index])]
        values = [None if math.isnan(v) else v for v in values]
        total = None if None in values else values[0] + values[1]
        return {"val_srcc_head": values[0], "val_plcc_head": values[1], "val_score": total}

    row = validate()
    # without a validation split the last epoch is kept: nothing to snapshot
    has_val = len(val_index) > 0
    best_score, best_state, best_epoch = row["val_score"], snapshot() if has_val else None, 0
    history = [{"epoch": 0, "train_mse": None} | row]
    for param in tuned:
        param.requires_grad_(True)
    optimiser = torch.optim.AdamW(
        [{"params": list(head.parameters()), "lr": lr}, {"params": tuned, "lr": backbone_lr}],
        weight_decay=0.0,
    )
    try:
        for epoch in range(1, epochs + 1):
            total, count = 0.0, 0
            batches = batches_by_size(
                shapes, batch_size, indices=train_index.tolist(), generator=generator
            )
            for batch in progress_bar(batches, enabled=progress, desc=f"epoch {epoch}"):
                cos, current, reference = _pair_forward(loss, ratings, batch, device)
                predicted = head(cos, current.pooled, reference.pooled)
                mse = nn.functional.mse_loss(predicted.float(), targets[batch].to(device))
                optimiser.zero_grad(set_to_none=True)
                mse.backward()
                optimiser.step()
                total += float(mse.detach()) * len(batch)
                count += len(batch)
            row = validate()
            score = row["val_score"]
            history.append({"epoch": epoch, "train_mse": total / count} | row)
            logger.info("epoch %d: train MSE %.5f, val SRCC+PLCC %s", epoch, total / count, score)
            if not has_val:
                best_epoch = epoch
            elif score is not None and (best_score is None or score > best_score):
                best_score, best_state, best_epoch = score, snapshot(), epoch
    finally:
        for param in tuned:
            param.requires_grad_(False)
    if best_state is not None:
        blocks, head_state = best_state
        with torch.no_grad():
            for name, value in blocks.items():
                params[name].copy_(value)
        head.load_state_dict(head_state)
    head.eval()
    return names, history, best_epoch


def fit_hlf_head(
    ratings: str | os.PathLike[str] | Sequence[HumanRating],
    backbone: str | nn.Module = "dinov2",
    *,
    head: str = "calibration",
    hidden: int = 16,
    unfreeze_blocks: int = 0,
    epochs: int = 5,
    lr: float = 1e-3,
    backbone_lr: float = 1e-5,
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
    """Fit an HLF calibration head to human fidelity scores.

    With the backbone frozen (``unfreeze_blocks=0``, the default), every pair is embedded
    once and the head is fitted to the human scores, normalised to [0, 1], by least squares
    (L-BFGS). With ``unfreeze_blocks=N`` that fit is the starting point of an end-to-end
    fine-tune of the head and the backbone's last N blocks (AdamW, ``epochs`` passes); the
    epoch with the best validation SRCC + PLCC is kept, and the tuned blocks are saved with the
    head so ``HLFLoss(backbone, head=output_dir)`` loads them.

    Args:
        ratings: a CSV path (columns ``sr``, ``gt``, ``score``, ``group``; see
            :func:`read_ratings`) or a sequence of :class:`HumanRating`.
        backbone: the HLF backbone (name, full spec or module), as for ``HLFLoss``. A
            module is copied before fine-tuning, never changed in place.
        head: ``'calibration'`` (:class:`~percepfid.heads.CalibrationHead`, monotone in
            the cosine, 2 parameters) or ``'mlp'``
            (:class:`~percepfid.heads.MLPCalibrationHead` on the cosine and embedding
            differences).
        hidden: hidden width of the ``'mlp'`` head.
        unfreeze_blocks: fine-tune the last N transformer blocks and the layers after them
            (final norm, pooling, output projection) together with the head; 0 keeps the
            backbone frozen.
        epochs: fine-tuning passes over the training pairs (``unfreeze_blocks > 0``).
        lr: the head's learning rate while fine-tuning.
        backbone_lr: the unfrozen blocks' learning rate.
        pretrained: load the backbone's weights; ``False`` for random weights (tests only:
            the fitted head then means nothing).
        embedding: ``'cls'``, ``'patch'`` or ``'cls+patch'``, as for ``HLFLoss``.
        image_size: override the backbone input size.
        val_fraction: fraction of groups held out for validation (0 fits on everything).
        seed: seed of the group split, the MLP's initialisation and the batch order.
        score_range: human scores mapped to 0 and 1; default the min and max of the
            training scores (scores already in [0, 1] are kept as they are).
        steps: maximum L-BFGS iterations of the frozen fit.
        batch_size: pairs per backbone forward pass (and per fine-tuning step).
        device: where the backbone runs; default CUDA when available, else CPU.
        output_dir: save the head there with ``save_pretrained`` (plus ``fit_report.json``
            and, with ``unfreeze_blocks``, ``backbone.safetensors``).
        push_to_hub: a Hub repo id to push the head to (needs a Hub login).
        private: create the pushed repository as private.
        progress: show progress bars.
        csv_columns: column names for a CSV: keys ``sr_col``, ``gt_col``, ``score_col``,
            ``group_col``, ``root`` (see :func:`read_ratings`).

    Returns:
        An :class:`HLFFitResult`; ``HLFLoss(backbone, head=output_dir)`` then predicts
        human fidelity in [0, 1].

    Raises:
        RatingsError: unusable ratings (missing columns or images, bad numbers).
        ImageReadError: an image cannot be read (see :func:`percepfid.data.read_image`).
        ArgumentError: bad options (fewer than 2 groups for a split, bad fraction, a
            backbone without findable blocks for ``unfreeze_blocks``, ...).
        EmptyBatchError: no ratings.

    Example:
        >>> result = fit_hlf_head("ratings.csv", "dinov2", output_dir="my-head")  # doctest: +SKIP
        >>> result.val["plcc_head"]  # doctest: +SKIP
    """
    from ..heads import BackboneUpdate, CalibrationHead, MLPCalibrationHead
    from ..losses import HLFLoss

    check_choice(head, "head", ("calibration", "mlp"))
    check_choice(embedding, "embedding", EMBEDDINGS)
    if not 0.0 <= val_fraction < 1.0:
        raise ArgumentError(f"val_fraction must lie in [0, 1); got {val_fraction!r}")
    for value, name in ((batch_size, "batch_size"), (hidden, "hidden"), (epochs, "epochs")):
        check_positive_int(value, name)
    if (
        isinstance(unfreeze_blocks, bool)
        or not isinstance(unfreeze_blocks, int)
        or unfreeze_blocks < 0
    ):
        raise ArgumentError(f"unfreeze_blocks must be an int >= 0; got {unfreeze_blocks!r}")
    check_positive(lr, "lr")
    check_positive(backbone_lr, "backbone_lr")
    if isinstance(ratings, (str, os.PathLike)):
        ratings = read_ratings(ratings, **(csv_columns or {}))
    ratings = list(ratings)
    if not ratings:
        raise EmptyBatchError("ratings is empty; expected at least a few human-rated pairs")
    groups = [r.group for r in ratings]
    if val_fraction > 0 and len(set(groups)) < 2:
        raise ArgumentError(
            f"a validation split needs at least 2 groups (source images); got {len(set(groups))}. "
            "Pass val_fraction=0 to fit on everything."
        )
    train_groups, val_groups = split_groups(
        groups, val_fraction, torch.Generator().manual_seed(seed)
    )
    train_groups, val_groups = sorted(train_groups), sorted(val_groups)
    in_val = set(val_groups)

    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    if unfreeze_blocks and isinstance(backbone, nn.Module):
        backbone = copy.deepcopy(backbone)  # fine-tuning must not change the caller's module
    loss = HLFLoss(backbone, pretrained=pretrained, embedding=embedding, image_size=image_size)
    loss = loss.to(device).eval()
    shapes = _image_sizes(ratings)
    with seeded(seed):
        fitted = CalibrationHead() if head == "calibration" else MLPCalibrationHead(hidden)
    cosine, features = _embed_pass(
        loss, fitted, ratings, shapes, batch_size=batch_size, device=device, progress=progress
    )
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
    train_target = torch.tensor(target[~is_val], dtype=torch.float32)

    train_features = torch.tensor(features[~is_val], dtype=torch.float32)
    if head == "calibration":
        _fit_calibration(fitted, train_features, train_target, steps)
    else:
        fitted.set_feature_statistics(train_features)
        _lbfgs(fitted, train_features, train_target, steps)

    history: list[dict[str, float | None]] = []
    best_epoch = None
    if unfreeze_blocks:
        names, history, best_epoch = _fine_tune(
            loss,
            fitted,
            ratings,
            shapes,
            target,
            human,
            np.flatnonzero(~is_val),
            np.flatnonzero(is_val),
            unfreeze_blocks=unfreeze_blocks,
            epochs=epochs,
            lr=lr,
            backbone_lr=backbone_lr,
            batch_size=batch_size,
            device=device,
            seed=seed,
            progress=progress,
        )
        fitted.cpu()
        encoder_state = loss.backbone.encoder.state_dict()
        fitted.backbone_update = BackboneUpdate(
            loss.backbone.spec.name,
            unfreeze_blocks,
            {name: encoder_state[name].detach().cpu().clone() for name in names},
        )
        cosine, features = _embed_pass(
            loss, fitted, ratings, shapes, batch_size=batch_size, device=device, progress=progress
        )
    predicted = _head_predict(fitted, features)

    def stats_for(mask: np.ndarray) -> dict[str, float]:
        if not mask.any():
            return {}
        return _statistics(cosine[mask], predicted[mask], human[mask], target[mask])

    result = HLFFitResult(
        head=fitted,
        train=stats_for(~is_val),
        val=stats_for(is_val),
        score_range=(low, high),
        train_groups=train_groups,
        val_groups=val_groups,
        history=history,
        best_epoch=best_epoch,
    )
    backbone_name = loss.backbone.spec.name
    if output_dir is not None:
        folder = Path(output_dir)
        fitted.save_pretrained(folder)
        report = result.report() | {"backbone": backbone_name, "embedding": embedding}
        (folder / "fit_report.json").write_text(json.dumps(report, indent=2) + "\n")
        result.output_dir = str(folder)
        logger.info("saved the head to %s", folder)
    if push_to_hub is not None:
        fitted.push_to_hub(push_to_hub, private=private)
        result.repo_id = push_to_hub
        logger.info("pushed the head to %s", push_to_hub)
    return result
