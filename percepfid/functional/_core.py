"""The math of every percepfid loss, as functions on tensors.

Each loss Module calls these; nothing here builds a model or reads a file. Only torch and
the package's plumbing are imported (the cosine kernel dispatches to Triton lazily).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from .._checks import (
    check_choice,
    check_positive,
    check_reduction,
    check_same_shape,
    check_tensor,
)
from .._errors import ShapeError
from .._vocab import EMBEDDINGS
from ..kernels import cosine_similarity

PairFunction = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

# ----------------------------------------------------------------------------- shared


def reduce_loss(values: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Reduce per-sample values ``(B,)`` with ``'mean'``, ``'sum'`` or ``'none'`` (which
    returns ``values`` itself)."""
    check_reduction(reduction)
    if reduction == "mean":
        return values.mean()
    if reduction == "sum":
        return values.sum()
    return values


def to_unit(images: torch.Tensor, input_range: Sequence[float] | None) -> torch.Tensor:
    """Map images from ``input_range = (low, high)`` to ``[0, 1]``: ``(x - low) / (high - low)``.

    ``None`` or ``(0, 1)`` returns ``images`` itself (no copy, no op in the graph). This is
    the one place every loss, backbone and protocol maps its input range.
    """
    if input_range is None:
        return images
    low, high = float(input_range[0]), float(input_range[1])
    if low == 0.0 and high == 1.0:
        return images
    return (images - low) / (high - low)


# -------------------------------------------------------------------------------- HLF


def high_level_fidelity(
    sr_embedding: torch.Tensor,
    gt_embedding: torch.Tensor,
    *,
    eps: float = 1e-8,
    weight: torch.Tensor | None = None,
    backend: str = "auto",
) -> torch.Tensor:
    """Cosine fidelity of SR embeddings to GT embeddings, one value per image.

    ``(B, D)`` embeddings give ``cos(e_sr, e_gt)``. ``(B, N, D)`` embeddings (patch tokens
    or tiles) give the mean over ``N`` of the per-token cosines, weighted by ``weight``
    when given.

    Args:
        sr_embedding: ``(B, D)`` or ``(B, N, D)``.
        gt_embedding: same shape as ``sr_embedding``.
        eps: lower bound on each norm (see :func:`percepfid.kernels.cosine_similarity`).
        weight: optional per-token weights ``(B, N)`` or ``(N,)``.
        backend: cosine kernel backend, ``'auto'``, ``'torch'`` or ``'triton'``.

    Returns:
        ``(B,)`` fidelity in ``[-1, 1]``; higher is more faithful.

    Example:
        >>> e = torch.randn(4, 16)
        >>> high_level_fidelity(e, 2 * e)
        tensor([1., 1., 1., 1.])
    """
    if sr_embedding.shape != gt_embedding.shape:
        raise ShapeError(
            "sr_embedding and gt_embedding must have the same shape; "
            f"got {tuple(sr_embedding.shape)} and {tuple(gt_embedding.shape)}"
        )
    if sr_embedding.ndim == 2:
        return cosine_similarity(sr_embedding, gt_embedding, eps=eps, backend=backend)
    if sr_embedding.ndim == 3:
        return cosine_similarity(
            sr_embedding, gt_embedding, eps=eps, weight=weight, reduce="mean", backend=backend
        )
    raise ShapeError(f"embeddings must be (B, D) or (B, N, D); got {tuple(sr_embedding.shape)}")


def embedding_fidelity(
    sr: Any, gt: Any, embedding: str = "cls", *, eps: float = 1e-8, backend: str = "auto"
) -> torch.Tensor:
    """HLF fidelity ``(B,)`` of two backbone outputs, per ``embedding``.

    Args:
        sr, gt: backbone outputs with ``.pooled`` ``(B, D)`` and ``.tokens`` ``(B, N, D)``
            (:class:`percepfid.backbones.Embeddings`).
        embedding: ``'cls'`` (cosine of the pooled embeddings), ``'patch'`` (mean of the
            per-token cosines) or ``'cls+patch'`` (the mean of those two fidelities).
        eps, backend: see :func:`high_level_fidelity`.
    """
    check_choice(embedding, "embedding", EMBEDDINGS)
    parts = {"cls": ("pooled",), "patch": ("tokens",)}.get(embedding, ("pooled", "tokens"))
    fidelities = [
        high_level_fidelity(getattr(sr, part), getattr(gt, part), eps=eps, backend=backend)
        for part in parts
    ]
    return sum(fidelities) / len(fidelities)


def hlf_fidelity(
    sr: torch.Tensor,
    gt: torch.Tensor,
    backbone: Callable[..., Any],
    *,
    embedding: str = "cls",
    crop: str | None = None,
    eps: float = 1e-8,
    kernel: str = "auto",
) -> torch.Tensor:
    """Cosine fidelity ``(B,)`` of ``sr`` (gets gradients) to ``gt`` (embedded without
    autograd), ``(B, 3, H, W)`` each, under a frozen
    :class:`~percepfid.backbones.Backbone` (no head, no input checks). ``crop`` defaults
    to the backbone's own; ``embedding``, ``eps`` as :func:`embedding_fidelity`, ``kernel``
    its ``backend``."""
    with torch.no_grad():
        reference = backbone.encode(gt, crop)
    current = backbone.encode(sr, crop)
    return embedding_fidelity(current, reference, embedding, eps=eps, backend=kernel)


def fidelity_loss(
    fidelity: torch.Tensor, *, weight: float = 1.0, reduction: str = "mean"
) -> torch.Tensor:
    """``weight * reduce(1 - fidelity)``: 0 for a perfect match (PAPERS.md section 1 [D])."""
    return weight * reduce_loss(1.0 - fidelity, reduction)


def hlf_loss(
    sr_embedding: torch.Tensor,
    gt_embedding: torch.Tensor,
    *,
    reduction: str = "mean",
    weight: float = 1.0,
    eps: float = 1e-8,
    backend: str = "auto",
) -> torch.Tensor:
    """``weight * reduce(1 - high_level_fidelity(sr, gt))`` on embeddings (the GT ones
    should carry no autograd graph): a scalar, or ``(B,)`` with ``reduction='none'``."""
    fidelity = high_level_fidelity(sr_embedding, gt_embedding, eps=eps, backend=backend)
    return fidelity_loss(fidelity, weight=weight, reduction=reduction)


# -------------------------------------------------------------------------------- RQI


def antisymmetrize(g: PairFunction, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``f(a, b) = (g(a, b) - g(b, a)) / 2``: antisymmetric whatever ``g`` is.

    IEEE subtraction is exactly antisymmetric and halving is exact, so as long as ``g``
    is deterministic, ``f(a, b) == -f(b, a)`` and ``f(a, a) == 0`` hold to the last bit
    (not merely to a tolerance).

    Args:
        g: a two-input function returning one value per batch item.
        a, b: its inputs (images or features), batched along dim 0.

    Returns:
        ``(g(a, b) - g(b, a)) / 2``, shaped like ``g``'s output.

    Example:
        >>> g = lambda x, y: (2 * x - y).sum(dim=1)
        >>> a, b = torch.rand(3, 4), torch.rand(3, 4)
        >>> torch.equal(antisymmetrize(g, a, b), -antisymmetrize(g, b, a))
        True
    """
    return (g(a, b) - g(b, a)) / 2


def rqi_score(
    features: Callable[[torch.Tensor], torch.Tensor],
    compare: PairFunction,
    sr: torch.Tensor,
    gt: torch.Tensor,
    *,
    antisymmetric: bool = True,
) -> torch.Tensor:
    """Relative quality of ``sr`` with respect to the reference ``gt``, one value per image.

    The reference is embedded without autograd (it is a target, never optimised); ``sr``
    keeps its graph. Each image is embedded once; only the (cheap) comparison runs twice
    when antisymmetrising.

    Args:
        features: per-image feature extractor.
        compare: the two-input model ``g`` on a pair of feature batches, ``(B,)``.
        sr: images to score, in the range ``features`` expects.
        gt: aligned reference images of the same shape.
        antisymmetric: return ``(g(sr, gt) - g(gt, sr)) / 2`` (default) or the raw ``g``.

    Returns:
        ``(B,)``, > 0 when ``sr`` looks better than ``gt``.
    """
    features_sr = features(sr)
    with torch.no_grad():
        features_gt = features(gt)
    if antisymmetric:
        return antisymmetrize(compare, features_sr, features_gt)
    return compare(features_sr, features_gt)


def rqi_loss(score: torch.Tensor, *, weight: float = 1.0, reduction: str = "mean") -> torch.Tensor:
    """The RQI training loss ``weight * reduce(-score)`` (lower is better) from the scores
    ``(B,)`` of :func:`rqi_score`: a scalar, or ``(B,)`` for ``reduction='none'``."""
    check_tensor(score, "score")
    return weight * reduce_loss(-score, reduction)


def huber(
    prediction: torch.Tensor,
    target: torch.Tensor,
    *,
    delta: float = 1.0,
    reduction: str = "mean",
) -> torch.Tensor:
    """Huber loss ``0.5 r^2`` for ``|r| <= delta``, else ``delta * (|r| - 0.5 delta)``.

    ``prediction`` and ``target`` have the same shape; ``delta > 0``. With RQI's labels in
    ``[-1, 1]`` the default ``delta=1`` is plain L2 on almost every pair; a smaller
    ``delta`` such as 0.1 mixes L2 near zero with L1 on large errors.
    """
    check_positive(delta, "delta")
    check_same_shape(prediction, target, ("prediction", "target"))
    residual = (prediction - target).abs()
    quadratic = torch.clamp(residual, max=delta)
    values = 0.5 * quadratic**2 + delta * (residual - quadratic)
    return reduce_loss(values, reduction)


# ----------------------------------------------------------------------- NR-IQA reward


def nriqa_reward_loss(
    quality: torch.Tensor,
    base: torch.Tensor | None = None,
    *,
    weight: float = 0.05,
    q_scale: float = 1.0,
    reduction: str = "mean",
) -> torch.Tensor:
    """``base - weight * q_scale * Q`` (Zhang et al., arXiv 2504.18524), reduced.

    Args:
        quality: ``(B,)`` no-reference quality of the SR images, higher is better.
        base: the fidelity loss, ``(B,)`` per image or a scalar, or ``None`` (reward only).
        weight: ``lambda_Q``, the reward weight.
        q_scale: multiplies Q before weighting (e.g. 100 to match a 0-100 scale).
        reduction: ``'mean'``, ``'sum'`` or ``'none'`` over the batch.

    Returns:
        A scalar, or ``(B,)`` with ``reduction='none'`` (a scalar ``base`` is broadcast).
    """
    values = -(weight * q_scale) * quality
    if base is not None:
        values = base + values
    return reduce_loss(values, reduction)
