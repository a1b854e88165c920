"""Training on frozen backbones: :func:`fit_hlf_head` fits an HLF calibration head
(optionally with the backbone's last blocks) to human fidelity scores; :func:`train_rqi`
trains an RQI head on dense pairs of images of one group; :func:`train_nr_head` fits a
no-reference head to mean opinion scores.

The trainers share these arguments (each one's docstring lists only its own):

- ``ratings``: a rating CSV with a header line, read through ``columns``, or its rows.
- ``columns``: the CSV's layout, a :class:`RatingColumns` (defaults :data:`HLF_COLUMNS`,
  :data:`RQI_COLUMNS`, :data:`NR_COLUMNS`).
- ``backbone``: a registered backbone name or full spec (or, except for
  :func:`train_nr_head`, a module, never changed in place).
- ``pretrained``: load the backbone's weights (``False``: random weights, tests only);
  ``image_size``: override the backbone's input side (``None``: native).
- ``epochs``, ``lr``, ``batch_size``: passes over the training data, the head's learning
  rate, items per step.
- ``val_fraction``: the share of groups held out for validation (pairs of one group never
  cross the split); ``seed``: seeds every random choice through private generators (the
  global RNG is left as it was).
- ``device``: where to run; default CUDA when available, else the CPU. ``progress``: show
  progress bars (stderr).
- ``cache_mb``: memory for the frozen backbone's outputs kept across epochs; 0 recomputes
  them every time (the same results, slower).
"""

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
