"""The losses as functions on tensors (the kornia / torchmetrics pattern).

Each loss Module calls its function here: :class:`~percepfid.HLFLoss` ->
:func:`hlf_fidelity` / :func:`embedding_fidelity` and :func:`fidelity_loss`,
:class:`~percepfid.RQILoss` -> :func:`rqi_score` and :func:`rqi_loss`,
:class:`~percepfid.LoRANRIQALoss` -> :func:`nriqa_reward_loss`.
"""

from ._core import (
    antisymmetrize,
    embedding_fidelity,
    fidelity_loss,
    high_level_fidelity,
    hlf_fidelity,
    hlf_loss,
    huber,
    nriqa_reward_loss,
    reduce_loss,
    rqi_loss,
    rqi_score,
    to_unit,
)

__all__ = [
    "antisymmetrize",
    "embedding_fidelity",
    "fidelity_loss",
    "high_level_fidelity",
    "hlf_fidelity",
    "hlf_loss",
    "huber",
    "nriqa_reward_loss",
    "reduce_loss",
    "rqi_loss",
    "rqi_score",
    "to_unit",
]
