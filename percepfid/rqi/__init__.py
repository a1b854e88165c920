"""The Relative Quality Index: the released MANIQA-RQI model, RQI heads on any backbone, the
multi-scale evaluation protocol and aligned crops. The loss built on them is
:class:`percepfid.RQILoss`."""

from .crops import CROP_MODES, CropSampler, aligned_crop, crop_at, crop_offsets, fit_to_crop
from .head import BackbonePairModel, RQIHead
from .maniqa import (
    MANIQARQI,
    RELEASED_WEIGHTS,
    SMALL_MODEL_KWARGS,
    TransposedAttention,
    create_maniqa_rqi,
    load_released_weights,
)
from .protocol import PROTOCOLS, Protocol, evaluate

__all__ = [
    "CROP_MODES",
    "MANIQARQI",
    "CropSampler",
    "PROTOCOLS",
    "RELEASED_WEIGHTS",
    "SMALL_MODEL_KWARGS",
    "BackbonePairModel",
    "Protocol",
    "RQIHead",
    "TransposedAttention",
    "aligned_crop",
    "create_maniqa_rqi",
    "crop_at",
    "crop_offsets",
    "evaluate",
    "fit_to_crop",
    "load_released_weights",
]
