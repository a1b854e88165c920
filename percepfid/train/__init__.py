"""Training loops on frozen backbones: :func:`fit_hlf_head` fits an HLF calibration head
(optionally with the backbone's last blocks) to human fidelity scores; :func:`train_rqi`
trains an RQI head on dense pairs. Both share seeding, group splits, checkpoints and
progress bars (``_common``); images and rating tables come from :mod:`percepfid.data`."""

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
