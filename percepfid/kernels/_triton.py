"""Fused Triton kernels for the cosine similarity of token embeddings (imported lazily).

The math is that of ``_reference.cosine_forward_reference`` / ``cosine_backward_reference``,
kernel for function. The forward makes one pass over ``x`` and ``y`` per row block and
stores the cosine and both norms per row (float32) so that the backward, which writes
``dx`` and ``dy``, is a single pass too. Per-image sums use a float32 atomic add per program,
or a torch sum under ``torch.use_deterministic_algorithms(True)``.

Inputs are ``(L, N, D)`` with any strides (never copied); each program runs ``BLOCK_R`` rows
and loops over ``D`` in ``BLOCK_D`` chunks. Block sizes come from a heuristic, not
``triton.autotune``, so the same code runs under ``TRITON_INTERPRET=1``. Nothing reads a
value back to the host.
"""

from __future__ import annotations

import contextlib

import torch
import triton
import triton.language as tl

from ._reference import REDUCE_SUM


@triton.jit
def _row_block(N, row_blocks, BLOCK_R: tl.constexpr):
    """The image and the ``BLOCK_R`` token rows of this program, and which rows exist."""
    pid = tl.program_id(0)
    image = (pid // row_blocks).to(tl.int64)
    rows = (pid % row_blocks) * BLOCK_R + tl.arange(0, BLOCK_R)
    row_mask = rows < N
    return image, rows.to(tl.int64), row_mask


@triton.jit
def _row_weight(w_ptr, image, rows, row_mask, stride_wl, stride_wn):
    weight = tl.load(w_ptr + image * stride_wl + rows * stride_wn, mask=row_mask, other=0.0)
    return weight.to(tl.float32)


@triton.jit
def _load_chunk(x_rows, y_rows, start, D, row_mask, stride_xd, stride_yd, BLOCK_D: tl.constexpr):
    """Columns ``start:start + BLOCK_D`` of the rows of ``x`` and ``y``, upcast to float32
    (all arithmetic is float32; the interpreter's bfloat16 arithmetic is not reliable)."""
    cols = start + tl.arange(0, BLOCK_D)
    mask = row_mask[:, None] & (cols < D)[None, :]
    cols = cols.to(tl.int64)
    xv = tl.load(x_rows[:, None] + cols[None, :] * stride_xd, mask=mask, other=0.0)
    yv = tl.load(y_rows[:, None] + cols[None, :] * stride_yd, mask=mask, other=0.0)
    return xv.to(tl.float32), yv.to(tl.float32), cols, mask


@triton.jit
def _power_of_two_at_least(values):
    """Per row, the largest ``2**e <= max |value|`` (``e`` in ``[-126, 126]``), from the
    float32 exponent bits."""
    peak = tl.max(tl.abs(values), axis=1)
    exponent = (peak.to(tl.int32, bitcast=True) >> 23) & 0xFF
    exponent = tl.minimum(tl.maximum(exponent, 1), 253)
    return (exponent << 23).to(tl.float32, bitcast=True)


# Both kernels take their arguments in the order _launch passes them, one role per line.
# fmt: off
@triton.jit
def _cosine_forward_kernel(
    x_ptr, y_ptr, w_ptr, out_ptr, stats_ptr,
    N, D, row_blocks, total_rows,
    stride_xl, stride_xn, stride_xd, stride_yl, stride_yn, stride_yd, stride_wl, stride_wn,
    eps, scale,
    HAS_WEIGHT: tl.constexpr, REDUCE: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_D: tl.constexpr,
):
    # fmt: on
    image, rows, row_mask = _row_block(N, row_blocks, BLOCK_R)
    x_rows = x_ptr + image * stride_xl + rows * stride_xn
    y_rows = y_ptr + image * stride_yl + rows * stride_yn

    # Sums of the rows divided by a per-row power of two (their running magnitude), so no
    # square overflows or underflows; when the power grows the sums are rescaled (exact).
    dot = tl.zeros((BLOCK_R, BLOCK_D), dtype=tl.float32)
    sum_xx = tl.zeros((BLOCK_R, BLOCK_D), dtype=tl.float32)
    sum_yy = tl.zeros((BLOCK_R, BLOCK_D), dtype=tl.float32)
    scale_x = tl.full((BLOCK_R,), 2.0**-126, tl.float32)
    scale_y = tl.full((BLOCK_R,), 2.0**-126, tl.float32)
    for start in range(0, D, BLOCK_D):
        xv, yv, cols, mask = _load_chunk(
            x_rows, y_rows, start, D, row_mask, stride_xd, stride_yd, BLOCK_D
        )
        new_x = tl.maximum(scale_x, _power_of_two_at_least(xv))
        new_y = tl.maximum(scale_y, _power_of_two_at_least(yv))
        shrink_x = (scale_x / new_x)[:, None]
        shrink_y = (scale_y / new_y)[:, None]
        scale_x, scale_y = new_x, new_y
        xv = xv * (1.0 / scale_x)[:, None]
        yv = yv * (1.0 / scale_y)[:, None]
        dot = dot * (shrink_x * shrink_y) + xv * yv
        sum_xx = sum_xx * (shrink_x * shrink_x) + xv * xv
        sum_yy = sum_yy * (shrink_y * shrink_y) + yv * yv
    norm_x = tl.sqrt(tl.sum(sum_xx, axis=1)) * scale_x
    norm_y = tl.sqrt(tl.sum(sum_yy, axis=1)) * scale_y
    clamped = (tl.maximum(norm_x, eps) / scale_x) * (tl.maximum(norm_y, eps) / scale_y)
    cos = tl.sum(dot, axis=1) / clamped

    flat = image * N + rows
    tl.store(stats_ptr + flat, cos, mask=row_mask)
    tl.store(stats_ptr + total_rows + flat, norm_x, mask=row_mask)
    tl.store(stats_ptr + 2 * total_rows + flat, norm_y, mask=row_mask)

    value = tl.minimum(tl.maximum(cos, -1.0), 1.0)
    if HAS_WEIGHT:
        value = value * _row_weight(w_ptr, image, rows, row_mask, stride_wl, stride_wn)
    if REDUCE:
        partial = tl.sum(tl.where(row_mask, value, 0.0), axis=0) * scale
        tl.atomic_add(out_ptr + image, partial)
    else:
        tl.store(out_ptr + flat, value, mask=row_mask)


# fmt: off
@triton.jit
def _cosine_backward_kernel(
    grad_ptr, x_ptr, y_ptr, w_ptr, stats_ptr, dx_ptr, dy_ptr,
    N, D, row_blocks, total_rows,
    stride_gl, stride_gn,
    stride_xl, stride_xn, stride_xd, stride_yl, stride_yn, stride_yd, stride_wl, stride_wn,
    eps, scale,
    HAS_WEIGHT: tl.constexpr, REDUCE: tl.constexpr, HAS_DX: tl.constexpr, HAS_DY: tl.constexpr,
    BLOCK_R: tl.constexpr, BLOCK_D: tl.constexpr,
):
    # fmt: on
    image, rows, row_mask = _row_block(N, row_blocks, BLOCK_R)
    # Upstream gradient of each row, times its weight (and the mean's 1/N when reduced:
    # stride_gn is 0 then, so every row reads its image's gradient).
    g = tl.load(grad_ptr + image * stride_gl + rows * stride_gn, mask=row_mask, other=0.0)
    g = g.to(tl.float32)
    if REDUCE:
        g = g * scale
    if HAS_WEIGHT:
        g = g * _row_weight(w_ptr, image, rows, row_mask, stride_wl, stride_wn)

    flat = image * N + rows
    cos = tl.load(stats_ptr + flat, mask=row_mask, other=0.0)
    norm_x = tl.load(stats_ptr + total_rows + flat, mask=row_mask, other=1.0)
    norm_y = tl.load(stats_ptr + 2 * total_rows + flat, mask=row_mask, other=1.0)
    inv_x = 1.0 / tl.maximum(norm_x, eps)
    inv_y = 1.0 / tl.maximum(norm_y, eps)
    g_x = (g * inv_x)[:, None]
    g_y = (g * inv_y)[:, None]
    # Where a norm is below eps its clamped value is the constant eps: no radial term.
    radial_x = tl.where(norm_x >= eps, cos, 0.0)[:, None]
    radial_y = tl.where(norm_y >= eps, cos, 0.0)[:, None]

    x_rows = x_ptr + image * stride_xl + rows * stride_xn
    y_rows = y_ptr + image * stride_yl + rows * stride_yn
    out_rows = flat * D  # dx and dy are contiguous (L, N, D)
    for start in range(0, D, BLOCK_D):
        xv, yv, cols, mask = _load_chunk(
            x_rows, y_rows, start, D, row_mask, stride_xd, stride_yd, BLOCK_D
        )
        unit_x = xv * inv_x[:, None]
        unit_y = yv * inv_y[:, None]
        offsets = out_rows[:, None] + cols[None, :]
        if HAS_DX:
            dx = g_x * (unit_y - radial_x * unit_x)
            tl.store(dx_ptr + offsets, dx.to(dx_ptr.dtype.element_ty), mask=mask)
        if HAS_DY:
            dy = g_y * (unit_x - radial_y * unit_y)
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


def _launch(kernel, pointers: tuple, x, y, weight, eps, scale, grad_strides=(), **constexprs):
    """Launch ``kernel`` over ``(L, N, D)`` inputs, one program per ``BLOCK_R`` rows:
    ``pointers`` (``None`` for an absent weight), then sizes, strides, ``eps``, ``scale``."""
    images, n, d = x.shape
    block_r, block_d, num_warps = _blocks(n, d)
    row_blocks = triton.cdiv(n, block_r)
    weight_strides = (0, 0) if weight is None else weight.stride()
    with _on_device(x):
        kernel[(images * row_blocks,)](
            *(x if pointer is None else pointer for pointer in pointers),
            n,
            d,
            row_blocks,
            images * n,
            *grad_strides,
            *x.stride(),
            *y.stride(),
            *weight_strides,
            float(eps),
            float(scale),
            HAS_WEIGHT=weight is not None,
            BLOCK_R=block_r,
            BLOCK_D=block_d,
            num_warps=num_warps,
            **constexprs,
        )


def forward(x, y, weight, eps, reduce, scale):
    """Launch the forward kernel; same arguments and results as ``cosine_forward_reference``."""
    images, n, _ = x.shape
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
    else:
        pointers = (x, y, weight, out, stats)
        _launch(_cosine_forward_kernel, pointers, x, y, weight, eps, scale, REDUCE=atomic)
    if reduced and not atomic:
        out = out.sum(-1) * scale
    return out, stats


def backward(grad, x, y, weight, stats, eps, reduce, scale, need_dx, need_dy):
    """Launch the backward kernel; same arguments and results as ``cosine_backward_reference``."""
    images, n, d = x.shape
    dx = torch.empty((images, n, d) if need_dx else (0,), dtype=x.dtype, device=x.device)
    dy = torch.empty((images, n, d) if need_dy else (0,), dtype=y.dtype, device=y.device)
    if images * n * d == 0 or not (need_dx or need_dy):
        return dx.zero_(), dy.zero_()
    reduced = reduce == REDUCE_SUM
    grad_strides = (grad.stride(0), 0 if reduced else grad.stride(1))
    _launch(
        _cosine_backward_kernel,
        (grad, x, y, weight, stats, dx, dy),
        x,
        y,
        weight,
        eps,
        scale,
        grad_strides,
        REDUCE=reduced,
        HAS_DX=need_dx,
        HAS_DY=need_dy,
    )
    return dx, dy
