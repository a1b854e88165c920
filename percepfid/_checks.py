"""Input validation shared by every loss and metric, and the ``PERCEPFID_*`` switches
(read from the environment at call time) that govern it and the kernel.

Shape and dtype checks are free and always run. Value checks (finite, inside
``input_range``) read two scalars back from the device once per call; they are skipped
while ``torch.compile`` traces and can be switched off with ``PERCEPFID_CHECKS=0``.
"""

from __future__ import annotations

import math
import operator
import os
from collections.abc import Iterable, Sequence
from typing import Any

import torch

from ._errors import (
    ArgumentError,
    DTypeError,
    EmptyBatchError,
    NonFiniteError,
    RangeError,
    ShapeError,
)
from ._vocab import KERNEL_BACKENDS, REDUCTIONS

# Slack for values a hair outside the range (resampling overshoot, fp16 rounding).
_RANGE_SLACK = 1e-3

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _flag(name: str, default: bool) -> bool:
    value = os.environ.get(name, "1" if default else "0").strip().lower()
    if value not in _TRUE | _FALSE:
        raise ValueError(f"environment variable {name}={value!r}: expected one of 1/0/true/false")
    return value in _TRUE


def input_checks_enabled() -> bool:
    """``PERCEPFID_CHECKS`` (default on): validate value range and finiteness of inputs.

    The value checks read one scalar back from the device per call; training loops that
    have validated their data may turn them off with ``PERCEPFID_CHECKS=0``. Shape and
    dtype checks always run (they cost nothing).
    """
    return _flag("PERCEPFID_CHECKS", True)


def kernel_backend() -> str:
    """``PERCEPFID_KERNEL`` (default ``auto``): the default backend of the cosine kernel."""
    value = os.environ.get("PERCEPFID_KERNEL", "auto").strip().lower()
    if value not in KERNEL_BACKENDS:
        raise ValueError(
            f"environment variable PERCEPFID_KERNEL={value!r}: expected one of "
            + ", ".join(map(repr, KERNEL_BACKENDS))
        )
    return value


def _compiling() -> bool:
    return bool(torch.compiler.is_compiling())


def check_choice(value: Any, name: str, choices: Iterable[Any]) -> Any:
    """Raise :class:`ArgumentError` unless ``value`` is one of ``choices``; return it."""
    choices = tuple(choices)
    if value not in choices:
        raise ArgumentError(
            f"{name} must be one of {', '.join(repr(c) for c in choices)}; got {value!r}"
        )
    return value


def check_reduction(reduction: str) -> str:
    """Validate a ``reduction`` argument (``'mean'``, ``'sum'`` or ``'none'``)."""
    return check_choice(reduction, "reduction", REDUCTIONS)


def check_number(value: Any, name: str) -> float:
    """Raise :class:`DTypeError` unless ``value`` is an int or a float (not a bool)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise DTypeError(f"{name} must be a number; got {type(value).__name__} {value!r}")
    return float(value)


def check_positive(value: float, name: str, *, allow_zero: bool = False) -> float:
    """Raise unless ``value`` is a finite number > 0 (or >= 0 with ``allow_zero``)."""
    check_number(value, name)
    ok = value >= 0 if allow_zero else value > 0
    if not math.isfinite(value) or not ok:
        bound = ">= 0" if allow_zero else "> 0"
        raise ArgumentError(f"{name} must be a finite number {bound}; got {value!r}")
    return float(value)


def check_int(
    value: Any, name: str, *, minimum: int | None = None, maximum: int | None = None
) -> int:
    """Return ``value`` as a Python int when it is an integer (a Python or numpy / torch
    integer scalar, never a bool or a float) inside ``[minimum, maximum]``.

    Raises:
        DTypeError: not an integer.
        ArgumentError: outside the bounds.
    """
    if isinstance(value, bool) or (
        isinstance(value, torch.Tensor) and (value.ndim or value.is_floating_point())
    ):
        raise DTypeError(f"{name} must be an int; got {type(value).__name__} {value!r}")
    try:
        number = operator.index(value)
    except TypeError:
        raise DTypeError(f"{name} must be an int; got {type(value).__name__} {value!r}") from None
    if (minimum is not None and number < minimum) or (maximum is not None and number > maximum):
        low = "-inf" if minimum is None else str(minimum)
        high = "inf" if maximum is None else str(maximum)
        raise ArgumentError(f"{name} must be an int in [{low}, {high}]; got {number!r}")
    return number


# torch.Generator.manual_seed takes seeds in [0, 2**64)
MAX_SEED = 2**64 - 1


def check_seed(value: Any, name: str = "seed") -> int:
    """A seed for ``torch.Generator().manual_seed``: an int in ``[0, 2**64)``."""
    return check_int(value, name, minimum=0, maximum=MAX_SEED)


def check_positive_int(value: int, name: str) -> int:
    """Raise :class:`ArgumentError` unless ``value`` is an int >= 1 (see :func:`check_int`)."""
    try:
        return check_int(value, name, minimum=1)
    except (DTypeError, ArgumentError):
        raise ArgumentError(f"{name} must be a positive int; got {value!r}") from None


def check_input_range(
    input_range: Sequence[float] | None, name: str = "input_range", *, finite: bool = True
) -> tuple[float, float] | None:
    """Validate a ``(low, high)`` range argument, ``input_range`` by default.

    ``finite=False`` accepts infinite bounds (an open-ended ``score_range``, say).
    """
    if input_range is None:
        return None
    try:
        low, high = (float(v) for v in input_range)
    except (TypeError, ValueError):
        raise ArgumentError(
            f"{name} must be a pair (low, high) such as (0, 1) or (-1, 1); got {input_range!r}"
        ) from None
    if not (low < high and (not finite or (math.isfinite(low) and math.isfinite(high)))):
        both = ", both finite" if finite else ""
        raise ArgumentError(f"{name} must satisfy low < high{both}; got {input_range!r}")
    return (low, high)


def check_tensor(x: Any, name: str) -> torch.Tensor:
    """Raise :class:`DTypeError` unless ``x`` is a floating-point tensor."""
    if not isinstance(x, torch.Tensor):
        raise DTypeError(f"{name} must be a torch.Tensor; got {type(x).__name__}")
    if not x.is_floating_point():
        hint = " (for uint8 images use x.float() / 255)" if x.dtype == torch.uint8 else ""
        raise DTypeError(f"{name} must be a floating-point tensor; got dtype {x.dtype}{hint}")
    return x


def check_image(
    x: Any,
    name: str,
    *,
    input_range: tuple[float, float] | None = (0.0, 1.0),
    channels: int = 3,
) -> torch.Tensor:
    """Validate an image batch of shape ``(B, channels, H, W)``.

    Args:
        x: the tensor to check.
        name: the argument name used in error messages (``"sr"``, ``"gt"``, ...).
        input_range: the allowed value range, or ``None`` to skip the range check.
        channels: the required channel count.

    Returns:
        ``x`` unchanged.

    Raises:
        DTypeError: not a floating tensor.
        ShapeError: wrong rank or channel count.
        EmptyBatchError: ``B == 0`` or a zero-sized side.
        NonFiniteError: NaN or inf values.
        RangeError: values outside ``input_range``.
    """
    check_tensor(x, name)
    if x.ndim != 4:
        hint = " (a single image needs a batch dimension: x.unsqueeze(0))" if x.ndim == 3 else ""
        raise ShapeError(
            f"{name} must have shape (B, {channels}, H, W); got {x.ndim} dims {tuple(x.shape)}{hint}"
        )
    if x.shape[1] != channels:
        hint = " (grayscale: x.expand(-1, 3, -1, -1))" if x.shape[1] == 1 and channels == 3 else ""
        raise ShapeError(
            f"{name} must have {channels} channels (B, {channels}, H, W); "
            f"got shape {tuple(x.shape)}{hint}"
        )
    if x.shape[0] == 0:
        raise EmptyBatchError(f"{name} is an empty batch (B == 0); got shape {tuple(x.shape)}")
    if x.shape[2] == 0 or x.shape[3] == 0:
        raise EmptyBatchError(f"{name} has a zero-sized side; got shape {tuple(x.shape)}")
    if _compiling() or not input_checks_enabled():
        return x
    low_high = torch.stack([x.detach().amin(), x.detach().amax()]).float().tolist()
    low, high = low_high
    if not (math.isfinite(low) and math.isfinite(high)):
        raise NonFiniteError(f"{name} contains NaN or infinite values")
    if input_range is not None:
        lo, hi = input_range
        slack = _RANGE_SLACK * (hi - lo)
        if low < lo - slack or high > hi + slack:
            raise RangeError(
                f"{name} has values in [{low:.4g}, {high:.4g}], outside input_range=({lo:g}, {hi:g}). "
                f"Pass input_range=(low, high) matching your data, or rescale it "
                f"(for [-1, 1] data: input_range=(-1, 1))."
            )
    return x


def check_same_shape(a: torch.Tensor, b: torch.Tensor, names: tuple[str, str]) -> None:
    """Raise :class:`ShapeError` unless ``a`` and ``b`` have the same shape."""
    if a.shape != b.shape:
        raise ShapeError(
            f"{names[0]} and {names[1]} must have the same shape; "
            f"got {tuple(a.shape)} and {tuple(b.shape)}"
        )


def check_image_pair(
    a: Any,
    b: Any,
    names: tuple[str, str] = ("sr", "gt"),
    *,
    input_range: tuple[float, float] | None = (0.0, 1.0),
) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate two aligned image batches of the same shape (see :func:`check_image`)."""
    check_image(a, names[0], input_range=input_range)
    check_image(b, names[1], input_range=input_range)
    check_same_shape(a, b, names)
    check_same_device(a, b, names)
    return a, b


def check_same_device(a: torch.Tensor, b: torch.Tensor, names: tuple[str, str]) -> None:
    """Raise :class:`DTypeError` unless ``a`` and ``b`` are on the same device (their dtypes
    may differ: the losses cast both to the model's dtype)."""
    if a.device != b.device:
        raise DTypeError(
            f"{names[0]} and {names[1]} must be on the same device; got {a.device} and "
            f"{b.device} (move one with .to({str(a.device)!r}))"
        )


def check_generator(generator: Any, seed: int | None = None) -> torch.Generator | None:
    """``generator`` if it is a ``torch.Generator``; ``None`` stays ``None``, or becomes a
    fresh generator seeded with ``seed`` when one is given.

    Raises:
        DTypeError: ``generator`` is something else.
    """
    if generator is None:
        return None if seed is None else torch.Generator().manual_seed(seed)
    if not isinstance(generator, torch.Generator):
        raise DTypeError(f"generator must be a torch.Generator; got {type(generator).__name__}")
    return generator
