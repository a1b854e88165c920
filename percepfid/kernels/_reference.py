"""The readable specification of the cosine kernel, in plain torch (fp32 accumulation)."""

from __future__ import annotations

import torch


def cosine_similarity_reference(
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    dim: int = -1,
    eps: float = 1e-8,
    weight: torch.Tensor | None = None,
    reduce: str | None = None,
) -> torch.Tensor:
    """cos = <x, y> / (max(||x||, eps) * max(||y||, eps)) along ``dim``; see the package doc."""
    out_dtype = torch.promote_types(torch.promote_types(x.dtype, y.dtype), torch.float32)
    xf = x.to(out_dtype).movedim(dim, -1)
    yf = y.to(out_dtype).movedim(dim, -1)
    dot = (xf * yf).sum(-1)
    norm_x = xf.square().sum(-1).sqrt().clamp_min(eps)
    norm_y = yf.square().sum(-1).sqrt().clamp_min(eps)
    cos = dot / (norm_x * norm_y)
    if reduce is None:
        return cos if weight is None else cos * weight.to(out_dtype)
    if weight is None:
        return cos.mean(-1) if reduce == "mean" else cos.sum(-1)
    weight = weight.to(out_dtype)
    weighted = (cos * weight).sum(-1)
    return weighted / weight.expand_as(cos).sum(-1) if reduce == "mean" else weighted
