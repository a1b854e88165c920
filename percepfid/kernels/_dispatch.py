"""Argument checks and backend choice for :func:`percepfid.kernels.cosine_similarity`."""

from __future__ import annotations

import logging
import math

import torch

from .._checks import check_choice, check_positive, check_tensor, kernel_backend
from .._errors import ArgumentError, KernelUnavailableError, ShapeError
from .._vocab import KERNEL_BACKENDS
from ._ops import cosine_similarity_forward, triton_unavailable
from ._reference import REDUCE_NONE, REDUCE_SUM, cosine_spec

logger = logging.getLogger(__name__)

REDUCES = (None, "mean", "sum")
_logged_reasons: set[str] = set()


def select_backend(backend: str, x: torch.Tensor, y: torch.Tensor) -> str:
    """Resolve ``backend`` (``'auto'`` reads ``PERCEPFID_KERNEL``) to ``'torch'`` or ``'triton'``.

    Raises:
        KernelUnavailableError: ``'triton'`` was requested (by argument or by
            ``PERCEPFID_KERNEL=triton``) and cannot serve these tensors.
    """
    requested = backend
    source = f"backend={backend!r}"
    if backend == "auto":
        requested = kernel_backend()
        source = f"PERCEPFID_KERNEL={requested}"
    if requested == "torch":
        return "torch"
    if requested == "auto" and x.device.type != "cuda":
        return "torch"  # the ordinary CPU case: nothing worth logging
    problem = triton_unavailable(x, y)
    if problem is None:
        return "triton"
    reason, fix = problem
    if requested == "triton":
        raise KernelUnavailableError(
            f"{source} cannot serve this call: {reason}. Fix: {fix} "
            f"(or backend='auto', which falls back to the torch reference)."
        )
    message = f"cosine_similarity: using the torch reference instead of Triton: {reason}."
    if not torch.compiler.is_compiling() and message not in _logged_reasons:
        _logged_reasons.add(message)
        logger.info(message)
    return "torch"


def _check_arguments(
    x: object, y: object, dim: object, eps: object, weight: object, reduce: object
) -> tuple[torch.Size, int]:
    """Check every argument but ``backend``; return the broadcast shape and ``dim >= 0``."""
    check_tensor(x, "x")
    check_tensor(y, "y")
    check_choice(reduce, "reduce", REDUCES)
    check_positive(eps, "eps")
    if x.device != y.device:
        raise ArgumentError(f"x and y must be on the same device; got {x.device} and {y.device}")
    try:
        shape = torch.broadcast_shapes(x.shape, y.shape)
    except RuntimeError:
        raise ShapeError(
            f"x and y must have broadcastable shapes; got {tuple(x.shape)} and {tuple(y.shape)}"
        ) from None
    if len(shape) == 0:
        raise ShapeError("x and y need at least one dimension (the feature axis); got scalars")
    if isinstance(dim, bool) or not isinstance(dim, int) or not -len(shape) <= dim < len(shape):
        raise ArgumentError(
            f"dim must be an int in [{-len(shape)}, {len(shape) - 1}] for inputs of shape "
            f"{tuple(shape)}; got {dim!r}"
        )
    dim = dim % len(shape)
    cos_shape = shape[:dim] + shape[dim + 1 :]
    if reduce is not None and len(cos_shape) == 0:
        raise ShapeError(
            f"reduce={reduce!r} needs a token axis, but inputs of shape {tuple(shape)} give a "
            "single cosine; use reduce=None"
        )
    if weight is not None:
        check_tensor(weight, "weight")
        if weight.device != x.device:
            raise ArgumentError(
                f"weight must be on the device of x ({x.device}); got {weight.device}"
            )
        try:
            fits = torch.broadcast_shapes(weight.shape, cos_shape) == cos_shape
        except RuntimeError:
            fits = False
        if not fits:
            raise ShapeError(
                f"weight must broadcast to the per-token cosine shape {tuple(cos_shape)} "
                f"(the inputs without dim={dim}); got shape {tuple(weight.shape)}"
            )
    return shape, dim


def _fused(
    x: torch.Tensor,
    y: torch.Tensor,
    shape: torch.Size,
    dim: int,
    eps: float,
    weight: torch.Tensor | None,
    reduce: str | None,
) -> torch.Tensor:
    """Reshape to ``(L, N, D)`` (a view whenever the strides allow) and call the fused op."""
    x = x.expand(shape).movedim(dim, -1)
    y = y.expand(shape).movedim(dim, -1)
    cos_shape = x.shape[:-1]
    tokens = cos_shape[-1] if cos_shape else 1
    images = math.prod(cos_shape[:-1])
    features = x.shape[-1]
    x3 = x.reshape(images, tokens, features)
    y3 = y.reshape(images, tokens, features)
    weight2 = None
    if weight is not None:
        weight2 = weight.to(torch.float32).expand(cos_shape).reshape(images, tokens)
    reduced = reduce is not None
    scale = 1.0 / tokens if reduce == "mean" and weight is None and tokens else 1.0
    out, _ = cosine_similarity_forward(
        x3, y3, weight2, float(eps), REDUCE_SUM if reduced else REDUCE_NONE, scale
    )
    if reduce == "mean" and weight2 is not None:
        out = out / weight2.sum(-1)
    if reduce == "mean" and tokens == 0:
        out = out / 0.0  # the mean of nothing is NaN, as in torch
    return out.reshape(cos_shape[:-1] if reduced else cos_shape)


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
    """Cosine similarity of embeddings, optionally weighted and reduced over tokens.

    ``cos = <x, y> / (max(||x||, eps) * max(||y||, eps))`` along ``dim``, in float32, with
    the exact derivative as gradient (the full spec: :mod:`percepfid.kernels._reference`).
    ``reduce='mean'`` with a ``weight`` gives ``sum(w * cos) / sum(w)`` over the token axis
    (the cosine's last), per image.

    Backends: ``'torch'`` runs the reference (which ``torch.compile`` fuses well);
    ``'triton'`` runs one fused kernel each way (CUDA tensors of dtype float16/bfloat16/
    float32; CPU tensors only under ``TRITON_INTERPRET=1``) and raises if it cannot serve
    the call; ``'auto'`` follows ``PERCEPFID_KERNEL`` (default: Triton where it can serve
    CUDA tensors, else the reference, logging the reason once). The Triton path gives
    first-order gradients only (double backward and ``torch.func`` transforms need
    ``backend='torch'``); its per-image sums use float32 atomics unless
    ``torch.use_deterministic_algorithms(True)`` is on.

    Args:
        x: embeddings, e.g. ``(B, N, D)`` tokens; gets gradients.
        y: embeddings broadcastable with ``x``; gets gradients when it requires them.
        dim: the feature axis.
        eps: lower bound of each norm, ``> 0``.
        weight: per-token weights broadcastable to the cosine's shape, or ``None``.
        reduce: ``None``, ``'mean'`` or ``'sum'`` over the token axis.
        backend: ``'auto'``, ``'torch'`` or ``'triton'``.

    Shape:
        - x, y: ``(*, D, *)`` with ``D`` at ``dim``, e.g. ``(B, N, D)``.
        - output: the broadcast shape without ``dim`` (``(B, N)``) for ``reduce=None``,
          without the token axis as well (``(B,)``) otherwise.

    Returns:
        The cosine similarity in float32 (float64 if an input is float64).

    Raises:
        DTypeError: ``x``, ``y`` or ``weight`` is not a floating-point tensor.
        ShapeError: shapes do not broadcast, ``weight`` does not fit the cosine's shape,
            or ``reduce`` is set for inputs without a token axis.
        ArgumentError: bad ``dim``, ``eps``, ``reduce``, ``backend`` or devices.
        KernelUnavailableError: ``backend='triton'`` (or ``PERCEPFID_KERNEL=triton``)
            cannot serve the call; the message says why and how to fix it.

    Example:
        >>> import torch
        >>> from percepfid.kernels import cosine_similarity
        >>> x = torch.tensor([[[3.0, 4.0], [1.0, 0.0]]])  # (B=1, N=2, D=2)
        >>> y = torch.tensor([[[4.0, 3.0], [0.0, 2.0]]])
        >>> cosine_similarity(x, y)
        tensor([[0.9600, 0.0000]])
        >>> cosine_similarity(x, y, weight=torch.tensor([3.0, 1.0]), reduce="mean")
        tensor([0.7200])
    """
    check_choice(backend, "backend", KERNEL_BACKENDS)
    shape, dim = _check_arguments(x, y, dim, eps, weight, reduce)
    if select_backend(backend, x, y) == "torch":
        return cosine_spec(x, y, dim, eps, weight, reduce)
    return _fused(x, y, shape, dim, eps, weight, reduce)
