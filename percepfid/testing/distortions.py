"""Image distortions for property tests of quality metrics, in plain torch (any device, no
autograd): Gaussian blur, Gaussian noise, quantisation and down-up resampling, each taking its
natural parameter, and :func:`distort`, which maps them all to one severity in ``[0, 1]``.

Every function takes images ``x`` of shape ``(B, C, H, W)`` in any floating dtype and
returns the distorted images with the same shape and dtype; it raises ``DTypeError`` when
``x`` is not a floating tensor (or an int parameter is not an int), ``ShapeError`` when it
is not 4-D, and ``ArgumentError`` for a parameter (or ``value_range``) outside the range
its docstring gives.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from .._checks import check_input_range, check_int, check_positive, check_tensor
from .._errors import ArgumentError, ShapeError, UnknownNameError

__all__ = [
    "DISTORTION_KINDS",
    "Distortion",
    "distort",
    "down_up_sample",
    "gaussian_blur",
    "gaussian_noise",
    "quantize",
]

DISTORTION_KINDS: tuple[str, ...] = ("blur", "noise", "quantize", "downsample")
"""The kinds :func:`distort` understands."""


def _distortion(function: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
    """Check ``x``, run ``function`` on it in float32 (or float64) without autograd."""

    @functools.wraps(function)
    @torch.no_grad()
    def distorted(x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        check_tensor(x, "x")
        if x.ndim != 4:
            raise ShapeError(f"x must have shape (B, C, H, W); got {tuple(x.shape)}")
        # CPU kernels for bf16/fp16 resampling are patchy; float64 tests stay exact.
        work = x.to(torch.float64 if x.dtype == torch.float64 else torch.float32)
        return function(work, *args, **kwargs).to(x.dtype)

    return distorted


def _check_value_range(value_range: Sequence[float] | None) -> tuple[float, float]:
    bounds = check_input_range(value_range, "value_range")
    if bounds is None:
        raise ArgumentError("value_range must be a pair (low, high) such as (0, 1); got None")
    return bounds


@_distortion
def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Blur each channel with a separable Gaussian of standard deviation ``sigma >= 0``
    pixels (``0`` returns a copy of ``x``), as ``scipy.ndimage.gaussian_filter(x, sigma,
    mode='nearest', truncate=3.0)`` does on each channel."""
    sigma = check_positive(sigma, "sigma", allow_zero=True)
    if sigma == 0.0:
        return x.clone()
    radius = int(3.0 * sigma + 0.5)
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float64, device=x.device)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    kernel = (kernel / kernel.sum()).to(x.dtype)
    planes = x.flatten(0, 1).unsqueeze(1)
    # along W, then H; 'replicate' padding works for any image size (reflect needs radius < side)
    for pad, shape in (((radius, radius, 0, 0), (1, -1)), ((0, 0, radius, radius), (-1, 1))):
        planes = F.conv2d(F.pad(planes, pad, mode="replicate"), kernel.view(1, 1, *shape))
    return planes.reshape(x.shape)


@_distortion
def gaussian_noise(
    x: torch.Tensor,
    std: float,
    *,
    generator: torch.Generator | None = None,
    value_range: Sequence[float] | None = (0.0, 1.0),
) -> torch.Tensor:
    """Add i.i.d. Gaussian noise of standard deviation ``std >= 0`` (in the units of ``x``;
    ``0`` returns a copy of ``x``), clamped to ``value_range`` unless it is ``None``.

    The noise is drawn in float32 on the ``generator``'s device (``None``: torch's global
    generator on ``x``'s device), so one seed gives the same noise on CPU and GPU, and the
    same pattern, scaled, at every ``std``.
    """
    std = check_positive(std, "std", allow_zero=True)
    bounds = check_input_range(value_range, "value_range")
    if std == 0.0:
        return x.clone()
    device = generator.device if generator is not None else x.device
    noise = torch.randn(x.shape, generator=generator, device=device, dtype=torch.float32)
    noisy = x + std * noise.to(x)
    return noisy if bounds is None else noisy.clamp(*bounds)


@_distortion
def quantize(
    x: torch.Tensor, levels: int, *, value_range: Sequence[float] = (0.0, 1.0)
) -> torch.Tensor:
    """Round ``x`` (clamped to ``value_range``) to ``levels`` evenly spaced values spanning
    ``value_range``, an int ``levels >= 2``: ``levels=256`` is 8-bit quantisation."""
    steps = check_int(levels, "levels", minimum=2) - 1
    low, high = _check_value_range(value_range)
    unit = ((x - low) / (high - low)).clamp(0.0, 1.0)
    return low + (high - low) * torch.round(unit * steps) / steps


@_distortion
def down_up_sample(x: torch.Tensor, factor: float) -> torch.Tensor:
    """Downsample by ``factor >= 1`` (antialiased bilinear, to sides
    ``max(1, round(side / factor))``) and resample back to the original size (bilinear)."""
    factor = check_positive(factor, "factor")
    if factor < 1.0:
        raise ArgumentError(f"factor must be >= 1 (a downsampling factor); got {factor!r}")
    height, width = x.shape[-2:]
    low_size = (max(1, round(height / factor)), max(1, round(width / factor)))
    if low_size == (height, width):
        return x.clone()
    low = F.interpolate(x, size=low_size, mode="bilinear", align_corners=False, antialias=True)
    return F.interpolate(low, size=(height, width), mode="bilinear", align_corners=False)


def _check_kind_and_level(kind: str, level: float) -> float:
    if kind not in DISTORTION_KINDS:
        raise UnknownNameError("distortion", str(kind), DISTORTION_KINDS)
    if isinstance(level, bool) or not isinstance(level, (int, float)) or not 0 <= level <= 1:
        raise ArgumentError(f"level must be a number in [0, 1] (0 = unchanged); got {level!r}")
    return float(level)


@_distortion
def distort(
    x: torch.Tensor,
    kind: str,
    level: float,
    *,
    generator: torch.Generator | None = None,
    value_range: Sequence[float] = (0.0, 1.0),
) -> torch.Tensor:
    """Apply the distortion ``kind`` at severity ``level`` in ``[0, 1]``.

    ``level=0`` returns a copy of ``x`` for every kind. Otherwise:

    =============  ====================================================================
    kind           parameter at ``level``
    =============  ====================================================================
    ``blur``       :func:`gaussian_blur` with ``sigma = 3 * level`` pixels
    ``noise``      :func:`gaussian_noise` with ``std = 0.25 * level * (high - low)``,
                   clamped to ``value_range``
    ``quantize``   :func:`quantize` to ``max(2, round(2 ** (8 * (1 - level))))`` levels
    ``downsample`` :func:`down_up_sample` with ``factor = 1 + 3 * level``
    =============  ====================================================================

    Severity grows with ``level``: strictly for ``blur`` and, with a fixed seed,
    ``noise``; in steps for ``quantize`` and ``downsample``.

    Args:
        x: images in ``value_range``, ``(low, high)``, which scales ``noise`` and ``quantize``.
        kind: one of :data:`DISTORTION_KINDS`.
        generator: random source for ``noise``; pass a fresh
            ``torch.Generator().manual_seed(s)`` per call for reproducible noise.

    Raises:
        UnknownNameError: ``kind`` is not a known distortion.

    Example:
        >>> import torch
        >>> x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
        >>> y = distort(x, "blur", 0.5)
        >>> y.shape, bool((y - x).abs().max() > 0)
        (torch.Size([2, 3, 16, 16]), True)
        >>> torch.equal(distort(x, "noise", 0.0), x)
        True
    """
    level = _check_kind_and_level(kind, level)
    bounds = _check_value_range(value_range)
    if level == 0.0:
        return x.clone()
    # the scale of the table above
    if kind == "blur":
        return gaussian_blur(x, 3.0 * level)
    if kind == "noise":
        std = 0.25 * level * (bounds[1] - bounds[0])
        return gaussian_noise(x, std, generator=generator, value_range=bounds)
    if kind == "quantize":
        return quantize(x, max(2, round(2.0 ** (8.0 * (1.0 - level)))), value_range=bounds)
    return down_up_sample(x, 1.0 + 3.0 * level)


@dataclass(frozen=True)
class Distortion:
    """:func:`distort` fixed in ``kind``, ``level`` and noise ``seed``: a reproducible
    callable ``x -> x'`` (the noise generator is re-seeded on each call). Its fields are
    checked as :func:`distort` checks them (``seed``: an int).

    Example:
        >>> import torch
        >>> blur = Distortion("blur", 0.3)
        >>> x = torch.rand(1, 3, 8, 8)
        >>> torch.equal(blur(x), blur(x))
        True
    """

    kind: str
    level: float
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "level", _check_kind_and_level(self.kind, self.level))
        object.__setattr__(self, "seed", check_int(self.seed, "seed"))

    def __call__(
        self, x: torch.Tensor, *, value_range: Sequence[float] = (0.0, 1.0)
    ) -> torch.Tensor:
        """Distort ``x`` (see :func:`distort`)."""
        generator = torch.Generator().manual_seed(self.seed)
        return distort(x, self.kind, self.level, generator=generator, value_range=value_range)
