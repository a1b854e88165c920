"""percepfid: differentiable image-quality losses and metrics for super-resolution.

The top level holds the four losses and samplers, the reference-embedding record, the AMO
patch selector and the errors. Everything else lives in its subpackage:
``percepfid.functional`` (the losses as functions), ``percepfid.backbones``,
``percepfid.heads``, ``percepfid.rqi``, ``percepfid.iqa``, ``percepfid.lora``,
``percepfid.kernels``, ``percepfid.data``, ``percepfid.train``, ``percepfid.eval``,
``percepfid.metrics``, ``percepfid.hub`` and ``percepfid.testing``.
"""

from ._errors import (
    ArgumentError,
    DTypeError,
    EmptyBatchError,
    KernelUnavailableError,
    MissingDependencyError,
    NonFiniteError,
    PercepfidError,
    RangeError,
    ShapeError,
    UnknownNameError,
    WeightsError,
)
from ._lazy import lazy_attributes as _lazy_attributes
from ._version import __version__

# The losses and samplers import torch: they are loaded on first use, so that the command
# line (``percepfid --help``) and ``import percepfid`` stay fast.
_LAZY = {
    "ArgmaxPatchSelector": "data",
    "IQAWeightedSampler": "data",
    "HLFLoss": "losses",
    "LoRANRIQALoss": "losses",
    "RQILoss": "losses",
    "ReferenceEmbedding": "losses",
}

__all__ = [
    "ArgmaxPatchSelector",
    "ArgumentError",
    "DTypeError",
    "EmptyBatchError",
    "HLFLoss",
    "IQAWeightedSampler",
    "KernelUnavailableError",
    "LoRANRIQALoss",
    "MissingDependencyError",
    "NonFiniteError",
    "PercepfidError",
    "RQILoss",
    "RangeError",
    "ReferenceEmbedding",
    "ShapeError",
    "UnknownNameError",
    "WeightsError",
    "__version__",
]


__getattr__, __dir__ = _lazy_attributes(__name__, _LAZY, globals())
