"""The one reduction helper every loss uses."""

from __future__ import annotations

import torch

from .._checks import check_reduction


def reduce_loss(values: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Reduce per-sample values with ``'mean'``, ``'sum'`` or ``'none'``.

    Args:
        values: per-sample values, shape ``(B,)``.
        reduction: ``'mean'`` (default), ``'sum'`` or ``'none'`` (returns ``values``).

    Returns:
        A scalar tensor, or ``values`` for ``'none'``.
    """
    check_reduction(reduction)
    if reduction == "mean":
        return values.mean()
    if reduction == "sum":
        return values.sum()
    return values
