"""HLFLoss: high-level (semantic) fidelity of SR outputs to their ground truth."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from .._checks import check_choice, check_image, check_image_pair, check_positive
from .._errors import ArgumentError, DTypeError, ShapeError
from .._frozen import mark_frozen
from .._vocab import EMBEDDINGS, KERNEL_BACKENDS
from ..backbones import Backbone, Embeddings, create_backbone
from ..functional import embedding_fidelity, fidelity_loss
from ..heads import load_head
from ._base import ImageLoss


@dataclass(frozen=True)
class ReferenceEmbedding:
    """GT embeddings computed once by :meth:`HLFLoss.embed_reference` (no autograd), to pass
    in place of ``gt`` across steps or candidates. Keyed by everything that determines its
    value (:meth:`HLFLoss.reference_key`): a loss whose key differs refuses it."""

    pooled: torch.Tensor
    tokens: torch.Tensor | None
    backbone: str
    embedding: str
    crop: str | None
    image_shape: tuple[int, ...]
    key: tuple = field(default=(), repr=False, compare=False)

    def __len__(self) -> int:
        return self.pooled.shape[0]


class HLFLoss(ImageLoss):
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
        head: a calibration head ``head(cosine, sr_pooled, gt_pooled)`` -> ``[0, 1]`` (see
            :class:`~percepfid.heads.CalibrationHead`): a module, used as given, or a
            ``save_pretrained`` folder or Hub repo id, loaded frozen with the backbone blocks
            fine-tuned with it (into a copy of a backbone passed as a module).
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
        super().__init__(reduction=reduction, weight=weight, input_range=input_range)
        self.embedding = check_choice(embedding, "embedding", EMBEDDINGS)
        self.eps = check_positive(eps, "eps")
        self.kernel = check_choice(kernel, "kernel", KERNEL_BACKENDS)
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
            head = mark_frozen(load_head(head).eval())
        if head is not None and not isinstance(head, nn.Module):
            raise DTypeError(
                f"head must be an nn.Module, a folder or a Hub repo id; got {type(head).__name__}"
            )
        update = getattr(head, "backbone_update", None)
        fitted_on = (getattr(head, "fitted_on", None) or {}).get("backbone")
        if update is not None:  # update.apply checks the backbone, more precisely
            if isinstance(backbone, nn.Module):  # the caller's module: do not change it
                self.backbone = copy.deepcopy(self.backbone)
            update.apply(self.backbone)
        elif fitted_on not in (None, self.backbone.spec.name):
            raise ArgumentError(
                f"this head was fitted on backbone {fitted_on!r}; it cannot be used with "
                f"backbone {self.backbone.spec.name!r}. Pass backbone={fitted_on!r}, or fit a "
                "head on this backbone."
            )
        self.head = head
        if isinstance(backbone, str) and pretrained and update is None:
            # the released weights: the same for every loss built from this spec
            self._weights_identity: tuple = ("pretrained", self.backbone.spec.name)
        else:  # random weights, a user's module, fine-tuned blocks: this module only
            self._weights_identity = ("module", id(self.backbone.encoder))

    # ------------------------------------------------------------------ embeddings

    def encode(self, images: torch.Tensor) -> Embeddings:
        """Backbone embeddings of images in ``input_range`` (with autograd; no checks)."""
        return self.backbone.encode(images, self.crop)

    @torch.no_grad()
    def embed_reference(self, gt: torch.Tensor) -> ReferenceEmbedding:
        """Embed GT images ``(B, 3, H, W)`` once, without autograd: a
        :class:`ReferenceEmbedding` to pass as ``gt`` to :meth:`forward` / :meth:`fidelity`."""
        check_image(gt, "gt", input_range=self.input_range)
        out = self.encode(gt)
        return ReferenceEmbedding(
            pooled=out.pooled,
            tokens=out.tokens if self.embedding != "cls" else None,
            backbone=self.backbone.spec.name,
            embedding=self.embedding,
            crop=self.crop,
            image_shape=tuple(gt.shape),
            key=self.reference_key(),
        )

    def reference_key(self) -> tuple:
        """What determines a :class:`ReferenceEmbedding`'s value under this loss: backbone
        spec, weights (the pretrained release, or this very module), preprocessing, input
        range, crop and embedding."""
        preprocess = self.backbone.preprocess
        config = None if preprocess is None else (preprocess.config, preprocess.input_range)
        return (
            self.backbone.spec.name,
            self._weights_identity,
            config,
            self.input_range,
            self.crop,
            self.embedding,
        )

    def embed_pair(
        self, sr: torch.Tensor, gt: torch.Tensor | ReferenceEmbedding
    ) -> tuple[Embeddings, Embeddings]:
        """Check a pair once and embed it: ``sr`` ``(B, 3, H, W)`` with autograd, ``gt`` (the
        same shape, or a :class:`ReferenceEmbedding` of it) without."""
        if isinstance(gt, ReferenceEmbedding):
            check_image(sr, "sr", input_range=self.input_range)
            return self.encode(sr), self._stored_reference(gt, sr)
        check_image_pair(sr, gt, ("sr", "gt"), input_range=self.input_range)
        with torch.no_grad():
            reference = self.encode(gt)
        return self.encode(sr), reference

    def _stored_reference(self, gt: ReferenceEmbedding, sr: torch.Tensor) -> Embeddings:
        ours = self.reference_key()
        if gt.key != ours:
            parts = ("backbone", "weights", "preprocessing", "input_range", "crop", "embedding")
            theirs = gt.key or (None,) * len(parts)
            differ = ", ".join(p for p, a, b in zip(parts, theirs, ours, strict=True) if a != b)
            raise ArgumentError(
                f"gt is a ReferenceEmbedding made under another {differ} "
                f"(backbone={gt.backbone!r}, embedding={gt.embedding!r}, crop={gt.crop!r}); "
                f"this loss uses {self.backbone.spec.name!r}, {self.embedding!r}, "
                f"{self.crop!r}. Re-embed it with this loss's embed_reference(gt)."
            )
        if gt.image_shape != tuple(sr.shape):
            raise ShapeError(
                f"sr has shape {tuple(sr.shape)} but the reference embedding was made from "
                f"gt of shape {gt.image_shape}"
            )
        return Embeddings(gt.pooled, gt.tokens)

    # --------------------------------------------------------------------- scores

    def compare(self, current: Embeddings, reference: Embeddings) -> torch.Tensor:
        """Cosine fidelity ``(B,)`` of two batches of embeddings, per ``embedding``."""
        return embedding_fidelity(
            current, reference, self.embedding, eps=self.eps, backend=self.kernel
        )

    def apply_head(
        self, cosine: torch.Tensor, current: Embeddings, reference: Embeddings
    ) -> torch.Tensor:
        """The head's predicted fidelity ``head(cosine, sr_pooled, gt_pooled)``; the cosine
        itself when there is no head."""
        if self.head is None:
            return cosine
        return self.head(cosine, current.pooled, reference.pooled)

    def cosine(self, sr: torch.Tensor, gt: torch.Tensor | ReferenceEmbedding) -> torch.Tensor:
        """Raw cosine fidelity ``(B,)`` in ``[-1, 1]`` (no head)."""
        return self.compare(*self.embed_pair(sr, gt))

    def fidelity(self, sr: torch.Tensor, gt: torch.Tensor | ReferenceEmbedding) -> torch.Tensor:
        """Per-image fidelity ``(B,)``, higher = more faithful: the cosine in ``[-1, 1]``, or
        the head's predicted human fidelity in ``[0, 1]``."""
        current, reference = self.embed_pair(sr, gt)
        return self.apply_head(self.compare(current, reference), current, reference)

    def forward(self, sr: torch.Tensor, gt: torch.Tensor | ReferenceEmbedding) -> torch.Tensor:
        """``weight * reduce(1 - fidelity(sr, gt))``: 0 for a perfect match, lower is better."""
        return fidelity_loss(self.fidelity(sr, gt), weight=self.weight, reduction=self.reduction)

    def extra_repr(self) -> str:
        return f"embedding={self.embedding!r}, crop={self.crop!r}, " + super().extra_repr()
