"""Hypothesis strategies for image-quality tests: image batches, aligned pairs, distortions.

Needs the optional test dependency hypothesis (``pip install 'percepfid[test]'``); the rest
of :mod:`percepfid.testing` works without it.

Images are built from a drawn seed through a ``torch.Generator``, so a batch costs one
``torch.rand`` call, and hypothesis still shrinks a failing example towards small sizes,
seed 0 and the simplest pattern. Every size, dtype and range argument takes either a fixed
value or a hypothesis strategy.

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

from collections.abc import Callable, Sequence
from functools import partial
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F

from .._checks import check_positive_int
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
_LEVELS = st.floats(0.0, 1.0)


class DistortedPair(NamedTuple):
    """As drawn by :func:`distorted`: the distorted images (the first argument of
    ``metric(a, b)``), the reference and the distortion applied (kind, level, noise seed)."""

    distorted: torch.Tensor
    reference: torch.Tensor
    distortion: Distortion


def _as_strategy(value: Any) -> st.SearchStrategy:
    return value if isinstance(value, st.SearchStrategy) else st.just(value)


def _check_names(values: Sequence[str], known: Sequence[str], kind: str, name: str) -> tuple:
    values = (values,) if isinstance(values, str) else tuple(values)
    if not values:
        raise ArgumentError(f"{name} must name at least one of {known}; got an empty sequence")
    for value in values:
        if value not in known:
            raise UnknownNameError(kind, str(value), known)
    return values


def _check_dtype(dtype: Any) -> torch.dtype:
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise DTypeError(f"dtype must be a floating torch.dtype; got {dtype!r}")
    return dtype


_CHECKS = {name: partial(check_positive_int, name=name) for name in ("batch", "height", "width")}
_CHECKS.update(dtype=_check_dtype, value_range=_check_value_range)


class _Spec(NamedTuple):
    """The image arguments of :func:`images`, each a value or a strategy; fixed values are
    checked when the strategy is built, drawn ones when they are drawn."""

    batch: Any = st.integers(1, 4)
    height: Any = st.integers(8, 32)
    width: Any = st.integers(8, 32)
    dtype: Any = torch.float32
    value_range: Any = (0.0, 1.0)
    patterns: tuple[str, ...] = PATTERNS
    device: torch.device | str = "cpu"

    @classmethod
    def of(cls, image_args: dict[str, Any]) -> _Spec:
        """The checked spec of keyword arguments of :func:`images`."""
        for name in image_args:
            if name not in cls._fields:
                raise UnknownNameError("image argument", name, cls._fields)
        return cls(**image_args).checked()

    def checked(self) -> _Spec:
        """This spec with its fixed values checked and normalised."""
        patterns = _check_names(self.patterns, PATTERNS, "image pattern", "patterns")
        fixed = {
            name: check(getattr(self, name))
            for name, check in _CHECKS.items()
            if not isinstance(getattr(self, name), st.SearchStrategy)
        }
        return self._replace(patterns=patterns, **fixed)

    def draw_reference(self, draw: Any) -> tuple[torch.Tensor, Callable[..., torch.Tensor]]:
        """A float32 unit-range CPU batch, and the function taking such a batch to the
        drawn dtype, value range and device."""
        drawn = {
            name: check(draw(_as_strategy(getattr(self, name)))) for name, check in _CHECKS.items()
        }
        shape = (drawn["batch"], 3, drawn["height"], drawn["width"])
        low, high = drawn["value_range"]

        def finish(unit: torch.Tensor) -> torch.Tensor:
            images = (low + (high - low) * unit.double()).to(drawn["dtype"])
            # clamp after the cast: rounding to a narrow dtype must not step outside the range
            return images.clamp(low, high).to(self.device)

        return _draw_unit(draw, shape, self.patterns), finish


_DEFAULT = _Spec()


def _draw_unit(
    draw: Any, shape: tuple[int, ...], patterns: tuple[str, ...], stream: int = 0
) -> torch.Tensor:
    """A float32 CPU batch with values in [0, 1]; ``stream`` separates the seeds of images
    drawn side by side, so two draws that shrink to the same seed still differ."""
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


def images(
    *,
    batch: int | st.SearchStrategy[int] = _DEFAULT.batch,
    height: int | st.SearchStrategy[int] = _DEFAULT.height,
    width: int | st.SearchStrategy[int] = _DEFAULT.width,
    dtype: torch.dtype | st.SearchStrategy[torch.dtype] = _DEFAULT.dtype,
    value_range: Sequence[float] | st.SearchStrategy[Sequence[float]] = _DEFAULT.value_range,
    patterns: Sequence[str] = _DEFAULT.patterns,
    device: torch.device | str = _DEFAULT.device,
) -> st.SearchStrategy[torch.Tensor]:
    """Strategy for RGB image batches ``(B, 3, H, W)`` of varied sizes, contents, dtypes and
    ranges, every value in ``[low, high]``.

    Args:
        batch, height, width: the sizes, or strategies for them (odd sizes are drawn too).
        dtype: a floating dtype, or a strategy such as ``st.sampled_from(FLOAT_DTYPES)``.
        value_range: ``(low, high)``, or a strategy of such pairs.
        patterns: the contents to draw from, a subset of :data:`PATTERNS`.
        device: where the tensors are put (generated on CPU, so seeds are portable).

    Fixed values are checked at once, drawn ones when drawn: ``ArgumentError`` (a size, the
    range), ``DTypeError`` (the dtype), ``UnknownNameError`` (a pattern; for the functions
    taking ``**image_args``, also an argument name).
    """
    return _images(_Spec(batch, height, width, dtype, value_range, patterns, device).checked())


@st.composite
def _images(draw: Any, spec: _Spec) -> torch.Tensor:
    unit, finish = spec.draw_reference(draw)
    return finish(unit)


def image_pairs(
    *, relations: Sequence[str] = ("independent", "distorted"), **image_args: Any
) -> st.SearchStrategy[tuple[torch.Tensor, torch.Tensor]]:
    """Strategy for aligned pairs ``(a, b)``: same shape, dtype, range and device.

    ``b`` is drawn like :func:`images` (with its keyword arguments ``image_args``); ``a``
    is then, by a relation drawn from ``relations``: an independent image, different from
    ``b`` in every item (``'independent'``), a distorted copy of ``b`` (``'distorted'``;
    it can equal ``b``, e.g. at level 0), or an exact copy of ``b`` (``'identical'``).
    Checks that need ``a != b`` should draw ``relations=['independent']``. Raises as
    :func:`images` does, and ``UnknownNameError`` for an unknown relation.
    """
    spec = _Spec.of(image_args)
    return _image_pairs(spec, _check_names(relations, RELATIONS, "pair relation", "relations"))


@st.composite
def _image_pairs(
    draw: Any, spec: _Spec, relations: tuple[str, ...]
) -> tuple[torch.Tensor, torch.Tensor]:
    reference, finish = spec.draw_reference(draw)
    relation = draw(st.sampled_from(relations))
    if relation == "identical":
        first = reference.clone()
    elif relation == "distorted":
        first = draw(distortions())(reference)
    else:
        first = _draw_unit(draw, reference.shape, spec.patterns, stream=1)
    a, b = finish(first), finish(reference)
    if relation == "independent":
        # every image of a must differ from its reference (two equal constants, two equal
        # 1x1 binary images, or values that round together in a narrow dtype)
        assume(not bool((a == b).flatten(1).all(1).any()))
    return a, b


def distortions(
    kinds: str | Sequence[str] | st.SearchStrategy[str] = DISTORTION_KINDS,
    level: float | st.SearchStrategy[float] = _LEVELS,
) -> st.SearchStrategy[Distortion]:
    """Strategy for :class:`~percepfid.testing.distortions.Distortion` objects with a drawn
    kind (from ``kinds``, or drawn from it if a strategy), level (``level`` or a draw from
    it) and noise seed; an unknown kind raises ``UnknownNameError``, a fixed ``level``
    outside ``[0, 1]`` ``ArgumentError``."""
    if not isinstance(kinds, st.SearchStrategy):
        kinds = st.sampled_from(_check_names(kinds, DISTORTION_KINDS, "distortion", "kinds"))
    if not isinstance(level, st.SearchStrategy):
        Distortion(DISTORTION_KINDS[0], level)  # validates the level now rather than at draw time
    return st.builds(Distortion, kinds, _as_strategy(level), _SEEDS)


def distorted(
    kind: str | st.SearchStrategy[str] | None = None,
    level: float | st.SearchStrategy[float] | None = None,
    **image_args: Any,
) -> st.SearchStrategy[DistortedPair]:
    """Strategy for a reference batch (drawn like :func:`images`, with its keyword
    arguments ``image_args``), a distorted copy and the distortion used.

    The distortion is applied in float32 before the cast to ``dtype``, so
    ``pair.distortion(pair.reference, value_range=...)`` reproduces ``pair.distorted`` up
    to rounding.

    Args:
        kind: a distortion kind, a strategy of kinds, or ``None`` for any kind.
        level: a severity in ``[0, 1]``, a strategy, or ``None`` for any level.

    Raises as :func:`images` and :func:`distortions` do.
    """
    spec = _Spec.of(image_args)
    kinds = DISTORTION_KINDS if kind is None else kind
    return _distorted(spec, distortions(kinds, _LEVELS if level is None else level))


@st.composite
def _distorted(draw: Any, spec: _Spec, chosen: st.SearchStrategy[Distortion]) -> DistortedPair:
    reference, finish = spec.draw_reference(draw)
    distortion = draw(chosen)
    return DistortedPair(finish(distortion(reference)), finish(reference), distortion)
