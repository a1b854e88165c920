"""The losses: thin nn.Module shells over percepfid's functional core."""

from .hlf import HLFLoss, ReferenceEmbedding, hlf_fidelity

__all__ = ["HLFLoss", "ReferenceEmbedding", "hlf_fidelity"]
