"""Train with BasicSR, using percepfid's losses and metrics from the YAML file.

Usage (from the folder that holds ``datasets/``; BasicSR writes ``experiments/`` and
``tb_logger/`` there):

    pip install 'percepfid[basicsr]'
    python examples/basicsr/train.py -opt examples/basicsr/train_MSRResNet_percepfid_x4.yml

All of BasicSR's own options work (``--launcher pytorch`` for several GPUs,
``--auto_resume``, ``--force_yml``). The only difference from ``basicsr/train.py`` is the
first import, which registers percepfid's loss and metric names with BasicSR.
"""

import os

from basicsr.train import train_pipeline

import percepfid.integrations.basicsr  # noqa: F401  (registers PercepfidHLFLoss, ...)

if __name__ == "__main__":
    train_pipeline(os.getcwd())
