"""HLFLoss: high-level (semantic) fidelity of SR outputs to their ground truth."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .._checks import (
    check_choice,
    check_image,
    check_image_pair,
    check_input_range,
    check_positive,
    check_reduction,
)
from .._errors import ArgumentError, DTypeError, ShapeError
from ..backbones import EMBEDDINGS, Backbone, Embeddings, create_backbone
from ..functional._reduction import reduce_loss
from ..functional.hlf import high_level_fidelity
from ..heads import load_head


@dataclass(frozen=True)
class ReferenceEmbedding:
    """GT embeddings computed once by :meth:`HLFLoss.embed_reference` (no autograd).

    Pass it in place of ``gt`` to reuse a reference across steps or candidates.
    """

    pooled: torch.Tensor
    tokens: torch.Tensor | None
    backbone: str
    embedding: str
    crop: str | None
    image_shape: tuple[int, ...]

    def __len__(self) -> int:
        return self.pooled.shape[0]


class HLFLoss(nn.Module):
    """High-level fidelity loss (Rocafort et al., arXiv 2512.07037).

    ``fidelity(sr, gt) = cos(phi(sr), phi(gt))`` with ``phi`` a frozen foundation model
    (optionally mapped to predicted human fidelity by a calibration ``head``), and
    ``forward(sr, gt) = weight * reduce(1 - fidelity)``. The GT branch runs without
    autograd; only ``sr`` gets gradients. The paper adds it to the SR loss with
    ``weight=0.01``.

    Args:
        backbone: a registered name (``'dinov2'``, ``'clip'``, ``'pe-core'``, ``'blip'``,
            ...; see :func:`percepfid.backbones.list_backbones`), a full spec, or an
            ``nn.Module`` following the backbone protocol.
        pretrained: load the backbone's Hub weights; ``False`` gives random weights (tests).
        embedding: ``'cls'`` (pooled embedding), ``'patch'`` (mean of per-token cosines
            over aligned patch tokens) or ``'cls+patch'`` (the mean of both fidelities).
        crop: ``'center'``, ``'squash'`` or ``'tiles'`` (mean over aligned tiles, so
            nothing at the border is cropped away); default: the backbone's own.
        head: a calibration head (module, ``save_pretrained`` folder or Hub repo id)
            mapping the cosine to predicted human fidelity in ``[0, 1]``. A head fitted
            with fine-tuned backbone blocks (``fit_hlf_head(unfreeze_blocks=N)``) carries
            them, and they are loaded into this loss's backbone (a backbone passed as a
            module is copied first, never changed in place). A head loaded from a folder
            or repo is frozen; a module is used as given.
        reduction: ``'mean'``, ``'sum'`` or ``'none'``.
        weight: scale of the loss.
        input_range: value range of ``sr`` and ``gt``.
        eps: lower bound on embedding norms in the cosine.
        image_size: override the backbone input size (e.g. small sizes in tests).
        kernel: cosine kernel backend, ``'auto'``, ``'torch'`` or ``'triton'``.

    Shape:
        - sr, gt: ``(B, 3, H, W)`` in ``input_range``, any ``H, W``.
        - output: scalar, or ``(B,)`` with ``reduction='none'``.

    Example:
        >>> loss = HLFLoss("timm:vit_tiny_patch16_224.augreg_in21k", pretrained=False, image_size=32)
        >>> sr = torch.rand(2, 3, 40, 48, requires_grad=True)
        >>> loss(sr, torch.rand(2, 3, 40, 48)).backward()
    """

    higher_is_better = False
    is_differentiable = True

    def __init__(
        self,
        backbone: str | nn.Module = "dinov2",
        *,
        pretrained: bool = True,
        embedding: str = "cls",
        crop: str | None = None,
        head: nn.Module | str | Path | None = None,
        reduction: str = "mean",
        weight: float = 1.0,
        input_range: tuple[float, float] = (0.0, 1.0),
        eps: float = 1e-8,
        image_size: int | tuple[int, int] | None = None,
        kernel: str = "auto",
    ) -> None:
        super().__init__()
        self.embedding = check_choice(embedding, "embedding", EMBEDDINGS)
        self.reduction = check_reduction(reduction)
        self.weight = check_positive(weight, "weight", allow_zero=True)
        self.input_range = check_input_range(input_range)
        self.eps = check_positive(eps, "eps")
        self.kernel = check_choice(kernel, "kernel", ("auto", "torch", "triton"))
        self.crop = crop
        self.backbone: Backbone = create_backbone(
            backbone, pretrained, image_size=image_size, crop=crop, input_range=self.input_range
        )
        if (
            self.embedding != "cls"
            and self.backbone.token_dim is None
            and self.backbone.preprocess is not None
        ):
            raise ArgumentError(
                f"embedding={embedding!r} needs patch tokens; backbone {self.backbone.spec.name!r} has none"
            )
        if isinstance(head, (str, Path)):  # a fitted head: frozen, like the backbone
            head = load_head(head).eval().requires_grad_(False)
        if head is not None and not isinstance(head, nn.Module):
            raise DTypeError(
                f"head must be an nn.Module, a folder or a Hub repo id; got {type(head).__name__}"
            )
        update = getattr(head, "backbone_update", None)
        if update is not None:
            if isinstance(backbone, nn.Module):  # the caller's module: do not change it
                self.backbone = copy.deepcopy(self.backbone)
            update.apply(self.backbone)
        self.head = head

    # ------------------------------------------------------------------ embeddings

    def _encode(self, images: torch.Tensor) -> Embeddings:
        return self.backbone.encode(images, self.crop)

    @torch.no_grad()
    def embed_reference(self, gt: torch.Tensor) -> ReferenceEmbedding:
        """Embed GT images once, without autograd, for reuse across steps or candidates.

        Args:
            gt: ``(B, 3, H, W)`` in ``input_range``.

        Returns:
            A :class:`ReferenceEmbedding` to pass as ``gt`` to :meth:`forward` / :meth:`fidelity`.
        """
        check_image(gt, "gt", input_range=self.input_range)
        out = self._encode(gt)
        return ReferenceEmbedding(
            pooled=out.pooled,
            tokens=out.tokens if self.embedding != "cls" else None,
            backbone=self.backbone.spec.name,
            embedding=self.embedding,
            crop=self.crop,
            image_shape=tuple(gt.shape),
        )

    def _reference(self, gt: torch.Tensor | ReferenceEmbedding, sr: torch.Tensor) -> Embeddings:
        if isinstance(gt, ReferenceEmbedding):
            if (
                gt.backbone != self.backbone.spec.name
                or gt.embedding != self.embedding
                or gt.crop != self.crop
            ):
                raise ArgumentError(
                    f"gt is a ReferenceEmbedding of backbone={gt.backbone!r}, embedding={gt.embedding!r}, "
                    f"crop={gt.crop!r}; this loss uses {self.backbone.spec.name!r}, {self.embedding!r}, "
                    f"{self.crop!r}. Re-embed it with this loss's embed_reference(gt)."
                )
            if gt.image_shape != tuple(sr.shape):
                raise ShapeError(
                    f"sr has shape {tuple(sr.shape)} but the reference embedding was made from "
                    f"gt of shape {gt.image_shape}"
                )
            return Embeddings(gt.pooled, gt.tokens)
        check_image_pair(sr, gt, ("sr", "gt"), input_range=self.input_range)
        with torch.no_grad():
            return self._encode(gt)

    # --------------------------------------------------------------------- scores

    def cosine(self, sr: torch.Tensor, gt: torch.Tensor | ReferenceEmbedding) -> torch.Tensor:
        """Raw cosine fidelity ``(B,)`` in ``[-1, 1]`` (no head)."""
        return self._cosine_and_embeddings(sr, gt)[0]

    def _cosine_and_embeddings(self, sr, gt):
        if not isinstance(gt, ReferenceEmbedding):
            check_image(sr, "sr", input_range=self.input_range)
        reference = self._reference(gt, sr)
        if isinstance(gt, ReferenceEmbedding):
            check_image(sr, "sr", input_range=self.input_range)
        current = self._encode(sr)
        return self.compare(current, reference), current, reference

    def compare(self, current: Embeddings, reference: Embeddings) -> torch.Tensor:
        """Cosine fidelity ``(B,)`` of two batches of embeddings, per ``embedding``."""
        return _cosine_of(current, reference, self.embedding, eps=self.eps, backend=self.kernel)

    def apply_head(
        self, cosine: torch.Tensor, current: Embeddings, reference: Embeddings
    ) -> torch.Tensor:
        """The head's predicted fidelity from the cosine (and, for a head with a
        ``features`` method such as :class:`~percepfid.heads.MLPCalibrationHead`, both
        pooled embeddings); the cosine itself when there is no head."""
        if self.head is None:
            return cosine
        features = getattr(self.head, "features", None)
        if callable(features):
            return self.head(features(cosine, current.pooled, reference.pooled))
        return self.head(cosine)

    def fidelity(self, sr: torch.Tensor, gt: torch.Tensor | ReferenceEmbedding) -> torch.Tensor:
        """Per-image fidelity ``(B,)``, higher = more faithful.

        The cosine in ``[-1, 1]``, or the head's predicted human fidelity in ``[0, 1]``.
        """
        return self.apply_head(*self._cosine_and_embeddings(sr, gt))

    def forward(self, sr: torch.Tensor, gt: torch.Tensor | ReferenceEmbedding) -> torch.Tensor:
        """``weight * reduce(1 - fidelity(sr, gt))``: 0 for a perfect match, lower is better."""
        return self.weight * reduce_loss(1.0 - self.fidelity(sr, gt), self.reduction)

    def extra_repr(self) -> str:
        return (
            f"embedding={self.embedding!r}, crop={self.crop!r}, reduction={self.reduction!r}, "
            f"weight={self.weight}, input_range={self.input_range}"
        )


def hlf_fidelity(
    sr: torch.Tensor,
    gt: torch.Tensor,
    backbone: Backbone,
    *,
    embedding: str = "cls",
    crop: str | None = None,
    eps: float = 1e-8,
) -> torch.Tensor:
    """Functional form: cosine fidelity ``(B,)`` of ``sr`` to ``gt`` under a frozen backbone.

    Args:
        sr: ``(B, 3, H, W)``, gets gradients.
        gt: same shape; embedded without autograd.
        backbone: a :class:`~percepfid.backbones.Backbone` (see ``create_backbone``).
        embedding: ``'cls'``, ``'patch'`` or ``'cls+patch'``.
        crop: crop mode, default the backbone's own.
        eps: lower bound on the norms.
    """
    check_choice(embedding, "embedding", EMBEDDINGS)
    with torch.no_grad():
        reference = backbone.encode(gt, crop)
    return _cosine_of(backbone.encode(sr, crop), reference, embedding, eps=eps)


def _cosine_of(
    current: Embeddings, reference: Embeddings, embedding: str, **kwargs
) -> torch.Tensor:
    """Cosine of pooled embeddings, of patch tokens, or the mean of both."""
    if embedding == "cls":
        return high_level_fidelity(current.pooled, reference.pooled, **kwargs)
    if embedding == "patch":
        return high_level_fidelity(current.tokens, reference.tokens, **kwargs)
    return 0.5 * (
        high_level_fidelity(current.pooled, reference.pooled, **kwargs)
        + high_level_fidelity(current.tokens, reference.tokens, **kwargs)
    )
