"""The Relative Quality Index model and its evaluation protocol.

- :class:`MANIQARQI`: the two-input architecture of the released RQI checkpoint
  (``shaolin999/rqi``), loading it with ``strict=True``; :func:`create_maniqa_rqi`.
- :class:`RQIHead`, :class:`BackbonePairModel`: RQI on any registered backbone.
- :func:`evaluate`: the multi-scale aligned-crop protocol (``'paper'`` / ``'official'``).
- :func:`aligned_crop` and friends: aligned crops drawn from a ``torch.Generator``;
  :class:`CropSampler` draws them in eager code for a compiled step.

The loss built on these is :class:`percepfid.RQILoss` (``percepfid.losses.rqi``).
"""

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
