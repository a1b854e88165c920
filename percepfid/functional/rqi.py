"""The math of RQI: antisymmetrisation, the Huber training loss, and the loss as a function.

Only torch is imported here.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .._checks import check_positive, check_same_shape, check_tensor
from ._reduction import reduce_loss

__all__ = ["antisymmetrize", "rqi_score", "rqi_loss", "huber"]

PairFunction = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


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
    a: torch.Tensor,
    reference: torch.Tensor,
    *,
    antisymmetric: bool = True,
) -> torch.Tensor:
    """Relative quality of ``a`` with respect to ``reference``, one value per image.

    The reference is embedded without autograd (it is a target, never optimised); ``a``
    keeps its graph. Each image is embedded once; only the (cheap) comparison runs twice
    when antisymmetrising.

    Args:
        features: per-image feature extractor.
        compare: the two-input model ``g`` on a pair of feature batches, ``(B,)``.
        a: images to score, in the range ``features`` expects.
        reference: aligned reference images of the same shape.
        antisymmetric: return ``(g(a, ref) - g(ref, a)) / 2`` (default) or the raw ``g``.

    Returns:
        ``(B,)``, > 0 when ``a`` looks better than ``reference``.
    """
    features_a = features(a)
    with torch.no_grad():
        features_ref = features(reference)
    if antisymmetric:
        return antisymmetrize(compare, features_a, features_ref)
    return compare(features_a, features_ref)


def rqi_loss(score: torch.Tensor, *, weight: float = 1.0, reduction: str = "mean") -> torch.Tensor:
    """The RQI training loss from scores: ``weight * reduce(-score)`` (lower is better).

    Args:
        score: ``(B,)`` relative quality of SR with respect to GT (see :func:`rqi_score`).
        weight: a multiplier.
        reduction: ``'mean'``, ``'sum'`` or ``'none'``.

    Returns:
        A scalar, or ``(B,)`` for ``reduction='none'``.
    """
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

    With RQI's labels in ``[-1, 1]`` the default ``delta=1`` is plain L2 on almost every
    pair; a smaller ``delta`` such as 0.1 mixes L2 near zero with L1 on large errors.

    Args:
        prediction, target: tensors of the same shape.
        delta: the switch point, > 0.
        reduction: ``'mean'``, ``'sum'`` or ``'none'``.

    Returns:
        The reduced loss.
    """
    check_positive(delta, "delta")
    check_same_shape(prediction, target, ("prediction", "target"))
    residual = (prediction - target).abs()
    quadratic = torch.clamp(residual, max=delta)
    values = 0.5 * quadratic**2 + delta * (residual - quadratic)
    return reduce_loss(values, reduction)
