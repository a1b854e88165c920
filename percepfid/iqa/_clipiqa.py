"""CLIP-IQA: zero-shot quality from CLIP's agreement with an antonym prompt pair.

Wang, Chan and Loy, "Exploring CLIP for Assessing the Look and Feel of Images" (AAAI 2023):
score = softmax(s * [cos(img, "Good photo."), cos(img, "Bad photo.")])[0], with ``s`` the
CLIP logit scale. Built on open_clip; the text tower runs once at construction and is
dropped, only the image tower and the prompt embeddings (a buffer) are kept.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .._errors import ArgumentError, DTypeError, UnknownNameError, WeightsError
from .._imports import require
from ._base import NRIQAModel

__all__ = ["CLIPIQA", "DEFAULT_PROMPTS"]

logger = logging.getLogger(__name__)

#: The CLIP-IQA antonym pair (positive first).
DEFAULT_PROMPTS: tuple[tuple[str, str], ...] = (("Good photo.", "Bad photo."),)
_OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
_OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


def _check_prompts(prompts: Sequence[Sequence[str]]) -> tuple[tuple[str, str], ...]:
    if isinstance(prompts, str) or not isinstance(prompts, Sequence) or not prompts:
        raise ArgumentError(
            "prompts must be a non-empty list of (positive, negative) pairs such as "
            f"[('Good photo.', 'Bad photo.')]; got {prompts!r}"
        )
    pairs = []
    for pair in prompts:
        if (
            isinstance(pair, str)
            or not isinstance(pair, Sequence)
            or len(pair) != 2
            or not all(isinstance(p, str) and p.strip() for p in pair)
        ):
            raise ArgumentError(
                f"each prompt must be a (positive, negative) pair of non-empty strings; got {pair!r}"
            )
        pairs.append((pair[0], pair[1]))
    return tuple(pairs)


def _load_weights(open_clip, arch: str, tag: str) -> tuple[str, dict]:
    """Local path of the open_clip checkpoint ``arch/tag`` (manifest entry when listed)."""
    from .. import hub

    upstream = open_clip.get_pretrained_cfg(arch, tag)
    if not upstream:
        raise UnknownNameError(
            f"open_clip pretrained tag for {arch}",
            tag,
            open_clip.list_pretrained_tags_by_model(arch),
        )
    name = f"open_clip:{arch}/{tag}"
    try:
        try:
            hub.manifest_entry(name)
        except UnknownNameError:
            hub_id = str(upstream.get("hf_hub", "")).rstrip("/")
            if not hub_id:
                raise WeightsError(f"open_clip lists no Hub weights for {name!r}") from None
            logger.info("%s is not in the weights manifest: downloading unverified", name)
            return str(hub.download(hub_id, "open_clip_model.safetensors")), upstream
        return str(hub.resolve(name)), upstream
    except WeightsError:
        raise
    except Exception as error:  # network or cache failures from huggingface_hub
        raise WeightsError(
            f"could not load the CLIP-IQA weights {name!r} ({type(error).__name__}: {error}). "
            "They come from the Hugging Face Hub: connect once to cache them, or pass "
            "pretrained=False for random weights (tests and plumbing only)."
        ) from error


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
        open_clip = require("open_clip", "NR-IQA model 'clipiqa'")
        if not isinstance(model, str) or model not in open_clip.list_models():
            raise UnknownNameError("open_clip model", str(model), open_clip.list_models())
        if pretrained is not None and not isinstance(pretrained, str):
            raise DTypeError(
                f"pretrained must be an open_clip tag such as 'openai' or None; got {pretrained!r}"
            )
        pairs = _check_prompts(prompts)
        vision_cfg = (open_clip.get_model_config(model) or {}).get("vision_cfg", {})
        native = vision_cfg.get("image_size", 224)
        native = native if isinstance(native, int) else int(native[0])
        if image_size is None:
            image_size = native
        if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 8:
            raise ArgumentError(f"image_size must be an int >= 8; got {image_size!r}")

        weights, upstream = (
            (None, {}) if pretrained is None else _load_weights(open_clip, model, pretrained)
        )
        clip = open_clip.create_model(
            model,
            pretrained=weights,
            force_image_size=None if image_size == native else image_size,
            # OpenAI checkpoints were trained with QuickGELU; a file path carries no tag
            force_quick_gelu=bool(upstream.get("quick_gelu", False)),
        )
        tokenizer = open_clip.get_tokenizer(model)
        texts = [p for pair in pairs for p in pair]
        with torch.no_grad():
            text = clip.encode_text(tokenizer(texts)).float()
        text = F.normalize(text, dim=-1).reshape(len(pairs), 2, -1)

        self.visual: nn.Module = clip.visual
        self.register_buffer("text_embeddings", text)
        self.register_buffer("logit_scale", clip.logit_scale.detach().exp().float().reshape(()))
        mean = torch.tensor(upstream.get("mean") or _OPENAI_MEAN).view(1, 3, 1, 1)
        std = torch.tensor(upstream.get("std") or _OPENAI_STD).view(1, 3, 1, 1)
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)
        del clip  # the text tower is no longer needed
        self.arch = model
        self.pretrained_tag = pretrained
        self.prompts = pairs
        self.image_size = image_size
        self.name = f"clipiqa:{model}/{pretrained or 'random'}"
        self.freeze()

    def score(self, images: torch.Tensor) -> torch.Tensor:
        x = images
        if x.shape[-2:] != (self.image_size, self.image_size):
            x = F.interpolate(
                x,
                size=(self.image_size, self.image_size),
                mode="bilinear",
                align_corners=False,
                antialias=True,
            )
        x = (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)
        features = self.visual(x)
        if isinstance(features, (tuple, list)):
            features = features[0]
        features = F.normalize(features.float(), dim=-1)
        logits = self.logit_scale * torch.einsum("bd,pkd->bpk", features, self.text_embeddings)
        return logits.softmax(dim=-1)[..., 0].mean(dim=-1)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, prompts={list(self.prompts)}, image_size={self.image_size}"
