"""Cosine similarity of embeddings: :func:`cosine_similarity` checks its arguments and
dispatches to the torch spec (``_reference``) or to fused Triton kernels (``_triton``,
imported only when they run) registered as ``torch.library`` ops (``_ops``).
"""

from __future__ import annotations

from .._errors import KernelUnavailableError
from ._dispatch import cosine_similarity

__all__ = ["KernelUnavailableError", "cosine_similarity"]
