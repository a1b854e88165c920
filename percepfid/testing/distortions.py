"""Image distortions with a severity level, for property tests of quality metrics.

Four classic degradations, written in plain torch (no JPEG, no PIL, no scipy) so they run on
any device: Gaussian blur, additive Gaussian noise, uniform quantisation and down-up
resampling. Each has a function taking its natural parameter (``sigma``, ``std``,
``levels``, ``factor``) and all of them share one severity scale through :func:`distort`:
``level`` in ``[0, 1]``, ``0`` returns the input unchanged and larger levels degrade more.

They are test fixtures, not training augmentations: outputs are computed without autograd
(quantisation has no useful gradient anyway).

Every function takes images ``x`` of shape ``(B, C, H, W)`` in any floating dtype and
returns the distorted images with the same shape and dtype; it raises ``DTypeError`` when
``x`` is not a floating tensor and ``ShapeError`` when it is not 4-D.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .._checks import check_input_range, check_positive, check_tensor
from .._errors import ArgumentError, DTypeError, ShapeError, UnknownNameError

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

# Severity scale of ``distort``: what ``level=1`` means for each kind.
MAX_BLUR_SIGMA = 3.0  # pixels
MAX_NOISE_STD = 0.25  # fraction of the value range
MAX_DOWNSAMPLE_FACTOR = 4.0
MAX_QUANTIZE_BITS = 8.0  # level 0+ keeps 2**8 levels, level 1 keeps 2


def _work_dtype(x: torch.Tensor) -> torch.dtype:
    # Half precision is computed in float32 (CPU kernels for bf16/fp16 resampling are
    # patchy) and cast back; float64 stays float64 so float64 tests stay exact.
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _check_images(x: torch.Tensor, name: str = "x") -> torch.Tensor:
    check_tensor(x, name)
    if x.ndim != 4:
        raise ShapeError(f"{name} must have shape (B, C, H, W); got {tuple(x.shape)}")
    return x


def _check_value_range(value_range: Sequence[float] | None) -> tuple[float, float]:
    bounds = check_input_range(value_range)
    if bounds is None:
        raise ArgumentError("value_range must be a pair (low, high) such as (0, 1); got None")
    return bounds


def _gaussian_kernel1d(sigma: float, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    # Same support as scipy.ndimage.gaussian_filter(truncate=3.0): radius = int(3 sigma + 0.5).
    radius = int(3.0 * sigma + 0.5)
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float64, device=device)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    return (kernel / kernel.sum()).to(dtype)


@torch.no_grad()
def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Blur each channel with a separable Gaussian of standard deviation ``sigma`` pixels.

    The kernel is truncated at ``int(3 * sigma + 0.5)`` pixels and borders are padded by
    replicating the edge, which matches ``scipy.ndimage.gaussian_filter(x, sigma,
    mode='nearest', truncate=3.0)`` on each channel. The kernel is non-negative and sums to
    one, so values stay inside the input's range.

    Args:
        x: images.
        sigma: standard deviation in pixels, ``>= 0``; ``0`` returns a copy of ``x``.

    Returns:
        The blurred images.

    Raises:
        ArgumentError: ``sigma`` is negative or not finite.
    """
    _check_images(x)
    sigma = check_positive(sigma, "sigma", allow_zero=True)
    if sigma == 0.0:
        return x.clone()
    batch, channels, height, width = x.shape
    kernel = _gaussian_kernel1d(sigma, _work_dtype(x), x.device)
    radius = kernel.numel() // 2
    planes = x.to(_work_dtype(x)).reshape(batch * channels, 1, height, width)
    # 'replicate' padding works for any image size (reflect needs radius < side).
    planes = F.conv2d(
        F.pad(planes, (radius, radius, 0, 0), mode="replicate"), kernel.view(1, 1, 1, -1)
    )
    planes = F.conv2d(
        F.pad(planes, (0, 0, radius, radius), mode="replicate"), kernel.view(1, 1, -1, 1)
    )
    return planes.reshape(batch, channels, height, width).to(x.dtype)


@torch.no_grad()
def gaussian_noise(
    x: torch.Tensor,
    std: float,
    *,
    generator: torch.Generator | None = None,
    value_range: Sequence[float] | None = (0.0, 1.0),
) -> torch.Tensor:
    """Add i.i.d. Gaussian noise of standard deviation ``std`` (in the units of ``x``).

    The noise is drawn in float32 on the generator's device and moved to ``x``'s device, so
    one seed gives the same noise on CPU and GPU. The same seed at two values of ``std``
    gives the same noise pattern scaled, which makes a metric's response monotone in
    ``std`` testable.

    Args:
        x: images.
        std: noise standard deviation, ``>= 0``; ``0`` returns a copy of ``x``.
        generator: the random source; ``None`` uses torch's global generator on ``x``'s
            device.
        value_range: ``(low, high)`` to clamp the result to, or ``None`` to leave it
            unclamped.

    Returns:
        The noisy images.

    Raises:
        ArgumentError: ``std`` is negative or not finite, or ``value_range`` is invalid.
    """
    _check_images(x)
    std = check_positive(std, "std", allow_zero=True)
    bounds = check_input_range(value_range)
    if std == 0.0:
        return x.clone()
    device = generator.device if generator is not None else x.device
    noise = torch.randn(x.shape, generator=generator, device=device, dtype=torch.float32)
    noisy = x.to(_work_dtype(x)) + std * noise.to(device=x.device, dtype=_work_dtype(x))
    if bounds is not None:
        noisy = noisy.clamp(*bounds)
    return noisy.to(x.dtype)


@torch.no_grad()
def quantize(
    x: torch.Tensor, levels: int, *, value_range: Sequence[float] = (0.0, 1.0)
) -> torch.Tensor:
    """Round ``x`` to ``levels`` evenly spaced values spanning ``value_range``.

    ``levels=256`` is 8-bit quantisation, ``levels=2`` keeps only ``low`` and ``high``.
    Values outside ``value_range`` are clamped first.

    Args:
        x: images.
        levels: the number of representable values, ``>= 2``.
        value_range: ``(low, high)``, the first and last representable values.

    Returns:
        The quantised images.

    Raises:
        ArgumentError: ``levels`` is not an integer ``>= 2`` or ``value_range`` is invalid.
    """
    _check_images(x)
    if isinstance(levels, bool) or not isinstance(levels, int) or levels < 2:
        raise ArgumentError(f"levels must be an integer >= 2; got {levels!r}")
    low, high = _check_value_range(value_range)
    unit = ((x.to(_work_dtype(x)) - low) / (high - low)).clamp(0.0, 1.0)
    steps = levels - 1
    return (low + (high - low) * torch.round(unit * steps) / steps).to(x.dtype)


@torch.no_grad()
def down_up_sample(x: torch.Tensor, factor: float) -> torch.Tensor:
    """Downsample by ``factor`` and resample back to the original size (bilinear).

    The downsampling is antialiased bilinear (a triangle filter widened by ``factor``), the
    upsampling plain bilinear; both weights are non-negative, so values stay inside the
    input's range. The low-resolution side is ``max(1, round(side / factor))``.

    Args:
        x: images.
        factor: the downsampling factor, ``>= 1``; ``1`` returns a copy of ``x``.

    Returns:
        The resampled images.

    Raises:
        ArgumentError: ``factor`` is below 1 or not finite.
    """
    _check_images(x)
    factor = check_positive(factor, "factor")
    if factor < 1.0:
        raise ArgumentError(f"factor must be >= 1 (a downsampling factor); got {factor!r}")
    height, width = x.shape[-2:]
    low_size = (max(1, round(height / factor)), max(1, round(width / factor)))
    if low_size == (height, width):
        return x.clone()
    work = x.to(_work_dtype(x))
    low = F.interpolate(work, size=low_size, mode="bilinear", align_corners=False, antialias=True)
    up = F.interpolate(low, size=(height, width), mode="bilinear", align_corners=False)
    return up.to(x.dtype)


def _check_level(level: float) -> float:
    if isinstance(level, bool) or not isinstance(level, (int, float)):
        raise ArgumentError(f"level must be a number in [0, 1]; got {level!r}")
    if not (math.isfinite(level) and 0.0 <= level <= 1.0):
        raise ArgumentError(
            f"level must be in [0, 1] (0 = unchanged, 1 = strongest); got {level!r}"
        )
    return float(level)


def _check_kind(kind: str) -> str:
    if kind not in DISTORTION_KINDS:
        raise UnknownNameError("distortion", str(kind), DISTORTION_KINDS)
    return kind


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
    ``noise``; in steps for ``quantize`` and ``downsample`` (integer levels and sizes).

    Args:
        x: images in ``value_range``, any floating dtype.
        kind: one of :data:`DISTORTION_KINDS`.
        level: severity in ``[0, 1]``.
        generator: random source for ``noise`` (see :func:`gaussian_noise`); pass a fresh
            ``torch.Generator().manual_seed(s)`` per call for reproducible noise.
        value_range: ``(low, high)`` of the data; scales ``noise`` and ``quantize``.

    Returns:
        The distorted images.

    Raises:
        UnknownNameError: ``kind`` is not a known distortion.
        ArgumentError: ``level`` is outside ``[0, 1]`` or ``value_range`` is invalid.

    Example:
        >>> import torch
        >>> x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
        >>> y = distort(x, "blur", 0.5)
        >>> y.shape, bool((y - x).abs().max() > 0)
        (torch.Size([2, 3, 16, 16]), True)
        >>> torch.equal(distort(x, "noise", 0.0), x)
        True
    """
    _check_kind(kind)
    level = _check_level(level)
    bounds = _check_value_range(value_range)
    _check_images(x)
    if level == 0.0:
        return x.clone()
    if kind == "blur":
        return gaussian_blur(x, MAX_BLUR_SIGMA * level)
    if kind == "noise":
        std = MAX_NOISE_STD * level * (bounds[1] - bounds[0])
        return gaussian_noise(x, std, generator=generator, value_range=bounds)
    if kind == "quantize":
        levels = max(2, round(2.0 ** (MAX_QUANTIZE_BITS * (1.0 - level))))
        return quantize(x, levels, value_range=bounds)
    return down_up_sample(x, 1.0 + (MAX_DOWNSAMPLE_FACTOR - 1.0) * level)


@dataclass(frozen=True)
class Distortion:
    """A distortion fixed in kind, level and seed: a reproducible callable ``x -> x'``.

    Calling it twice on the same input gives the same output (the noise generator is
    re-seeded on each call), so it can be drawn once by a hypothesis strategy and applied
    to several tensors.

    Args:
        kind: one of :data:`DISTORTION_KINDS`.
        level: severity in ``[0, 1]`` (see :func:`distort`).
        seed: seed of the noise generator (only ``noise`` uses it).

    Raises:
        UnknownNameError: ``kind`` is not a known distortion.
        ArgumentError: ``level`` is outside ``[0, 1]``.

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
        _check_kind(self.kind)
        object.__setattr__(self, "level", _check_level(self.level))
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise DTypeError(f"seed must be an int; got {type(self.seed).__name__} {self.seed!r}")

    def __call__(
        self, x: torch.Tensor, *, value_range: Sequence[float] = (0.0, 1.0)
    ) -> torch.Tensor:
        """Distort ``x`` (see :func:`distort`)."""
        generator = torch.Generator().manual_seed(self.seed)
        return distort(x, self.kind, self.level, generator=generator, value_range=value_range)
