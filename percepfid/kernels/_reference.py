"""The specification of the cosine kernel, in plain torch.

:func:`cosine_spec` is the spec: ``backend='torch'`` runs it and its autograd gives the
gradients. :func:`cosine_forward_reference` / :func:`cosine_backward_reference` write the
same math the way the Triton kernels compute it (a forward that also returns per-row
statistics, an explicit backward built from them): the CPU implementation of the
registered ops and the kernels' template; tests check them against the spec.

For rows ``x_i``, ``y_i`` (the ``dim`` axis holds the features)::

    cos_i = <x_i, y_i> / (max(||x_i||, eps) * max(||y_i||, eps)),  clamped to [-1, 1]

* Accumulation and result are float32 (float64 for float64 inputs): ``1 - cos`` in half
  precision is too coarse for a loss. Nothing is squared in half precision, and each row
  is divided by a power of two near its largest entry before squaring (exact), so rows
  with norms up to the dtype's maximum stay finite.
* ``eps`` clamps each norm separately (unlike ``torch.nn.functional.cosine_similarity``,
  which clamps under ``no_grad``). The gradient is the exact derivative of the formula:
  where ``||x|| >= eps``, ``d cos / d x = y / (||x|| max(||y||, eps)) - cos x / ||x||^2``;
  where ``||x|| < eps`` the clamped norm is the constant ``eps``, so
  ``d cos / d x = y / (eps max(||y||, eps))``: finite, also at ``x = 0``, never NaN.
* The clamp to ``[-1, 1]`` only removes rounding error and applies to the value only: the
  gradient is that of the unclamped expression (a hard clamp would kill it at ``x || y``).
* ``weight`` is per token. ``reduce=None`` returns ``weight * cos``; ``'sum'`` sums it over
  the token axis (the cosine's last); ``'mean'`` divides that by ``sum(weight)`` (by ``N``
  without weight). A zero weight sum gives inf/NaN (no host sync to check it).
"""

from __future__ import annotations

import math

import torch

KERNEL_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
"""The input dtypes the fused kernel serves (it accumulates in fp32)."""

# Integer codes of the reduction, as passed to the registered ops and the kernels.
REDUCE_NONE = 0
REDUCE_SUM = 1


def compute_dtype(*dtypes: torch.dtype) -> torch.dtype:
    """The accumulation (and output) dtype: float32, or float64 if any input is float64."""
    result = torch.float32
    for dtype in dtypes:
        result = torch.promote_types(result, dtype)
    return result


def _clamp_unit(cos: torch.Tensor) -> torch.Tensor:
    """Clamp the value to [-1, 1] but keep the gradient of the unclamped expression."""
    return cos + (cos.clamp(-1.0, 1.0) - cos).detach()


def _power_of_two_scale(x: torch.Tensor, dim: int) -> torch.Tensor:
    """A power of two near each row's largest magnitude (``dim`` kept), 1 for a zero row."""
    if x.shape[dim] == 0:
        return torch.ones_like(x.sum(dim, keepdim=True))
    peak = x.detach().abs().amax(dim, keepdim=True)
    _, exponent = torch.frexp(peak)  # peak = mantissa * 2**exponent, mantissa in [0.5, 1)
    largest = math.frexp(torch.finfo(x.dtype).max)[1] - 1  # 2**largest is still finite
    return torch.ldexp(torch.ones_like(peak), exponent.clamp(max=largest))


def _cosine_and_norms(
    x: torch.Tensor, y: torch.Tensor, dim: int, eps: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The unclamped cosine and both norms along ``dim``, computed on rows scaled by a power
    of two (exact), so that no square overflows or underflows."""
    scale_x = _power_of_two_scale(x, dim)
    scale_y = _power_of_two_scale(y, dim)
    xs, ys = x / scale_x, y / scale_y
    scale_x, scale_y = scale_x.squeeze(dim), scale_y.squeeze(dim)
    dot = (xs * ys).sum(dim)
    # vector_norm's backward is 0 at a zero vector (not 0/0), which the eps branch needs.
    norm_x = torch.linalg.vector_norm(xs, dim=dim) * scale_x
    norm_y = torch.linalg.vector_norm(ys, dim=dim) * scale_y
    cos = dot / ((norm_x.clamp_min(eps) / scale_x) * (norm_y.clamp_min(eps) / scale_y))
    return cos, norm_x, norm_y


def cosine_spec(
    x: torch.Tensor,
    y: torch.Tensor,
    dim: int,
    eps: float,
    weight: torch.Tensor | None,
    reduce: str | None,
) -> torch.Tensor:
    """The spec: ``cosine_similarity(..., backend='torch')`` on checked arguments (``dim >= 0``)."""
    x, y = torch.broadcast_tensors(x, y)
    dtype = compute_dtype(x.dtype, y.dtype)
    cos, _, _ = _cosine_and_norms(x.to(dtype), y.to(dtype), dim, eps)
    cos = _clamp_unit(cos)
    if weight is not None:
        cos = cos * weight.to(dtype)
    if reduce is None:
        return cos
    total = cos.sum(-1)
    if reduce == "sum":
        return total
    if weight is None:
        return total / cos.shape[-1]
    return total / weight.to(dtype).expand(cos.shape).sum(-1)


def cosine_forward_reference(
    x: torch.Tensor,
    y: torch.Tensor,
    weight: torch.Tensor | None,
    eps: float,
    reduce: int,
    scale: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The fused forward, written in torch: what the forward kernel computes.

    Args:
        x: ``(L, N, D)`` embeddings (any strides).
        y: ``(L, N, D)`` embeddings (any strides).
        weight: ``(L, N)`` per-token weight in the compute dtype, or ``None``.
        eps: the norm clamp.
        reduce: :data:`REDUCE_NONE` or :data:`REDUCE_SUM` (sum over ``N``).
        scale: multiplies the reduced value (``1 / N`` makes the sum a mean).

    Returns:
        ``(out, stats)``: ``out`` is ``(L, N)`` (or ``(L,)`` when reduced) in the compute
        dtype; ``stats`` is ``(3, L, N)``: the unclamped cosine and the two unclamped
        norms per row, which the backward needs so that it reads ``x`` and ``y`` once.
    """
    dtype = compute_dtype(x.dtype, y.dtype)
    cos, norm_x, norm_y = _cosine_and_norms(x.to(dtype), y.to(dtype), -1, eps)
    value = cos.clamp(-1.0, 1.0)
    if weight is not None:
        value = value * weight
    if reduce == REDUCE_SUM:
        value = value.sum(-1) * scale
    return value, torch.stack([cos, norm_x, norm_y])


def cosine_backward_reference(
    grad: torch.Tensor,
    x: torch.Tensor,
    y: torch.Tensor,
    weight: torch.Tensor | None,
    stats: torch.Tensor,
    eps: float,
    reduce: int,
    scale: float,
    need_dx: bool,
    need_dy: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The fused backward, written in torch: ``(dx, dy)`` from ``stats``, in the dtypes of
    ``x`` and ``y`` (an empty tensor for a gradient not requested).

    With ``g`` the upstream gradient of each row (times its weight, and ``scale`` when
    reduced), ``c_x = max(||x||, eps)``, ``u_x = x / c_x`` and ``r_x = cos`` where
    ``||x|| >= eps`` (else 0: the eps branch has no radial term)::

        dx = g / c_x * (u_y - r_x u_x)        dy = g / c_y * (u_x - r_y u_y)

    which forms no product of two norms (finite for norms up to float32's maximum).
    """
    cos, norm_x, norm_y = stats.unbind(0)
    g = grad.unsqueeze(-1) * scale if reduce == REDUCE_SUM else grad
    if weight is not None:
        g = g * weight
    clamped_x = norm_x.clamp_min(eps)
    clamped_y = norm_y.clamp_min(eps)
    zero = torch.zeros((), dtype=cos.dtype, device=cos.device)
    unit_x = x.to(stats.dtype) / clamped_x.unsqueeze(-1)
    unit_y = y.to(stats.dtype) / clamped_y.unsqueeze(-1)
    dx = x.new_empty(0)
    dy = y.new_empty(0)
    if need_dx:
        radial = torch.where(norm_x >= eps, cos, zero).unsqueeze(-1)
        dx = ((g / clamped_x).unsqueeze(-1) * (unit_y - radial * unit_x)).to(x.dtype)
    if need_dy:
        radial = torch.where(norm_y >= eps, cos, zero).unsqueeze(-1)
        dy = ((g / clamped_y).unsqueeze(-1) * (unit_x - radial * unit_y)).to(y.dtype)
    return dx, dy
