"""Training an RQI head on a frozen backbone from any IQA dataset given as a CSV.

The trainer runs in named steps: read the ratings, split them by group and list the dense
pairs (``_read``), build the loss and its optimiser (``_build``), resume (``_resume``),
then per epoch train (``_train_epoch``), validate (``_validate``) and save (``_save``).

The backbone is frozen, so each distinct input (image, crop position, flip) is embedded
once per run and kept in a bounded cache (``cache_mb``). So that inputs repeat, crops are
drawn from a fixed set of ``crop_positions`` positions per group (drawn once from
``seed``), each with or without a horizontal flip; ``crop_positions=None`` draws a fresh
position every time (the inputs then rarely repeat and the cache helps only validation).
"""

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
from ..data import Rating
from ..functional import huber, rqi_score
from ..rqi import RQIHead, crop_offsets, fit_to_crop
from ._cache import EmbeddingCache
from ._common import (
    RatingColumns,
    cached_loader,
    load_checkpoint,
    pick_device,
    save_checkpoint,
    seeded,
    split_groups,
    with_progress,
)

logger = logging.getLogger(__name__)

__all__ = ["RQI_COLUMNS", "RQITrainResult", "dense_pairs", "train_rqi"]

#: The columns of a rating CSV for :func:`train_rqi`: ``image``, ``mos``, ``scene``.
RQI_COLUMNS = RatingColumns(image="image", score="mos", group="scene")

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


# --------------------------------------------------------------------------- read


def _read(
    ratings: str | os.PathLike[str] | Sequence[Rating],
    columns: RatingColumns,
    val_fraction: float,
    generator: torch.Generator,
    higher_is_better: bool,
) -> tuple[list[Rating], list[tuple[int, int, float]], list[tuple[int, int, float]]]:
    """The rated images, and the dense training and validation pairs (split by group)."""
    if isinstance(ratings, (str, os.PathLike)):
        rows = columns.read(ratings, what="rating CSV")
        where = f"{ratings}: "
    else:
        rows, where = list(ratings), ""
    train_groups, val_groups = split_groups([r.group for r in rows], val_fraction, generator)
    train_pairs = dense_pairs(rows, train_groups, higher_is_better)
    val_pairs = dense_pairs(rows, val_groups, higher_is_better)
    if not train_pairs:
        flag = columns.flags.get("group", "columns.group")
        raise ArgumentError(
            f"{where}no training pairs; each group ({flag} {columns.group!r}) needs at least "
            "two images"
        )
    logger.info(
        "train_rqi: %d images, %d/%d groups, %d/%d pairs (train/val)",
        len(rows),
        len(train_groups),
        len(val_groups),
        len(train_pairs),
        len(val_pairs),
    )
    return rows, train_pairs, val_pairs


# --------------------------------------------------------------------------- embed


class _PairSource:
    """Aligned crops of image pairs and, with a cache, their embeddings computed once.

    A crop is ``(top, left, flip)``; each distinct ``(image, top, left, flip)`` is embedded
    alone (batch of one), so its embedding never depends on what was embedded with it and a
    resumed run repeats an uninterrupted one exactly.
    """

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
        self.loader = cached_loader(64)
        self.cache = EmbeddingCache(cache_mb)
        self._shapes: dict[int, tuple[tuple[int, ...], tuple[int, int]]] = {}
        groups = sorted({r.group for r in rows})
        self._group = {g: k for k, g in enumerate(groups)}
        self._pool = None
        if crop_positions is not None:
            pool_generator = torch.Generator().manual_seed(seed)
            self._pool = torch.rand(len(groups), crop_positions, 2, generator=pool_generator)

    def _fitted(self, index: int) -> torch.Tensor:
        """Image ``index`` upsampled to at least the crop size: ``(3, H, W)``."""
        image = self.loader(self.rows[index].image)
        fitted = fit_to_crop(image[None], self.crop_size)[0]
        self._shapes[index] = (tuple(image.shape), tuple(fitted.shape[-2:]))
        return fitted

    def _shape(self, i: int, j: int) -> tuple[int, int]:
        for index in (i, j):
            if index not in self._shapes:
                self._fitted(index)
        (raw_i, size), (raw_j, _) = self._shapes[i], self._shapes[j]
        if raw_i != raw_j:
            raise ShapeError(
                f"images of one group must have the same size to be compared: "
                f"{self.rows[i].image} is {raw_i[1:]}, {self.rows[j].image} is {raw_j[1:]}"
            )
        return size

    def crops(
        self, pairs: Sequence[tuple[int, int, float]], generator: torch.Generator | None
    ) -> list[tuple[int, int, bool]]:
        """One ``(top, left, flip)`` per pair: random (and a joint horizontal flip) when
        ``generator`` is given, else centred."""
        size, chosen = self.crop_size, []
        for i, j, _ in pairs:
            height, width = self._shape(i, j)
            if generator is None:
                chosen.append(((height - size) // 2, (width - size) // 2, False))
                continue
            if self._pool is None:
                top, left = crop_offsets(height, width, size, 1, generator)[0].tolist()
            else:
                pick = int(torch.randint(self._pool.shape[1], (1,), generator=generator))
                u, v = self._pool[self._group[self.rows[i].group], pick].tolist()
                top, left = int(u * (height - size + 1)), int(v * (width - size + 1))
            flip = bool(torch.rand(1, generator=generator) < 0.5)
            chosen.append((top, left, flip))
        return chosen

    def _cut(self, index: int, top: int, left: int, flip: bool) -> torch.Tensor:
        crop = self._fitted(index)[..., top : top + self.crop_size, left : left + self.crop_size]
        return crop.flip(-1) if flip else crop

    def _images(self, indices: Sequence[int], crops: Sequence[tuple]) -> torch.Tensor:
        return torch.stack([self._cut(i, *c) for i, c in zip(indices, crops, strict=True)])

    def _features(self, indices: Sequence[int], crops: Sequence[tuple]) -> torch.Tensor:
        @torch.no_grad()
        def embed(missing: list[tuple]) -> list[torch.Tensor]:
            return [
                self.loss.model.features(self._cut(*key)[None].to(self.device))[0]
                for key in missing
            ]

        keys = [(i, *c) for i, c in zip(indices, crops, strict=True)]
        return torch.stack(self.cache.fetch(keys, embed))

    def score(
        self, pairs: Sequence[tuple[int, int, float]], generator: torch.Generator | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The loss's pair scores ``(B,)`` of ``pairs`` under their crops, and the labels."""
        crops = self.crops(pairs, generator)
        firsts, seconds = [p[0] for p in pairs], [p[1] for p in pairs]
        labels = torch.tensor([p[2] for p in pairs], dtype=torch.float32, device=self.device)
        if not self.cache.enabled:
            a = self._images(firsts, crops).to(self.device)
            b = self._images(seconds, crops).to(self.device)
            return self.loss.pair_score(a, b), labels
        a, b = self._features(firsts, crops), self._features(seconds, crops)
        flag = self.loss.antisymmetric
        return rqi_score(nn.Identity(), self.loss.model.compare, a, b, antisymmetric=flag), labels


# --------------------------------------------------------------------------- build


def _build(
    backbone: str | nn.Module,
    head: nn.Module | None,
    embedding: str,
    pretrained: bool,
    image_size: int | None,
    seed: int,
    device: torch.device,
) -> Any:
    """The RQI loss on the frozen backbone with a trainable head (seeded, leaving the
    caller's global RNG as it was)."""
    from ..backbones import create_backbone
    from ..losses import RQILoss

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
            "head must be a percepfid.heads.HubHead subclass (saved with save_pretrained); "
            f"got {type(head).__name__}"
        )
    return RQILoss(
        encoder, head=head, embedding=embedding, train_head=True, pretrained=pretrained
    ).to(device)


def _resume(
    path: Path, head: nn.Module, optimizer: torch.optim.Optimizer, generator: torch.Generator
) -> tuple[int, float, int, list[dict[str, float]]]:
    """Load ``path`` into the head, optimiser and generator; return the epoch reached, the
    best SRCC, its epoch and the history."""
    state = load_checkpoint(path)
    try:
        head.load_state_dict(state["head"])
        optimizer.load_state_dict(state["optimizer"])
    except (KeyError, RuntimeError, ValueError) as error:
        raise WeightsError(f"{path} does not fit this head/optimizer: {error}") from error
    generator.set_state(state["generator"])
    logger.info("train_rqi: resumed from %s at epoch %d", path, int(state["epoch"]))
    return (
        int(state["epoch"]),
        float(state["best_srcc"]),
        int(state["best_epoch"]),
        list(state.get("history", [])),
    )


# --------------------------------------------------------------------------- epochs


def _train_epoch(
    source: _PairSource,
    optimizer: torch.optim.Optimizer,
    pairs: Sequence[tuple[int, int, float]],
    generator: torch.Generator,
    *,
    batch_size: int,
    max_pairs: int | None,
    delta: float,
    show: bool,
    desc: str,
) -> float:
    """One pass over the (shuffled, capped) training pairs; the mean Huber loss."""
    source.loss.train()
    order = torch.randperm(len(pairs), generator=generator).tolist()
    if max_pairs is not None:
        order = order[:max_pairs]
    batches = [order[k : k + batch_size] for k in range(0, len(order), batch_size)]
    total, seen = 0.0, 0
    for indices in with_progress(batches, enabled=show, desc=desc):
        prediction, labels = source.score([pairs[k] for k in indices], generator)
        value = huber(prediction, labels, delta=delta)
        optimizer.zero_grad(set_to_none=True)
        value.backward()
        optimizer.step()
        total += float(value.detach()) * len(indices)
        seen += len(indices)
    return total / max(seen, 1)


def _validate(
    source: _PairSource, pairs: Sequence[tuple[int, int, float]], batch_size: int
) -> float:
    """SRCC between predicted and true differences on centred crops (NaN without pairs or
    with constant predictions)."""
    from ..eval import srcc

    if not pairs:
        return float("nan")
    predictions, labels = [], []
    source.loss.eval()
    with torch.no_grad():
        for start in range(0, len(pairs), batch_size):
            prediction, label = source.score(pairs[start : start + batch_size], None)
            predictions.append(prediction.float().cpu())
            labels.append(label.cpu())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # constant predictions: NaN, handled by the caller
        return float(srcc(torch.cat(predictions), torch.cat(labels)))


def _save(output: Path, state: dict[str, Any], head: nn.Module, improved: bool) -> None:
    """The resume checkpoint ``last.pt`` and, when the epoch improved, the head in ``best/``."""
    if improved:
        head.save_pretrained(output / BEST)
    save_checkpoint(output / LAST, state)


# --------------------------------------------------------------------------- the trainer


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

    Every ordered pair ``(i, j)``, ``i != j``, of images of the same group (scene) is a
    training example with label ``q_i - q_j`` (scores normalised so labels lie in
    ``[-1, 1]``); the model is the antisymmetrised head ``(g(a, b) - g(b, a)) / 2`` on
    backbone embeddings, fitted with a Huber loss. Groups are split train:val = 8:2 (no
    group in both); each epoch ends with the SRCC between predicted and true differences
    on the validation pairs (centre crops), and the best head so far is saved to
    ``output_dir/best`` in the Hub format. ``output_dir/last.pt`` holds everything needed
    to resume. Each distinct crop is embedded once per run (see the module docstring).

    Args:
        ratings: a CSV with one row per image (path, group id, score), or its rows.
        output_dir: where checkpoints go (created).
        columns: the CSV's layout (default :data:`RQI_COLUMNS`: ``image``, ``mos``,
            ``scene``).
        backbone: a registered backbone name or a module (frozen).
        head: the head to train; default ``RQIHead(width)`` seeded with ``seed``.
        embedding: ``'cls'`` (pooled) or ``'patch'`` (aligned tokens).
        pretrained: backbone weights from the Hub; ``False`` for random weights (tests).
        image_size: override the input size of a registered backbone.
        higher_is_better: whether a higher score means better quality.
        epochs: passes over the training pairs.
        batch_size: pairs per step.
        lr, weight_decay: AdamW settings (paper: 1e-4, 1e-5).
        delta: Huber switch point (labels are in ``[-1, 1]``: 1.0 is almost plain L2,
            0.1 mixes L2 and L1).
        crop_size: side of the aligned random crops (joint horizontal flips); images
            smaller than it are upsampled.
        crop_positions: random crop positions per group, drawn once from ``seed`` (each
            used with and without a flip); ``None`` draws a fresh position for every pair
            in every epoch.
        val_fraction: share of groups held out.
        max_pairs_per_epoch: cap on the (shuffled) training pairs per epoch.
        seed: seeds the head's initialisation, the split, the shuffles, crops and flips
            (through private generators; the global RNG is left as it was).
        resume: ``True`` to continue from ``output_dir/last.pt``, or a checkpoint path.
        device: where to train; default CUDA when available, else CPU.
        progress: show a tqdm bar per epoch.
        cache_mb: memory for the embeddings of distinct crops kept across epochs, least
            recently used first out; 0 runs the backbone on every pair (the same results,
            slower).

    Returns:
        An :class:`RQITrainResult` with the best head.

    Raises:
        ArgumentError: a bad CSV (missing column or files, named), no group with two
            images, or bad settings.
        WeightsError: a resume checkpoint that is missing or does not fit.
    """
    for name, value in (("epochs", epochs), ("batch_size", batch_size), ("crop_size", crop_size)):
        check_positive_int(value, name)
    if crop_positions is not None:
        check_positive_int(crop_positions, "crop_positions")
    check_positive(lr, "lr")
    check_positive(weight_decay, "weight_decay", allow_zero=True)
    check_positive(delta, "delta")
    check_positive(cache_mb, "cache_mb", allow_zero=True)
    device = pick_device(device)
    output = Path(output_dir)
    # read
    generator = torch.Generator().manual_seed(seed)
    rows, train_pairs, val_pairs = _read(
        ratings, columns, val_fraction, generator, higher_is_better
    )
    # build
    loss = _build(backbone, head, embedding, pretrained, image_size, seed, device)
    head = loss.model.head
    optimizer = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=weight_decay)
    start_epoch, best_srcc, best_epoch, history = 0, -math.inf, 0, []
    if resume:
        path = output / LAST if resume is True else Path(resume)
        start_epoch, best_srcc, best_epoch, history = _resume(path, head, optimizer, generator)
    source = _PairSource(loss, rows, crop_size, crop_positions, seed, cache_mb, device)
    # train, validate, save
    for epoch in range(start_epoch + 1, epochs + 1):
        train_loss = _train_epoch(
            source,
            optimizer,
            train_pairs,
            generator,
            batch_size=batch_size,
            max_pairs=max_pairs_per_epoch,
            delta=delta,
            show=progress,
            desc=f"train-rqi epoch {epoch}/{epochs}",
        )
        val_srcc = _validate(source, val_pairs, batch_size)
        history.append({"epoch": epoch, "train_loss": train_loss, "val_srcc": val_srcc})
        score = val_srcc if val_srcc == val_srcc else -math.inf
        improved = score > best_srcc or best_epoch == 0
        if improved:
            best_srcc, best_epoch = score, epoch
        logger.info("train_rqi: epoch %d loss %.5f val SRCC %.4f", epoch, train_loss, val_srcc)
        state = {
            "epoch": epoch,
            "head": head.state_dict(),
            "optimizer": optimizer.state_dict(),
            "generator": generator.get_state(),
            "best_srcc": best_srcc,
            "best_epoch": best_epoch,
            "history": history,
        }
        _save(output, state, head, improved)
    if source.cache.enabled:
        logger.info(
            "train_rqi: %d crops embedded, %d reused", source.cache.misses, source.cache.hits
        )
    with seeded(seed):
        best = type(head).from_pretrained(output / BEST) if (output / BEST).is_dir() else head
    return RQITrainResult(best.eval(), best_srcc, best_epoch, history, output)
