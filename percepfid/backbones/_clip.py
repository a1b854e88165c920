"""A CLIP model's image tower as a :class:`Backbone`, with the embeddings of given texts."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch

from .._checks import check_choice
from .._errors import ArgumentError
from . import _adapters
from ._backbone import Backbone, _assemble, _check_options
from ._registry import get_spec


class ClipTowers(NamedTuple):
    """What :func:`create_clip_backbone` returns.

    Attributes:
        backbone: the frozen image tower with its preprocessing; its pooled embedding is
            the CLIP image embedding (not normalised).
        text_embeddings: ``(T, D)`` L2-normalised float32 embeddings of the texts.
        logit_scale: CLIP's learned temperature (already exponentiated), a float32 scalar.
    """

    backbone: Backbone
    text_embeddings: torch.Tensor
    logit_scale: torch.Tensor


def create_clip_backbone(
    backbone: str,
    texts: Sequence[str],
    pretrained: bool = True,
    *,
    image_size: int | tuple[int, int] | None = None,
    crop: str | None = None,
    interpolation: str | None = None,
    input_range: tuple[float, float] = (0.0, 1.0),
) -> ClipTowers:
    """Build an open_clip model once: its image tower as a Backbone, its text tower's output
    (a :class:`ClipTowers`).

    The weights go through the same path as :func:`create_backbone` (the manifest entry
    when there is one, verified; else the upstream Hub file). The text tower runs once on
    ``texts`` and is dropped, so only the image tower stays in memory.

    Args:
        backbone: an ``open_clip`` backbone: a registered alias (``'clip'``) or a full spec
            ``'open_clip:<model>/<pretrained tag>'`` (``'open_clip:<model>'`` for random
            weights).
        texts: the strings to embed.
        pretrained, image_size, crop, input_range: as for :func:`create_backbone`.
        interpolation: ``'bilinear'`` or ``'bicubic'`` resizing (default: upstream's).

    Raises:
        ArgumentError: ``backbone`` is not an open_clip model, or a bad option.
        UnknownNameError: an unknown open_clip model or pretrained tag.
        MissingDependencyError: open_clip is not installed.
        WeightsError: the weights cannot be found or fail verification.
    """
    input_range, image_size = _check_options(input_range, image_size, crop)
    if interpolation is not None:
        check_choice(interpolation, "interpolation", ("bilinear", "bicubic"))
    spec = get_spec(backbone)
    if spec.source != "open_clip":
        raise ArgumentError(
            f"backbone {backbone!r} is a {spec.source} model; create_clip_backbone needs an "
            "open_clip one such as 'open_clip:ViT-B-16/openai'"
        )
    encoder, config, text, logit_scale = _adapters.build_open_clip(
        spec, pretrained, image_size, texts
    )
    backbone = _assemble(encoder, spec, config, input_range, crop=crop, interpolation=interpolation)
    return ClipTowers(backbone, text, logit_scale)
