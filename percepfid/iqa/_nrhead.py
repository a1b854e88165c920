"""A small regression head on a frozen backbone, fitted to mean opinion scores (MOS)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .._checks import check_input_range
from ..heads import HubHead
from ._base import NRIQAModel


class NRHead(HubHead):
    """An MLP regression head on a registered backbone: image -> predicted MOS.

    The backbone is frozen and left out of ``state_dict()``, so ``save_pretrained`` writes
    only the head (``config.json`` + ``model.safetensors``) and ``from_pretrained`` rebuilds
    the backbone from its recorded name. Train one with :func:`percepfid.train.train_nr_head`.

    Args:
        backbone: a registered backbone name or full spec (``'dinov2'``,
            ``'timm:vit_tiny_patch16_224.augreg_in21k'``).
        hidden: width of the hidden layer (0: a linear head).
        image_size: the backbone's input side, or ``None`` for its native size.
        pretrained_backbone: load the backbone's weights (``False``: random, tests only).
        score_range: the MOS range of the training data, reported as ``score_range``.
        higher_is_better: whether a larger MOS means better quality.

    Shape:
        - images: ``(B, 3, H, W)`` in ``[0, 1]``.
        - output: ``(B,)`` on the MOS scale.
    """

    def __init__(
        self,
        backbone: str = "dinov2",
        hidden: int = 256,
        image_size: int | None = None,
        pretrained_backbone: bool = True,
        score_range: Sequence[float] | None = None,
        higher_is_better: bool = True,
    ) -> None:
        super().__init__()
        from ..backbones import create_backbone

        self.backbone = create_backbone(
            backbone, pretrained=pretrained_backbone, image_size=image_size
        )
        dim = self.backbone.embed_dim
        layers = [nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, 1)] if hidden else []
        self.mlp = nn.Sequential(*(layers or [nn.Linear(dim, 1)]))
        self.backbone_name = backbone
        self.score_range = check_input_range(score_range, "score_range", finite=False)
        self.higher_is_better = bool(higher_is_better)
        # the MLP predicts standardised MOS; these buffers map it back (set by the trainer)
        self.register_buffer("target_mean", torch.zeros(()))
        self.register_buffer("target_std", torch.ones(()))

    def head(self, embeddings: torch.Tensor) -> torch.Tensor:
        """Predicted MOS from backbone embeddings ``(B, D)`` -> ``(B,)``."""
        return self.mlp(embeddings).squeeze(-1) * self.target_std + self.target_mean

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(images))


class NRHeadIQA(NRIQAModel):
    """Expose an :class:`NRHead` through the NR-IQA interface (validation, eval lock)."""

    def __init__(self, head: NRHead, input_range: Sequence[float] = (0.0, 1.0)) -> None:
        super().__init__(input_range)
        self.head = head
        self.higher_is_better = head.higher_is_better
        self.score_range = head.score_range
        self.name = f"nr-head:{head.backbone_name}"
        self.freeze()

    def score(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(images)
