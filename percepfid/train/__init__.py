"""Training loops: fitting RQI heads on frozen backbones (and the shared pieces in
:mod:`percepfid.train._common`: seeding, rating CSVs, image loading, checkpoints)."""

from .rqi import RQITrainResult, dense_pairs, train_rqi

__all__ = ["RQITrainResult", "dense_pairs", "train_rqi"]
