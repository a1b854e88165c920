"""The fused cosine path as ``torch.library`` custom ops, so that it composes with the compiler.

``percepfid::cosine_similarity_forward`` / ``_backward`` are opaque nodes to
``torch.compile(fullgraph=True)`` (their fake implementations give shapes and dtypes), are
linked by :func:`torch.library.register_autograd` and pass ``torch.library.opcheck``. They
run the Triton kernels (imported on first use) wherever :func:`triton_unavailable` allows,
else the torch formulas of ``_reference``.

No ``from __future__ import annotations``: ``custom_op`` reads the type hints for the schema.
"""

import os
import sys

import torch
from torch import Tensor

from .._imports import install_hint, is_available
from ._reference import (
    KERNEL_DTYPES,
    REDUCE_SUM,
    compute_dtype,
    cosine_backward_reference,
    cosine_forward_reference,
)

_TRITON_MODULE = __package__ + "._triton"
# Looked up once, without importing triton: a constant traces under torch.compile.
_TRITON_INSTALLED = is_available("triton")


def triton_unavailable(x: Tensor, y: Tensor) -> tuple[str, str] | None:
    """None when the Triton kernels can serve ``(x, y)``; else ``(reason, fix)``."""
    for name, tensor in (("x", x), ("y", y)):
        if tensor.dtype not in KERNEL_DTYPES:
            return (
                f"{name} has dtype {tensor.dtype}; the kernel supports float16, bfloat16 and "
                "float32 (it accumulates in float32)",
                "use backend='torch' for float64",
            )
    if not _TRITON_INSTALLED:
        return "triton is not installed", f"install it ({install_hint('triton')})"
    if x.device.type == "cuda":
        return None
    if x.device.type != "cpu":
        return (
            f"the tensors are on {x.device.type!r}; the Triton kernel runs on CUDA devices",
            "use backend='torch'",
        )
    fix = (
        "move the tensors to a CUDA device, use backend='torch', or (for testing on CPU) "
        "start the process with TRITON_INTERPRET=1 (before triton is imported)"
    )
    if os.environ.get("TRITON_INTERPRET", "0").strip().lower() not in {"1", "true", "on", "yes"}:
        return "the tensors are on the CPU and TRITON_INTERPRET=1 is not set", fix
    # triton.jit decides at decoration time whether a function is interpreted; that covers
    # triton's own library functions (tl.zeros) as well as percepfid's kernels.
    standard = sys.modules.get("triton.language.standard")
    module = sys.modules.get(_TRITON_MODULE)
    if (standard is not None and type(standard.zeros).__name__ != "InterpretedFunction") or (
        module is not None and not module.INTERPRETED
    ):
        reason = (
            "TRITON_INTERPRET=1 was set after triton was imported (triton decides at import "
            "time whether functions are interpreted)"
        )
        return reason, fix
    return None


def _kernels():
    from . import _triton  # lazy: importing percepfid never imports triton

    return _triton


@torch.library.custom_op("percepfid::cosine_similarity_forward", mutates_args=())
def cosine_similarity_forward(
    x: Tensor, y: Tensor, weight: Tensor | None, eps: float, reduce: int, scale: float
) -> tuple[Tensor, Tensor]:
    """Fused forward on ``(L, N, D)`` inputs; see ``cosine_forward_reference``."""
    if triton_unavailable(x, y) is None:
        return _kernels().forward(x, y, weight, eps, reduce, scale)
    out, stats = cosine_forward_reference(x, y, weight, eps, reduce, scale)
    return out.contiguous(), stats.contiguous()


@cosine_similarity_forward.register_fake
def _forward_fake(x, y, weight, eps, reduce, scale):
    images, tokens, _ = x.shape
    dtype = compute_dtype(x.dtype, y.dtype)
    shape = (images,) if reduce == REDUCE_SUM else (images, tokens)
    return x.new_empty(shape, dtype=dtype), x.new_empty((3, images, tokens), dtype=dtype)


@torch.library.custom_op("percepfid::cosine_similarity_backward", mutates_args=())
def cosine_similarity_backward(
    grad: Tensor,
    x: Tensor,
    y: Tensor,
    weight: Tensor | None,
    stats: Tensor,
    eps: float,
    reduce: int,
    scale: float,
    need_dx: bool,
    need_dy: bool,
) -> tuple[Tensor, Tensor]:
    """Fused backward: ``(dx, dy)``, contiguous, an empty tensor for one not requested."""
    if triton_unavailable(x, y) is None:
        return _kernels().backward(
            grad.to(torch.float32),
            x,
            y,
            weight,
            stats.contiguous(),
            eps,
            reduce,
            scale,
            need_dx,
            need_dy,
        )
    dx, dy = cosine_backward_reference(
        grad, x, y, weight, stats, eps, reduce, scale, need_dx, need_dy
    )
    return dx.contiguous(), dy.contiguous()


@cosine_similarity_backward.register_fake
def _backward_fake(grad, x, y, weight, stats, eps, reduce, scale, need_dx, need_dy):
    return x.new_empty(x.shape if need_dx else (0,)), y.new_empty(y.shape if need_dy else (0,))


def _setup_context(ctx, inputs, output) -> None:
    x, y, weight, eps, reduce, scale = inputs
    _, stats = output
    ctx.save_for_backward(x, y, weight, stats)
    ctx.eps, ctx.reduce, ctx.scale = eps, reduce, scale


def _backward(ctx, grad_out: Tensor, _grad_stats: Tensor | None):
    x, y, weight, stats = ctx.saved_tensors
    need_dx, need_dy, need_weight = ctx.needs_input_grad[:3]
    dx = dy = d_weight = None
    if need_dx or need_dy:
        dx, dy = cosine_similarity_backward(
            grad_out, x, y, weight, stats, ctx.eps, ctx.reduce, ctx.scale, need_dx, need_dy
        )
        dx = dx if need_dx else None
        dy = dy if need_dy else None
    if need_weight:
        # d(weight * clamp(cos)) / d weight: tiny (L, N) math, no pass over D.
        grad_rows = grad_out.unsqueeze(-1) * ctx.scale if ctx.reduce == REDUCE_SUM else grad_out
        d_weight = (grad_rows * stats[0].clamp(-1.0, 1.0)).to(weight.dtype)
    return dx, dy, d_weight, None, None, None


def _no_double_backward(ctx, *grads):
    from .._errors import KernelUnavailableError

    raise KernelUnavailableError(
        "the fused cosine kernel gives first-order gradients only; double backward "
        "(create_graph=True, gradient penalties) needs backend='torch'"
    )


torch.library.register_autograd(
    "percepfid::cosine_similarity_forward", _backward, setup_context=_setup_context
)
torch.library.register_autograd(
    "percepfid::cosine_similarity_backward",
    _no_double_backward,
    setup_context=lambda ctx, inputs, output: None,
)
