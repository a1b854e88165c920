"""CLIP-IQA: zero-shot quality from CLIP's agreement with an antonym prompt pair.

Wang, Chan and Loy, "Exploring CLIP for Assessing the Look and Feel of Images" (AAAI 2023):
score = softmax(s * [cos(img, "Good photo."), cos(img, "Bad photo.")])[0], with ``s`` the
CLIP logit scale. The open_clip model comes from the backbone registry; only its image
tower, the prompt embeddings and the logit scale are kept.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from .._checks import check_int
from .._errors import ArgumentError, DTypeError
from ..backbones import Backbone, create_clip_backbone
from ._base import NRIQAModel

#: The CLIP-IQA antonym pair (positive first).
DEFAULT_PROMPTS: tuple[tuple[str, str], ...] = (("Good photo.", "Bad photo."),)


class CLIPIQA(NRIQAModel):
    """CLIP-IQA no-reference quality: the probability CLIP gives the positive prompt.

    Args:
        model: the open_clip architecture (default ``'RN50'``, the CLIP-IQA paper's choice).
        pretrained: an open_clip pretrained tag (default ``'openai'``) or ``None`` for
            random weights (no download; for tests and plumbing, scores mean nothing).
        prompts: ``(positive, negative)`` antonym pairs; with several pairs the score is
            the mean of the per-pair probabilities (CLIP-IQA+ style attributes).
        image_size: the side the image tower runs at; images are resized to it with
            antialiased bilinear interpolation (differentiable). Default: the
            architecture's native size (224).
        input_range: value range of the input images.

    Shape:
        - images: ``(B, 3, H, W)`` in ``input_range``, any ``H, W``.
        - output: ``(B,)`` in ``[0, 1]``, higher is better.

    Example:
        >>> iqa = CLIPIQA("ViT-S-32", pretrained=None, image_size=32)
        >>> iqa(torch.rand(2, 3, 40, 48)).shape
        torch.Size([2])
    """

    higher_is_better = True
    score_range = (0.0, 1.0)

    def __init__(
        self,
        model: str = "RN50",
        pretrained: str | None = "openai",
        *,
        prompts: Sequence[Sequence[str]] = DEFAULT_PROMPTS,
        image_size: int | None = None,
        input_range: Sequence[float] = (0.0, 1.0),
    ) -> None:
        super().__init__(input_range)
        if pretrained is not None and not isinstance(pretrained, str):
            raise DTypeError(
                f"pretrained must be an open_clip tag such as 'openai' or None; got {pretrained!r}"
            )
        if isinstance(prompts, str) or not isinstance(prompts, Sequence) or not prompts:
            raise ArgumentError(
                "prompts must be a non-empty list of (positive, negative) pairs such as "
                f"[('Good photo.', 'Bad photo.')]; got {prompts!r}"
            )
        for pair in prompts:
            if (
                isinstance(pair, str)
                or not isinstance(pair, Sequence)
                or len(pair) != 2
                or not all(isinstance(p, str) and p.strip() for p in pair)
            ):
                raise ArgumentError(
                    "each prompt must be a (positive, negative) pair of non-empty strings; "
                    f"got {pair!r}"
                )
        pairs = tuple((pair[0], pair[1]) for pair in prompts)
        if image_size is not None:
            check_int(image_size, "image_size", minimum=8)
        towers = create_clip_backbone(
            f"open_clip:{model}/{pretrained}" if pretrained else f"open_clip:{model}",
            [prompt for pair in pairs for prompt in pair],
            pretrained=pretrained is not None,
            image_size=image_size,
            # CLIP-IQA squashes the whole image to the tower's square input (no crop).
            crop="squash",
            interpolation="bilinear",
        )
        self.visual: Backbone = towers.backbone
        self.register_buffer("text_embeddings", towers.text_embeddings.reshape(len(pairs), 2, -1))
        self.register_buffer("logit_scale", towers.logit_scale)
        self.arch = model
        self.pretrained_tag = pretrained
        self.prompts = pairs
        self.image_size = self.visual.image_size[0]
        self.name = f"clipiqa:{model}/{pretrained or 'random'}"
        self.freeze()

    def score(self, images: torch.Tensor) -> torch.Tensor:
        features = F.normalize(self.visual(images).float(), dim=-1)
        logits = self.logit_scale * torch.einsum("bd,pkd->bpk", features, self.text_embeddings)
        return logits.softmax(dim=-1)[..., 0].mean(dim=-1)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, prompts={list(self.prompts)}, image_size={self.image_size}"
