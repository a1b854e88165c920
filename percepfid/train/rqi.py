"""Training an RQI head on a frozen backbone from any IQA dataset given as a CSV."""

from __future__ import annotations

import logging
import math
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .._checks import check_positive, check_positive_int
from .._errors import ArgumentError, ShapeError, WeightsError
from ..data import Rating, read_rating_table
from ..functional import huber
from ..rqi import RQIHead, crop_offsets, fit_to_crop
from ._common import (
    cached_loader,
    load_checkpoint,
    progress,
    save_checkpoint,
    seeded,
    split_groups,
)

logger = logging.getLogger(__name__)

__all__ = ["train_rqi", "RQITrainResult", "dense_pairs"]

LAST = "last.pt"
BEST = "best"


@dataclass
class RQITrainResult:
    """What :func:`train_rqi` returns.

    Attributes:
        head: the best head (by validation SRCC), in ``eval()`` mode.
        best_srcc: its validation SRCC between predicted and true quality differences.
        best_epoch: the epoch it came from (1-based).
        history: one dict per epoch: ``epoch``, ``train_loss``, ``val_srcc``.
        output_dir: where ``best/`` (the head, Hub format) and ``last.pt`` (resume) are.
    """

    head: nn.Module
    best_srcc: float
    best_epoch: int
    history: list[dict[str, float]] = field(default_factory=list)
    output_dir: Path | None = None


def dense_pairs(
    rows: Sequence[Rating], groups: Sequence[str], higher_is_better: bool = True
) -> list[tuple[int, int, float]]:
    """All ordered pairs ``(i, j)``, ``i != j``, of images of the same group, with labels.

    Scores are normalised to ``[0, 1]`` over all ``rows`` (flipped when lower is better), so
    the label ``q_i - q_j`` lies in ``[-1, 1]``.

    Args:
        rows: the rated images.
        groups: the groups to pair within.
        higher_is_better: whether a higher score means better quality (MOS) or worse (DMOS).

    Returns:
        ``(i, j, label)`` triples indexing ``rows``.
    """
    scores = torch.tensor([r.score for r in rows], dtype=torch.float64)
    low, high = float(scores.min()), float(scores.max())
    span = high - low if high > low else 1.0
    quality = (scores - low) / span
    if not higher_is_better:
        quality = 1.0 - quality
    members: dict[str, list[int]] = {}
    for index, row in enumerate(rows):
        members.setdefault(row.group, []).append(index)
    pairs = []
    for group in groups:
        for i in members.get(group, []):
            for j in members[group]:
                if i != j:
                    pairs.append((i, j, float(quality[i] - quality[j])))
    return pairs


def _load_pair(
    loader: Any, rows: Sequence[Rating], i: int, j: int
) -> tuple[torch.Tensor, torch.Tensor]:
    a, b = loader(rows[i].image), loader(rows[j].image)
    if a.shape != b.shape:
        raise ShapeError(
            f"images of one scene must have the same size to be compared: {rows[i].image} is "
            f"{tuple(a.shape[1:])}, {rows[j].image} is {tuple(b.shape[1:])}"
        )
    return a, b


def _batch(
    pairs: Sequence[tuple[int, int, float]],
    rows: Sequence[Rating],
    loader: Any,
    crop_size: int,
    generator: torch.Generator | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Aligned crops (random + joint horizontal flip when ``generator``, else centred)."""
    firsts, seconds = [], []
    for i, j, _ in pairs:
        a, b = _load_pair(loader, rows, i, j)
        pair = fit_to_crop(torch.stack([a, b]), crop_size)
        height, width = pair.shape[-2:]
        if generator is None:
            top, left = (height - crop_size) // 2, (width - crop_size) // 2
        else:
            top, left = crop_offsets(height, width, crop_size, 1, generator)[0].tolist()
        pair = pair[..., top : top + crop_size, left : left + crop_size]
        if generator is not None and bool(torch.rand(1, generator=generator) < 0.5):
            pair = pair.flip(-1)
        firsts.append(pair[0])
        seconds.append(pair[1])
    labels = torch.tensor([label for _, _, label in pairs], dtype=torch.float32)
    return torch.stack(firsts), torch.stack(seconds), labels


def _predict(loss: Any, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return loss.pair_score(a, b)


def _validate(loss: Any, pairs, rows, loader, crop_size, batch_size, device) -> float:
    from ..eval import srcc

    if not pairs:
        return float("nan")
    predictions, labels = [], []
    loss.eval()
    with torch.no_grad():
        for start in range(0, len(pairs), batch_size):
            a, b, y = _batch(pairs[start : start + batch_size], rows, loader, crop_size, None)
            predictions.append(_predict(loss, a.to(device), b.to(device)).float().cpu())
            labels.append(y)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # constant predictions: NaN, handled by the caller
        return float(srcc(torch.cat(predictions), torch.cat(labels)))


def train_rqi(
    csv_path: str | os.PathLike[str],
    output_dir: str | os.PathLike[str],
    *,
    backbone: str | nn.Module = "dinov2",
    head: nn.Module | None = None,
    embedding: str = "cls",
    pretrained: bool = True,
    image_size: int | None = None,
    image_column: str = "image",
    scene_column: str = "scene",
    mos_column: str = "mos",
    root: str | os.PathLike[str] | None = None,
    higher_is_better: bool = True,
    epochs: int = 10,
    batch_size: int = 8,
    lr: float = 1e-4,
    weight_decay: float = 1e-5,
    delta: float = 1.0,
    crop_size: int = 224,
    val_fraction: float = 0.2,
    max_pairs_per_epoch: int | None = None,
    seed: int = 0,
    resume: bool | str | os.PathLike[str] = False,
    device: str | torch.device | None = None,
    progress_bar: bool = True,
    cache_images: int = 256,
) -> RQITrainResult:
    """Train an RQI head on a frozen backbone, RQI-style (Su et al., arXiv 2503.13074).

    Every ordered pair ``(i, j)``, ``i != j``, of images of the same scene is a training
    example with label ``q_i - q_j`` (scores normalised so labels lie in ``[-1, 1]``); the
    model is the antisymmetrised head ``(g(a, b) - g(b, a)) / 2`` on backbone embeddings,
    fitted with a Huber loss. Scenes are split train:val = 8:2 (no scene in both); each
    epoch ends with the SRCC between predicted and true differences on the validation
    pairs (centre crops), and the best head so far is saved to ``output_dir/best`` in the
    Hub format. ``output_dir/last.pt`` holds everything needed to resume.

    Args:
        csv_path: a CSV with one row per image: path, scene id, score.
        output_dir: where checkpoints go (created).
        backbone: a registered backbone name or a module (frozen).
        head: the head to train; default ``RQIHead(width)`` seeded with ``seed``.
        embedding: ``'cls'`` (pooled) or ``'patch'`` (aligned tokens).
        pretrained: backbone weights from the Hub; ``False`` for random weights (tests).
        image_size: override the input size of a registered backbone.
        image_column, scene_column, mos_column: the CSV's column names.
        root: the folder image paths are relative to (default the CSV's folder).
        higher_is_better: whether a higher score means better quality.
        epochs: passes over the training pairs.
        batch_size: pairs per step.
        lr, weight_decay: AdamW settings (paper: 1e-4, 1e-5).
        delta: Huber switch point (labels are in ``[-1, 1]``: 1.0 is almost plain L2,
            0.1 mixes L2 and L1).
        crop_size: side of the aligned random crops (joint horizontal flips); images
            smaller than it are upsampled.
        val_fraction: share of scenes held out.
        max_pairs_per_epoch: cap on the (shuffled) training pairs per epoch.
        seed: seeds the head's initialisation, the split, the shuffles, crops and flips
            (through private generators; the global RNG is left as it was).
        resume: ``True`` to continue from ``output_dir/last.pt``, or a checkpoint path.
        device: where to train (default CPU).
        progress_bar: show a tqdm bar per epoch.
        cache_images: decoded images kept in memory.

    Returns:
        An :class:`RQITrainResult` with the best head.

    Raises:
        ArgumentError: a bad CSV (missing column or files, named), no scene with two images,
            or bad settings.
        WeightsError: a resume checkpoint that is missing or does not fit.
    """
    from ..backbones import create_backbone
    from ..losses import RQILoss

    for name, value in (("epochs", epochs), ("batch_size", batch_size), ("crop_size", crop_size)):
        check_positive_int(value, name)
    check_positive(lr, "lr")
    check_positive(weight_decay, "weight_decay", allow_zero=True)
    check_positive(delta, "delta")
    device = torch.device(device or "cpu")
    output = Path(output_dir)
    rows = read_rating_table(
        csv_path,
        image_column=image_column,
        group_column=scene_column,
        score_column=mos_column,
        root=root,
        what="rating CSV",
        options={"group_column": "scene_column=", "score_column": "mos_column="},
    )
    generator = torch.Generator().manual_seed(seed)
    train_groups, val_groups = split_groups([r.group for r in rows], val_fraction, generator)
    train_pairs = dense_pairs(rows, train_groups, higher_is_better)
    val_pairs = dense_pairs(rows, val_groups, higher_is_better)
    if not train_pairs:
        raise ArgumentError(
            f"{csv_path}: no training pairs; each scene ({scene_column!r}) needs at least two images"
        )
    logger.info(
        "train_rqi: %d images, %d/%d scenes, %d/%d pairs (train/val)",
        len(rows),
        len(train_groups),
        len(val_groups),
        len(train_pairs),
        len(val_pairs),
    )

    with seeded(seed):  # building modules draws from the global RNG: keep the caller's
        if image_size is not None and isinstance(backbone, str):
            encoder = create_backbone(backbone, pretrained=pretrained, image_size=image_size)
        else:
            encoder = create_backbone(backbone, pretrained=pretrained)
        if head is None:
            width = getattr(encoder, "token_dim" if embedding == "patch" else "embed_dim", None)
            if not width:
                raise ArgumentError(f"the backbone reports no {embedding} width; pass head=")
            head = RQIHead(int(width))
    if not (hasattr(head, "save_pretrained") and hasattr(type(head), "from_pretrained")):
        raise ArgumentError(
            f"head must be a percepfid.heads.HubHead subclass (saved with save_pretrained); got {type(head).__name__}"
        )
    loss = RQILoss(
        encoder, head=head, embedding=embedding, train_head=True, pretrained=pretrained
    ).to(device)
    head = loss.model.head
    optimizer = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=weight_decay)

    start_epoch, best_srcc, best_epoch, history = 0, -math.inf, 0, []
    if resume:
        checkpoint_path = output / LAST if resume is True else Path(resume)
        state = load_checkpoint(checkpoint_path)
        try:
            head.load_state_dict(state["head"])
            optimizer.load_state_dict(state["optimizer"])
        except (KeyError, RuntimeError, ValueError) as error:
            raise WeightsError(
                f"{checkpoint_path} does not fit this head/optimizer: {error}"
            ) from error
        generator.set_state(state["generator"])
        start_epoch, best_epoch = int(state["epoch"]), int(state["best_epoch"])
        best_srcc = float(state["best_srcc"])
        history = list(state.get("history", []))
        logger.info("train_rqi: resumed from %s at epoch %d", checkpoint_path, start_epoch)

    loader = cached_loader(cache_images)
    for epoch in range(start_epoch + 1, epochs + 1):
        loss.train()
        order = torch.randperm(len(train_pairs), generator=generator).tolist()
        if max_pairs_per_epoch is not None:
            order = order[:max_pairs_per_epoch]
        batches = [order[k : k + batch_size] for k in range(0, len(order), batch_size)]
        total, seen = 0.0, 0
        for indices in progress(
            batches, enabled=progress_bar, desc=f"train-rqi epoch {epoch}/{epochs}"
        ):
            a, b, y = _batch([train_pairs[k] for k in indices], rows, loader, crop_size, generator)
            prediction = _predict(loss, a.to(device), b.to(device))
            value = huber(prediction, y.to(device), delta=delta)
            optimizer.zero_grad(set_to_none=True)
            value.backward()
            optimizer.step()
            total += float(value.detach()) * len(indices)
            seen += len(indices)
        val_srcc = _validate(loss, val_pairs, rows, loader, crop_size, batch_size, device)
        history.append({"epoch": epoch, "train_loss": total / max(seen, 1), "val_srcc": val_srcc})
        score = val_srcc if val_srcc == val_srcc else -math.inf
        if score > best_srcc or best_epoch == 0:
            best_srcc, best_epoch = score, epoch
            head.save_pretrained(output / BEST)
        logger.info(
            "train_rqi: epoch %d loss %.5f val SRCC %.4f",
            epoch,
            history[-1]["train_loss"],
            val_srcc,
        )
        save_checkpoint(
            output / LAST,
            {
                "epoch": epoch,
                "head": head.state_dict(),
                "optimizer": optimizer.state_dict(),
                "generator": generator.get_state(),
                "best_srcc": best_srcc,
                "best_epoch": best_epoch,
                "history": history,
            },
        )

    with seeded(seed):
        best = type(head).from_pretrained(output / BEST) if (output / BEST).is_dir() else head
    return RQITrainResult(best.eval(), best_srcc, best_epoch, history, output)
