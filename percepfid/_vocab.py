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

BACKBONE_CROPS = ("center", "squash", "tiles")
"""How a backbone's preprocessing makes its fixed-size input: ``'center'`` resizes the short
side, then cuts the centre; ``'squash'`` resizes the whole image (aspect ratio not kept);
``'tiles'`` cuts aligned tiles covering the whole image (fidelity is averaged)."""

RQI_CROPS = ("random", "center", "squash")
"""The crops :class:`~percepfid.RQILoss` offers; ``'random'`` is one aligned crop at a random
position (drawn from a generator)."""

KERNEL_BACKENDS = ("auto", "torch", "triton")
"""``kernel=`` / ``backend=`` of the cosine kernel, and ``PERCEPFID_KERNEL``."""

MATCH_MODES = ("exact", "name", "stem")
"""How files or CSV keys are paired: the exact string, the file name, or the name without
its extension (``percepfid score`` pairs folders by ``'name'`` or ``'stem'``)."""

WEIGHT_KINDS = ("backbone", "head", "rqi", "iqa")
"""The kinds of artefact a weights manifest entry may describe (``iqa``: the towers of NR-IQA
models)."""
