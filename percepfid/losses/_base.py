"""The settings every percepfid loss shares, validated and applied one way."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .._checks import check_input_range, check_positive, check_reduction
from .._frozen import requires_grad_except_frozen
from ..functional import to_unit


class ImageLoss(nn.Module):
    """Base of the losses: ``reduction``, ``weight`` and ``input_range``, checked once.

    Args:
        reduction: ``'mean'``, ``'sum'`` or ``'none'`` over the batch.
        weight: the loss's multiplier, a finite number ``>= 0``.
        input_range: the value range ``(low, high)`` of the images the loss receives.
    """

    higher_is_better = False
    is_differentiable = True

    def __init__(self, *, reduction: str, weight: float, input_range: Sequence[float]) -> None:
        super().__init__()
        self.reduction = check_reduction(reduction)
        self.weight = check_positive(weight, "weight", allow_zero=True)
        self.input_range: tuple[float, float] = check_input_range(input_range)

    def requires_grad_(self, requires_grad: bool = True) -> ImageLoss:
        """Set ``requires_grad`` on the loss's own trainable parameters only: frozen parts
        (backbones, towers, loaded heads, the IQA model) stay frozen whatever is asked."""
        requires_grad_except_frozen(self, requires_grad)
        return self

    def to_unit(self, images: torch.Tensor) -> torch.Tensor:
        """``images`` mapped from ``input_range`` to ``[0, 1]``."""
        return to_unit(images, self.input_range)

    def extra_repr(self) -> str:
        return f"reduction={self.reduction!r}, weight={self.weight}, input_range={self.input_range}"
