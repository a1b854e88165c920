"""``create_nriqa``: one entry point from a name (or a module) to an NR-IQA model."""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from .._errors import ArgumentError, UnknownNameError
from .._imports import is_available
from ._base import CallableNRIQA, NRIQAModel


def create_nriqa(
    name: str | nn.Module | Callable[[torch.Tensor], torch.Tensor],
    /,
    pretrained: bool = True,
    *,
    weights: str | os.PathLike | None = None,
    input_range: Sequence[float] = (0.0, 1.0),
    **kwargs: Any,
) -> NRIQAModel:
    """Build a frozen, eval-locked, differentiable no-reference IQA model.

    Names:
        - ``'clipiqa'``: CLIP-IQA on open_clip RN50 with OpenAI weights;
          ``'clipiqa:<arch>'`` or ``'clipiqa:<arch>/<tag>'`` picks another open_clip model.
          Extra keyword arguments go to :class:`CLIPIQA` (``prompts``, ``image_size``).
        - ``'nr-head'`` / ``'nr-head:<backbone>'``: a regression head fitted to MOS
          (:class:`NRHead`). ``weights`` is its folder or Hub repo id (written by
          ``save_pretrained`` / ``push_to_hub``); with ``pretrained=False`` and no
          ``weights`` an untrained head on a random backbone is built (plumbing only).
        - ``'pyiqa:<metric>'``: a pyiqa metric such as ``'pyiqa:musiq'`` (the paper's Q).
          pyiqa is PolyForm Noncommercial and optional: ``pip install 'percepfid[pyiqa]'``.
        - an :class:`NRIQAModel` is returned unchanged; any other ``nn.Module`` or callable
          returning ``(B,)`` scores is wrapped (keyword arguments ``higher_is_better``,
          ``score_range``, ``name`` go to :class:`CallableNRIQA`).

    Args:
        pretrained: load real weights; ``False`` builds random weights offline (tests and
            plumbing only: the scores mean nothing).
        weights: for ``'nr-head'`` (see above).
        input_range: value range of the images the model will receive.
        **kwargs: options of the selected model.

    Returns:
        An :class:`NRIQAModel`.

    Raises:
        UnknownNameError: an unknown name (with close matches).
        MissingDependencyError: open_clip or pyiqa is missing (with the pip command).
        WeightsError: weights cannot be found (e.g. offline).

    Example:
        >>> iqa = create_nriqa("clipiqa:ViT-S-32", pretrained=False, image_size=32)
        >>> iqa(torch.rand(1, 3, 24, 24)).shape
        torch.Size([1])
    """
    if isinstance(name, NRIQAModel):
        return name
    if not isinstance(name, str):
        return CallableNRIQA(name, input_range=input_range, **kwargs)
    family, _, rest = name.strip().partition(":")
    if family == "clipiqa":
        from ._clipiqa import CLIPIQA

        arch, _, tag = rest.partition("/")
        tag = (tag or "openai") if pretrained else None
        return CLIPIQA(arch or "RN50", tag, input_range=input_range, **kwargs)
    if family == "nr-head":
        from ._nrhead import NRHead, NRHeadIQA

        if weights is not None:
            head = NRHead.from_pretrained(weights, pretrained_backbone=bool(pretrained), **kwargs)
            if rest and rest != head.backbone_name:
                raise ArgumentError(
                    f"weights {str(weights)!r} hold a head for backbone {head.backbone_name!r}, "
                    f"but the name asks for 'nr-head:{rest}'; use 'nr-head' or "
                    f"'nr-head:{head.backbone_name}'"
                )
        elif pretrained:
            raise ArgumentError(
                "an 'nr-head' model needs trained weights: pass weights=<folder or Hub repo id> "
                "(train one with percepfid.train.train_nr_head), or pretrained=False for "
                "an untrained head on a random backbone"
            )
        elif not rest:
            raise ArgumentError("name the backbone of an untrained head: 'nr-head:<backbone>'")
        else:
            head = NRHead(backbone=rest, pretrained_backbone=False, **kwargs)
        return NRHeadIQA(head, input_range=input_range)
    if family == "pyiqa":
        from ._pyiqa import PyIQAModel

        if not rest:
            raise ArgumentError("pyiqa models are named 'pyiqa:<metric>', e.g. 'pyiqa:musiq'")
        return PyIQAModel(rest, input_range=input_range, **kwargs)
    raise UnknownNameError(
        "NR-IQA model",
        name,
        ["clipiqa", "nr-head", "pyiqa:musiq"],
        hint="Forms: 'clipiqa[:<arch>[/<tag>]]', 'nr-head:<backbone>', 'pyiqa:<metric>', or "
        "pass an nn.Module / callable.",
    )


def list_nriqa(pattern: str = "*") -> list[str]:
    """NR-IQA model names that :func:`create_nriqa` accepts, filtered by an ``fnmatch`` pattern.

    Lists ``'clipiqa'``, ``'nr-head:<backbone>'`` for every registered backbone alias and
    name, and ``'pyiqa:<metric>'`` for pyiqa's no-reference metrics when pyiqa is installed.
    """
    from ..backbones import list_backbones

    names = ["clipiqa"] + [f"nr-head:{b}" for b in list_backbones()]
    if is_available("pyiqa"):
        import pyiqa

        names += [f"pyiqa:{m}" for m in pyiqa.list_models(metric_mode="NR")]
    return sorted(n for n in names if fnmatch.fnmatch(n.lower(), pattern.lower()))
