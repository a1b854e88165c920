"""The losses: thin nn.Module shells over percepfid's functional core."""

from .hlf import HLFLoss, ReferenceEmbedding, hlf_fidelity
from .rqi import RQILoss

__all__ = ["HLFLoss", "RQILoss", "ReferenceEmbedding", "hlf_fidelity"]
