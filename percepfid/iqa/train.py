"""Fit an :class:`~percepfid.iqa.NRHead` to mean opinion scores listed in a CSV file.

The backbone is frozen, so each image is embedded once; the head is then fitted on the
cached embeddings with a mean-squared error on standardised MOS (fast, even on a CPU).
"""

from __future__ import annotations

import csv
import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from .._checks import check_positive
from .._errors import ArgumentError, EmptyBatchError
from ._nrhead import NRHead

__all__ = ["read_mos_csv", "load_image", "train_nr_head"]

logger = logging.getLogger(__name__)


def load_image(path: str | os.PathLike) -> torch.Tensor:
    """Read an image file as a float tensor ``(3, H, W)`` in ``[0, 1]`` (RGB)."""
    import numpy as np
    from PIL import Image

    with Image.open(path) as image:
        array = np.asarray(image.convert("RGB"), dtype=np.uint8).copy()
    return torch.from_numpy(array).permute(2, 0, 1).float().div_(255.0)


def read_mos_csv(
    path: str | os.PathLike,
    *,
    image_column: str = "image",
    score_column: str = "mos",
    root: str | os.PathLike | None = None,
) -> list[tuple[Path, float]]:
    """Read ``(image path, MOS)`` rows from a CSV file with a header line.

    Args:
        path: the CSV file.
        image_column: the column holding image paths (relative to ``root``).
        score_column: the column holding the scores.
        root: folder the image paths are relative to (default: the CSV's folder).

    Returns:
        The rows, in file order.

    Raises:
        ArgumentError: a column is missing, a score is not a finite number, or an image
            file does not exist.
        EmptyBatchError: the file has no rows.
    """
    path = Path(path)
    root = path.parent if root is None else Path(root)
    rows: list[tuple[Path, float]] = []
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        header = reader.fieldnames or []
        for column, argument in ((image_column, "image_column"), (score_column, "score_column")):
            if column not in header:
                raise ArgumentError(
                    f"{argument}={column!r} is not a column of {str(path)!r}; columns: {header}"
                )
        for line, record in enumerate(reader, start=2):
            try:
                score = float(record[score_column])
            except (TypeError, ValueError):
                score = math.nan
            if not math.isfinite(score):
                raise ArgumentError(
                    f"{str(path)!r} line {line}: {score_column}={record[score_column]!r} is not "
                    "a finite number"
                )
            image = root / record[image_column]
            if not image.is_file():
                raise ArgumentError(f"{str(path)!r} line {line}: image {str(image)!r} not found")
            rows.append((image, score))
    if not rows:
        raise EmptyBatchError(f"{str(path)!r} lists no images")
    return rows


@torch.no_grad()
def _embed(
    backbone: nn.Module, paths: Sequence[Path], device: torch.device, progress: bool
) -> torch.Tensor:
    from tqdm.auto import tqdm

    embeddings = []
    for path in tqdm(paths, desc="embedding", unit="img", disable=not progress):
        image = load_image(path).unsqueeze(0).to(device)
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
        csv_path: the CSV file (header line; see :func:`read_mos_csv`).
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
    """
    rows = read_mos_csv(csv_path, image_column=image_column, score_column=score_column, root=root)
    for value, argument in ((epochs, "epochs"), (batch_size, "batch_size")):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ArgumentError(f"{argument} must be a positive int; got {value!r}")
    check_positive(lr, "lr")
    check_positive(weight_decay, "weight_decay", allow_zero=True)
    scores = torch.tensor([score for _, score in rows], dtype=torch.float32)
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
    features = _embed(head.backbone, [p for p, _ in rows], torch.device(device), progress)
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
