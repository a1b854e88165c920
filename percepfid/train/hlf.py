"""Fit an HLF calibration head (optionally with the backbone's last blocks) on human
fidelity scores: :func:`fit_hlf_head`."""

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

from .._atomic import atomic_path
from .._checks import check_choice, check_int
from .._errors import ArgumentError, ShapeError
from .._vocab import EMBEDDINGS
from ..data import batches_by_size, image_size, read_image
from ..heads import FITTED_ON_KEY
from ._cache import EmbeddingCache, SplitEncoder, SplitUnsupported
from ._common import (
    RatingColumns,
    Selection,
    agreement,
    check_settings,
    json_safe,
    pick_device,
    read_rows,
    seeded,
    split_groups,
    train_epoch,
    with_progress,
)

__all__ = ["HLF_COLUMNS", "HLFFitResult", "HumanRating", "fit_hlf_head", "read_ratings"]

#: The columns of a human-ratings CSV for :func:`fit_hlf_head` (see :func:`read_ratings`).
HLF_COLUMNS = RatingColumns(image="sr", reference="gt", score="score", group="group")

logger = logging.getLogger(__name__)


class RatingsError(ArgumentError):
    """The human-ratings file or rows are unusable (missing columns, files, numbers)."""


@dataclass(frozen=True)
class HumanRating:
    """One human judgement: how faithful ``sr`` (the path of an SR or distorted image) is to
    ``gt`` (its ground truth's), as a ``score`` on any scale (higher = more faithful);
    ``group`` is the source image (pairs of one group never cross the train/val split)."""

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
        train, val: statistics per split: ``n``, ``srcc_cosine``, ``plcc_cosine``,
            ``srcc_head``, ``plcc_head``, ``rmse_head`` (``val`` is empty without a split).
        score_range: the (low, high) human scores mapped to 0 and 1 for fitting.
        train_groups, val_groups: the groups of each split.
        output_dir, repo_id: where the head was saved and pushed, if it was.
        history: per fine-tuning epoch, ``epoch``, ``train_mse``, ``val_srcc_head``,
            ``val_plcc_head`` and ``val_score`` (their sum, the selection score); epoch 0 is
            the frozen fit. Validation values are None without a split.
        best_epoch: the fine-tuning epoch kept (the last one without a validation split);
            None without fine-tuning.
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
        """The JSON-serialisable part (no module; undefined statistics are None)."""
        data = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "head"}
        data["unfreeze_blocks"] = self.unfreeze_blocks
        data["head_config"] = {"class": type(self.head).__name__} | _head_config(self.head)
        return json_safe(data)


def read_ratings(
    csv_path: str | os.PathLike[str], columns: RatingColumns = HLF_COLUMNS
) -> list[HumanRating]:
    """Read human ratings from a CSV with a header row (see :class:`RatingColumns`); when
    ``columns.group`` is None or absent from the file, the GT path is the group.

    Raises:
        RatingsError: the file, a column or an image is missing, or a score is not a number.
        EmptyBatchError: the file has a header but no rows.
    """
    if columns.reference is None:
        raise ArgumentError("columns.reference must name the GT column for HLF ratings")
    ratings = columns.read(csv_path, group_optional=True, error=RatingsError)
    if columns.group is not None and ratings[0].group is None:
        logger.info("no %r column in %s: grouping pairs by their GT", columns.group, csv_path)
    return [
        HumanRating(r.image, r.reference, r.score, str(r.reference) if r.group is None else r.group)
        for r in ratings
    ]


def _targets(
    human: np.ndarray, is_val: np.ndarray, score_range: tuple[float, float] | None
) -> tuple[np.ndarray, tuple[float, float]]:
    """Human scores mapped to [0, 1] (clipped) and the (low, high) that map to 0 and 1."""
    if score_range is None:
        low, high = float(human[~is_val].min()), float(human[~is_val].max())
        if low >= 0.0 and high <= 1.0:
            low, high = 0.0, 1.0
    else:
        low, high = map(float, score_range)
    if not high > low:
        raise ArgumentError(
            f"score_range must have high > low; got ({low}, {high}) (are all training scores equal?)"
        )
    return np.clip((human - low) / (high - low), 0.0, 1.0), (low, high)


def _take(out: Any, index: Any) -> Any:
    """The rows ``index`` of an :class:`~percepfid.backbones.Embeddings`."""
    return type(out)(*(None if part is None else part[index] for part in out))


class _PairEncoder:
    """Embeddings of rated pairs through an HLF loss's backbone. A cache keeps each distinct
    image's embedding or, when the last ``tuned_blocks`` are tuned, its activation before
    them; without one (or, tuning, for a tower that cannot be split) the whole tower runs
    on every image of every pair."""

    def __init__(
        self,
        loss: nn.Module,
        ratings: Sequence[HumanRating],
        device: torch.device,
        cache_mb: float,
        tuned_blocks: int,
    ) -> None:
        self.loss, self.ratings, self.device = loss, ratings, device
        self.shapes = []  # (height, width) of every pair, from the file headers
        for rating in ratings:
            sr, gt = image_size(rating.sr), image_size(rating.gt)
            if sr != gt:
                raise ShapeError(
                    f"{rating.sr} is {sr} but its GT {rating.gt} is {gt}; HLF compares images "
                    "of the same size"
                )
            self.shapes.append(sr)
        self.cache = EmbeddingCache(cache_mb)
        self.split: SplitEncoder | None = None
        if tuned_blocks and self.cache.enabled:
            name, images = loss.backbone.spec.name, self._read([ratings[0].gt])
            try:
                self.split = SplitEncoder(loss.encode, loss.backbone.encoder, tuned_blocks, images)
            except SplitUnsupported as reason:
                logger.warning("cannot run backbone %r in two parts (%s): runs whole", name, reason)

    def _read(self, paths: Sequence[str | Path]) -> torch.Tensor:
        return torch.stack([read_image(p) for p in paths]).to(self.device)

    @torch.no_grad()
    def _embed(self, paths: list[str]) -> list[tuple]:
        out = self.loss.encode(self._read(paths))
        tokens = [None] * len(paths) if out.tokens is None else out.tokens
        return list(zip(out.pooled, tokens, strict=True))

    def _prefix(self, paths: list[str]) -> list[torch.Tensor]:
        rows = self.split.prefix(self._read(paths))
        return list(rows.reshape(len(paths), -1, *rows.shape[1:]))

    def _unique(self, paths: list[str], shape: tuple[int, int]) -> Any:
        """Embeddings of distinct images of one ``shape``, through the cache."""
        from ..backbones import Embeddings

        if self.split is None:
            pooled, tokens = zip(*self.cache.fetch(paths, self._embed), strict=True)
            return Embeddings(
                torch.stack(pooled), None if tokens[0] is None else torch.stack(tokens)
            )
        activation = torch.cat(self.cache.fetch(paths, self._prefix))
        # only the shape of the images matters: the stem's output is replaced
        return self.split.suffix(activation, torch.zeros(len(paths), 3, *shape, device=self.device))

    def pairs(self, batch: Sequence[int]) -> tuple[torch.Tensor, Any, Any]:
        """Cosine and both embeddings of a batch of pairs of one size, in one pass; the GT
        branch keeps its graph too (unlike ``HLFLoss.fidelity``)."""
        paths = [str(self.ratings[i].sr) for i in batch] + [str(self.ratings[i].gt) for i in batch]
        if self.cache.enabled:
            unique = list(dict.fromkeys(paths))
            out = self._unique(unique, self.shapes[batch[0]])
            both = _take(out, torch.tensor([unique.index(p) for p in paths], device=self.device))
        else:
            both = self.loss.encode(self._read(paths))
        n = len(batch)
        current, reference = _take(both, slice(None, n)), _take(both, slice(n, None))
        return self.loss.compare(current, reference), current, reference


def _fit_frozen(head: nn.Module, features: np.ndarray, target: np.ndarray, steps: int) -> None:
    """Least-squares fit (L-BFGS) of the head on fixed features, from the linear fit of
    logit(target) on the cosine (calibration head) or the features' statistics (MLP)."""
    features = torch.tensor(features, dtype=torch.float32)
    target = torch.tensor(target, dtype=torch.float32)
    if hasattr(head, "set_feature_statistics"):
        head.set_feature_statistics(features)
    else:
        cosine, logits = features[:, 0], torch.logit(target.clamp(0.02, 0.98))
        centred = cosine - cosine.mean()
        variance = float((centred * centred).mean())
        slope = float((centred * logits).mean()) / variance if variance > 0 else 0.0
        with torch.no_grad():
            head.scale.fill_(slope)
            head.bias.fill_(float(logits.mean()) - slope * float(cosine.mean()))
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
    """The statistics of one split (see :class:`HLFFitResult`; empty without pairs)."""
    if not len(cosine):
        return {}
    stats: dict[str, float] = {"n": int(len(cosine))}
    for name, values in (("cosine", cosine), ("head", predicted)):
        stats[f"srcc_{name}"], stats[f"plcc_{name}"] = agreement(values, human)
    return stats | {"rmse_head": float(np.sqrt(np.mean((predicted - target) ** 2)))}


@torch.no_grad()
def _head_predict(head: nn.Module, features: np.ndarray) -> np.ndarray:
    inputs = torch.tensor(features, dtype=torch.float32, device=next(head.parameters()).device)
    return head.eval().from_features(inputs).double().cpu().numpy()


@dataclass
class _Fit:
    """What the steps of one fit share (``target``: the human scores mapped to [0, 1])."""

    pairs: _PairEncoder
    head: nn.Module
    human: np.ndarray
    target: np.ndarray
    is_val: np.ndarray
    batch_size: int
    progress: bool

    @torch.no_grad()
    def features(self, index: Sequence[int], show: bool) -> tuple[np.ndarray, np.ndarray]:
        """Raw cosine ``(n,)`` and the head's input features ``(n, F)`` of the pairs ``index``."""
        index = list(index)
        cosine = np.full(len(index), np.nan)
        features = np.full((len(index), self.head.num_features), np.nan)
        batches = batches_by_size([self.pairs.shapes[i] for i in index], self.batch_size)
        for batch in with_progress(batches, enabled=show, desc="embed"):
            cos, current, reference = self.pairs.pairs([index[k] for k in batch])
            cosine[batch] = cos.float().cpu().numpy()
            feats = self.head.features(cos, current.pooled, reference.pooled)
            features[batch] = feats.float().cpu().numpy()
        return cosine, features

    def fine_tune(
        self, blocks: int, epochs: int, rates: tuple[float, float], seed: int
    ) -> tuple[list[dict[str, float | None]], int]:
        """Train the head and the last ``blocks`` blocks (``rates``: their learning rates) on
        the targets' MSE; keep the best epoch (see :class:`HLFFitResult`), record the blocks
        as the head's ``backbone_update``; return the history and the kept epoch."""
        from ..backbones import last_block_parameters
        from ..heads import BackboneUpdate

        head, device, backbone = self.head, self.pairs.device, self.pairs.loss.backbone
        names = last_block_parameters(backbone.encoder, blocks)
        params = dict(backbone.encoder.named_parameters())
        tuned = [params[name] for name in names]
        head.to(device)
        generator = torch.Generator().manual_seed(seed)
        targets = torch.tensor(self.target, dtype=torch.float32, device=device)
        train_index, val_index = np.flatnonzero(~self.is_val).tolist(), np.flatnonzero(self.is_val)
        if self.pairs.split is None:  # the tuned blocks change: stop caching embeddings
            self.pairs.cache = EmbeddingCache(0)
        selection, kept = Selection(), None

        def log(epoch: int, train_mse: float | None) -> None:
            """Log the epoch; keep a copy of the blocks and head when it is the best."""
            nonlocal kept
            srcc = plcc = math.nan
            if len(val_index):
                predicted = _head_predict(head, self.features(val_index, show=False)[1])
                srcc, plcc = agreement(predicted, self.human[val_index])
            row = {"epoch": epoch, "train_mse": train_mse, "val_srcc_head": srcc}
            row |= {"val_plcc_head": plcc, "val_score": srcc + plcc}
            if selection.log(json_safe(row), srcc + plcc) and len(val_index):
                blocks_state = {n: params[n].detach().clone() for n in names}
                kept = blocks_state, copy.deepcopy(head.state_dict())

        def pair_loss(batch: Sequence[int]) -> torch.Tensor:
            cos, current, reference = self.pairs.pairs(batch)
            predicted = head(cos, current.pooled, reference.pooled)
            return nn.functional.mse_loss(predicted.float(), targets[batch])

        log(0, None)
        for param in tuned:
            param.requires_grad_(True)
        groups = [
            {"params": list(head.parameters()), "lr": rates[0]},
            {"params": tuned, "lr": rates[1]},
        ]
        optimiser = torch.optim.AdamW(groups, weight_decay=0.0)
        try:
            for epoch in range(1, epochs + 1):
                batches = batches_by_size(
                    self.pairs.shapes, self.batch_size, indices=train_index, generator=generator
                )
                desc = f"epoch {epoch}"
                loss = train_epoch(batches, pair_loss, optimiser, progress=self.progress, desc=desc)
                log(epoch, loss)
        finally:
            for param in tuned:
                param.requires_grad_(False)
        if kept is not None:
            backbone.encoder.load_state_dict(kept[0], strict=False)
            head.load_state_dict(kept[1])
        head.eval().cpu()
        state = {name: params[name].detach().cpu().clone() for name in names}
        head.backbone_update = BackboneUpdate(backbone.spec.name, blocks, state)
        return selection.history, selection.epoch if len(val_index) else epochs


def _head_config(head: nn.Module) -> dict[str, Any]:
    """A head's constructor arguments with the *fitted* scale and bias."""
    config = dict(getattr(head, "_hub_mixin_config", None) or {})
    if hasattr(head, "scale") and hasattr(head, "bias"):
        config |= {"scale": float(head.scale.detach()), "bias": float(head.bias.detach())}
    return config


def _save(
    result: HLFFitResult,
    fitted_on: dict[str, Any],
    output_dir: str | os.PathLike[str] | None,
    hub: str | None,
    private: bool,
) -> None:
    """Save (with ``fit_report.json``) and/or push the head; record where in ``result``."""
    config = _head_config(result.head) | {FITTED_ON_KEY: fitted_on}
    if output_dir is not None:
        folder = Path(output_dir)
        result.head.save_pretrained(folder, config=config)
        result.output_dir = str(folder)
        report = json.dumps(result.report() | fitted_on, indent=2, allow_nan=False)
        with atomic_path(folder / "fit_report.json") as partial:
            partial.write_text(report + "\n")
        logger.info("saved the head to %s", folder)
    if hub is not None:
        result.head.push_to_hub(hub, private=private, config=config)
        result.repo_id = hub
        logger.info("pushed the head to %s", hub)


def fit_hlf_head(
    ratings: str | os.PathLike[str] | Sequence[HumanRating],
    backbone: str | nn.Module = "dinov2",
    *,
    columns: RatingColumns = HLF_COLUMNS,
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
    cache_mb: float = 1024.0,
) -> HLFFitResult:
    """Fit an HLF calibration head to human fidelity scores.

    Every image is embedded once and the head is fitted to the human scores, normalised to
    [0, 1], by least squares (L-BFGS). With ``unfreeze_blocks=N`` that fit starts an
    end-to-end fine-tune of the head and the backbone's last N blocks (AdamW); the epoch
    with the best validation SRCC + PLCC is kept, and the tuned blocks are saved with the
    head so ``HLFLoss(backbone, head=output_dir)`` loads them. Shared arguments: see
    :mod:`percepfid.train` (``ratings`` may be :class:`HumanRating` rows; ``backbone``
    anything ``HLFLoss`` takes).

    Args:
        head: ``'calibration'`` (:class:`~percepfid.heads.CalibrationHead`, monotone in the
            cosine) or ``'mlp'`` (:class:`~percepfid.heads.MLPCalibrationHead`).
        hidden: hidden width of the ``'mlp'`` head.
        unfreeze_blocks: fine-tune the last N transformer blocks and the layers after them
            (final norm, pooling, output projection) with the head; 0 keeps it frozen.
        epochs, lr, backbone_lr: the fine-tune's epochs and the head's and the blocks'
            learning rates.
        embedding: ``'cls'``, ``'patch'`` or ``'cls+patch'``, as for ``HLFLoss``.
        score_range: human scores mapped to 0 and 1; default the min and max of the
            training scores (scores already in [0, 1] are kept as they are).
        steps: maximum L-BFGS iterations of the frozen fit.
        batch_size: pairs per backbone forward pass (and per fine-tuning step).
        output_dir: save the head there with ``save_pretrained`` (its ``config.json``
            holds the fitted values and the backbone it was fitted on), plus
            ``fit_report.json`` and, with ``unfreeze_blocks``, ``backbone.safetensors``.
        push_to_hub: a Hub repo id to push the head to (needs a Hub login); ``private``:
            create that repository as private.
        cache_mb: fine-tuning, it keeps the frozen blocks' activations.

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
    from ..heads import CalibrationHead, MLPCalibrationHead
    from ..losses import HLFLoss

    check_choice(head, "head", ("calibration", "mlp"))
    check_choice(embedding, "embedding", EMBEDDINGS)
    check_int(unfreeze_blocks, "unfreeze_blocks", minimum=0)
    check_settings(batch_size=batch_size, hidden=hidden, epochs=epochs, lr=lr)
    check_settings(backbone_lr=backbone_lr, cache_mb=cache_mb)
    # read, and split by group
    ratings = read_rows(ratings, lambda path: read_ratings(path, columns))
    groups = [r.group for r in ratings]
    if val_fraction > 0 and len(set(groups)) < 2:
        raise ArgumentError(
            f"a validation split needs at least 2 groups (source images); got {len(set(groups))}. "
            "Pass val_fraction=0 to fit on everything."
        )
    generator = torch.Generator().manual_seed(seed)
    train_groups, val_groups = map(sorted, split_groups(groups, val_fraction, generator))
    is_val = np.array([g in set(val_groups) for g in groups])
    human = np.array([r.score for r in ratings], dtype=np.float64)
    target, score_range = _targets(human, is_val, score_range)
    # embed
    device = pick_device(device)
    if unfreeze_blocks and isinstance(backbone, nn.Module):
        backbone = copy.deepcopy(backbone)  # fine-tuning must not change the caller's module
    loss = HLFLoss(backbone, pretrained=pretrained, embedding=embedding, image_size=image_size)
    loss = loss.to(device).eval()
    with seeded(seed):
        fitted = CalibrationHead() if head == "calibration" else MLPCalibrationHead(hidden)
    pairs = _PairEncoder(loss, ratings, device, cache_mb, unfreeze_blocks)
    fit = _Fit(pairs, fitted, human, target, is_val, batch_size, progress)
    everything = range(len(ratings))
    cosine, features = fit.features(everything, show=progress)
    # fit, and fine-tune
    _fit_frozen(fitted, features[~is_val], target[~is_val], steps)
    history, best_epoch = [], None
    if unfreeze_blocks:
        history, best_epoch = fit.fine_tune(unfreeze_blocks, epochs, (lr, backbone_lr), seed)
        cosine, features = fit.features(everything, show=progress)
    predicted = _head_predict(fitted, features)
    train, val = (
        _statistics(cosine[part], predicted[part], human[part], target[part])
        for part in (~is_val, is_val)
    )
    result = HLFFitResult(fitted, train, val, score_range, train_groups, val_groups)
    result.history, result.best_epoch = history, best_epoch
    # save
    size = None if image_size is None else int(image_size)
    fitted_on = {"backbone": loss.backbone.spec.name, "embedding": embedding, "image_size": size}
    _save(result, fitted_on, output_dir, push_to_hub, private)
    return result
