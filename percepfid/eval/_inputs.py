"""Conversion of user inputs (lists, numpy arrays, torch tensors) to float64 vectors."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from .._errors import DTypeError, EmptyBatchError, NonFiniteError, ShapeError

ArrayLike = Sequence[float] | np.ndarray | torch.Tensor


class ConstantInputWarning(UserWarning):
    """A statistic is undefined because one of its inputs has no variation (result: NaN)."""


def to_vector(values: Any, name: str, *, allow_nonfinite: bool = False) -> np.ndarray:
    """Return ``values`` as a 1-D float64 numpy array.

    Accepts lists, tuples, numpy arrays and torch tensors (detached and moved to the CPU).
    A 2-D input with a single column or row, such as ``(N, 1)`` model outputs, is flattened.

    Raises:
        DTypeError: ``values`` is not numeric.
        ShapeError: ``values`` has more than one non-singleton dimension.
        EmptyBatchError: ``values`` is empty.
        NonFiniteError: ``values`` holds NaN or infinity (unless ``allow_nonfinite``).
    """
    if isinstance(values, torch.Tensor):
        array = values.detach().to("cpu", torch.float64).numpy()
    else:
        try:
            array = np.asarray(values, dtype=np.float64)
        except (TypeError, ValueError) as error:
            raise DTypeError(
                f"{name} must be a sequence of numbers, a numpy array or a torch tensor; "
                f"got {type(values).__name__} that cannot be converted to float ({error})"
            ) from error
    if array.ndim > 1:
        if sum(size != 1 for size in array.shape) > 1:
            raise ShapeError(
                f"{name} must be 1-D (or (N, 1)); got an array of shape {tuple(array.shape)}"
            )
    array = array.reshape(-1)
    if array.size == 0:
        raise EmptyBatchError(f"{name} is empty; expected at least one value")
    if not allow_nonfinite and not np.all(np.isfinite(array)):
        bad = int(np.sum(~np.isfinite(array)))
        raise NonFiniteError(f"{name} holds {bad} NaN or infinite value(s) out of {array.size}")
    return array


def to_labels(values: Any, name: str) -> np.ndarray:
    """Return group ids or class labels as a 1-D numpy array (any hashable dtype)."""
    if isinstance(values, torch.Tensor):
        array = values.detach().cpu().numpy()
    else:
        array = np.asarray(values)
    if array.ndim != 1:
        raise ShapeError(f"{name} must be 1-D; got an array of shape {tuple(array.shape)}")
    if array.size == 0:
        raise EmptyBatchError(f"{name} is empty; expected at least one value")
    return array


def check_same_length(*named: tuple[str, np.ndarray]) -> int:
    """Raise :class:`ShapeError` unless all arrays have the same length; return it."""
    lengths = {name: len(array) for name, array in named}
    if len(set(lengths.values())) > 1:
        given = ", ".join(f"{name}: {length}" for name, length in lengths.items())
        raise ShapeError(f"inputs must have the same length; got {given}")
    return next(iter(lengths.values()))


def warn_constant(statistic: str, name: str) -> float:
    """Warn that ``statistic`` is undefined because ``name`` is constant; return NaN."""
    warnings.warn(
        f"{statistic} is undefined because {name} is constant (all values equal); returning NaN",
        ConstantInputWarning,
        stacklevel=3,
    )
    return float("nan")
