"""The losses: thin nn.Module shells over :mod:`percepfid.functional`."""

from .hlf import HLFLoss, ReferenceEmbedding
from .lora_nriqa import LoRANRIQALoss
from .rqi import RQILoss

__all__ = ["HLFLoss", "LoRANRIQALoss", "RQILoss", "ReferenceEmbedding"]
