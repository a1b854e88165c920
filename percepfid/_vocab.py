"""Every word list the package accepts, defined once.

Losses, backbones, trainers and the command line import these; none spells a list of its
own. Each word has one meaning everywhere it is accepted.
"""

from __future__ import annotations

REDUCTIONS = ("mean", "sum", "none")
"""``reduction=``: mean or sum over the batch, or ``'none'`` for per-image values."""

EMBEDDINGS = ("cls", "patch", "cls+patch")
"""``embedding=``: the pooled embedding, aligned patch tokens, or the mean of both fidelities."""

RQI_EMBEDDINGS = EMBEDDINGS[:2]
"""The embeddings an RQI head can compare (a two-input head takes one kind of feature)."""

CROPS = ("center", "squash", "tiles", "random")
"""How an image becomes a fixed-size model input:

- ``'center'``: resize the short side, then cut the centre;
- ``'squash'``: resize the whole image to the input size (aspect ratio not kept);
- ``'tiles'``: aligned tiles covering the whole image (backbones; fidelity is averaged);
- ``'random'``: one aligned crop at a random position (RQI; positions from a generator).
"""

BACKBONE_CROPS = ("center", "squash", "tiles")
"""The crops a backbone's preprocessing offers."""

RQI_CROPS = ("random", "center", "squash")
"""The crops :class:`~percepfid.RQILoss` offers."""

KERNEL_BACKENDS = ("auto", "torch", "triton")
"""``kernel=`` / ``backend=`` of the cosine kernel, and ``PERCEPFID_KERNEL``."""

MATCH_MODES = ("exact", "name", "stem")
"""How files or CSV keys are paired: the exact string, the file name, or the name without
its extension (``percepfid score`` pairs folders by ``'name'`` or ``'stem'``)."""
