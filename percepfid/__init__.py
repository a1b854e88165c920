"""percepfid: differentiable image-quality losses and metrics for super-resolution."""

from __future__ import annotations

__version__ = "0.1.0.dev0"

from ._errors import (  # noqa: E402
    ArgumentError,
    DTypeError,
    EmptyBatchError,
    MissingDependencyError,
    NonFiniteError,
    PercepfidError,
    RangeError,
    ShapeError,
    UnknownNameError,
    WeightsError,
)
from .data import ArgmaxPatchSelector, IQAWeightedSampler  # noqa: E402
from .losses import HLFLoss, RQILoss  # noqa: E402

__all__ = [
    "ArgmaxPatchSelector",
    "HLFLoss",
    "IQAWeightedSampler",
    "RQILoss",
    "__version__",
    "ArgumentError",
    "DTypeError",
    "EmptyBatchError",
    "MissingDependencyError",
    "NonFiniteError",
    "PercepfidError",
    "RangeError",
    "ShapeError",
    "UnknownNameError",
    "WeightsError",
]
