"""Where :func:`train_nr_head` was first published; it lives in :mod:`percepfid.train`."""

from ..train import NR_COLUMNS, train_nr_head

__all__ = ["NR_COLUMNS", "train_nr_head"]
