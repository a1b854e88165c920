"""Conversion of user inputs (lists, numpy arrays, torch tensors) to numpy arrays."""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch

from .._errors import DTypeError, EmptyBatchError, NonFiniteError, ShapeError

ArrayLike = Sequence[float] | np.ndarray | torch.Tensor


class ConstantInputWarning(UserWarning):
    """A statistic is undefined because one of its inputs has no variation (result: NaN)."""


def to_array(values: Any, name: str) -> np.ndarray:
    """``values`` (a sequence, numpy array or torch tensor on any device) as float64 numpy."""
    if isinstance(values, torch.Tensor):
        return values.detach().to("cpu", torch.float64).numpy()
    try:
        return np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise DTypeError(
            f"{name} must be a sequence of numbers, a numpy array or a torch tensor; "
            f"got {type(values).__name__} that cannot be converted to float ({error})"
        ) from error


def to_vector(values: Any, name: str) -> np.ndarray:
    """``values`` as a non-empty, finite 1-D float64 array; ``(N, 1)`` or ``(1, N)`` is
    flattened."""
    array = to_array(values, name)
    if sum(size != 1 for size in array.shape) > 1:
        raise ShapeError(
            f"{name} must be 1-D (or (N, 1)); got an array of shape {tuple(array.shape)}"
        )
    array = array.reshape(-1)
    if array.size == 0:
        raise EmptyBatchError(f"{name} is empty; expected at least one value")
    if not np.all(np.isfinite(array)):
        bad = int(np.sum(~np.isfinite(array)))
        raise NonFiniteError(f"{name} holds {bad} NaN or infinite value(s) out of {array.size}")
    return array


def to_labels(values: Any, name: str) -> np.ndarray:
    """Group ids or class labels as a 1-D numpy array (any hashable dtype)."""
    array = np.asarray(values.detach().cpu() if isinstance(values, torch.Tensor) else values)
    if array.ndim != 1:
        raise ShapeError(f"{name} must be 1-D; got an array of shape {tuple(array.shape)}")
    if array.size == 0:
        raise EmptyBatchError(f"{name} is empty; expected at least one value")
    return array


def group_masks(groups: np.ndarray) -> Iterator[np.ndarray]:
    """A boolean mask of the members of each distinct group id, in sorted id order."""
    _, inverse = np.unique(groups, return_inverse=True)
    for index in range(int(inverse.max()) + 1):
        yield inverse.reshape(-1) == index


def check_same_length(*named: tuple[str, np.ndarray]) -> int:
    """Raise :class:`ShapeError` unless all arrays have the same length; return it."""
    lengths = {name: len(array) for name, array in named}
    if len(set(lengths.values())) > 1:
        given = ", ".join(f"{name}: {length}" for name, length in lengths.items())
        raise ShapeError(f"inputs must have the same length; got {given}")
    return next(iter(lengths.values()))


def warn_constant(statistic: str, name: str, stacklevel: int = 3) -> float:
    """Warn that ``statistic`` is undefined because ``name`` is constant; return NaN."""
    warnings.warn(
        f"{statistic} is undefined because {name} is constant (all values equal); returning NaN",
        ConstantInputWarning,
        stacklevel=stacklevel,
    )
    return float("nan")
