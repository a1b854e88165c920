"""Pure functions on tensors: the math behind every percepfid module."""

from ._reduction import reduce_loss
from .hlf import high_level_fidelity, hlf_loss

__all__ = ["high_level_fidelity", "hlf_loss", "reduce_loss"]
