"""Training loops: fitting RQI heads on frozen backbones (and the shared pieces in
:mod:`percepfid.train._common`: seeding, group splits, checkpoints)."""

from .hlf import HLFFitResult, HumanRating, fit_hlf_head, read_ratings
from .rqi import RQITrainResult, dense_pairs, train_rqi

__all__ = [
    "HLFFitResult",
    "HumanRating",
    "RQITrainResult",
    "dense_pairs",
    "fit_hlf_head",
    "read_ratings",
    "train_rqi",
]
