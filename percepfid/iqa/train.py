"""Fit an :class:`~percepfid.iqa.NRHead` to mean opinion scores listed in a CSV file.

The backbone is frozen, so each image is embedded once; the head is then fitted on the
cached embeddings with a mean-squared error on standardised MOS (fast, even on a CPU).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from .._checks import check_positive
from .._errors import ArgumentError
from ..data import read_image, read_rating_table
from ._nrhead import NRHead

__all__ = ["train_nr_head"]

logger = logging.getLogger(__name__)


@torch.no_grad()
def _embed(
    backbone: nn.Module, paths: Sequence[Path], device: torch.device, progress: bool
) -> torch.Tensor:
    from tqdm.auto import tqdm

    embeddings = []
    for path in tqdm(paths, desc="embedding", unit="img", disable=not progress):
        image = read_image(path).unsqueeze(0).to(device)
        embeddings.append(backbone(image).float().cpu())
    return torch.cat(embeddings)


def train_nr_head(
    csv_path: str | os.PathLike,
    backbone: str = "dinov2",
    *,
    root: str | os.PathLike | None = None,
    image_column: str = "image",
    score_column: str = "mos",
    hidden: int = 256,
    image_size: int | None = None,
    pretrained_backbone: bool = True,
    higher_is_better: bool = True,
    epochs: int = 200,
    batch_size: int = 64,
    lr: float = 1e-3,
    weight_decay: float = 1e-4,
    seed: int = 0,
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> NRHead:
    """Fit a no-reference regression head to the MOS in a CSV of ``(image, mos)`` rows.

    Args:
        csv_path: the CSV file (header line; read with
            :func:`percepfid.data.read_rating_table`).
        backbone: the registered backbone the head sits on.
        root: folder the image paths are relative to (default: the CSV's folder).
        image_column: column with the image paths.
        score_column: column with the scores.
        hidden: hidden width of the head (0: linear).
        image_size: backbone input side (``None``: native).
        pretrained_backbone: load the backbone's weights (``False``: random, tests only).
        higher_is_better: whether a larger MOS means better quality in this dataset.
        epochs: passes over the embeddings.
        batch_size: minibatch size of the head fit.
        lr: AdamW learning rate.
        weight_decay: AdamW weight decay.
        seed: seed of the head initialisation and of the minibatch order.
        device: where to embed and fit.
        progress: show a tqdm progress bar while embedding.

    Returns:
        The trained head, in ``eval()`` mode; ``head.save_pretrained(folder)`` or
        ``head.push_to_hub(repo_id)`` stores it, ``create_nriqa('nr-head', weights=...)``
        loads it.

    Raises:
        ArgumentError: bad CSV content or hyper-parameters.
        EmptyBatchError: the CSV has a header but no rows.
        ImageReadError: an image cannot be read (see :func:`percepfid.data.read_image`).
    """
    rows = read_rating_table(
        csv_path, image_column=image_column, score_column=score_column, root=root
    )
    for value, argument in ((epochs, "epochs"), (batch_size, "batch_size")):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ArgumentError(f"{argument} must be a positive int; got {value!r}")
    check_positive(lr, "lr")
    check_positive(weight_decay, "weight_decay", allow_zero=True)
    scores = torch.tensor([row.score for row in rows], dtype=torch.float32)
    low, high = float(scores.min()), float(scores.max())
    if not low < high:
        raise ArgumentError(
            f"all {len(rows)} scores in {str(csv_path)!r} are equal ({low}); nothing to fit"
        )

    # Seed the head's initialisation without touching the caller's global RNG.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        head = NRHead(
            backbone=backbone,
            hidden=hidden,
            image_size=image_size,
            pretrained_backbone=pretrained_backbone,
            score_range=[low, high],
            higher_is_better=higher_is_better,
        ).to(device)
    features = _embed(head.backbone, [row.image for row in rows], torch.device(device), progress)
    mean, std = scores.mean(), scores.std().clamp_min(1e-8)
    head.target_mean.fill_(float(mean))
    head.target_std.fill_(float(std))
    targets = ((scores - mean) / std).to(device)
    features = features.to(device)

    generator = torch.Generator().manual_seed(seed)
    optimiser = torch.optim.AdamW(head.mlp.parameters(), lr=lr, weight_decay=weight_decay)
    head.mlp.train()
    for epoch in range(epochs):
        order = torch.randperm(len(rows), generator=generator).to(device)
        total = 0.0
        for start in range(0, len(rows), batch_size):
            index = order[start : start + batch_size]
            loss = nn.functional.mse_loss(head.mlp(features[index]).squeeze(-1), targets[index])
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            total += loss.detach().item() * len(index)
        if epoch == epochs - 1 or epoch % max(1, epochs // 10) == 0:
            logger.info("nr-head epoch %d/%d: mse %.4f", epoch + 1, epochs, total / len(rows))
    return head.eval()
