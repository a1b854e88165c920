"""No-reference image-quality models (the reward of LoRANRIQALoss and the sampler's Q).

Every model maps images ``(B, 3, H, W)`` in ``[0, 1]`` to scores ``(B,)``, is frozen,
stays in ``eval()`` and lets gradients flow to its input. Build one with
:func:`create_nriqa`: ``'clipiqa'`` (open_clip), ``'nr-head:<backbone>'`` (a head fitted to
MOS with :func:`percepfid.train.train_nr_head`), ``'pyiqa:<metric>'`` (optional,
non-commercial licence) or any module / callable.
"""

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
