"""Training on frozen backbones: :func:`fit_hlf_head` fits an HLF calibration head
(optionally with the backbone's last blocks) to human fidelity scores; :func:`train_rqi`
trains an RQI head on dense pairs of images of one group; :func:`train_nr_head` fits a
no-reference head to mean opinion scores. They share one vocabulary of arguments
(``ratings``, ``columns``, ``epochs``, ``batch_size``, ``lr``, ``val_fraction``, ``seed``,
``device``, ``progress``, ``cache_mb``, ``output_dir``) and read rating tables through
:class:`RatingColumns`."""

from ._common import RatingColumns
from .hlf import HLF_COLUMNS, HLFFitResult, HumanRating, fit_hlf_head, read_ratings
from .nrhead import NR_COLUMNS, train_nr_head
from .rqi import RQI_COLUMNS, RQITrainResult, dense_pairs, train_rqi

__all__ = [
    "HLF_COLUMNS",
    "HLFFitResult",
    "HumanRating",
    "NR_COLUMNS",
    "RQI_COLUMNS",
    "RQITrainResult",
    "RatingColumns",
    "dense_pairs",
    "fit_hlf_head",
    "read_ratings",
    "train_nr_head",
    "train_rqi",
]
