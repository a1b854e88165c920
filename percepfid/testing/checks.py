"""Property checks for image-quality metrics, usable from any test framework.

Each ``check_*`` function runs a metric on the given inputs and raises ``AssertionError``
with a message naming the failing items and values when a property does not hold (in the
manner of ``torch.testing.assert_close``); it returns ``None`` when it holds. Misuse of a
check (wrong argument types, a batch too small to test anything) raises percepfid's typed
errors instead, so a broken test is never mistaken for a broken metric.

The metric contract:
    A *metric* is any callable ``metric(a, b) -> Tensor`` taking two image batches of the
    same shape ``(B, C, H, W)`` and returning one value per image, shape ``(B,)``, or a
    scalar (shape ``()``, e.g. a loss with ``reduction='mean'``). ``a`` is the image under
    test (the super-resolved output, which receives gradients) and ``b`` the reference
    (the ground truth). Losses, functional metrics, ``nn.Module`` instances and lambdas all
    qualify. Checks other than :func:`check_gradients` call the metric under
    ``torch.no_grad()``.

Misuse:
    Every check first validates its arguments: ``DTypeError`` when ``metric`` is not
    callable or an image batch is not a floating tensor, ``ShapeError`` when ``a`` and
    ``b`` differ in shape. Image batches are ``(B, C, H, W)`` (any shape the metric
    accepts).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from .._checks import check_same_shape, check_tensor
from .._errors import ArgumentError, DTypeError, ShapeError
from .distortions import distort

__all__ = [
    "Metric",
    "check_antisymmetric",
    "check_batch_invariance",
    "check_dtype_consistency",
    "check_gradients",
    "check_identity",
    "check_monotone",
    "check_range",
    "check_symmetric",
    "spearman",
]

Metric = Callable[[torch.Tensor, torch.Tensor], Any]
"""``metric(a, b) -> Tensor`` of shape ``(B,)`` or ``()``; see the module docstring."""

_SHOWN = 8  # values printed per tensor in failure messages


def _check_arguments(metric: Any, a: Any, b: Any) -> None:
    """Raise percepfid's typed errors unless ``metric`` is callable and ``a``, ``b`` are
    floating image batches of the same shape."""
    if not callable(metric):
        raise DTypeError(
            f"metric must be a callable metric(a, b) -> Tensor; got {type(metric).__name__}"
        )
    check_tensor(a, "a")
    check_tensor(b, "b")
    if a.ndim == 0:
        raise ShapeError(f"a must be a batch of images (B, C, H, W); got shape {tuple(a.shape)}")
    check_same_shape(a, b, ("a", "b"))


def _format(values: torch.Tensor) -> str:
    flat = values.detach().reshape(-1).double().cpu().tolist()
    text = ", ".join(f"{v:.6g}" for v in flat[:_SHOWN])
    more = f", ... ({len(flat)} values)" if len(flat) > _SHOWN else ""
    return f"[{text}{more}]"


def _evaluate(metric: Metric, a: torch.Tensor, b: torch.Tensor, check: str) -> torch.Tensor:
    """Call ``metric(a, b)`` and validate that it returns a ``(B,)`` or scalar tensor."""
    scores = metric(a, b)
    if isinstance(scores, (int, float)) and not isinstance(scores, bool):
        scores = torch.tensor(float(scores))
    if not isinstance(scores, torch.Tensor):
        raise AssertionError(
            f"{check}: metric(a, b) must return a tensor; got {type(scores).__name__}"
        )
    batch = a.shape[0]
    if scores.shape not in (torch.Size([]), torch.Size([batch])):
        raise AssertionError(
            f"{check}: metric(a, b) must return one value per image, shape ({batch},), or a "
            f"scalar; got shape {tuple(scores.shape)} for inputs of shape {tuple(a.shape)}"
        )
    if not scores.is_floating_point():
        raise AssertionError(
            f"{check}: metric(a, b) must return floating-point values; got {scores.dtype}"
        )
    return scores


def _evaluate_both_orders(
    metric: Metric, a: torch.Tensor, b: torch.Tensor, check: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(metric(a, b), metric(b, a))`` under ``torch.no_grad()``, after checking the
    arguments; each value is checked by ``_evaluate``."""
    _check_arguments(metric, a, b)
    with torch.no_grad():
        return _evaluate(metric, a, b, check), _evaluate(metric, b, a, check)


def _assert_close(
    check: str,
    relation: str,
    actual: tuple[str, torch.Tensor],
    expected: tuple[str, torch.Tensor],
    atol: float,
    rtol: float,
) -> None:
    """Raise unless ``|actual - expected| <= atol + rtol * |expected|`` for every item.

    ``actual`` and ``expected`` are ``(name, values)`` pairs; the names label the values in
    the failure message, under ``check`` and the ``relation`` that should hold.
    """
    names = (actual[0], expected[0])
    actual, expected = torch.broadcast_tensors(
        actual[1].detach().double().cpu(), expected[1].detach().double().cpu()
    )
    close = torch.isclose(actual, expected, rtol=rtol, atol=atol)
    if bool(close.all()):
        return
    failing = (~close).reshape(-1).nonzero().flatten().tolist()
    difference = (actual - expected).abs().reshape(-1)[failing]
    worst = difference.nan_to_num(nan=float("inf")).max().item()
    width = max(len(name) for name in names)
    raise AssertionError(
        f"{check} failed: {relation} does not hold for item(s) {failing[:_SHOWN]}"
        f"{' ...' if len(failing) > _SHOWN else ''} of {actual.numel()}; "
        f"largest |difference| {worst:.3g} (atol={atol:g}, rtol={rtol:g})\n"
        f"  {names[0].ljust(width)} = {_format(actual)}\n"
        f"  {names[1].ljust(width)} = {_format(expected)}"
    )


def check_identity(
    metric: Metric,
    x: torch.Tensor,
    expected: float | torch.Tensor,
    *,
    atol: float = 1e-5,
    rtol: float = 0.0,
) -> None:
    """Check that ``metric(x, x)`` equals the metric's identity value (``0`` for a loss,
    ``1`` for a similarity).

    The metric receives ``x`` and a copy of ``x`` (not the same object), so a shortcut on
    ``a is b`` does not pass for the real thing.

    Args:
        metric: ``metric(a, b) -> (B,) or ()``.
        x: images.
        expected: the identity value, a number or a tensor broadcastable to the output.
        atol: absolute tolerance.
        rtol: relative tolerance.

    Shape:
        - x: ``(B, C, H, W)`` (any shape the metric accepts).

    Raises:
        AssertionError: some ``metric(x, x)`` differs from ``expected`` (or is NaN).
        DTypeError: ``metric`` is not callable or ``x`` is not a floating tensor.

    Example:
        >>> import torch
        >>> mse = lambda a, b: (a - b).pow(2).flatten(1).mean(1)
        >>> check_identity(mse, torch.rand(2, 3, 8, 8), 0.0)
    """
    _check_arguments(metric, x, x)
    with torch.no_grad():
        scores = _evaluate(metric, x, x.clone(), "check_identity")
    target = torch.as_tensor(expected, dtype=torch.float64)
    _assert_close(
        "check_identity",
        f"metric(x, x) == {_format(target) if target.ndim else f'{float(target):g}'}",
        ("metric(x, x)", scores),
        ("expected", target),
        atol,
        rtol,
    )


def check_symmetric(
    metric: Metric,
    a: torch.Tensor,
    b: torch.Tensor,
    *,
    atol: float = 1e-5,
    rtol: float = 1e-5,
) -> None:
    """Check that ``metric(a, b) == metric(b, a)`` within tolerance.

    Args:
        metric: ``metric(a, b) -> (B,) or ()``.
        a: first images.
        b: second images, same shape as ``a``.
        atol: absolute tolerance.
        rtol: relative tolerance.

    Raises:
        AssertionError: the two orders disagree for some item.

    Example:
        >>> import torch
        >>> mse = lambda a, b: (a - b).pow(2).flatten(1).mean(1)
        >>> check_symmetric(mse, torch.rand(2, 3, 8, 8), torch.rand(2, 3, 8, 8))
    """
    forward, backward = _evaluate_both_orders(metric, a, b, "check_symmetric")
    _assert_close(
        "check_symmetric",
        "metric(a, b) == metric(b, a)",
        ("metric(a, b)", forward),
        ("metric(b, a)", backward),
        atol,
        rtol,
    )


def check_antisymmetric(
    metric: Metric,
    a: torch.Tensor,
    b: torch.Tensor,
    *,
    exact: bool = False,
    atol: float = 1e-5,
    rtol: float = 1e-5,
) -> None:
    """Check that ``metric(a, b) == -metric(b, a)``, e.g. for a preference score.

    Args:
        metric, a, b, atol, rtol: as for :func:`check_symmetric`.
        exact: require bitwise equality (``atol`` and ``rtol`` are then ignored), for
            metrics built as ``f(a, b) - f(b, a)`` that should cancel exactly.

    Raises:
        AssertionError: ``metric(a, b) != -metric(b, a)`` for some item.

    Example:
        >>> import torch
        >>> brighter = lambda a, b: (a - b).flatten(1).mean(1)
        >>> check_antisymmetric(brighter, torch.rand(2, 3, 8, 8), torch.rand(2, 3, 8, 8), exact=True)
    """
    forward, backward = _evaluate_both_orders(metric, a, b, "check_antisymmetric")
    _assert_close(
        "check_antisymmetric" + (" (exact)" if exact else ""),
        "metric(a, b) == -metric(b, a)",
        ("metric(a, b)", forward),
        ("-metric(b, a)", -backward),
        0.0 if exact else atol,
        0.0 if exact else rtol,
    )


def check_range(
    metric: Metric,
    a: torch.Tensor,
    b: torch.Tensor,
    low: float = float("-inf"),
    high: float = float("inf"),
) -> None:
    """Check that every ``metric(a, b)`` value is finite and inside ``[low, high]``.

    Args:
        metric: ``metric(a, b) -> (B,) or ()``.
        a: first images.
        b: second images, same shape as ``a``.
        low: smallest allowed value.
        high: largest allowed value.

    Raises:
        AssertionError: a value is NaN, infinite or outside ``[low, high]``.
        ArgumentError: ``low > high``.

    Example:
        >>> import torch
        >>> cosine = lambda a, b: torch.cosine_similarity(a.flatten(1), b.flatten(1))
        >>> check_range(cosine, torch.rand(2, 3, 8, 8), torch.rand(2, 3, 8, 8), -1.0, 1.0)
    """
    _check_arguments(metric, a, b)
    if not low <= high:
        raise ArgumentError(f"check_range needs low <= high; got low={low!r}, high={high!r}")
    with torch.no_grad():
        scores = _evaluate(metric, a, b, "check_range").detach().double().cpu()
    bad = ~torch.isfinite(scores) | (scores < low) | (scores > high)
    if bool(bad.any()):
        failing = bad.reshape(-1).nonzero().flatten().tolist()
        raise AssertionError(
            f"check_range failed: metric(a, b) must be finite and in [{low:g}, {high:g}]; "
            f"item(s) {failing[:_SHOWN]} are not\n  metric(a, b) = {_format(scores)}"
        )


def check_gradients(
    metric: Metric,
    a: torch.Tensor,
    b: torch.Tensor,
    *,
    first_only: bool = True,
) -> None:
    """Check that gradients of ``metric(a, b)`` are finite, non-zero and (by default) flow
    only into ``a``.

    Runs ``metric(a', b')`` on fresh leaf copies that both have ``requires_grad=True`` and
    differentiates the sum of the outputs with ``torch.autograd.grad``, so the ``.grad``
    of the metric's own parameters is left untouched. Every image of ``a`` must receive a
    finite gradient that is not identically zero. With ``first_only=True`` (a loss whose
    reference is a fixed target) ``b'`` must not be connected to the output at all, i.e.
    ``b.grad`` would stay ``None`` after ``backward()`` even though ``b.requires_grad``;
    with ``first_only=False`` ``b`` must receive finite non-zero gradients as well.

    Args:
        metric: ``metric(a, b) -> (B,) or ()``, differentiable in ``a``.
        a: images the gradient is taken with respect to (values are copied).
        b: reference images, same shape as ``a``.
        first_only: require that no gradient reaches ``b``.

    Raises:
        AssertionError: the output is not finite or not connected to ``a``, some image of
            ``a`` gets a non-finite or all-zero gradient, or the gradient reaches ``b``
            (``first_only``) or fails the same tests on ``b`` (not ``first_only``).

    Example:
        >>> import torch
        >>> mse = lambda sr, gt: (sr - gt.detach()).pow(2).flatten(1).mean(1)
        >>> check_gradients(mse, torch.rand(2, 3, 8, 8), torch.rand(2, 3, 8, 8))
    """
    _check_arguments(metric, a, b)
    check = "check_gradients"
    leaf_a = a.detach().clone().requires_grad_(True)
    leaf_b = b.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        scores = _evaluate(metric, leaf_a, leaf_b, check)
        if not bool(torch.isfinite(scores.detach()).all()):
            raise AssertionError(
                f"{check} failed: metric(a, b) is not finite\n  metric(a, b) = {_format(scores)}"
            )
        if not scores.requires_grad:
            raise AssertionError(
                f"{check} failed: metric(a, b) does not require grad, so no gradient reaches a "
                "(is the output detached, or computed under torch.no_grad()?)"
            )
        grad_a, grad_b = torch.autograd.grad(scores.sum(), (leaf_a, leaf_b), allow_unused=True)

    def _check_grad(grad: torch.Tensor | None, name: str) -> None:
        if grad is None:
            raise AssertionError(f"{check} failed: metric(a, b) is not connected to {name}")
        per_image = grad.detach().reshape(grad.shape[0], -1)
        nonfinite = (~torch.isfinite(per_image)).any(1).nonzero().flatten().tolist()
        if nonfinite:
            raise AssertionError(
                f"{check} failed: the gradient with respect to {name} has NaN or inf values "
                f"in image(s) {nonfinite[:_SHOWN]}"
            )
        zero = (per_image == 0).all(1).nonzero().flatten().tolist()
        if zero:
            raise AssertionError(
                f"{check} failed: the gradient with respect to {name} is zero everywhere in "
                f"image(s) {zero[:_SHOWN]} (a stationary point such as a == b, a "
                "non-differentiable step, or an input the metric ignores)"
            )

    _check_grad(grad_a, "a")
    if first_only:
        if grad_b is not None:
            largest = grad_b.detach().abs().max().item()
            raise AssertionError(
                f"{check} failed: the gradient reaches the reference b (largest |grad| "
                f"{largest:.3g}); b.grad would not stay None. Compute the reference branch "
                "under torch.no_grad() or detach it."
            )
    else:
        _check_grad(grad_b, "b")


def check_batch_invariance(
    metric: Metric,
    a: torch.Tensor,
    b: torch.Tensor,
    *,
    atol: float = 1e-5,
    rtol: float = 1e-4,
    seed: int = 0,
) -> None:
    """Check that each item's value does not depend on the rest of the batch.

    Computes ``metric(a, b)`` on the whole batch, on each pair ``(a[i:i+1], b[i:i+1])``
    alone, and on the batch in a shuffled order; the value of every item must agree across
    the three. Catches batch-wise normalisation, statistics shared across the batch and
    position-dependent weighting.

    Args:
        metric: ``metric(a, b) -> (B,)``; per-item values are required.
        a: first images, at least two.
        b: second images, same shape as ``a``.
        atol: absolute tolerance (batched and single-item kernels round differently).
        rtol: relative tolerance.
        seed: seed of the shuffled order (a non-identity permutation is always used).

    Shape:
        - a, b: ``(B, C, H, W)`` with ``B >= 2``.

    Raises:
        AssertionError: the metric does not return ``(B,)``, or an item's value changes
            with the batch it is computed in.
        ArgumentError: ``B < 2``.

    Example:
        >>> import torch
        >>> mse = lambda a, b: (a - b).pow(2).flatten(1).mean(1)
        >>> check_batch_invariance(mse, torch.rand(3, 3, 8, 8), torch.rand(3, 3, 8, 8))
    """
    _check_arguments(metric, a, b)
    check = "check_batch_invariance"
    batch = a.shape[0]
    if batch < 2:
        raise ArgumentError(f"{check} needs a batch of at least 2 images; got B={batch}")
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(batch, generator=generator)
    if torch.equal(order, torch.arange(batch)):
        order = order.roll(1)
    with torch.no_grad():
        whole = _evaluate(metric, a, b, check)
        if whole.ndim == 0:
            raise AssertionError(
                f"{check}: metric(a, b) must return per-item values of shape ({batch},) "
                "(e.g. reduction='none'); got a scalar"
            )
        alone = torch.cat(
            [_evaluate(metric, a[i : i + 1], b[i : i + 1], check).reshape(1) for i in range(batch)]
        )
        device_order = order.to(a.device)
        shuffled = _evaluate(metric, a[device_order], b[device_order], check)
    _assert_close(
        check,
        "metric(a[i:i+1], b[i:i+1]) == metric(a, b)[i]",
        ("each item alone", alone),
        ("whole batch", whole),
        atol,
        rtol,
    )
    restored = torch.empty_like(shuffled)
    restored[order.to(shuffled.device)] = shuffled
    _assert_close(
        check,
        f"metric(a[p], b[p]) == metric(a, b)[p] for the order p={order.tolist()}",
        ("shuffled batch (unshuffled)", restored),
        ("whole batch", whole),
        atol,
        rtol,
    )


def check_dtype_consistency(
    metric: Metric,
    a: torch.Tensor,
    b: torch.Tensor,
    tolerance: float = 2e-2,
    *,
    dtype: torch.dtype = torch.bfloat16,
    rtol: float = 0.0,
    cast_inputs: bool = False,
) -> None:
    """Check that the metric under low-precision autocast agrees with float32.

    Compares ``metric(a, b)`` on float32 inputs without autocast against the same call
    inside ``torch.autocast(device_type, dtype)`` on the inputs' device type (on CPU:
    ``torch.autocast('cpu', dtype=torch.bfloat16)``). Catches metrics whose matmuls or
    convolutions lose too much precision in bfloat16 (e.g. a distance expanded as
    ``|a|^2 + |b|^2 - 2 a.b``) and metrics that produce NaN or inf under autocast.

    Args:
        metric: ``metric(a, b) -> (B,) or ()``.
        a: first images (cast to float32 for both runs).
        b: second images, same shape as ``a``.
        tolerance: allowed absolute difference from the float32 value.
        dtype: the autocast dtype, ``torch.bfloat16`` or ``torch.float16``.
        rtol: allowed difference relative to the float32 value, added to ``tolerance``.
        cast_inputs: also cast the inputs to ``dtype`` for the autocast run (checks that
            the metric accepts low-precision images).

    Raises:
        AssertionError: the autocast value is not finite or differs by more than
            ``tolerance + rtol * |fp32 value|``.
        ArgumentError: ``dtype`` is not a floating dtype narrower than float32.

    Example:
        >>> import torch
        >>> mse = lambda a, b: (a - b).pow(2).flatten(1).mean(1)
        >>> check_dtype_consistency(mse, torch.rand(2, 3, 8, 8), torch.rand(2, 3, 8, 8))
    """
    _check_arguments(metric, a, b)
    if dtype not in (torch.bfloat16, torch.float16):
        raise ArgumentError(f"dtype must be torch.bfloat16 or torch.float16; got {dtype!r}")
    check = f"check_dtype_consistency ({str(dtype).replace('torch.', '')} autocast)"
    a32, b32 = a.float(), b.float()
    with torch.no_grad():
        reference = _evaluate(metric, a32, b32, check)
        low_a, low_b = (a32.to(dtype), b32.to(dtype)) if cast_inputs else (a32, b32)
        with torch.autocast(device_type=a.device.type, dtype=dtype):
            low = _evaluate(metric, low_a, low_b, check)
    if not bool(torch.isfinite(low.detach()).all()):
        raise AssertionError(
            f"{check} failed: metric(a, b) is not finite under autocast\n"
            f"  autocast = {_format(low)}\n  float32  = {_format(reference)}"
        )
    _assert_close(
        check,
        "metric(a, b) under autocast == metric(a, b) in float32",
        ("autocast", low),
        ("float32", reference),
        tolerance,
        rtol,
    )


def _ranks(values: torch.Tensor) -> torch.Tensor:
    """Ranks (1-based) along the last dimension; ties get the average of their ranks."""
    less = (values.unsqueeze(-2) < values.unsqueeze(-1)).sum(-1)
    equal = (values.unsqueeze(-2) == values.unsqueeze(-1)).sum(-1)
    return less.to(torch.float64) + (equal.to(torch.float64) + 1.0) / 2.0


def spearman(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Spearman rank correlation along the last dimension, ties ranked by their average.

    Pure torch (no scipy); agrees with ``scipy.stats.spearmanr``. A constant input has no
    defined correlation and gives ``nan``.

    Args:
        x: values, shape ``(..., N)``.
        y: values, same shape as ``x``.

    Shape:
        - x, y: ``(..., N)`` with ``N >= 2``.
        - output: ``(...)``, float64.

    Returns:
        The correlations, in ``[-1, 1]`` or ``nan``.

    Raises:
        ShapeError: ``x`` and ``y`` differ in shape or ``N < 2``.

    Example:
        >>> import torch
        >>> spearman(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([10.0, 40.0, 20.0])).item()
        0.5
    """
    check_same_shape(x, y, ("x", "y"))
    if x.ndim == 0 or x.shape[-1] < 2:
        raise ShapeError(
            f"spearman needs at least 2 values along the last dim; got {tuple(x.shape)}"
        )
    rank_x = _ranks(x.detach().double())
    rank_y = _ranks(y.detach().double())
    rank_x = rank_x - rank_x.mean(-1, keepdim=True)
    rank_y = rank_y - rank_y.mean(-1, keepdim=True)
    norm = (rank_x.square().sum(-1) * rank_y.square().sum(-1)).sqrt()
    return torch.where(norm > 0, (rank_x * rank_y).sum(-1) / norm, torch.nan)


def check_monotone(
    metric: Metric,
    reference: torch.Tensor,
    distortion: str | Callable[[torch.Tensor, float], torch.Tensor],
    levels: Sequence[float] = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0),
    *,
    higher_is_better: bool,
    min_correlation: float = 0.9,
    strict: bool = False,
    value_range: Sequence[float] = (0.0, 1.0),
    seed: int = 0,
) -> None:
    """Check that the score degrades as a distortion gets stronger.

    For each level ``l`` the metric scores ``metric(distortion(reference, l), reference)``.
    For every image, the Spearman correlation between level and score must be at most
    ``-min_correlation`` when ``higher_is_better`` (at least ``+min_correlation`` for a
    distance), and with ``strict=True`` each step must also move the score strictly in
    the right direction.

    Args:
        metric: ``metric(a, b) -> (B,) or ()``; ``a`` is the distorted image.
        reference: undistorted images.
        distortion: a kind of :func:`~percepfid.testing.distortions.distort` (``'blur'``,
            ``'noise'``, ``'quantize'``, ``'downsample'``; ``levels`` then lie in
            ``[0, 1]`` and noise uses the same seed at every level), or any callable
            ``distortion(images, level) -> images``.
        levels: increasing distortion levels, at least three.
        higher_is_better: ``True`` for a similarity or quality score, ``False`` for a
            distance or loss.
        min_correlation: the rank correlation required, in ``(0, 1]``.
        strict: also require a strictly monotone score from each level to the next.
        value_range: ``(low, high)`` of ``reference``, for built-in distortions.
        seed: seed of the noise for built-in distortions.

    Shape:
        - reference: ``(B, C, H, W)``.

    Raises:
        AssertionError: some image's scores do not follow the levels closely enough (or
            are constant, or not finite).
        ArgumentError: fewer than three levels, levels not increasing, or
            ``min_correlation`` outside ``(0, 1]``.
        UnknownNameError: ``distortion`` names no known distortion.
        DTypeError: ``metric`` or ``distortion`` is not callable, or ``reference`` is not
            a floating tensor.

    Example:
        >>> import torch
        >>> mse = lambda a, b: (a - b).pow(2).flatten(1).mean(1)
        >>> x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
        >>> check_monotone(mse, x, "blur", higher_is_better=False, strict=True)
    """
    _check_arguments(metric, reference, reference)
    check = "check_monotone"
    levels = [float(level) for level in levels]
    if len(levels) < 3 or any(lo >= hi for lo, hi in zip(levels, levels[1:], strict=False)):
        raise ArgumentError(
            f"levels must be at least three strictly increasing values; got {levels}"
        )
    if not 0.0 < min_correlation <= 1.0:
        raise ArgumentError(f"min_correlation must be in (0, 1]; got {min_correlation!r}")
    if isinstance(distortion, str):
        kind = distortion

        def apply(images: torch.Tensor, level: float) -> torch.Tensor:
            generator = torch.Generator().manual_seed(seed)
            return distort(images, kind, level, generator=generator, value_range=value_range)

        label = repr(kind)
    elif callable(distortion):
        apply = distortion
        label = getattr(distortion, "__name__", type(distortion).__name__)
    else:
        raise DTypeError(
            "distortion must be a distortion kind (str) or a callable (images, level) -> "
            f"images; got {type(distortion).__name__}"
        )
    with torch.no_grad():
        rows = [
            _evaluate(metric, apply(reference, level), reference, check).reshape(-1)
            for level in levels
        ]
    scores = torch.stack(rows).detach().double().cpu().T  # (items, levels)
    table = "\n".join(
        f"  level {level:<8g} score {_format(row)}"
        for level, row in zip(levels, scores.T, strict=True)
    )
    if not bool(torch.isfinite(scores).all()):
        raise AssertionError(f"{check} failed: some scores are not finite\n{table}")
    sign = -1.0 if higher_is_better else 1.0
    direction = "decrease" if higher_is_better else "increase"
    grid = torch.tensor(levels, dtype=torch.float64).expand_as(scores)
    agreement = sign * spearman(grid, scores)
    failing = (~(agreement >= min_correlation)).nonzero().flatten().tolist()
    if failing:
        raise AssertionError(
            f"{check} failed: scores should {direction} with the level of {label}; "
            f"Spearman agreement {_format(agreement)} (per item), required >= "
            f"{min_correlation:g}, failing item(s) {failing[:_SHOWN]}\n{table}"
        )
    if strict:
        steps = sign * scores.diff(dim=-1)
        failing = (~(steps > 0).all(-1)).nonzero().flatten().tolist()
        if failing:
            raise AssertionError(
                f"{check} failed (strict): scores should strictly {direction} at every step "
                f"of {label}; item(s) {failing[:_SHOWN]} do not\n{table}"
            )
