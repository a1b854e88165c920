""":func:`train_nr_head`: an :class:`~percepfid.iqa.NRHead` fitted to mean opinion scores."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from torch import nn

from .._errors import ArgumentError
from ..data import Rating, read_image
from ._common import (
    RatingColumns,
    check_settings,
    pick_device,
    read_rows,
    seeded,
    shuffled_batches,
    train_epoch,
    with_progress,
)

if TYPE_CHECKING:
    from ..iqa import NRHead

logger = logging.getLogger(__name__)

__all__ = ["NR_COLUMNS", "train_nr_head"]

#: The columns of a MOS CSV for :func:`train_nr_head`: ``image`` and ``mos``, no groups.
NR_COLUMNS = RatingColumns(image="image", score="mos", group=None)


def train_nr_head(
    ratings: str | os.PathLike[str] | Sequence[Rating],
    backbone: str = "dinov2",
    *,
    columns: RatingColumns = NR_COLUMNS,
    higher_is_better: bool = True,
    pretrained: bool = True,
    image_size: int | None = None,
    hidden: int = 256,
    lr: float = 1e-3,
    weight_decay: float = 1e-4,
    epochs: int = 200,
    batch_size: int = 64,
    seed: int = 0,
    device: str | torch.device | None = None,
    progress: bool = True,
) -> NRHead:
    """Fit a no-reference regression head to the MOS of ``(image, mos)`` rows: every image
    is embedded once by the frozen backbone, then the head is fitted to the standardised MOS
    (mean-squared error, AdamW). Shared arguments: see :mod:`percepfid.train`.

    Args:
        higher_is_better: whether a larger MOS means better quality in this dataset.
        hidden: hidden width of the head (0: linear).
        weight_decay: AdamW weight decay.

    Returns:
        The trained :class:`~percepfid.iqa.NRHead`, in ``eval()`` mode (``save_pretrained``
        or ``push_to_hub`` stores it, ``create_nriqa('nr-head', weights=...)`` loads it).

    Raises:
        ArgumentError: bad CSV content or settings; EmptyBatchError: no rows;
        ImageReadError: an image cannot be read.
    """
    from ..iqa import NRHead

    check_settings(epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay)
    rows = read_rows(ratings, columns.read)
    scores = torch.tensor([row.score for row in rows], dtype=torch.float32)
    low, high = float(scores.min()), float(scores.max())
    if not low < high:
        raise ArgumentError(f"all {len(rows)} scores are equal ({low}); nothing to fit")
    device = pick_device(device)
    with seeded(seed):
        head = NRHead(
            backbone=backbone,
            hidden=hidden,
            image_size=image_size,
            pretrained_backbone=pretrained,
            score_range=[low, high],
            higher_is_better=higher_is_better,
        ).to(device)
    with torch.no_grad():
        features = torch.cat(
            [
                head.backbone(read_image(row.image)[None].to(device)).float()
                for row in with_progress(rows, enabled=progress, desc="embed")
            ]
        )
    mean, std = scores.mean(), scores.std().clamp_min(1e-8)
    head.target_mean.fill_(float(mean))
    head.target_std.fill_(float(std))
    targets = ((scores - mean) / std).to(device)

    def loss_of(batch: Sequence[int]) -> torch.Tensor:
        return nn.functional.mse_loss(head.mlp(features[batch]).squeeze(-1), targets[batch])

    generator = torch.Generator().manual_seed(seed)
    optimiser = torch.optim.AdamW(head.mlp.parameters(), lr=lr, weight_decay=weight_decay)
    head.mlp.train()
    for epoch in range(1, epochs + 1):
        batches = shuffled_batches(len(rows), batch_size, generator)
        mse = train_epoch(batches, loss_of, optimiser, progress=False, desc="nr-head")
        if epoch == epochs or (epoch - 1) % max(1, epochs // 10) == 0:
            logger.info("nr-head epoch %d/%d: mse %.4f", epoch, epochs, mse)
    return head.eval()
