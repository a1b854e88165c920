"""LoRANRIQALoss: fine-tune an SR network through LoRA with a no-reference quality reward;
restricting the update to low-rank adapters keeps the optimiser from "attacking" Q."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from .._checks import check_image, check_positive, check_same_shape
from .._errors import DTypeError
from .._frozen import exclude_from_state_dict, mark_frozen
from ..functional import nriqa_reward_loss
from ..iqa import NRIQAModel, create_nriqa
from ..lora import LoRATargets, has_lora, inject_lora, load_sr_model, lora_parameters, merge_lora
from ._base import ImageLoss

logger = logging.getLogger(__name__)


class LoRANRIQALoss(ImageLoss):
    """LoRA fine-tuning loss with a no-reference IQA reward (Zhang et al., arXiv 2504.18524).

    ``forward(sr, gt) = reduce(base_loss(sr, gt) - weight * q_scale * Q(clamp(sr)))``
    (:func:`~percepfid.functional.nriqa_reward_loss`), with ``Q`` negated for an IQA model
    whose ``higher_is_better`` is ``False``. Building the loss injects LoRA adapters into
    ``model`` **in place** (unless it holds some) and freezes its other parameters; train
    :meth:`trainable_parameters`, then :meth:`merge`. ``state_dict()`` holds only the adapters.

    Args:
        model: the SR network (``nn.Module``), modified in place; or a spandrel
            ``ImageModelDescriptor`` or checkpoint path (see
            :func:`percepfid.lora.load_sr_model`), whose network ``self.model`` becomes.
        iqa: an NR-IQA name for :func:`~percepfid.iqa.create_nriqa` (``'clipiqa'``,
            ``'pyiqa:musiq'`` as in the paper, ``'nr-head:<backbone>'``) or a module /
            callable returning ``(B,)`` scores.
        rank, alpha, targets: as for :func:`percepfid.lora.inject_lora` (used unless ``model``
            already holds adapters).
        weight: ``lambda_Q``, the reward weight (paper: 0.05 with MUSIQ's 0-100 scale).
        base_loss: the fidelity loss ``f(sr, gt)`` (e.g. ``nn.L1Loss()``), returning a scalar
            or per-image values ``(B,)``, or ``None``.
        q_scale: multiplies Q before weighting, to match the paper's 0-100 scale with a
            model scored in ``[0, 1]`` (``q_scale=100`` for CLIP-IQA).
        reduction: ``'mean'``, ``'sum'`` or ``'none'`` over the batch (a scalar base loss
            is broadcast over the batch for ``'none'`` and ``'sum'``).
        pretrained: load the IQA model's real weights (``False``: random, tests only).
        input_range: value range of ``sr`` and ``gt``; ``sr`` is clamped to it and mapped to
            ``[0, 1]`` before Q.
        iqa_kwargs: extra options for :func:`~percepfid.iqa.create_nriqa`.

    Shape:
        - sr, gt: ``(B, 3, H, W)``.
        - output: scalar, or ``(B,)`` with ``reduction='none'``.

    Example:
        >>> from torch import nn
        >>> net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 3, 3, padding=1))
        >>> crit = LoRANRIQALoss(net, iqa=lambda x: x.mean(dim=(1, 2, 3)), targets=r"0|2", rank=4,
        ...                      base_loss=nn.L1Loss())
        >>> opt = torch.optim.AdamW(crit.trainable_parameters(), lr=1e-3)
        >>> lr_img, hr_img = torch.rand(2, 3, 16, 16), torch.rand(2, 3, 16, 16)
        >>> crit(crit.model(lr_img), hr_img).backward()
    """

    def __init__(
        self,
        model: nn.Module | Any,
        *,
        iqa: str | nn.Module | Callable[[torch.Tensor], torch.Tensor] = "clipiqa",
        rank: int | None = None,
        alpha: float | None = None,
        targets: LoRATargets = "auto",
        weight: float = 0.05,
        base_loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
        q_scale: float = 1.0,
        reduction: str = "mean",
        pretrained: bool = True,
        input_range: Sequence[float] = (0.0, 1.0),
        iqa_kwargs: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(reduction=reduction, weight=weight, input_range=input_range)
        model = load_sr_model(model)  # a module, a spandrel descriptor or a checkpoint path
        if base_loss is not None and not callable(base_loss):
            raise DTypeError(f"base_loss must be callable or None; got {type(base_loss).__name__}")
        self.q_scale = check_positive(q_scale, "q_scale")
        if has_lora(model):
            logger.info("model already holds LoRA adapters: training those")
        else:
            inject_lora(model, targets, rank=rank, alpha=alpha)
        self.model = model
        self.iqa: NRIQAModel = create_nriqa(iqa, pretrained=pretrained, **(iqa_kwargs or {}))
        mark_frozen(self.iqa)
        self.base_loss = base_loss
        # Only the adapters belong to the loss's checkpoint.
        exclude_from_state_dict(self, keep=_is_lora_key)

    def trainable_parameters(self) -> list[nn.Parameter]:
        """The LoRA adapter parameters (what the optimiser should receive)."""
        return lora_parameters(self.model)

    def requires_grad_(self, requires_grad: bool = True) -> LoRANRIQALoss:
        """Switch the LoRA adapters only: the SR network's base weights and the IQA model
        stay frozen whatever is asked."""
        for parameter in self.trainable_parameters():
            parameter.requires_grad_(requires_grad)
        return self

    def quality(self, sr: torch.Tensor) -> torch.Tensor:
        """Q of ``sr`` clamped to ``input_range``, oriented so that higher is better; ``(B,)``.

        ``sr`` of any floating dtype is cast to the IQA model's dtype; the scores are at
        least float32 (also under a bfloat16 ``torch.autocast``)."""
        images = self.to_unit(sr.clamp(*self.input_range))
        model = next((t for t in self.iqa.parameters() if t.is_floating_point()), None)
        if model is not None:  # float64 / half images: Q in the model's dtype
            images = images.to(model.dtype)
        scores = self.iqa(images)
        scores = scores.to(torch.promote_types(scores.dtype, torch.float32))
        return scores if self.iqa.higher_is_better else -scores

    def forward(self, sr: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
        """The loss of the network's output ``sr`` (which may leave ``input_range``) and the
        ground truth ``gt`` in ``input_range``; bad input raises a ShapeError, DTypeError,
        NonFiniteError or RangeError."""
        check_image(sr, "sr", input_range=None)
        check_image(gt, "gt", input_range=self.input_range)
        check_same_shape(sr, gt, ("sr", "gt"))
        base = None if self.base_loss is None else self.base_loss(sr, gt)
        if base is not None and self.reduction != "mean" and base.ndim == 0:
            base = base.expand(sr.shape[0])
        return nriqa_reward_loss(
            self.quality(sr),
            base,
            weight=self.weight,
            q_scale=self.q_scale,
            reduction=self.reduction,
        )

    def merge(self) -> nn.Module:
        """A plain copy of the SR network with the adapters folded into its weights."""
        return merge_lora(self.model)

    def extra_repr(self) -> str:
        return f"q_scale={self.q_scale}, iqa={self.iqa.name!r}, " + super().extra_repr()


def _is_lora_key(key: str) -> bool:
    return ".lora_" in f".{key}"
