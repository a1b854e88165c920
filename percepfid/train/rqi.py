"""Training an RQI head on a frozen backbone from any IQA dataset given as a CSV:
:func:`train_rqi`."""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .._atomic import atomic_path
from .._errors import ArgumentError, ShapeError, WeightsError
from ..data import Rating, read_image
from ..functional import huber, rqi_score
from ..rqi import RQIHead, crop_offsets, fit_to_crop
from ._cache import EmbeddingCache
from ._common import (
    RatingColumns,
    Selection,
    agreement,
    check_settings,
    pick_device,
    read_rows,
    seeded,
    shuffled_batches,
    split_groups,
    train_epoch,
)

logger = logging.getLogger(__name__)

__all__ = ["RQI_COLUMNS", "RQITrainResult", "dense_pairs", "train_rqi"]

#: The columns of a rating CSV for :func:`train_rqi`: ``image``, ``mos``, ``scene``.
RQI_COLUMNS = RatingColumns(image="image", score="mos", group="scene")


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
    """All ordered pairs ``(i, j, label)`` of distinct ``rows`` of one of ``groups``.

    Scores are normalised to ``[0, 1]`` over all ``rows`` (flipped unless
    ``higher_is_better``), so the label ``q_i - q_j`` lies in ``[-1, 1]``.
    """
    scores = torch.tensor([r.score for r in rows], dtype=torch.float64)
    low, high = float(scores.min()), float(scores.max())
    quality = (scores - low) / (high - low if high > low else 1.0)
    if not higher_is_better:
        quality = 1.0 - quality
    members: dict[str, list[int]] = {}
    for index, row in enumerate(rows):
        members.setdefault(row.group, []).append(index)
    return [
        (i, j, float(quality[i] - quality[j]))
        for group in groups
        for i in members.get(group, [])
        for j in members[group]
        if i != j
    ]


class _PairSource:
    """Aligned crops ``(top, left, flip)`` of image pairs and, with a cache, their
    embeddings, each distinct ``(image, top, left, flip)`` embedded once and alone (so a
    resumed run repeats an uninterrupted one exactly)."""

    def __init__(
        self,
        loss: Any,
        rows: Sequence[Rating],
        crop_size: int,
        crop_positions: int | None,
        seed: int,
        cache_mb: float,
        device: torch.device,
    ) -> None:
        self.loss, self.rows, self.crop_size, self.device = loss, rows, crop_size, device
        self.loader = lru_cache(maxsize=64)(read_image)
        self.cache = EmbeddingCache(cache_mb)
        self._shapes: dict[int, tuple[tuple[int, ...], tuple[int, int]]] = {}
        groups = sorted({r.group for r in rows})
        self._group = {g: k for k, g in enumerate(groups)}
        self._pool = None  # crop_positions positions per group, drawn once from seed
        if crop_positions is not None:
            pool = torch.Generator().manual_seed(seed)
            self._pool = torch.rand(len(groups), crop_positions, 2, generator=pool)

    def _fitted(self, index: int) -> torch.Tensor:
        """Image ``index`` upsampled to at least the crop size: ``(3, H, W)``."""
        image = self.loader(self.rows[index].image)
        fitted = fit_to_crop(image[None], self.crop_size)[0]
        self._shapes[index] = (tuple(image.shape), tuple(fitted.shape[-2:]))
        return fitted

    def _shape(self, i: int, j: int) -> tuple[int, int]:
        """The fitted size of images ``i`` and ``j``, which must have one size."""
        for index in {i, j} - self._shapes.keys():
            self._fitted(index)
        (raw_i, size), (raw_j, _) = self._shapes[i], self._shapes[j]
        if raw_i != raw_j:
            raise ShapeError(
                f"images of one group must have the same size to be compared: "
                f"{self.rows[i].image} is {raw_i[1:]}, {self.rows[j].image} is {raw_j[1:]}"
            )
        return size

    def _cut(self, index: int, top: int, left: int, flip: bool) -> torch.Tensor:
        crop = self._fitted(index)[..., top : top + self.crop_size, left : left + self.crop_size]
        return crop.flip(-1) if flip else crop

    def _inputs(self, indices: Sequence[int], crops: Sequence[tuple]) -> torch.Tensor:
        """The crops on the device or, with a cache, their embeddings."""
        keys = [(i, *c) for i, c in zip(indices, crops, strict=True)]
        if not self.cache.enabled:
            return torch.stack([self._cut(*key) for key in keys]).to(self.device)

        @torch.no_grad()
        def embed(missing: list[tuple]) -> list[torch.Tensor]:
            return [
                self.loss.model.features(self._cut(*k)[None].to(self.device))[0] for k in missing
            ]

        return torch.stack(self.cache.fetch(keys, embed))

    def score(
        self, pairs: Sequence[tuple[int, int, float]], generator: torch.Generator | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The loss's pair scores ``(B,)`` of ``pairs`` and the labels; each pair's crop
        ``(top, left, flip)`` is random (and a joint horizontal flip) when ``generator`` is
        given, else centred."""
        size, crops = self.crop_size, []
        for i, j, _ in pairs:
            height, width = self._shape(i, j)
            if generator is None:
                crops.append(((height - size) // 2, (width - size) // 2, False))
                continue
            if self._pool is None:
                top, left = crop_offsets(height, width, size, 1, generator)[0].tolist()
            else:
                pick = int(torch.randint(self._pool.shape[1], (1,), generator=generator))
                u, v = self._pool[self._group[self.rows[i].group], pick].tolist()
                top, left = int(u * (height - size + 1)), int(v * (width - size + 1))
            crops.append((top, left, bool(torch.rand(1, generator=generator) < 0.5)))
        a, b = (self._inputs([p[k] for p in pairs], crops) for k in (0, 1))
        labels = torch.tensor([p[2] for p in pairs], dtype=torch.float32, device=self.device)
        if not self.cache.enabled:
            return self.loss.pair_score(a, b), labels
        flag = self.loss.antisymmetric
        return rqi_score(nn.Identity(), self.loss.model.compare, a, b, antisymmetric=flag), labels

    @torch.no_grad()
    def validate(self, pairs: Sequence[tuple[int, int, float]], size: int) -> float:
        """SRCC between predicted and true differences on centred crops, ``size`` pairs a
        batch (NaN without pairs or with constant predictions)."""
        if not pairs:
            return math.nan
        self.loss.eval()
        scored = [self.score(pairs[k : k + size], None) for k in range(0, len(pairs), size)]
        predicted, labels = (torch.cat([s[n].float().cpu() for s in scored]) for n in (0, 1))
        return agreement(predicted, labels)[0]


def train_rqi(
    ratings: str | os.PathLike[str] | Sequence[Rating],
    output_dir: str | os.PathLike[str],
    *,
    columns: RatingColumns = RQI_COLUMNS,
    backbone: str | nn.Module = "dinov2",
    head: nn.Module | None = None,
    embedding: str = "cls",
    pretrained: bool = True,
    image_size: int | None = None,
    higher_is_better: bool = True,
    epochs: int = 10,
    batch_size: int = 8,
    lr: float = 1e-4,
    weight_decay: float = 1e-5,
    delta: float = 1.0,
    crop_size: int = 224,
    crop_positions: int | None = 8,
    val_fraction: float = 0.2,
    max_pairs_per_epoch: int | None = None,
    seed: int = 0,
    resume: bool | str | os.PathLike[str] = False,
    device: str | torch.device | None = None,
    progress: bool = True,
    cache_mb: float = 1024.0,
) -> RQITrainResult:
    """Train an RQI head on a frozen backbone, RQI-style (Su et al., arXiv 2503.13074).

    Every ordered pair of images of one group (scene), labelled with their quality
    difference (see :func:`dense_pairs`), trains the antisymmetrised head
    ``(g(a, b) - g(b, a)) / 2`` on backbone embeddings with a Huber loss. The SRCC on the
    held-out groups' pairs (centre crops) after each epoch picks the head saved to
    ``output_dir/best`` (Hub format); ``output_dir/last.pt`` holds what resuming needs.
    Shared arguments: see :mod:`percepfid.train`.

    Args:
        output_dir: where checkpoints go (created).
        head: the head to train; default ``RQIHead(width)`` seeded with ``seed``.
        embedding: ``'cls'`` (pooled) or ``'patch'`` (aligned tokens).
        higher_is_better: whether a higher score means better quality.
        lr, weight_decay: AdamW settings (paper: 1e-4, 1e-5).
        delta: Huber switch point (labels are in ``[-1, 1]``: 1.0 is almost plain L2,
            0.1 mixes L2 and L1).
        crop_size: side of the aligned random crops (joint horizontal flips); images
            smaller than it are upsampled.
        crop_positions: random crop positions per group, drawn once from ``seed`` (each
            used with and without a flip); ``None`` draws a fresh position for every pair
            in every epoch.
        max_pairs_per_epoch: cap on the (shuffled) training pairs per epoch.
        resume: ``True`` to continue from ``output_dir/last.pt``, or a checkpoint path.
        cache_mb: it keeps the embeddings of distinct crops.

    Raises:
        ArgumentError: a bad CSV (missing column or files, named), no group with two
            images, or bad settings.
        WeightsError: a resume checkpoint that is missing or does not fit.
    """
    check_settings(epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay)
    check_settings(crop_size=crop_size, crop_positions=crop_positions, delta=delta)
    check_settings(cache_mb=cache_mb)
    device = pick_device(device)
    output = Path(output_dir)
    # read, and split by group
    generator = torch.Generator().manual_seed(seed)
    rows = read_rows(ratings, lambda path: columns.read(path, what="rating CSV"))
    train_groups, val_groups = split_groups([r.group for r in rows], val_fraction, generator)
    train_pairs = dense_pairs(rows, train_groups, higher_is_better)
    val_pairs = dense_pairs(rows, val_groups, higher_is_better)
    if not train_pairs:
        flag = columns.flags.get("group", "columns.group")
        raise ArgumentError(
            f"no training pairs in {len(rows)} ratings; each group ({flag} {columns.group!r}) "
            "needs at least two images"
        )
    logger.info(
        "train_rqi: %d images, %d/%d pairs (train/val)", len(rows), len(train_pairs), len(val_pairs)
    )
    # build (seeded: building modules draws from the global RNG), and resume
    from ..backbones import create_backbone
    from ..losses import RQILoss

    with seeded(seed):
        sized = image_size is not None and isinstance(backbone, str)
        options = {"image_size": image_size} if sized else {}
        encoder = create_backbone(backbone, pretrained=pretrained, **options)
        if head is None:
            width = getattr(encoder, "token_dim" if embedding == "patch" else "embed_dim", None)
            if not width:
                raise ArgumentError(f"the backbone reports no {embedding} width; pass head=")
            head = RQIHead(int(width))
    if not (hasattr(head, "save_pretrained") and hasattr(type(head), "from_pretrained")):
        raise ArgumentError(
            "head must be a percepfid.heads.HubHead subclass (saved with save_pretrained); "
            f"got {type(head).__name__}"
        )
    rqi = RQILoss(encoder, head=head, embedding=embedding, train_head=True, pretrained=pretrained)
    loss = rqi.to(device)
    optimizer = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=weight_decay)
    start, selection = 0, Selection()
    if resume:
        path = output / "last.pt" if resume is True else Path(resume)
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
            head.load_state_dict(state["head"])
            optimizer.load_state_dict(state["optimizer"])
            generator.set_state(state["generator"])
            start, history = int(state["epoch"]), list(state.get("history", []))
            selection = Selection(history, float(state["best_srcc"]), int(state["best_epoch"]))
        except Exception as error:  # noqa: BLE001 - missing, corrupt or unfitting
            raise WeightsError(
                f"cannot resume from {path}: {type(error).__name__}: {error}"
            ) from error
    source = _PairSource(loss, rows, crop_size, crop_positions, seed, cache_mb, device)

    def pair_loss(batch: Sequence[int]) -> torch.Tensor:
        prediction, labels = source.score([train_pairs[k] for k in batch], generator)
        return huber(prediction, labels, delta=delta)

    # per epoch: train, validate, save
    for epoch in range(start + 1, epochs + 1):
        loss.train()
        batches = shuffled_batches(len(train_pairs), batch_size, generator, max_pairs_per_epoch)
        desc = f"train-rqi epoch {epoch}/{epochs}"
        train_loss = train_epoch(batches, pair_loss, optimizer, progress=progress, desc=desc)
        val_srcc = source.validate(val_pairs, batch_size)
        row = {"epoch": epoch, "train_loss": train_loss, "val_srcc": val_srcc}
        if selection.log(row, val_srcc):
            head.save_pretrained(output / "best")
        state = {
            "epoch": epoch,
            "head": head.state_dict(),
            "optimizer": optimizer.state_dict(),
            "generator": generator.get_state(),
            "best_srcc": selection.score,
            "best_epoch": selection.epoch,
            "history": selection.history,
        }
        with atomic_path(output / "last.pt") as partial:
            torch.save(state, partial)
    logger.info("train_rqi: %d crops embedded, %d reused", source.cache.misses, source.cache.hits)
    with seeded(seed):
        best = type(head).from_pretrained(output / "best") if (output / "best").is_dir() else head
    return RQITrainResult(best.eval(), selection.score, selection.epoch, selection.history, output)
