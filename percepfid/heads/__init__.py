"""Small trainable heads that sit on frozen backbones, saved in the Hub format."""

from ._base import BackboneUpdate, HubHead, load_head
from .hlf import CalibrationHead, MLPCalibrationHead

__all__ = ["BackboneUpdate", "CalibrationHead", "HubHead", "MLPCalibrationHead", "load_head"]
