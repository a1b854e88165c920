"""Cosine similarity of embeddings: one dispatcher over a torch reference and a fused kernel.

* :func:`cosine_similarity` is the public entry point (argument checks, backend choice).
* ``_reference.py`` is the specification in plain torch (``backend='torch'``).
* ``_triton.py`` holds the fused forward and backward Triton kernels, imported only when
  they run; ``_ops.py`` registers them as ``torch.library`` custom ops
  (``percepfid::cosine_similarity_forward`` / ``_backward``) so that ``torch.compile`` and
  autograd see one node each way.

The default backend comes from ``PERCEPFID_KERNEL`` (``auto``, ``torch`` or ``triton``).
"""

from __future__ import annotations

from .._errors import KernelUnavailableError
from ._dispatch import cosine_similarity

__all__ = ["KernelUnavailableError", "cosine_similarity"]
