"""Property checks for image-quality metrics, usable from any test framework.

Each ``check_*`` function raises ``AssertionError`` naming the failing items and values when
a property does not hold, and returns ``None`` when it holds. Misuse of a check raises
percepfid's typed errors instead, so a broken test is never mistaken for a broken metric:
``DTypeError`` when ``metric`` is not callable or an image batch is not a floating tensor,
``ShapeError`` when ``a`` and ``b`` differ in shape.

The metric contract:
    A *metric* is any callable ``metric(a, b) -> Tensor`` taking two image batches of the
    same shape ``(B, C, H, W)`` (any shape the metric accepts) and returning one value per
    image, shape ``(B,)``, or a scalar (e.g. a loss with ``reduction='mean'``). ``a`` is the
    image under test (the super-resolved output, which receives gradients) and ``b`` the
    reference. Checks other than :func:`check_gradients` run under ``torch.no_grad()``.

Example:
    >>> import torch
    >>> mse = lambda a, b: (a - b).pow(2).flatten(1).mean(1)
    >>> a, b = torch.rand(2, 3, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    >>> check_identity(mse, a, 0.0)
    >>> check_symmetric(mse, a, b)
    >>> brighter = lambda a, b: a.mean((1, 2, 3)) - b.mean((1, 2, 3))
    >>> check_antisymmetric(brighter, a, b, exact=True)
    >>> check_range(mse, a, b, low=0.0, high=1.0)
    >>> check_gradients(lambda sr, gt: mse(sr, gt.detach()), a, b)
    >>> check_batch_invariance(mse, a, b)
    >>> check_dtype_consistency(mse, a, b)
    >>> check_monotone(mse, a, "blur", higher_is_better=False, strict=True)
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
    """Raise typed errors unless ``metric`` is callable and ``a``, ``b`` are floating image
    batches of the same shape."""
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


def _items(mask: torch.Tensor) -> list[int]:
    """Indices of the true entries of ``mask``, flattened."""
    return mask.reshape(-1).nonzero().flatten().tolist()


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


def _assert_close(
    check: str, relation: str, values: dict[str, torch.Tensor], atol: float, rtol: float
) -> None:
    """Raise unless ``|actual - expected| <= atol + rtol * |expected|`` for every item;
    ``values`` maps a label to ``actual`` and one to ``expected``, in this order."""
    names = list(values)
    actual, expected = torch.broadcast_tensors(
        *(tensor.detach().double().cpu() for tensor in values.values())
    )
    close = torch.isclose(actual, expected, rtol=rtol, atol=atol)
    if bool(close.all()):
        return
    failing = _items(~close)
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


@torch.no_grad()
def _check_swapped(
    metric: Metric,
    a: torch.Tensor,
    b: torch.Tensor,
    sign: int,
    check: str,
    tol: tuple[float, float],
) -> None:
    """Compare ``metric(a, b)`` with ``sign * metric(b, a)``."""
    _check_arguments(metric, a, b)
    forward, backward = _evaluate(metric, a, b, check), _evaluate(metric, b, a, check)
    minus = "-" if sign < 0 else ""
    values = {"metric(a, b)": forward, f"{minus}metric(b, a)": sign * backward}
    _assert_close(check, f"metric(a, b) == {minus}metric(b, a)", values, *tol)


@torch.no_grad()
def check_identity(
    metric: Metric,
    x: torch.Tensor,
    expected: float | torch.Tensor,
    *,
    atol: float = 1e-5,
    rtol: float = 0.0,
) -> None:
    """Check that ``metric(x, x.clone())`` equals the metric's identity value ``expected``
    (``0`` for a loss, ``1`` for a similarity; a number or a tensor broadcastable to the
    output) within ``atol`` and ``rtol``.

    Raises:
        AssertionError: some ``metric(x, x)`` differs from ``expected`` (or is NaN).
    """
    _check_arguments(metric, x, x)
    scores = _evaluate(metric, x, x.clone(), "check_identity")
    target = torch.as_tensor(expected, dtype=torch.float64)
    relation = f"metric(x, x) == {_format(target) if target.ndim else f'{float(target):g}'}"
    values = {"metric(x, x)": scores, "expected": target}
    _assert_close("check_identity", relation, values, atol, rtol)


def check_symmetric(
    metric: Metric, a: torch.Tensor, b: torch.Tensor, *, atol: float = 1e-5, rtol: float = 1e-5
) -> None:
    """Check that ``metric(a, b) == metric(b, a)`` within ``atol`` and ``rtol``.

    Raises:
        AssertionError: the two orders disagree for some item.
    """
    _check_swapped(metric, a, b, 1, "check_symmetric", (atol, rtol))


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
        exact: require bitwise equality (``atol`` and ``rtol`` are then ignored), for
            metrics built as ``f(a, b) - f(b, a)`` that should cancel exactly.

    Raises:
        AssertionError: ``metric(a, b) != -metric(b, a)`` for some item.
    """
    check = "check_antisymmetric" + (" (exact)" if exact else "")
    _check_swapped(metric, a, b, -1, check, (0.0, 0.0) if exact else (atol, rtol))


@torch.no_grad()
def check_range(
    metric: Metric,
    a: torch.Tensor,
    b: torch.Tensor,
    low: float = float("-inf"),
    high: float = float("inf"),
) -> None:
    """Check that every ``metric(a, b)`` value is finite and inside ``[low, high]``.

    Raises:
        AssertionError: a value is NaN, infinite or outside ``[low, high]``.
        ArgumentError: ``low > high``.
    """
    _check_arguments(metric, a, b)
    if not low <= high:
        raise ArgumentError(f"check_range needs low <= high; got low={low!r}, high={high!r}")
    scores = _evaluate(metric, a, b, "check_range").double().cpu()
    failing = _items(~torch.isfinite(scores) | (scores < low) | (scores > high))
    if failing:
        raise AssertionError(
            f"check_range failed: metric(a, b) must be finite and in [{low:g}, {high:g}]; "
            f"item(s) {failing[:_SHOWN]} are not\n  metric(a, b) = {_format(scores)}"
        )


def check_gradients(
    metric: Metric, a: torch.Tensor, b: torch.Tensor, *, first_only: bool = True
) -> None:
    """Check that every image of ``a`` gets a finite, not all-zero gradient of
    ``metric(a, b)``, and that ``b`` gets none (``first_only``, a loss whose reference is a
    fixed target) or a gradient that passes the same test (not ``first_only``).

    Differentiates with ``torch.autograd.grad`` on leaf copies of ``a`` and ``b`` that both
    require grad, so the ``.grad`` of the metric's parameters is left untouched.

    Raises:
        AssertionError: the output is not finite or not connected to ``a``, some image of
            ``a`` gets a non-finite or all-zero gradient, or the gradient reaches ``b``
            (``first_only``) or fails the same tests on ``b`` (not ``first_only``).
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
        nonfinite = _items((~torch.isfinite(per_image)).any(1))
        if nonfinite:
            raise AssertionError(
                f"{check} failed: the gradient with respect to {name} has NaN or inf values "
                f"in image(s) {nonfinite[:_SHOWN]}"
            )
        zero = _items((per_image == 0).all(1))
        if zero:
            raise AssertionError(
                f"{check} failed: the gradient with respect to {name} is zero everywhere in "
                f"image(s) {zero[:_SHOWN]} (a stationary point such as a == b, a "
                "non-differentiable step, or an input the metric ignores)"
            )

    _check_grad(grad_a, "a")
    if not first_only:
        _check_grad(grad_b, "b")
    elif grad_b is not None:
        raise AssertionError(
            f"{check} failed: the gradient reaches the reference b (largest |grad| "
            f"{grad_b.detach().abs().max().item():.3g}); b.grad would not stay None. Compute "
            "the reference branch under torch.no_grad() or detach it."
        )


@torch.no_grad()
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

    Compares ``metric(a, b)``, which must return ``(B,)``, with each pair
    ``(a[i:i+1], b[i:i+1])`` alone and with the batch in a shuffled order (drawn with
    ``seed``, never the identity). ``atol`` and ``rtol`` allow for batched and single-item
    kernels rounding differently.

    Raises:
        AssertionError: the metric does not return ``(B,)``, or an item's value changes
            with the batch it is computed in.
        ArgumentError: ``B < 2``.
    """
    _check_arguments(metric, a, b)
    check = "check_batch_invariance"
    batch = a.shape[0]
    if batch < 2:
        raise ArgumentError(f"{check} needs a batch of at least 2 images; got B={batch}")
    order = torch.randperm(batch, generator=torch.Generator().manual_seed(seed))
    if torch.equal(order, torch.arange(batch)):
        order = order.roll(1)
    whole = _evaluate(metric, a, b, check)
    if whole.ndim == 0:
        raise AssertionError(
            f"{check}: metric(a, b) must return per-item values of shape ({batch},) "
            "(e.g. reduction='none'); got a scalar"
        )
    alone = torch.cat(
        [_evaluate(metric, a[i : i + 1], b[i : i + 1], check).reshape(1) for i in range(batch)]
    )
    shuffled = _evaluate(metric, a[order.to(a.device)], b[order.to(a.device)], check)
    restored = torch.empty_like(shuffled)
    restored[order.to(shuffled.device)] = shuffled
    relation = "metric(a[i:i+1], b[i:i+1]) == metric(a, b)[i]"
    _assert_close(check, relation, {"each item alone": alone, "whole batch": whole}, atol, rtol)
    relation = f"metric(a[p], b[p]) == metric(a, b)[p] for the order p={order.tolist()}"
    values = {"shuffled batch (unshuffled)": restored, "whole batch": whole}
    _assert_close(check, relation, values, atol, rtol)


@torch.no_grad()
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

    Compares ``metric(a, b)`` on float32 inputs with the same call inside
    ``torch.autocast(device_type, dtype)`` on the inputs' device type, catching precision
    loss (e.g. a distance expanded as ``|a|^2 + |b|^2 - 2 a.b``) and NaN or inf.

    Args:
        tolerance: allowed absolute difference from the float32 value.
        dtype: the autocast dtype, ``torch.bfloat16`` or ``torch.float16``.
        rtol: allowed difference relative to the float32 value, added to ``tolerance``.
        cast_inputs: also cast the inputs to ``dtype`` for the autocast run.

    Raises:
        AssertionError: the autocast value is not finite or differs by more than
            ``tolerance + rtol * |fp32 value|``.
        ArgumentError: ``dtype`` is not bfloat16 or float16.
    """
    _check_arguments(metric, a, b)
    if dtype not in (torch.bfloat16, torch.float16):
        raise ArgumentError(f"dtype must be torch.bfloat16 or torch.float16; got {dtype!r}")
    check = f"check_dtype_consistency ({str(dtype).replace('torch.', '')} autocast)"
    a32, b32 = a.float(), b.float()
    reference = _evaluate(metric, a32, b32, check)
    low_a, low_b = (a32.to(dtype), b32.to(dtype)) if cast_inputs else (a32, b32)
    with torch.autocast(device_type=a.device.type, dtype=dtype):
        low = _evaluate(metric, low_a, low_b, check)
    if not bool(torch.isfinite(low).all()):
        raise AssertionError(
            f"{check} failed: metric(a, b) is not finite under autocast\n"
            f"  autocast = {_format(low)}\n  float32  = {_format(reference)}"
        )
    relation = "metric(a, b) under autocast == metric(a, b) in float32"
    _assert_close(check, relation, {"autocast": low, "float32": reference}, tolerance, rtol)


def _ranks(values: torch.Tensor) -> torch.Tensor:
    """Ranks (1-based) along the last dimension; ties get the average of their ranks."""
    less = (values.unsqueeze(-2) < values.unsqueeze(-1)).sum(-1)
    equal = (values.unsqueeze(-2) == values.unsqueeze(-1)).sum(-1)
    return less.to(torch.float64) + (equal.to(torch.float64) + 1.0) / 2.0


def spearman(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Spearman rank correlation along the last dimension, ties ranked by their average.

    Pure torch; agrees with ``scipy.stats.spearmanr``.

    Args:
        x, y: values of the same shape ``(..., N)`` with ``N >= 2``.

    Returns:
        The float64 correlations, shape ``(...)``, in ``[-1, 1]``, or ``nan`` where an
        input is constant.

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
    rank_x, rank_y = (_ranks(v.detach().double()) for v in (x, y))
    rank_x = rank_x - rank_x.mean(-1, keepdim=True)
    rank_y = rank_y - rank_y.mean(-1, keepdim=True)
    norm = (rank_x.square().sum(-1) * rank_y.square().sum(-1)).sqrt()
    return torch.where(norm > 0, (rank_x * rank_y).sum(-1) / norm, torch.nan)


@torch.no_grad()
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
    distance); with ``strict=True`` every step must also move the score strictly that way.

    Args:
        distortion: a kind of :func:`~percepfid.testing.distortions.distort` (``levels``
            then lie in ``[0, 1]``; ``value_range`` is that of ``reference`` and ``seed``
            seeds the same noise at every level), or any callable
            ``distortion(images, level) -> images``.
        levels: at least three increasing distortion levels.
        higher_is_better: ``True`` for a similarity or quality score, ``False`` for a
            distance or loss.
        min_correlation: the rank correlation required, in ``(0, 1]``.

    Raises:
        AssertionError: some image's scores do not follow the levels closely enough (or
            are constant, or not finite).
        ArgumentError: fewer than three levels, levels not increasing, or
            ``min_correlation`` outside ``(0, 1]``.
        UnknownNameError: ``distortion`` names no known distortion.
        DTypeError: ``distortion`` is neither a str nor callable.
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
        kind, label = distortion, repr(distortion)

        def apply(images: torch.Tensor, level: float) -> torch.Tensor:
            generator = torch.Generator().manual_seed(seed)
            return distort(images, kind, level, generator=generator, value_range=value_range)

    elif callable(distortion):
        apply = distortion
        label = getattr(distortion, "__name__", type(distortion).__name__)
    else:
        raise DTypeError(
            "distortion must be a distortion kind (str) or a callable (images, level) -> "
            f"images; got {type(distortion).__name__}"
        )
    rows = [
        _evaluate(metric, apply(reference, level), reference, check).reshape(-1) for level in levels
    ]
    scores = torch.stack(rows).double().cpu().T  # (items, levels)
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
    failing = _items(~(agreement >= min_correlation))
    if failing:
        raise AssertionError(
            f"{check} failed: scores should {direction} with the level of {label}; "
            f"Spearman agreement {_format(agreement)} (per item), required >= "
            f"{min_correlation:g}, failing item(s) {failing[:_SHOWN]}\n{table}"
        )
    failing = _items(~(sign * scores.diff(dim=-1) > 0).all(-1)) if strict else []
    if failing:
        raise AssertionError(
            f"{check} failed (strict): scores should strictly {direction} at every step "
            f"of {label}; item(s) {failing[:_SHOWN]} do not\n{table}"
        )
