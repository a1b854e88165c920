"""No-reference image-quality models (the reward of LoRANRIQALoss and the sampler's Q):
frozen, eval-locked modules from images ``(B, 3, H, W)`` in ``[0, 1]`` to scores ``(B,)``
that let gradients flow to their input. Build one with :func:`create_nriqa`."""

from ._base import CallableNRIQA, NRIQAModel
from ._clipiqa import CLIPIQA, DEFAULT_PROMPTS
from ._factory import create_nriqa, list_nriqa
from ._nrhead import NRHead, NRHeadIQA
from ._pyiqa import PyIQAModel

__all__ = [
    "CLIPIQA",
    "DEFAULT_PROMPTS",
    "CallableNRIQA",
    "NRHead",
    "NRHeadIQA",
    "NRIQAModel",
    "PyIQAModel",
    "create_nriqa",
    "list_nriqa",
]
