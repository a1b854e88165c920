"""RQI's multi-scale evaluation on large images: aligned random crops at several scales."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .._checks import (
    check_choice,
    check_generator,
    check_image_pair,
    check_input_range,
    check_positive_int,
)
from .._errors import ArgumentError
from ..functional import rqi_score, to_unit
from .crops import crop_at, crop_offsets, fit_to_crop


@dataclass(frozen=True)
class Protocol:
    """A multi-scale schedule: the scale and crop count of each level.

    ``successive`` halves the previous level (the released code) instead of resizing the
    original; ``antialias`` is passed to the bilinear resize.
    """

    scales: tuple[float, ...]
    crops: tuple[int, ...]
    successive: bool
    antialias: bool


#: ``paper``: scales 1, 1/2, 1/3 with 20 crops each (Su et al., section 4), each scale
#: resized from the original with antialiased bilinear ([D]: the paper names no filter).
#: ``official``: the released code: successive bilinear halving (no antialias), 20/10/5 crops.
PROTOCOLS: dict[str, Protocol] = {
    "paper": Protocol((1.0, 1 / 2, 1 / 3), (20, 20, 20), successive=False, antialias=True),
    "official": Protocol((1.0, 1 / 2, 1 / 4), (20, 10, 5), successive=True, antialias=False),
}


def _scorer(model: object, antisymmetric: bool | None) -> tuple[Callable, int | None]:
    """A function ``(a, ref) -> (B,)`` on [0, 1] crops, and the crop size of ``model``."""
    pair_score = getattr(model, "pair_score", None)
    if pair_score is not None:  # RQILoss: its own setting unless overridden
        if antisymmetric is not None:
            pair_score = functools.partial(pair_score, antisymmetric=antisymmetric)
        return pair_score, model.crop_size  # type: ignore[attr-defined]
    size = getattr(model, "img_size", None) or 224
    features, compare = getattr(model, "features", None), getattr(model, "compare", None)
    if features is not None and compare is not None:  # MANIQARQI / BackbonePairModel
        flag = True if antisymmetric is None else antisymmetric
        return functools.partial(rqi_score, features, compare, antisymmetric=flag), size
    if not callable(model):
        raise ArgumentError(
            f"model must be an RQILoss, a MANIQARQI or a callable (a, ref) -> (B,); got {type(model).__name__}"
        )
    if antisymmetric is None or antisymmetric:
        return (lambda a, b: (model(a, b) - model(b, a)) / 2), size
    return model, size


def _resize(x: torch.Tensor, size: tuple[int, int], antialias: bool) -> torch.Tensor:
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=antialias)


@torch.no_grad()
def evaluate(
    model: object,
    sr: torch.Tensor,
    gt: torch.Tensor,
    protocol: str = "paper",
    generator: torch.Generator | None = None,
    *,
    crop_size: int | None = None,
    antisymmetric: bool | None = None,
    batch_size: int = 16,
    input_range: Sequence[float] | None = (0.0, 1.0),
) -> torch.Tensor:
    """Score large SR images against their GT with RQI's multi-scale crop protocol.

    At each scale the pair is resized identically, ``n`` aligned random crops of
    ``crop_size`` are scored, and the result is the mean over all crops of all scales.
    A later scale is skipped (and the schedule stops) once a side would fall below the crop
    size. Images smaller than the crop at scale 1 are upsampled (bilinear, aspect kept) so
    the shorter side equals the crop size ([D]: the released code cannot score them). An
    image exactly the crop size is scored once per scale (all its crops are identical).

    Args:
        model: an :class:`percepfid.RQILoss`, a :class:`~percepfid.rqi.MANIQARQI` or
            :class:`~percepfid.rqi.BackbonePairModel`, or any callable ``(a, ref) -> (B,)``
            on ``[0, 1]`` crops.
        sr: ``(B, 3, H, W)`` images to score, any ``H, W``.
        gt: aligned references, same shape.
        protocol: ``'paper'`` or ``'official'``, see :data:`PROTOCOLS`.
        generator: a CPU generator for the crop positions. ``None`` uses a fresh one seeded
            with 0, so repeated calls agree.
        crop_size: the crop side; default the model's (224 for the released model; needed
            for an RQILoss that does not crop).
        antisymmetric: override the model's setting (``None`` keeps it; raw callables and
            modules default to antisymmetric).
        batch_size: crops scored per model call.
        input_range: the value range of ``sr`` and ``gt``.

    Returns:
        ``(B,)``: the mean score over all crops, per image (no gradient).

    Raises:
        ShapeError, DTypeError, RangeError: bad images.
        ArgumentError: an unknown protocol or a bad ``batch_size``.
    """
    schedule = PROTOCOLS[check_choice(protocol, "protocol", tuple(PROTOCOLS))]
    check_positive_int(batch_size, "batch_size")
    input_range = check_input_range(input_range)
    check_image_pair(sr, gt, ("sr", "gt"), input_range=input_range)
    score, size = _scorer(model, antisymmetric)
    size = size if crop_size is None else crop_size
    if size is None:  # an RQILoss that does not crop
        raise ArgumentError("evaluate needs a fixed crop size: pass crop_size=")
    sr, gt = to_unit(sr, input_range), to_unit(gt, input_range)
    generator = check_generator(generator, 0)

    batch = sr.shape[0]
    total = sr.new_zeros(batch, dtype=torch.float32)
    count = 0
    # SR and GT in one batch, so that every resize and crop treats them alike
    base = level = fit_to_crop(torch.cat([sr, gt.to(sr.dtype)]), size)
    step = max(1, batch_size // batch)  # crop positions per image and model call
    for index, (scale, crops) in enumerate(zip(schedule.scales, schedule.crops, strict=True)):
        if index > 0:
            if schedule.successive:
                new = (level.shape[-2] // 2, level.shape[-1] // 2)
            else:
                new = (round(base.shape[-2] * scale), round(base.shape[-1] * scale))
            if min(new) < size:
                break
            level = _resize(level if schedule.successive else base, new, schedule.antialias)
        height, width = level.shape[-2:]
        if (height, width) == (size, size):
            offsets = torch.zeros(batch, 1, 2, dtype=torch.long)
        else:
            offsets = crop_offsets(height, width, size, batch * crops, generator)
            offsets = offsets.reshape(batch, crops, 2)
        scores = []
        for start in range(0, offsets.shape[1], step):
            chunk = offsets[:, start : start + step]
            crops_a, crops_b = crop_at(level, chunk.repeat(2, 1, 1), size).chunk(2)
            scores.append(score(crops_a, crops_b).float().reshape(batch, -1))
        total += torch.cat(scores, dim=1).mean(dim=1) * crops
        count += crops
    return total / count
