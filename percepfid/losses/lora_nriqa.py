"""LoRANRIQALoss: fine-tune an SR network through LoRA with a no-reference quality reward.

Zhang et al., arXiv 2504.18524 (CVPR 2025): ``L = L_base(SR, GT) - lambda_Q * Q(SR)`` with
a frozen NR-IQA model ``Q`` and only LoRA parameters trainable. Restricting the update to
low-rank adapters is what keeps the optimiser from "attacking" Q with artefacts.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from .._checks import check_image, check_input_range, check_same_shape
from .._errors import DTypeError
from ..iqa import NRIQAModel, create_nriqa
from ..lora import has_lora, inject_lora, load_sr_model, lora_parameters, merge_lora
from ..lora._targets import LoRATargets

__all__ = ["LoRANRIQALoss"]

logger = logging.getLogger(__name__)


def _check_number(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise DTypeError(f"{name} must be a number; got {type(value).__name__} {value!r}")
    value = float(value)
    if value != value or value in (float("inf"), float("-inf")):
        raise DTypeError(f"{name} must be finite; got {value!r}")
    return value


class LoRANRIQALoss(nn.Module):
    """LoRA fine-tuning loss with a no-reference IQA reward.

    ``forward(sr, hr) = base_loss(sr, hr) - weight * q_scale * Q(clamp(sr)).mean()``; with
    ``base_loss=None`` only the reward term remains. When the IQA model's
    ``higher_is_better`` is ``False`` its score is negated, so the reward always favours
    better-looking images.

    Building the loss injects LoRA adapters into ``model`` **in place** (unless it already
    holds some) and freezes every other parameter of ``model``. Train
    :meth:`trainable_parameters`; call :meth:`merge` at the end for a plain network with
    the adapters folded in (no runtime cost).

    The loss's ``state_dict()`` holds only the adapter weights: the SR network's base
    weights belong to its own checkpoint and the IQA model is frozen.

    Args:
        model: the SR network (``nn.Module``), modified in place; or a spandrel
            ``ImageModelDescriptor`` or checkpoint path (see
            :func:`percepfid.lora.load_sr_model`), whose network ``self.model`` becomes.
        iqa: an NR-IQA name for :func:`~percepfid.iqa.create_nriqa` (``'clipiqa'``,
            ``'pyiqa:musiq'`` as in the paper, ``'nr-head:<backbone>'``) or a module /
            callable returning ``(B,)`` scores.
        rank: LoRA rank; ``None``: 48 for SwinIR MLPs, 24 for RRDB convs, else 16.
        alpha: LoRA alpha (scale ``alpha / rank``); ``None`` means ``rank``.
        targets: ``'auto'``, ``'swinir-mlp'``, ``'rrdb-convs'``, a regex, a list of names or
            a predicate (see :func:`percepfid.lora.find_lora_targets`).
        weight: ``lambda_Q``, the reward weight (paper: 0.05 with MUSIQ's 0-100 scale).
        base_loss: the fidelity loss ``f(sr, hr) -> scalar`` (e.g. ``nn.L1Loss()``) or
            ``None``.
        q_scale: multiplies Q before weighting, to match the paper's 0-100 scale with a
            model scored in ``[0, 1]`` (``q_scale=100`` for CLIP-IQA).
        pretrained: load the IQA model's real weights (``False``: random, tests only).
        input_range: value range of ``sr`` and ``hr``; ``sr`` is clamped to it and mapped to
            ``[0, 1]`` before Q.
        iqa_kwargs: extra options for :func:`~percepfid.iqa.create_nriqa`.

    Shape:
        - sr, hr: ``(B, 3, H, W)``.
        - output: scalar.

    Example:
        >>> from torch import nn
        >>> net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 3, 3, padding=1))
        >>> crit = LoRANRIQALoss(net, iqa=lambda x: x.mean(dim=(1, 2, 3)), targets=r"0|2", rank=4,
        ...                      base_loss=nn.L1Loss())
        >>> opt = torch.optim.AdamW(crit.trainable_parameters(), lr=1e-3)
        >>> lr_img, hr_img = torch.rand(2, 3, 16, 16), torch.rand(2, 3, 16, 16)
        >>> crit(crit.model(lr_img), hr_img).backward()
    """

    is_differentiable = True
    higher_is_better = False

    def __init__(
        self,
        model: nn.Module | Any,
        iqa: str | nn.Module | Callable[[torch.Tensor], torch.Tensor] = "clipiqa",
        rank: int | None = None,
        alpha: float | None = None,
        targets: LoRATargets = "auto",
        weight: float = 0.05,
        base_loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
        q_scale: float = 1.0,
        *,
        pretrained: bool = True,
        input_range: Sequence[float] = (0.0, 1.0),
        iqa_kwargs: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        model = load_sr_model(model)  # a module, a spandrel descriptor or a checkpoint path
        if base_loss is not None and not callable(base_loss):
            raise DTypeError(f"base_loss must be callable or None; got {type(base_loss).__name__}")
        self.weight = _check_number(weight, "weight")
        self.q_scale = _check_number(q_scale, "q_scale")
        self.input_range = check_input_range(input_range)
        if has_lora(model):
            logger.info("model already holds LoRA adapters: training those")
            lora_parameters(model)  # raises when none are found (cannot happen here)
        else:
            inject_lora(model, targets, rank=rank, alpha=alpha)
        self.model = model
        self.iqa: NRIQAModel = create_nriqa(iqa, pretrained=pretrained, **(iqa_kwargs or {}))
        self.base_loss = base_loss
        self._register_state_dict_hook(_keep_only_lora)
        self.register_load_state_dict_pre_hook(_fill_frozen)

    def trainable_parameters(self) -> list[nn.Parameter]:
        """The LoRA adapter parameters (what the optimiser should receive)."""
        return lora_parameters(self.model)

    def quality(self, sr: torch.Tensor) -> torch.Tensor:
        """Q of ``sr`` clamped to ``input_range``, oriented so that higher is better; ``(B,)``."""
        low, high = self.input_range
        images = (sr.clamp(low, high) - low) / (high - low)
        scores = self.iqa(images)
        return scores if self.iqa.higher_is_better else -scores

    def forward(self, sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
        """The loss of a batch.

        Args:
            sr: the network's output ``(B, 3, H, W)`` (may leave ``input_range``; it is
                clamped before Q).
            hr: the ground truth, same shape, in ``input_range``.

        Returns:
            A scalar: ``base_loss(sr, hr) - weight * q_scale * mean(Q)``.

        Raises:
            ShapeError, DTypeError, NonFiniteError, RangeError: bad input.
        """
        check_image(sr, "sr", input_range=None)
        check_image(hr, "hr", input_range=self.input_range)
        check_same_shape(sr, hr, ("sr", "hr"))
        reward = self.weight * self.q_scale * self.quality(sr).mean()
        if self.base_loss is None:
            return -reward
        return self.base_loss(sr, hr) - reward

    def merge(self) -> nn.Module:
        """A plain copy of the SR network with the adapters folded into its weights."""
        return merge_lora(self.model)

    def extra_repr(self) -> str:
        return f"weight={self.weight}, q_scale={self.q_scale}, iqa={self.iqa.name!r}"


def _is_lora_key(key: str) -> bool:
    return ".lora_" in f".{key}"


def _keep_only_lora(module, state_dict, prefix, local_metadata):  # noqa: ARG001
    for key in [
        k for k in state_dict if k.startswith(prefix) and not _is_lora_key(k[len(prefix) :])
    ]:
        del state_dict[key]


def _live_state(module: nn.Module):
    """Parameters and persistent buffers of ``module`` by name, ignoring state-dict hooks."""
    for owner_name, owner in module.named_modules():
        prefix = f"{owner_name}." if owner_name else ""
        for name, parameter in owner._parameters.items():
            if parameter is not None:
                yield prefix + name, parameter
        for name, buffer in owner._buffers.items():
            if buffer is not None and name not in owner._non_persistent_buffers_set:
                yield prefix + name, buffer


def _fill_frozen(module, state_dict, prefix, *args):  # noqa: ARG001
    # Frozen entries are not in the checkpoint: take them from the live module so a strict
    # load of a LoRA-only state dict succeeds.
    for name, tensor in _live_state(module):
        if not _is_lora_key(name):
            state_dict.setdefault(prefix + name, tensor.detach())
