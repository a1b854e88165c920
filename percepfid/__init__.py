"""percepfid: differentiable image-quality losses and metrics for super-resolution."""

from __future__ import annotations

__version__ = "0.1.0.dev0"

from ._errors import (  # noqa: E402
    ArgumentError,
    DTypeError,
    EmptyBatchError,
    KernelUnavailableError,  # noqa: E402
    MissingDependencyError,
    NonFiniteError,
    PercepfidError,
    RangeError,
    ShapeError,
    UnknownNameError,
    WeightsError,
)
from .data import ArgmaxPatchSelector, IQAWeightedSampler, score_candidates  # noqa: E402
from .iqa import create_nriqa, list_nriqa  # noqa: E402
from .kernels import cosine_similarity  # noqa: E402
from .losses import HLFLoss, LoRANRIQALoss, RQILoss  # noqa: E402

__all__ = [
    "ArgmaxPatchSelector",
    "HLFLoss",
    "IQAWeightedSampler",
    "KernelUnavailableError",
    "LoRANRIQALoss",
    "RQILoss",
    "cosine_similarity",
    "create_nriqa",
    "list_nriqa",
    "score_candidates",
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
