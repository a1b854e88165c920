"""Fused Triton kernels for the cosine similarity of token embeddings.

Imported lazily (only when the Triton path runs): importing :mod:`percepfid` or
:mod:`percepfid.kernels` never imports triton. The math is that of
:func:`percepfid.kernels._reference.cosine_forward_reference` and
:func:`~percepfid.kernels._reference.cosine_backward_reference`, kernel for function:

* forward: one pass over ``x`` and ``y`` per row block (dot product and both squared norms
  accumulated in float32), then the cosine, the optional per-token weight and the optional
  per-image sum (one float32 atomic add per program; a deterministic two-step sum when
  ``torch.use_deterministic_algorithms(True)`` is on). It also writes three float32 numbers
  per row (cosine, ``||x||``, ``||y||``) so that the backward needs a single pass.
* backward: one pass over ``x`` and ``y`` writing ``dx`` and, when ``y`` requires grad,
  ``dy`` in the input dtypes.

Both kernels take the inputs as ``(L, N, D)`` with arbitrary strides (stride 0 included,
so broadcast and sliced inputs are never copied), run ``BLOCK_R`` rows per program and
loop over ``D`` in ``BLOCK_D`` chunks, so any ``D`` works. Block sizes are chosen by a
heuristic, not ``triton.autotune``, so the same code runs under ``TRITON_INTERPRET=1``
(whose interpreter rejects multi-config autotuning). Nothing here reads a value back to
the host.

``TRITON_INTERPRET=1`` must be set before triton itself is first imported (by anything,
torch included): ``triton.jit`` decides at decoration time whether a function is compiled
or interpreted, and that includes triton's own ``tl.zeros`` and friends.
"""

from __future__ import annotations

import contextlib

import torch
import triton
import triton.language as tl

from ._reference import REDUCE_SUM

__all__ = ["INTERPRETED", "backward", "forward"]


@triton.jit
def _cosine_forward_kernel(
    x_ptr,
    y_ptr,
    w_ptr,
    out_ptr,
    stats_ptr,
    N,
    D,
    row_blocks,
    total_rows,
    stride_xl,
    stride_xn,
    stride_xd,
    stride_yl,
    stride_yn,
    stride_yd,
    stride_wl,
    stride_wn,
    eps,
    scale,
    HAS_WEIGHT: tl.constexpr,
    REDUCE: tl.constexpr,
    BLOCK_R: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    pid = tl.program_id(0)
    image = (pid // row_blocks).to(tl.int64)
    rows = (pid % row_blocks) * BLOCK_R + tl.arange(0, BLOCK_R)
    row_mask = rows < N
    rows = rows.to(tl.int64)
    x_rows = x_ptr + image * stride_xl + rows * stride_xn
    y_rows = y_ptr + image * stride_yl + rows * stride_yn

    dot = tl.zeros((BLOCK_R, BLOCK_D), dtype=tl.float32)
    sum_xx = tl.zeros((BLOCK_R, BLOCK_D), dtype=tl.float32)
    sum_yy = tl.zeros((BLOCK_R, BLOCK_D), dtype=tl.float32)
    for start in range(0, D, BLOCK_D):
        cols = start + tl.arange(0, BLOCK_D)
        mask = row_mask[:, None] & (cols < D)[None, :]
        cols = cols.to(tl.int64)
        # Upcast right after loading: all arithmetic is float32 (also under the interpreter,
        # where bfloat16 arithmetic is not reliable).
        xv = tl.load(x_rows[:, None] + cols[None, :] * stride_xd, mask=mask, other=0.0)
        yv = tl.load(y_rows[:, None] + cols[None, :] * stride_yd, mask=mask, other=0.0)
        xv = xv.to(tl.float32)
        yv = yv.to(tl.float32)
        dot += xv * yv
        sum_xx += xv * xv
        sum_yy += yv * yv
    norm_x = tl.sqrt(tl.sum(sum_xx, axis=1))
    norm_y = tl.sqrt(tl.sum(sum_yy, axis=1))
    cos = tl.sum(dot, axis=1) / (tl.maximum(norm_x, eps) * tl.maximum(norm_y, eps))

    flat = image * N + rows
    tl.store(stats_ptr + flat, cos, mask=row_mask)
    tl.store(stats_ptr + total_rows + flat, norm_x, mask=row_mask)
    tl.store(stats_ptr + 2 * total_rows + flat, norm_y, mask=row_mask)

    value = tl.minimum(tl.maximum(cos, -1.0), 1.0)
    if HAS_WEIGHT:
        weight = tl.load(w_ptr + image * stride_wl + rows * stride_wn, mask=row_mask, other=0.0)
        value = value * weight.to(tl.float32)
    if REDUCE:
        partial = tl.sum(tl.where(row_mask, value, 0.0), axis=0) * scale
        tl.atomic_add(out_ptr + image, partial)
    else:
        tl.store(out_ptr + flat, value, mask=row_mask)


@triton.jit
def _cosine_backward_kernel(
    grad_ptr,
    x_ptr,
    y_ptr,
    w_ptr,
    stats_ptr,
    dx_ptr,
    dy_ptr,
    N,
    D,
    row_blocks,
    total_rows,
    stride_gl,
    stride_gn,
    stride_xl,
    stride_xn,
    stride_xd,
    stride_yl,
    stride_yn,
    stride_yd,
    stride_wl,
    stride_wn,
    eps,
    scale,
    HAS_WEIGHT: tl.constexpr,
    REDUCE: tl.constexpr,
    HAS_DX: tl.constexpr,
    HAS_DY: tl.constexpr,
    BLOCK_R: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    pid = tl.program_id(0)
    image = (pid // row_blocks).to(tl.int64)
    rows = (pid % row_blocks) * BLOCK_R + tl.arange(0, BLOCK_R)
    row_mask = rows < N
    rows = rows.to(tl.int64)

    # Upstream gradient of each row, times its weight (and the mean's 1/N when reduced).
    if REDUCE:
        g = tl.load(grad_ptr + image * stride_gl + rows * 0, mask=row_mask, other=0.0) * scale
    else:
        g = tl.load(grad_ptr + image * stride_gl + rows * stride_gn, mask=row_mask, other=0.0)
    g = g.to(tl.float32)
    if HAS_WEIGHT:
        weight = tl.load(w_ptr + image * stride_wl + rows * stride_wn, mask=row_mask, other=0.0)
        g = g * weight.to(tl.float32)

    flat = image * N + rows
    cos = tl.load(stats_ptr + flat, mask=row_mask, other=0.0)
    norm_x = tl.load(stats_ptr + total_rows + flat, mask=row_mask, other=1.0)
    norm_y = tl.load(stats_ptr + 2 * total_rows + flat, mask=row_mask, other=1.0)
    clamped_x = tl.maximum(norm_x, eps)
    clamped_y = tl.maximum(norm_y, eps)
    a = (g / (clamped_x * clamped_y))[:, None]
    # Where a norm is below eps its clamped value is the constant eps: no radial term.
    b_x = tl.where(norm_x >= eps, g * cos / (clamped_x * clamped_x), 0.0)[:, None]
    b_y = tl.where(norm_y >= eps, g * cos / (clamped_y * clamped_y), 0.0)[:, None]

    x_rows = x_ptr + image * stride_xl + rows * stride_xn
    y_rows = y_ptr + image * stride_yl + rows * stride_yn
    out_rows = flat * D  # dx and dy are contiguous (L, N, D)
    for start in range(0, D, BLOCK_D):
        cols = start + tl.arange(0, BLOCK_D)
        mask = row_mask[:, None] & (cols < D)[None, :]
        cols = cols.to(tl.int64)
        xv = tl.load(x_rows[:, None] + cols[None, :] * stride_xd, mask=mask, other=0.0)
        yv = tl.load(y_rows[:, None] + cols[None, :] * stride_yd, mask=mask, other=0.0)
        xv = xv.to(tl.float32)
        yv = yv.to(tl.float32)
        offsets = out_rows[:, None] + cols[None, :]
        if HAS_DX:
            dx = a * yv - b_x * xv
            tl.store(dx_ptr + offsets, dx.to(dx_ptr.dtype.element_ty), mask=mask)
        if HAS_DY:
            dy = a * xv - b_y * yv
            tl.store(dy_ptr + offsets, dy.to(dy_ptr.dtype.element_ty), mask=mask)


# Whether the kernels above were built for the CPU interpreter (decided at import time).
INTERPRETED: bool = type(_cosine_forward_kernel).__name__ == "InterpretedFunction"


def _next_power_of_2(n: int) -> int:
    return 1 << max(n - 1, 0).bit_length()


def _blocks(n: int, d: int) -> tuple[int, int, int]:
    """(BLOCK_R, BLOCK_D, num_warps) for ``n`` tokens of ``d`` features."""
    if INTERPRETED:
        # Each program instance costs milliseconds in the interpreter: few, large programs.
        block_d = min(_next_power_of_2(d), 2048)
        block_r = min(_next_power_of_2(n), max(1, 65536 // block_d), 256)
        return block_r, block_d, 1
    # The chunk that pads D least (ties: the larger chunk), then rows up to ~4K elements.
    candidates = [c for c in (64, 128, 256, 512, 1024) if c <= _next_power_of_2(d)] or [
        _next_power_of_2(d)
    ]
    block_d = min(candidates, key=lambda c: (-(-d // c) * c, -c))
    block_r = min(_next_power_of_2(n), max(1, 4096 // block_d), 64)
    num_warps = 8 if block_r * block_d >= 4096 else 4
    return block_r, block_d, num_warps


def _on_device(tensor: torch.Tensor) -> contextlib.AbstractContextManager:
    """Launch on the tensor's GPU (triton launches on the current device)."""
    return torch.cuda.device(tensor.device) if tensor.is_cuda else contextlib.nullcontext()


def _weight_args(weight: torch.Tensor | None, x: torch.Tensor) -> tuple[torch.Tensor, int, int]:
    if weight is None:
        return x, 0, 0  # never read (HAS_WEIGHT is False)
    return weight, weight.stride(0), weight.stride(1)


def forward(
    x: torch.Tensor,
    y: torch.Tensor,
    weight: torch.Tensor | None,
    eps: float,
    reduce: int,
    scale: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Launch the forward kernel; same contract as ``cosine_forward_reference``."""
    images, n, d = x.shape
    stats = torch.empty((3, images, n), dtype=torch.float32, device=x.device)
    reduced = reduce == REDUCE_SUM
    # Atomic adds sum in no fixed order; honour torch's deterministic mode with a
    # per-row output and a torch sum instead.
    atomic = reduced and not torch.are_deterministic_algorithms_enabled()
    if atomic:
        out = torch.zeros((images,), dtype=torch.float32, device=x.device)
    else:
        out = torch.empty((images, n), dtype=torch.float32, device=x.device)
    if images * n == 0:
        stats.zero_()
        return (out.sum(-1) * scale if reduced and not atomic else out), stats
    block_r, block_d, num_warps = _blocks(n, d)
    row_blocks = triton.cdiv(n, block_r)
    w, stride_wl, stride_wn = _weight_args(weight, x)
    with _on_device(x):
        _cosine_forward_kernel[(images * row_blocks,)](
            x,
            y,
            w,
            out,
            stats,
            n,
            d,
            row_blocks,
            images * n,
            *x.stride(),
            *y.stride(),
            stride_wl,
            stride_wn,
            float(eps),
            float(scale),
            HAS_WEIGHT=weight is not None,
            REDUCE=atomic,
            BLOCK_R=block_r,
            BLOCK_D=block_d,
            num_warps=num_warps,
        )
    if reduced and not atomic:
        out = out.sum(-1) * scale
    return out, stats


def backward(
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
    """Launch the backward kernel; same contract as ``cosine_backward_reference``."""
    images, n, d = x.shape
    dx = torch.empty((images, n, d) if need_dx else (0,), dtype=x.dtype, device=x.device)
    dy = torch.empty((images, n, d) if need_dy else (0,), dtype=y.dtype, device=y.device)
    if images * n * d == 0 or not (need_dx or need_dy):
        return dx.zero_(), dy.zero_()
    block_r, block_d, num_warps = _blocks(n, d)
    row_blocks = triton.cdiv(n, block_r)
    w, stride_wl, stride_wn = _weight_args(weight, x)
    reduced = reduce == REDUCE_SUM
    stride_gl = grad.stride(0)
    stride_gn = 0 if reduced else grad.stride(1)
    with _on_device(x):
        _cosine_backward_kernel[(images * row_blocks,)](
            grad,
            x,
            y,
            w,
            stats,
            dx,
            dy,
            n,
            d,
            row_blocks,
            images * n,
            stride_gl,
            stride_gn,
            *x.stride(),
            *y.stride(),
            stride_wl,
            stride_wn,
            float(eps),
            float(scale),
            HAS_WEIGHT=weight is not None,
            REDUCE=reduced,
            HAS_DX=need_dx,
            HAS_DY=need_dy,
            BLOCK_R=block_r,
            BLOCK_D=block_d,
            num_warps=num_warps,
        )
    return dx, dy
