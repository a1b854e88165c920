"""RQILoss: Relative Quality Index as a differentiable, exactly antisymmetric training loss."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from .._checks import (
    check_choice,
    check_generator,
    check_image_pair,
    check_positive_int,
    check_seed,
)
from .._errors import ArgumentError, DTypeError
from .._frozen import exclude_from_state_dict, mark_frozen
from .._vocab import RQI_EMBEDDINGS
from ..functional import rqi_loss, rqi_score
from ..rqi import (
    CROP_MODES,
    RELEASED_WEIGHTS,
    BackbonePairModel,
    RQIHead,
    aligned_crop,
    create_maniqa_rqi,
)
from ._base import ImageLoss

logger = logging.getLogger(__name__)

_HALF = (torch.float16, torch.bfloat16)
_STOCHASTIC = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout)


def _same_randomness(compare: Any, device: torch.device) -> Any:
    """``compare`` whose first call restores the random state: dropout draws the same masks
    for ``g(a, b)`` and ``g(b, a)``."""
    calls: list[None] = []

    def replaying(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        if calls:
            return compare(a, b)
        calls.append(None)
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            return compare(a, b)

    return replaying


class RQILoss(ImageLoss):
    """Relative Quality Index loss (Su et al., arXiv 2503.13074): how much better or worse
    ``sr`` looks than ``gt``.

    :meth:`score` is :func:`percepfid.functional.rqi_score`: antisymmetric by construction,
    ``score(a, b) == -score(b, a)`` and ``score(x, x) == 0`` exactly (``antisymmetric=False``
    gives the raw model ``g``, which is not). The loss is ``weight * reduce(-score(sr, gt))``
    (:func:`~percepfid.functional.rqi_loss`): lower is better, below zero when SR looks
    better than GT. With ``train_head=True`` a head with dropout draws the same masks for
    ``g(a, b)`` and ``g(b, a)``, so this holds in train mode too.

    The model is either the released MANIQA-RQI trained on PIPAL (``backbone=None``; Hub
    repo ``shaolin999/rqi``, licence not stated by the authors; 224 x 224 crops, smaller
    images are upsampled first) or a backbone with a two-input ``head``
    (:class:`~percepfid.rqi.RQIHead` or any ``head(e_a, e_b) -> (B,)``, trained with
    :func:`percepfid.train.train_rqi`) at any resolution. It is frozen (also after
    ``requires_grad_(True)``) and stays in ``eval()``; its frozen weights are left out of
    ``state_dict()`` (a checkpoint holds only the head); gradients flow to ``sr`` only.
    Images of any floating dtype are accepted (half precision is cropped in float32, then
    cast to the model's dtype) and must share the model's device; scores are at least
    float32, also under a bfloat16 ``torch.autocast``.

    Args:
        backbone: ``None`` for the released MANIQA-RQI, or a backbone name / module.
        head: with a backbone: a module, or a path / Hub repo id of a saved
            :class:`~percepfid.rqi.RQIHead`. ``None`` builds an untrained head (a warning
            is logged; train it with :func:`~percepfid.train.train_rqi`).
        pretrained: load the released weights (or the backbone's); ``False``: random (tests).
        antisymmetric: antisymmetrise the model (default) or use it raw.
        reduction: ``'mean'``, ``'sum'`` or ``'none'``.
        weight: multiplier of the loss (papers use about 0.1 next to a pixel loss).
        input_range: the value range of the images.
        crop: how images are brought to ``crop_size``: ``'random'`` aligned crops,
            ``'center'``, or ``'squash'`` (the whole image resized).
        crop_size: the side of the model input; default 224 for the released model and
            ``None`` (whole image, resized by the backbone) with a backbone.
        generator: CPU generator for the random crops; default a private one seeded with
            ``seed`` (the global RNG is never used).
        seed: seed of the default generator, an int in ``[0, 2**64)``.
        embedding: with a backbone: ``'cls'`` (pooled) or ``'patch'`` (aligned tokens).
        train_head: keep the head trainable (the trainer does); by default all is frozen.
        weights: the manifest name or local file of the released checkpoint.
        model_kwargs: architecture overrides of :class:`~percepfid.rqi.MANIQARQI` (small
            configurations for tests; the released weights fit only the defaults).

    Shape:
        - sr, gt: ``(B, 3, H, W)`` in ``input_range``, any ``H, W``.
        - output: scalar, or ``(B,)`` with ``reduction='none'``.

    Raises:
        ShapeError, DTypeError, RangeError: bad images (at call time).
        ArgumentError: bad settings.
        WeightsError: pretrained weights missing offline (the message gives the fix).

    Example:
        >>> small = dict(img_size=32, vit_kwargs=dict(embed_dim=32, depth=4, num_heads=2),
        ...              feature_indices=(0, 1, 2, 3), embed_dim=32, window_size=2,
        ...              num_heads=(2, 2), dim_mlp=32)
        >>> loss_fn = RQILoss(pretrained=False, model_kwargs=small)  # random weights
        >>> sr = torch.rand(2, 3, 48, 40, requires_grad=True)
        >>> loss = loss_fn(sr, torch.rand(2, 3, 48, 40))
        >>> loss.backward()
        >>> loss_fn.score(sr, sr).abs().max().item()
        0.0
    """

    def __init__(
        self,
        backbone: str | nn.Module | None = None,
        *,
        head: nn.Module | str | os.PathLike | None = None,
        pretrained: bool = True,
        antisymmetric: bool = True,
        reduction: str = "mean",
        weight: float = 1.0,
        input_range: Sequence[float] = (0.0, 1.0),
        crop: str = "random",
        crop_size: int | None = None,
        generator: torch.Generator | None = None,
        seed: int = 0,
        embedding: str = "cls",
        train_head: bool = False,
        weights: str | os.PathLike = RELEASED_WEIGHTS,
        model_kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(reduction=reduction, weight=weight, input_range=input_range)
        self.crop = check_choice(crop, "crop", CROP_MODES)
        self.antisymmetric = bool(antisymmetric)
        self.seed = check_seed(seed)
        self.generator = check_generator(generator, self.seed)

        if backbone is None:
            if head is not None:
                raise ArgumentError(
                    "head= needs backbone= (the released MANIQA-RQI has its own head); got backbone=None"
                )
            self.model: nn.Module = create_maniqa_rqi(
                pretrained, weights, **dict(model_kwargs or {})
            )
            mark_frozen(self.model)
            # on the loss, so that self.model.state_dict() stays full
            exclude_from_state_dict(self, "model")
        else:
            if model_kwargs:
                raise ArgumentError(
                    "model_kwargs applies to the released model only (backbone=None)"
                )
            from ..backbones import create_backbone

            embedding = check_choice(embedding, "embedding", RQI_EMBEDDINGS)
            encoder = create_backbone(backbone, pretrained=pretrained)
            self.model = BackbonePairModel(
                encoder, self._build_head(head, encoder, embedding), embedding
            )
            if not train_head:
                mark_frozen(self.model.head)
        self.train_head = bool(train_head) and backbone is not None
        fixed = self.model.img_size  # the released model's input side; None with a backbone
        if crop_size is not None:
            crop_size = check_positive_int(crop_size, "crop_size")
            if fixed is not None and crop_size != fixed:
                raise ArgumentError(
                    f"the MANIQA-RQI model takes {fixed} x {fixed} crops; got crop_size={crop_size}"
                )
        self.crop_size = fixed if crop_size is None else crop_size
        self.train(self.training)

    @staticmethod
    def _build_head(head: Any, encoder: nn.Module, embedding: str) -> nn.Module:
        if isinstance(head, nn.Module):
            return head
        if isinstance(head, (str, os.PathLike)):
            return RQIHead.from_pretrained(os.fspath(head))
        if head is not None:
            raise DTypeError(
                f"head must be an nn.Module, a path or a Hub repo id; got {type(head).__name__}"
            )
        width = getattr(encoder, "token_dim" if embedding == "patch" else "embed_dim", None)
        if not width:
            raise ArgumentError(
                f"cannot size a default RQIHead: the backbone reports no {embedding} width; pass head="
            )
        logger.warning(
            "RQILoss: no head given, using an untrained RQIHead(%d); its scores mean nothing until "
            "it is trained with percepfid.train.train_rqi",
            width,
        )
        return RQIHead(int(width))

    def train(self, mode: bool = True) -> RQILoss:
        super().train(mode)
        if isinstance(self.model, BackbonePairModel):
            self.model.head.train(mode and self.train_head)
        else:
            self.model.eval()
        return self

    def pair_score(
        self, sr: torch.Tensor, gt: torch.Tensor, *, antisymmetric: bool | None = None
    ) -> torch.Tensor:
        """Score ``[0, 1]`` images ``(B, 3, h, w)`` already at the model's input size (no
        checks, no crop), optionally overriding ``antisymmetric``."""
        flag = self.antisymmetric if antisymmetric is None else antisymmetric
        sr, gt = self._to_model(sr, gt)
        compare = self.model.compare
        if flag and self._head_is_random():
            compare = _same_randomness(compare, sr.device)
        score = rqi_score(self.model.features, compare, sr, gt, antisymmetric=flag)
        # at least float32 (a bf16 autocast region or a half model still gives fp32 scores)
        return score.to(torch.promote_types(score.dtype, torch.float32))

    def _head_is_random(self) -> bool:
        """A head in train mode with stochastic layers (dropout) draws random numbers."""
        if torch.compiler.is_compiling() or not isinstance(self.model, BackbonePairModel):
            return False
        return any(
            module.training and isinstance(module, _STOCHASTIC) and getattr(module, "p", 0) > 0
            for module in self.model.head.modules()
        )

    def _to_model(self, sr: torch.Tensor, gt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``sr`` and ``gt`` on the model's device, cast to its parameter dtype."""
        reference = next((p for p in self.model.parameters() if p.is_floating_point()), None)
        if reference is None:
            return sr, gt
        for name, x in (("sr", sr), ("gt", gt)):
            if x.device != reference.device:
                raise DTypeError(
                    f"{name} is on {x.device} but the RQI model is on {reference.device}; "
                    f"move the loss with .to({str(x.device)!r}) or the images to "
                    f"{str(reference.device)!r}"
                )
        return sr.to(reference.dtype), gt.to(reference.dtype)

    def score(
        self,
        sr: torch.Tensor,
        gt: torch.Tensor,
        *,
        generator: torch.Generator | None = None,
        offsets: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Relative quality of ``sr`` with respect to the reference ``gt``, one value per image.

        Args:
            sr: ``(B, 3, H, W)`` images (gradients flow to them).
            gt: aligned references of the same shape (no autograd).
            generator: crop positions for this call; default the loss's own generator.
            offsets: ``crop='random'`` only: ``(B, 2)`` crop positions drawn beforehand
                with :class:`~percepfid.rqi.CropSampler` (needed under ``torch.compile``).

        Returns:
            ``(B,)``: > 0 when ``sr`` looks better than ``gt``; antisymmetric in
            ``(sr, gt)`` unless ``antisymmetric=False``.
        """
        check_image_pair(sr, gt, ("sr", "gt"), input_range=self.input_range)
        # half / bfloat16 images are cropped and resized in float32 (the CPU has no half
        # resampling kernels); pair_score casts them to the model's dtype
        sr, gt = (self.to_unit(x.float() if x.dtype in _HALF else x) for x in (sr, gt))
        if self.crop_size is not None:
            generator = self.generator if generator is None else generator
            sr, gt = aligned_crop(
                sr, gt, self.crop_size, mode=self.crop, generator=generator, offsets=offsets
            )
        elif offsets is not None:
            raise ArgumentError("offsets= needs crop_size (this RQILoss does not crop)")
        return self.pair_score(sr, gt)

    def forward(
        self, sr: torch.Tensor, gt: torch.Tensor, *, offsets: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``weight * reduce(-score(sr, gt, offsets=offsets))``: lower is better.

        Returns:
            A scalar, or ``(B,)`` with ``reduction='none'``.
        """
        score = self.score(sr, gt, offsets=offsets)
        return rqi_loss(score, weight=self.weight, reduction=self.reduction)

    def extra_repr(self) -> str:
        pair = isinstance(self.model, BackbonePairModel)
        kind = f"backbone+head({self.model.embedding})" if pair else "maniqa-rqi"
        return (
            f"model={kind}, antisymmetric={self.antisymmetric}, crop={self.crop!r}, "
            f"crop_size={self.crop_size}, " + super().extra_repr()
        )
