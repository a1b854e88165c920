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
    """Map images from ``input_range = (low, high)`` to ``[0, 1]``: ``(x - low) / (high - low)``;
    ``None`` or ``(0, 1)`` returns ``images`` itself (no op in the graph)."""
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
    """Cosine fidelity ``(B,)`` in ``[-1, 1]`` of SR embeddings to same-shaped GT ones.

    ``(B, D)`` embeddings give ``cos(e_sr, e_gt)``; ``(B, N, D)`` ones (patch tokens or
    tiles) the mean over ``N`` of the per-token cosines, weighted by ``weight`` ``(B, N)``
    or ``(N,)`` when given. ``eps`` and ``backend`` are those of
    :func:`percepfid.kernels.cosine_similarity`.

    Example:
        >>> e = torch.randn(4, 16)
        >>> torch.allclose(high_level_fidelity(e, 2 * e), torch.ones(4))
        True
    """
    check_same_shape(sr_embedding, gt_embedding, ("sr_embedding", "gt_embedding"))
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
    # cls or patch: the cosine itself, no extra ops in the training step
    return fidelities[0] if len(fidelities) == 1 else sum(fidelities) / len(fidelities)


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
    """``f(a, b) = (g(a, b) - g(b, a)) / 2`` for a two-input ``g`` on batches ``a``, ``b``.

    IEEE subtraction is exactly antisymmetric and halving is exact, so for a deterministic
    ``g``, ``f(a, b) == -f(b, a)`` and ``f(a, a) == 0`` hold to the last bit.

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
    """Relative quality ``(B,)`` of ``sr`` with respect to ``gt``, > 0 when ``sr`` looks better.

    ``compare`` (the model ``g``, ``(B,)``) runs on ``features`` of both images, each
    extracted once (``gt`` without autograd); ``antisymmetric`` returns
    :func:`antisymmetrize` of it (default), else the raw ``g(sr, gt)``.
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
    """Huber loss of same-shaped tensors: ``0.5 r^2`` for ``|r| <= delta``, else
    ``delta * (|r| - 0.5 delta)`` (``delta > 0``; with RQI's labels in ``[-1, 1]``,
    ``delta=1`` is L2 on almost every pair, 0.1 mixes L2 near zero with L1)."""
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
    """``reduce(base - weight * q_scale * quality)`` (Zhang et al., arXiv 2504.18524) for the
    no-reference ``quality`` ``(B,)`` (higher is better) and a fidelity loss ``base``
    (``(B,)``, a scalar, broadcast, or ``None`` for the reward only); see
    :class:`~percepfid.LoRANRIQALoss`."""
    values = -(weight * q_scale) * quality
    if base is not None:
        values = base + values
    return reduce_loss(values, reduction)
