"""Small trainable heads that sit on frozen backbones, saved in the Hub format."""

from ._base import FITTED_ON_KEY, BackboneUpdate, HubHead, load_head
from .hlf import CalibrationHead, MLPCalibrationHead

__all__ = [
    "FITTED_ON_KEY",
    "BackboneUpdate",
    "CalibrationHead",
    "HubHead",
    "MLPCalibrationHead",
    "load_head",
]
