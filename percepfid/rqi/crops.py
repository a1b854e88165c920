"""Aligned crops of image pairs (the same place in SR and GT), differentiable, at positions
drawn from a ``torch.Generator`` the caller owns (never the global RNG)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from .._checks import check_choice, check_generator, check_positive_int
from .._errors import ArgumentError, DTypeError, ShapeError
from .._vocab import RQI_CROPS

CROP_MODES = RQI_CROPS


def fitted_size(height: int, width: int, size: int) -> tuple[int, int]:
    """The ``(height, width)`` that :func:`fit_to_crop` gives an image of this size."""
    short = min(height, width)
    if short >= size:
        return height, width
    return max(size, round(height * size / short)), max(size, round(width * size / short))


def fit_to_crop(x: torch.Tensor, size: int, *, antialias: bool = False) -> torch.Tensor:
    """Upsample ``x`` ``(B, C, H, W)`` (bilinear, aspect ratio kept, ``antialias`` passed to
    ``F.interpolate``) so that its shorter side is the crop side ``size``; images whose sides
    are both at least ``size`` are returned unchanged (see :func:`fitted_size`)."""
    height, width = x.shape[-2:]
    new = fitted_size(height, width, size)
    if new == (height, width):
        return x
    return F.interpolate(x, size=new, mode="bilinear", align_corners=False, antialias=antialias)


def crop_offsets(
    height: int, width: int, size: int, count: int, generator: torch.Generator | None
) -> torch.Tensor:
    """``count`` uniformly random ``(top, left)`` positions of a ``size`` crop in a
    ``height x width`` image, ``(count, 2)`` int64 on the CPU, from a CPU ``generator``
    (``None``: a fresh one seeded with 0); all tops are drawn first, then all lefts.

    Raises:
        ArgumentError: a bad ``size``, or the crop does not fit the image.
    """
    check_positive_int(size, "crop size")
    if height < size or width < size:
        raise ArgumentError(f"a {size} x {size} crop does not fit a {height} x {width} image")
    generator = check_generator(generator, 0)
    tops = torch.randint(0, height - size + 1, (count,), generator=generator)
    lefts = torch.randint(0, width - size + 1, (count,), generator=generator)
    return torch.stack([tops, lefts], dim=1)


def crop_at(x: torch.Tensor, offsets: torch.Tensor, size: int) -> torch.Tensor:
    """Cut one ``size`` crop per row of ``offsets`` from the matching image of ``x``
    (tensor indexing only: traceable by ``torch.compile(fullgraph=True)``).

    Args:
        x: ``(B, C, H, W)``.
        offsets: ``(B, 2)`` integer ``(top, left)`` per image, or ``(B, K, 2)`` for ``K``
            crops per image, on any device (moved to ``x``'s).

    Returns:
        ``(B, C, size, size)`` or ``(B * K, C, size, size)`` (crops of image 0 first).

    Raises:
        ShapeError, DTypeError: malformed ``offsets``.
        ArgumentError: a crop outside the image (checked in eager code when ``offsets`` is
            on the CPU; elsewhere that check would need a read-back from the device).
    """
    check_positive_int(size, "crop size")
    if not isinstance(offsets, torch.Tensor):
        raise DTypeError(f"offsets must be an integer tensor; got {type(offsets).__name__}")
    if offsets.dtype.is_floating_point or offsets.dtype.is_complex or offsets.dtype == torch.bool:
        raise DTypeError(f"offsets must be an integer tensor (top, left); got {offsets.dtype}")
    if offsets.ndim not in (2, 3) or offsets.shape[0] != x.shape[0] or offsets.shape[-1] != 2:
        raise ShapeError(
            f"offsets must be (B, 2) or (B, K, 2) (top, left) with B = {x.shape[0]}; "
            f"got {tuple(offsets.shape)} (draw them with CropSampler)"
        )
    height, width = x.shape[-2:]
    if height < size or width < size:
        raise ShapeError(f"a {size} x {size} crop does not fit a {height} x {width} image")
    if not torch.compiler.is_compiling() and offsets.device.type == "cpu":
        tops, lefts = offsets[..., 0], offsets[..., 1]
        if bool((offsets < 0).any() | (tops > height - size).any() | (lefts > width - size).any()):
            raise ArgumentError(
                f"offsets put a {size} x {size} crop outside the {height} x {width} image "
                f"(top in [0, {height - size}], left in [0, {width - size}] are valid)"
            )
    if offsets.ndim == 2:
        offsets = offsets[:, None]
    # from pageable CPU memory a non-blocking copy is staged at once: no wait on the device
    offsets = offsets.to(device=x.device, dtype=torch.long, non_blocking=True)
    span = torch.arange(size, device=x.device)
    rows = (offsets[..., 0, None] + span)[..., :, None]  # (B, K, size, 1)
    cols = (offsets[..., 1, None] + span)[..., None, :]  # (B, K, 1, size)
    image = torch.arange(x.shape[0], device=x.device)[:, None, None, None]  # (B, 1, 1, 1)
    # advanced indices around a slice: the broadcast (B, K, size, size) comes first, C last
    crops = x[image, :, rows, cols]
    return crops.permute(0, 1, 4, 2, 3).reshape(-1, x.shape[1], size, size)


class CropSampler:
    """Draws aligned random crop positions, in eager code, from a generator you own.

    The positions it returns are what ``aligned_crop(..., mode='random')`` (and so
    ``RQILoss(crop='random')``) would draw from the same generator for the same images, so
    passing them in (``loss(sr, gt, offsets=sampler(sr))``) gives the same crops. Drawing
    outside and passing the result in is how a training step with random crops compiles
    with ``torch.compile(..., fullgraph=True)``: dynamo cannot trace a ``torch.Generator``.

    Args:
        size: the crop side (``RQILoss.crop_size``).
        generator: a CPU ``torch.Generator``; default a private one seeded with ``seed``.
        seed: seed of the default generator.
        device: where to put the positions (default the CPU). On CUDA they are copied from
            pinned memory without blocking, so the host never waits for the device.

    Example:
        >>> sampler = CropSampler(32, generator=torch.Generator().manual_seed(0))
        >>> sampler(torch.zeros(2, 3, 48, 40)).shape
        torch.Size([2, 2])
    """

    def __init__(
        self,
        size: int,
        *,
        generator: torch.Generator | None = None,
        seed: int = 0,
        device: torch.device | str | None = None,
    ) -> None:
        self.size = check_positive_int(size, "crop size")
        self.device = None if device is None else torch.device(device)
        self.generator = check_generator(generator, seed)

    def __call__(self, images: torch.Tensor | Sequence[int]) -> torch.Tensor:
        """Positions for one batch: ``(B, 2)`` int64 ``(top, left)`` on ``device``.

        Args:
            images: the batch (only its shape is read, nothing leaves the device) or its
                shape ``(B, C, H, W)``. The positions are in the image as
                :func:`fit_to_crop` brings it to the crop size (upsampled when smaller).
        """
        shape = tuple(images.shape if isinstance(images, torch.Tensor) else images)
        if len(shape) != 4:
            raise ShapeError(f"images must be (B, C, H, W) or that shape; got {shape}")
        batch, (height, width) = int(shape[0]), (int(shape[2]), int(shape[3]))
        if (height, width) == (self.size, self.size):  # no crop and no draw, as aligned_crop
            positions = torch.zeros(batch, 2, dtype=torch.long)
        else:
            height, width = fitted_size(height, width, self.size)
            positions = crop_offsets(height, width, self.size, batch, self.generator)
        if self.device is None or self.device.type == "cpu":
            return positions
        if self.device.type == "cuda":
            positions = positions.pin_memory()
        return positions.to(self.device, non_blocking=True)

    def __repr__(self) -> str:
        return f"CropSampler(size={self.size}, device={self.device})"


def aligned_crop(
    a: torch.Tensor,
    b: torch.Tensor,
    size: int,
    *,
    mode: str = "random",
    generator: torch.Generator | None = None,
    offsets: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Bring an aligned pair to ``size`` x ``size``: the same crop of ``a`` and ``b``, each
    ``(B, C, size, size)``. Images smaller than ``size`` are first upsampled with
    :func:`fit_to_crop`.

    Args:
        a, b: ``(B, C, H, W)`` of the same shape.
        mode: ``'random'`` (one position per image, from ``offsets`` or else drawn from
            ``generator``), ``'center'``, or ``'squash'`` (bilinear resize of the whole
            image, no crop).
        generator: the positions' generator for ``'random'`` (``None``: fresh, seed 0).
        offsets: ``(B, 2)`` ``(top, left)`` positions for ``'random'``, drawn beforehand by
            :class:`CropSampler`; needed under ``torch.compile``, which cannot trace a
            generator.
    """
    check_positive_int(size, "crop size")
    check_choice(mode, "crop", CROP_MODES)
    if offsets is not None and mode != "random":
        raise ArgumentError(f"offsets= applies to crop='random' only; got crop={mode!r}")
    if tuple(a.shape[-2:]) == (size, size):
        return a, b
    if mode == "squash":
        resize = dict(size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        return F.interpolate(a, **resize), F.interpolate(b, **resize)
    a, b = fit_to_crop(a, size), fit_to_crop(b, size)
    height, width = a.shape[-2:]
    if mode == "center":
        top, left = (height - size) // 2, (width - size) // 2
        window = (..., slice(top, top + size), slice(left, left + size))
        return a[window], b[window]
    if offsets is None:
        if torch.compiler.is_compiling():
            raise ArgumentError(
                "crop='random' under torch.compile needs its positions passed in: draw them in "
                "eager code with percepfid.rqi.CropSampler and pass offsets=sampler(images)"
            )
        offsets = crop_offsets(height, width, size, a.shape[0], generator)
    return crop_at(a, offsets, size), crop_at(b, offsets, size)
