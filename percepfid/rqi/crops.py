"""Aligned crops of image pairs, drawn from an explicit ``torch.Generator``.

SR and GT must be cut at the same place (RQI compares them pixel for pixel), and the
positions come from a generator the caller owns, never from the global RNG, so a seed gives
the same crops on every run and every device. Everything here is differentiable.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .._checks import check_choice, check_positive_int
from .._errors import ArgumentError

__all__ = ["fit_to_crop", "crop_offsets", "crop_at", "aligned_crop"]

CROP_MODES = ("random", "center", "resize")


def _check_size(size: int) -> int:
    return check_positive_int(size, "crop size")


def fit_to_crop(x: torch.Tensor, size: int, *, antialias: bool = False) -> torch.Tensor:
    """Upsample ``x`` (bilinear, aspect ratio kept) so that its shorter side is ``size``.

    Images whose sides are both at least ``size`` are returned unchanged. This is how
    percepfid handles images smaller than the model's crop (the released RQI code cannot).

    Args:
        x: ``(B, C, H, W)``.
        size: the crop side.
        antialias: passed to :func:`torch.nn.functional.interpolate`.

    Returns:
        ``(B, C, H', W')`` with ``min(H', W') >= size``.
    """
    height, width = x.shape[-2:]
    short = min(height, width)
    if short >= size:
        return x
    new = (max(size, round(height * size / short)), max(size, round(width * size / short)))
    return F.interpolate(x, size=new, mode="bilinear", align_corners=False, antialias=antialias)


def crop_offsets(
    height: int, width: int, size: int, count: int, generator: torch.Generator | None
) -> torch.Tensor:
    """``count`` uniformly random ``(top, left)`` positions of a ``size`` crop: ``(count, 2)``.

    Args:
        height, width: the image size (both at least ``size``).
        size: the crop side.
        count: how many positions.
        generator: a CPU ``torch.Generator``; ``None`` uses a fresh one seeded with 0.
    """
    _check_size(size)
    if height < size or width < size:
        raise ArgumentError(f"a {size} x {size} crop does not fit a {height} x {width} image")
    if generator is None:
        generator = torch.Generator().manual_seed(0)
    tops = torch.randint(0, height - size + 1, (count,), generator=generator)
    lefts = torch.randint(0, width - size + 1, (count,), generator=generator)
    return torch.stack([tops, lefts], dim=1)


def crop_at(x: torch.Tensor, offsets: torch.Tensor, size: int) -> torch.Tensor:
    """Cut one ``size`` crop per row of ``offsets`` from the matching image of ``x``.

    Args:
        x: ``(B, C, H, W)``.
        offsets: ``(B, 2)`` integer ``(top, left)`` per image, or ``(B, K, 2)`` for ``K``
            crops per image.

    Returns:
        ``(B, C, size, size)`` or ``(B * K, C, size, size)`` (crops of image 0 first).
    """
    if offsets.ndim == 2:
        offsets = offsets[:, None]
    pieces = [
        x[i, :, top : top + size, left : left + size]
        for i in range(x.shape[0])
        for top, left in offsets[i].tolist()
    ]
    return torch.stack(pieces)


def aligned_crop(
    a: torch.Tensor,
    b: torch.Tensor,
    size: int,
    *,
    mode: str = "random",
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Bring an aligned pair to ``size`` x ``size``: the same crop of ``a`` and ``b``.

    Images smaller than ``size`` are first upsampled with :func:`fit_to_crop`.

    Args:
        a, b: ``(B, C, H, W)`` of the same shape.
        size: the output side.
        mode: ``'random'`` (one position per image from ``generator``), ``'center'``, or
            ``'resize'`` (bilinear squash of the whole image, no crop).
        generator: the positions' generator for ``'random'`` (``None``: fresh, seed 0).

    Returns:
        The two crops, ``(B, C, size, size)`` each.
    """
    _check_size(size)
    check_choice(mode, "crop", CROP_MODES)
    if tuple(a.shape[-2:]) == (size, size):
        return a, b
    if mode == "resize":
        resize = dict(size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        return F.interpolate(a, **resize), F.interpolate(b, **resize)
    a, b = fit_to_crop(a, size), fit_to_crop(b, size)
    height, width = a.shape[-2:]
    if mode == "center":
        top, left = (height - size) // 2, (width - size) // 2
        return a[..., top : top + size, left : left + size], b[
            ..., top : top + size, left : left + size
        ]
    offsets = crop_offsets(height, width, size, a.shape[0], generator)
    return crop_at(a, offsets, size), crop_at(b, offsets, size)
