"""High-level fidelity (HLF) on embeddings: pure math, no modules."""

from __future__ import annotations

import torch

from .._errors import ShapeError
from ..kernels import cosine_similarity
from ._reduction import reduce_loss


def high_level_fidelity(
    sr_embedding: torch.Tensor,
    gt_embedding: torch.Tensor,
    *,
    eps: float = 1e-8,
    weight: torch.Tensor | None = None,
    backend: str = "auto",
) -> torch.Tensor:
    """Cosine fidelity of SR embeddings to GT embeddings, one value per image.

    ``(B, D)`` embeddings give ``cos(e_sr, e_gt)``. ``(B, N, D)`` embeddings (patch tokens
    or tiles) give the mean over ``N`` of the per-token cosines, weighted by ``weight``
    when given.

    Args:
        sr_embedding: ``(B, D)`` or ``(B, N, D)``.
        gt_embedding: same shape as ``sr_embedding``.
        eps: lower bound on each norm (see :func:`percepfid.kernels.cosine_similarity`).
        weight: optional per-token weights ``(B, N)`` or ``(N,)``.
        backend: cosine kernel backend, ``'auto'``, ``'torch'`` or ``'triton'``.

    Returns:
        ``(B,)`` fidelity in ``[-1, 1]``; higher is more faithful.

    Example:
        >>> e = torch.randn(4, 16)
        >>> high_level_fidelity(e, 2 * e)
        tensor([1., 1., 1., 1.])
    """
    if sr_embedding.shape != gt_embedding.shape:
        raise ShapeError(
            "sr_embedding and gt_embedding must have the same shape; "
            f"got {tuple(sr_embedding.shape)} and {tuple(gt_embedding.shape)}"
        )
    if sr_embedding.ndim == 2:
        return cosine_similarity(sr_embedding, gt_embedding, eps=eps, backend=backend)
    if sr_embedding.ndim == 3:
        return cosine_similarity(
            sr_embedding, gt_embedding, eps=eps, weight=weight, reduce="mean", backend=backend
        )
    raise ShapeError(f"embeddings must be (B, D) or (B, N, D); got {tuple(sr_embedding.shape)}")


def hlf_loss(
    sr_embedding: torch.Tensor,
    gt_embedding: torch.Tensor,
    *,
    reduction: str = "mean",
    weight: float = 1.0,
    eps: float = 1e-8,
    backend: str = "auto",
) -> torch.Tensor:
    """``weight * reduce(1 - high_level_fidelity(sr, gt))`` (PAPERS.md section 1 [D]).

    Args:
        sr_embedding: ``(B, D)`` or ``(B, N, D)``.
        gt_embedding: same shape; should carry no autograd graph.
        reduction: ``'mean'``, ``'sum'`` or ``'none'``.
        weight: scale of the loss.
        eps: lower bound on each norm.
        backend: cosine kernel backend.

    Returns:
        A scalar, or ``(B,)`` with ``reduction='none'``.
    """
    fidelity = high_level_fidelity(sr_embedding, gt_embedding, eps=eps, backend=backend)
    return weight * reduce_loss(1.0 - fidelity, reduction)
