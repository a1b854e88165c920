"""Hypothesis strategies for image-quality tests: image batches, aligned pairs, distortions.

Needs the optional test dependency hypothesis (``pip install 'percepfid[test]'``); the rest
of :mod:`percepfid.testing` works without it.

Images are built from a drawn seed through a ``torch.Generator`` rather than pixel by pixel,
so drawing a 4x3x64x64 batch costs one ``torch.rand`` call, and hypothesis still shrinks a
failing example towards small sizes, seed 0 and the simplest pattern. Every size, dtype
and range argument takes either a fixed value or a hypothesis strategy.

Example:
    >>> import torch
    >>> from hypothesis import given, settings
    >>> from percepfid.testing import check_symmetric
    >>> from percepfid.testing.strategies import image_pairs
    >>> mse = lambda a, b: (a - b).pow(2).flatten(1).mean(1)
    >>> @settings(max_examples=5, deadline=None)
    ... @given(image_pairs(height=16, width=16))
    ... def test_mse_is_symmetric(pair):
    ...     check_symmetric(mse, *pair)
    >>> test_mse_is_symmetric()
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F

from .._errors import ArgumentError, DTypeError, MissingDependencyError, UnknownNameError
from .distortions import DISTORTION_KINDS, Distortion, _check_value_range

try:
    from hypothesis import assume
    from hypothesis import strategies as st
except ImportError as error:  # pragma: no cover - exercised with hypothesis hidden
    raise MissingDependencyError(
        "percepfid.testing.strategies requires the optional package 'hypothesis', which is "
        f"not installed ({error}). Install it with: pip install 'percepfid[test]'"
    ) from error

__all__ = [
    "FLOAT_DTYPES",
    "PATTERNS",
    "RELATIONS",
    "DistortedPair",
    "distorted",
    "distortions",
    "image_pairs",
    "images",
]

PATTERNS: tuple[str, ...] = ("constant", "binary", "smooth", "uniform")
"""Image contents :func:`images` draws from, simplest first (hypothesis shrinks that way).

``constant``: one value for the whole batch (``low``, ``high`` or in between, so all-zero
images come up); ``binary``: every pixel ``low`` or ``high``; ``smooth``: uniform noise at
a quarter of the resolution, bilinearly upsampled; ``uniform``: i.i.d. uniform pixels.
"""

RELATIONS: tuple[str, ...] = ("independent", "distorted", "identical")
"""How the first image of :func:`image_pairs` relates to the second (the reference)."""

FLOAT_DTYPES: tuple[torch.dtype, ...] = (
    torch.float32,
    torch.float64,
    torch.bfloat16,
    torch.float16,
)
"""Floating dtypes, for ``dtype=st.sampled_from(FLOAT_DTYPES)``."""

_SEEDS = st.integers(min_value=0, max_value=2**32 - 1)
# Default strategies (module-level so signatures show them and they are built once).
_BATCHES = st.integers(1, 4)
_SIDES = st.integers(8, 32)
_LEVELS = st.floats(0.0, 1.0)


class DistortedPair(NamedTuple):
    """A reference batch and its distorted copy, as drawn by :func:`distorted`."""

    distorted: torch.Tensor
    """The distorted images (the first argument of ``metric(a, b)``)."""
    reference: torch.Tensor
    """The undistorted images."""
    distortion: Distortion
    """The distortion applied (kind, level and noise seed)."""


def _as_strategy(value: Any) -> st.SearchStrategy:
    return value if isinstance(value, st.SearchStrategy) else st.just(value)


def _check_side(value: Any, name: str) -> Any:
    if isinstance(value, st.SearchStrategy):
        return value
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ArgumentError(f"{name} must be an int >= 1 or a hypothesis strategy; got {value!r}")
    return value


def _check_dtype(dtype: Any) -> torch.dtype:
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise DTypeError(f"dtype must be a floating torch.dtype; got {dtype!r}")
    return dtype


def _check_names(values: Sequence[str], known: Sequence[str], kind: str, name: str) -> tuple:
    values = (values,) if isinstance(values, str) else tuple(values)
    if not values:
        raise ArgumentError(f"{name} must name at least one of {known}; got an empty sequence")
    for value in values:
        if value not in known:
            raise UnknownNameError(kind, str(value), known)
    return values


class _Spec(NamedTuple):
    """The image arguments of :func:`images`, :func:`image_pairs` and :func:`distorted`,
    checked as far as possible before drawing (sizes, dtype and range may be strategies)."""

    batch: Any
    height: Any
    width: Any
    dtype: Any
    value_range: Any
    patterns: tuple[str, ...]
    device: torch.device | str


def _validate(
    batch: Any,
    height: Any,
    width: Any,
    dtype: Any,
    value_range: Any,
    patterns: Sequence[str],
    device: torch.device | str,
) -> _Spec:
    for name, side in (("batch", batch), ("height", height), ("width", width)):
        _check_side(side, name)
    if not isinstance(dtype, st.SearchStrategy):
        _check_dtype(dtype)
    if not isinstance(value_range, st.SearchStrategy):
        value_range = _check_value_range(value_range)
    patterns = _check_names(patterns, PATTERNS, "image pattern", "patterns")
    return _Spec(batch, height, width, dtype, value_range, patterns, device)


class _Layout(NamedTuple):
    shape: tuple[int, int, int, int]
    dtype: torch.dtype
    bounds: tuple[float, float]


def _draw_layout(draw: Any, spec: _Spec) -> _Layout:
    shape = (
        draw(_as_strategy(spec.batch)),
        3,
        draw(_as_strategy(spec.height)),
        draw(_as_strategy(spec.width)),
    )
    for name, side in zip(
        ("batch", "height", "width"), (shape[0], shape[2], shape[3]), strict=True
    ):
        _check_side(side, name)
    return _Layout(
        shape,
        _check_dtype(draw(_as_strategy(spec.dtype))),
        _check_value_range(draw(_as_strategy(spec.value_range))),
    )


def _draw_unit(
    draw: Any, shape: tuple[int, ...], patterns: tuple[str, ...], stream: int = 0
) -> torch.Tensor:
    """A float32 CPU batch with values in [0, 1].

    ``stream`` separates the generator seeds of images drawn side by side, so two draws
    that shrink to the same seed still differ.
    """
    pattern = draw(st.sampled_from(patterns))
    if pattern == "constant":
        value = draw(st.sampled_from((0.0, 1.0)) | st.floats(0.0, 1.0))
        return torch.full(shape, value, dtype=torch.float32)
    generator = torch.Generator().manual_seed(2 * draw(_SEEDS) + stream)
    if pattern == "binary":
        return (torch.rand(shape, generator=generator) < 0.5).float()
    if pattern == "smooth":
        batch, channels, height, width = shape
        coarse = (batch, channels, -(-height // 4), -(-width // 4))
        low = torch.rand(coarse, generator=generator)
        return F.interpolate(low, size=(height, width), mode="bilinear", align_corners=False)
    return torch.rand(shape, generator=generator)


def _to_range(unit: torch.Tensor, layout: _Layout, device: torch.device | str) -> torch.Tensor:
    low, high = layout.bounds
    images = (low + (high - low) * unit.double()).to(layout.dtype)
    # clamp after the cast: rounding to a narrow dtype must not step outside the range
    return images.clamp(low, high).to(device)


def images(
    *,
    batch: int | st.SearchStrategy[int] = _BATCHES,
    height: int | st.SearchStrategy[int] = _SIDES,
    width: int | st.SearchStrategy[int] = _SIDES,
    dtype: torch.dtype | st.SearchStrategy[torch.dtype] = torch.float32,
    value_range: Sequence[float] | st.SearchStrategy[Sequence[float]] = (0.0, 1.0),
    patterns: Sequence[str] = PATTERNS,
    device: torch.device | str = "cpu",
) -> st.SearchStrategy[torch.Tensor]:
    """Strategy for RGB image batches of varied sizes, contents, dtypes and ranges.

    Args:
        batch: the batch size ``B``, or a strategy for it.
        height: the height ``H``, or a strategy (odd sizes are drawn too).
        width: the width ``W``, or a strategy.
        dtype: a floating dtype, or a strategy such as ``st.sampled_from(FLOAT_DTYPES)``.
        value_range: ``(low, high)``, or a strategy of such pairs, e.g.
            ``st.sampled_from([(0, 1), (-1, 1)])``.
        patterns: the contents to draw from, a subset of :data:`PATTERNS`.
        device: where the tensors are put (generated on CPU, so seeds are portable).

    Shape:
        - drawn value: ``(B, 3, H, W)`` with dtype ``dtype`` and every value in
          ``[low, high]``.

    Returns:
        A hypothesis strategy of image tensors.

    Raises:
        ArgumentError: a size is not a positive int, or ``value_range`` is invalid.
        DTypeError: ``dtype`` is not a floating dtype.
        UnknownNameError: a pattern is unknown.
    """
    return _images(_validate(batch, height, width, dtype, value_range, patterns, device))


@st.composite
def _images(draw: Any, spec: _Spec) -> torch.Tensor:
    layout = _draw_layout(draw, spec)
    return _to_range(_draw_unit(draw, layout.shape, spec.patterns), layout, spec.device)


def image_pairs(
    *,
    batch: int | st.SearchStrategy[int] = _BATCHES,
    height: int | st.SearchStrategy[int] = _SIDES,
    width: int | st.SearchStrategy[int] = _SIDES,
    dtype: torch.dtype | st.SearchStrategy[torch.dtype] = torch.float32,
    value_range: Sequence[float] | st.SearchStrategy[Sequence[float]] = (0.0, 1.0),
    patterns: Sequence[str] = PATTERNS,
    relations: Sequence[str] = ("independent", "distorted"),
    device: torch.device | str = "cpu",
) -> st.SearchStrategy[tuple[torch.Tensor, torch.Tensor]]:
    """Strategy for aligned pairs ``(a, b)``: same shape, dtype, range and device.

    ``b`` is drawn like :func:`images`; ``a`` is then, by a drawn relation: an independent
    image, different from ``b`` in every item (``'independent'``), a distorted copy of
    ``b`` with a drawn kind and level (``'distorted'``; it can equal ``b``, e.g. at level 0
    or for a blurred constant image), or an exact copy of ``b`` (``'identical'``). Checks
    that need ``a != b``, such as non-zero gradients of a distance, should draw
    ``relations=['independent']``.

    Args:
        batch: the batch size ``B``, or a strategy for it.
        height: the height ``H``, or a strategy.
        width: the width ``W``, or a strategy.
        dtype: a floating dtype, or a strategy.
        value_range: ``(low, high)``, or a strategy of such pairs.
        patterns: the contents to draw from, a subset of :data:`PATTERNS`.
        relations: how ``a`` relates to ``b``, a subset of :data:`RELATIONS`.
        device: where the tensors are put.

    Shape:
        - drawn value: two tensors of shape ``(B, 3, H, W)``.

    Returns:
        A hypothesis strategy of ``(a, b)`` tuples.

    Raises:
        ArgumentError, DTypeError, UnknownNameError: as for :func:`images`, or an unknown
            relation.
    """
    spec = _validate(batch, height, width, dtype, value_range, patterns, device)
    relations = _check_names(relations, RELATIONS, "pair relation", "relations")
    return _image_pairs(spec, relations)


@st.composite
def _image_pairs(
    draw: Any, spec: _Spec, relations: tuple[str, ...]
) -> tuple[torch.Tensor, torch.Tensor]:
    layout = _draw_layout(draw, spec)
    reference = _draw_unit(draw, layout.shape, spec.patterns)
    relation = draw(st.sampled_from(relations))
    if relation == "identical":
        first = reference.clone()
    elif relation == "distorted":
        first = draw(distortions())(reference)
    else:
        first = _draw_unit(draw, layout.shape, spec.patterns, stream=1)
    a, b = _to_range(first, layout, spec.device), _to_range(reference, layout, spec.device)
    if relation == "independent":
        # every image of a must differ from its reference (two equal constants, two equal
        # 1x1 binary images, or values that round together in a narrow dtype)
        assume(not bool((a == b).flatten(1).all(1).any()))
    return a, b


def distortions(
    kinds: Sequence[str] = DISTORTION_KINDS,
    level: float | st.SearchStrategy[float] = _LEVELS,
) -> st.SearchStrategy[Distortion]:
    """Strategy for :class:`~percepfid.testing.distortions.Distortion` objects.

    Args:
        kinds: the kinds to draw from, a subset of ``DISTORTION_KINDS``.
        level: a severity in ``[0, 1]`` or a strategy for it.

    Returns:
        A hypothesis strategy of distortions with a drawn kind, level and noise seed.

    Raises:
        UnknownNameError: a kind is unknown.
        ArgumentError: a fixed ``level`` is outside ``[0, 1]``.
    """
    kinds = _check_names(kinds, DISTORTION_KINDS, "distortion", "kinds")
    return _distortions(st.sampled_from(kinds), level)


def _distortions(
    kinds: st.SearchStrategy[str], level: float | st.SearchStrategy[float]
) -> st.SearchStrategy[Distortion]:
    if not isinstance(level, st.SearchStrategy):
        Distortion(DISTORTION_KINDS[0], level)  # validates the level now rather than at draw time
    return st.builds(Distortion, kinds, _as_strategy(level), _SEEDS)


def distorted(
    kind: str | st.SearchStrategy[str] | None = None,
    level: float | st.SearchStrategy[float] | None = None,
    *,
    batch: int | st.SearchStrategy[int] = _BATCHES,
    height: int | st.SearchStrategy[int] = _SIDES,
    width: int | st.SearchStrategy[int] = _SIDES,
    dtype: torch.dtype | st.SearchStrategy[torch.dtype] = torch.float32,
    value_range: Sequence[float] | st.SearchStrategy[Sequence[float]] = (0.0, 1.0),
    patterns: Sequence[str] = PATTERNS,
    device: torch.device | str = "cpu",
) -> st.SearchStrategy[DistortedPair]:
    """Strategy for a reference batch with a distorted copy and the distortion used.

    The distortion is applied in float32 before the cast to ``dtype``, so
    ``pair.distortion(pair.reference, value_range=...)`` reproduces ``pair.distorted`` up
    to rounding.

    Args:
        kind: a distortion kind, a strategy of kinds, or ``None`` for any kind.
        level: a severity in ``[0, 1]``, a strategy, or ``None`` for any level.
        batch, height, width, dtype, value_range, patterns, device: as for :func:`images`.

    Shape:
        - drawn value: ``distorted`` and ``reference`` of shape ``(B, 3, H, W)``.

    Returns:
        A hypothesis strategy of :class:`DistortedPair`.

    Raises:
        ArgumentError, DTypeError, UnknownNameError: as for :func:`images` and
            :func:`distortions`.
    """
    spec = _validate(batch, height, width, dtype, value_range, patterns, device)
    if kind is None:
        kinds = st.sampled_from(DISTORTION_KINDS)
    elif isinstance(kind, st.SearchStrategy):
        kinds = kind
    else:
        kinds = st.just(_check_names(kind, DISTORTION_KINDS, "distortion", "kind")[0])
    return _distorted(spec, _distortions(kinds, _LEVELS if level is None else level))


@st.composite
def _distorted(draw: Any, spec: _Spec, chosen: st.SearchStrategy[Distortion]) -> DistortedPair:
    layout = _draw_layout(draw, spec)
    reference = _draw_unit(draw, layout.shape, spec.patterns)
    distortion = draw(chosen)
    return DistortedPair(
        _to_range(distortion(reference), layout, spec.device),
        _to_range(reference, layout, spec.device),
        distortion,
    )
