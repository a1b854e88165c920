"""The losses: thin nn.Module shells over percepfid's functional core."""

from .hlf import HLFLoss, ReferenceEmbedding, hlf_fidelity
from .lora_nriqa import LoRANRIQALoss
from .rqi import RQILoss

__all__ = ["HLFLoss", "LoRANRIQALoss", "RQILoss", "ReferenceEmbedding", "hlf_fidelity"]
