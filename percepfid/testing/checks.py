"""Property checks for image-quality metrics, usable from any test framework.

Each ``check_*`` function raises ``AssertionError`` naming the failing items and values when
a property does not hold (or the metric breaks the contract below), and returns ``None``
when it holds. Misuse of a check raises percepfid's typed errors instead, so a broken test
is never mistaken for a broken metric: ``DTypeError`` when ``metric`` is not callable or an
image batch is not a floating tensor, ``ShapeError`` when ``a`` and ``b`` differ in shape,
``ArgumentError`` for a bad option.

The metric contract:
    A *metric* is any callable ``metric(a, b) -> Tensor`` taking two image batches of the
    same shape ``(B, C, H, W)`` (any shape the metric accepts) and returning one value per
    image, shape ``(B,)``, or a scalar (e.g. a loss with ``reduction='mean'``). ``a`` is the
    image under test (the super-resolved output, which receives gradients) and ``b`` the
    reference. Checks other than :func:`check_gradients` call the metric under
    ``torch.no_grad()``.

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
from typing import Any, NoReturn

import torch

from .._checks import check_same_shape, check_tensor
from .._errors import ArgumentError, DTypeError, ShapeError
from .distortions import Distortion

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


def _format(values: torch.Tensor) -> str:
    flat = values.detach().reshape(-1).double().cpu().tolist()
    text = ", ".join(f"{v:.6g}" for v in flat[:_SHOWN])
    more = f", ... ({len(flat)} values)" if len(flat) > _SHOWN else ""
    return f"[{text}{more}]"


def _failing(mask: torch.Tensor, noun: str = "item") -> str:
    """``"item(s) [i, j, ...]"`` naming the true entries of ``mask``, or ``""`` if none."""
    items = mask.reshape(-1).nonzero().flatten().tolist()
    more = " ..." if len(items) > _SHOWN else ""
    return f"{noun}(s) {items[:_SHOWN]}{more}" if items else ""


class _Run:
    """One check of ``metric`` on ``a`` and ``b``: argument checks, metric calls, failures."""

    def __init__(self, check: str, metric: Any, a: Any, b: Any, *, grad: bool = False) -> None:
        if not callable(metric):
            raise DTypeError(f"metric must be callable: metric(a, b); got {type(metric).__name__}")
        check_tensor(a, "a")
        check_tensor(b, "b")
        if a.ndim == 0:
            raise ShapeError(f"a must be an image batch (B, C, H, W); got shape {tuple(a.shape)}")
        check_same_shape(a, b, ("a", "b"))
        self.check, self.metric, self.grad = check, metric, grad

    def __call__(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """``metric(a, b)``, checked to be a floating ``(B,)`` or scalar tensor."""
        with torch.set_grad_enabled(self.grad):
            scores = self.metric(a, b)
        if isinstance(scores, (int, float)) and not isinstance(scores, bool):
            scores = torch.tensor(float(scores))
        if not isinstance(scores, torch.Tensor):
            self.fail(f"metric(a, b) must return a tensor; got {type(scores).__name__}")
        if scores.shape not in (torch.Size([]), torch.Size([a.shape[0]])):
            self.fail(
                f"metric(a, b) must return one value per image, shape ({a.shape[0]},), or a "
                f"scalar; got shape {tuple(scores.shape)} for inputs of shape {tuple(a.shape)}"
            )
        if not scores.is_floating_point():
            self.fail(f"metric(a, b) must return floating-point values; got {scores.dtype}")
        return scores

    def fail(self, message: str, values: dict[str, torch.Tensor] | None = None) -> NoReturn:
        """Raise ``AssertionError`` with ``message`` and the labelled ``values``."""
        values = values or {}
        width = max(map(len, values), default=0)
        shown = "".join(f"\n  {name.ljust(width)} = {_format(v)}" for name, v in values.items())
        raise AssertionError(f"{self.check} failed: {message}{shown}")

    def assert_close(
        self, relation: str, values: dict[str, torch.Tensor], atol: float, rtol: float
    ) -> None:
        """Fail unless ``|actual - expected| <= atol + rtol * |expected|``; ``values`` is
        ``{label: actual, label: expected}``."""
        (name, actual), (expected_name, expected) = values.items()
        actual, expected = torch.broadcast_tensors(
            actual.detach().double().cpu(), expected.detach().double().cpu()
        )
        close = torch.isclose(actual, expected, rtol=rtol, atol=atol)
        if failing := _failing(~close):
            worst = (actual - expected).abs()[~close].nan_to_num(nan=float("inf")).max()
            self.fail(
                f"{relation} does not hold for {failing} of {actual.numel()}; largest "
                f"|difference| {worst.item():.3g} (atol={atol:g}, rtol={rtol:g})",
                {name: actual, expected_name: expected},
            )

    def swapped(
        self, a: torch.Tensor, b: torch.Tensor, sign: int, atol: float, rtol: float
    ) -> None:
        """Compare ``metric(a, b)`` with ``sign * metric(b, a)``."""
        minus = "-" if sign < 0 else ""
        values = {"metric(a, b)": self(a, b), f"{minus}metric(b, a)": sign * self(b, a)}
        self.assert_close(f"metric(a, b) == {minus}metric(b, a)", values, atol, rtol)


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
    output) within ``atol`` and ``rtol``; NaN never does.
    """
    run = _Run("check_identity", metric, x, x)
    target = torch.as_tensor(expected, dtype=torch.float64)
    relation = f"metric(x, x) == {_format(target) if target.ndim else f'{float(target):g}'}"
    run.assert_close(relation, {"metric(x, x)": run(x, x.clone()), "expected": target}, atol, rtol)


def check_symmetric(
    metric: Metric, a: torch.Tensor, b: torch.Tensor, *, atol: float = 1e-5, rtol: float = 1e-5
) -> None:
    """Check that ``metric(a, b) == metric(b, a)`` within ``atol`` and ``rtol``."""
    _Run("check_symmetric", metric, a, b).swapped(a, b, 1, atol, rtol)


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
    """
    run = _Run("check_antisymmetric" + (" (exact)" if exact else ""), metric, a, b)
    run.swapped(a, b, -1, *((0.0, 0.0) if exact else (atol, rtol)))


def check_range(
    metric: Metric,
    a: torch.Tensor,
    b: torch.Tensor,
    low: float = float("-inf"),
    high: float = float("inf"),
) -> None:
    """Check that every ``metric(a, b)`` value is finite and inside ``[low, high]``
    (``low <= high``)."""
    run = _Run("check_range", metric, a, b)
    if not low <= high:
        raise ArgumentError(f"check_range needs low <= high; got low={low!r}, high={high!r}")
    scores = run(a, b).double().cpu()
    if failing := _failing(~torch.isfinite(scores) | (scores < low) | (scores > high)):
        message = f"metric(a, b) must be finite and in [{low:g}, {high:g}]; {failing} are not"
        run.fail(message, {"metric(a, b)": scores})


def check_gradients(
    metric: Metric, a: torch.Tensor, b: torch.Tensor, *, first_only: bool = True
) -> None:
    """Check that every image of ``a`` gets a finite, not all-zero gradient of
    ``metric(a, b)``, and that ``b`` gets none (``first_only``, a loss whose reference is a
    fixed target) or a gradient that passes the same test (not ``first_only``).

    Differentiates with ``torch.autograd.grad`` on leaf copies of ``a`` and ``b`` that both
    require grad, so the ``.grad`` of the metric's parameters is left untouched. Also fails
    when the output is not finite.
    """
    run = _Run("check_gradients", metric, a, b, grad=True)
    leaf_a = a.detach().clone().requires_grad_(True)
    leaf_b = b.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        scores = run(leaf_a, leaf_b)
        if not bool(torch.isfinite(scores.detach()).all()):
            run.fail("metric(a, b) is not finite", {"metric(a, b)": scores})
        if not scores.requires_grad:
            run.fail(
                "metric(a, b) does not require grad, so no gradient reaches a (is the output "
                "detached, or computed under torch.no_grad()?)"
            )
        grad_a, grad_b = torch.autograd.grad(scores.sum(), (leaf_a, leaf_b), allow_unused=True)
    for name, grad in [("a", grad_a)] + ([] if first_only else [("b", grad_b)]):
        if grad is None:
            run.fail(f"metric(a, b) is not connected to {name}")
        per_image = grad.reshape(grad.shape[0], -1)
        if failing := _failing((~torch.isfinite(per_image)).any(1), "image"):
            run.fail(f"the gradient with respect to {name} has NaN or inf values in {failing}")
        if failing := _failing((per_image == 0).all(1), "image"):
            run.fail(
                f"the gradient with respect to {name} is zero everywhere in {failing} (a "
                "stationary point such as a == b, a non-differentiable step, or an input the "
                "metric ignores)"
            )
    if first_only and grad_b is not None:
        run.fail(
            f"the gradient reaches the reference b (largest |grad| {grad_b.abs().max():.3g}); "
            "b.grad would not stay None. Compute the reference branch under torch.no_grad() "
            "or detach it."
        )


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
    ``seed``, never the identity); ``B >= 2``. ``atol`` and ``rtol`` allow for batched and
    single-item kernels rounding differently.
    """
    run = _Run("check_batch_invariance", metric, a, b)
    batch = a.shape[0]
    if batch < 2:
        raise ArgumentError(f"{run.check} needs a batch of at least 2 images; got B={batch}")
    order = torch.randperm(batch, generator=torch.Generator().manual_seed(seed))
    if torch.equal(order, torch.arange(batch)):
        order = order.roll(1)
    whole = run(a, b)
    if whole.ndim == 0:
        run.fail(f"metric(a, b) must return shape ({batch},) (e.g. reduction='none'); got a scalar")
    alone = torch.cat([run(a[i : i + 1], b[i : i + 1]).reshape(1) for i in range(batch)])
    shuffled = run(a[order.to(a.device)], b[order.to(a.device)])
    restored = shuffled[order.argsort().to(shuffled.device)]
    relation = "metric(a[i:i+1], b[i:i+1]) == metric(a, b)[i]"
    run.assert_close(relation, {"each item alone": alone, "whole batch": whole}, atol, rtol)
    relation = f"metric(a[p], b[p]) == metric(a, b)[p] for the order p={order.tolist()}"
    values = {"shuffled batch (unshuffled)": restored, "whole batch": whole}
    run.assert_close(relation, values, atol, rtol)


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
    """
    check = f"check_dtype_consistency ({str(dtype).replace('torch.', '')} autocast)"
    run = _Run(check, metric, a, b)
    if dtype not in (torch.bfloat16, torch.float16):
        raise ArgumentError(f"dtype must be torch.bfloat16 or torch.float16; got {dtype!r}")
    a32, b32 = a.float(), b.float()
    reference = run(a32, b32)
    low_a, low_b = (a32.to(dtype), b32.to(dtype)) if cast_inputs else (a32, b32)
    with torch.autocast(device_type=a.device.type, dtype=dtype):
        values = {"autocast": run(low_a, low_b), "float32": reference}
    if not bool(torch.isfinite(values["autocast"]).all()):
        run.fail("metric(a, b) is not finite under autocast", values)
    relation = "metric(a, b) under autocast == metric(a, b) in float32"
    run.assert_close(relation, values, tolerance, rtol)


def _ranks(values: torch.Tensor) -> torch.Tensor:
    """Ranks (1-based) along the last dimension; ties get the average of their ranks."""
    less = (values.unsqueeze(-2) < values.unsqueeze(-1)).sum(-1)
    equal = (values.unsqueeze(-2) == values.unsqueeze(-1)).sum(-1)
    return less.to(torch.float64) + (equal.to(torch.float64) + 1.0) / 2.0


def spearman(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Spearman rank correlation along the last dimension, ties ranked by their average
    (pure torch; agrees with ``scipy.stats.spearmanr``).

    ``x`` and ``y`` have the same shape ``(..., N)`` with ``N >= 2`` (else a ``ShapeError``);
    the result is float64, shape ``(...)``, in ``[-1, 1]``, ``nan`` where an input is constant.

    Example:
        >>> import torch
        >>> spearman(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([10.0, 40.0, 20.0])).item()
        0.5
    """
    check_same_shape(x, y, ("x", "y"))
    if x.ndim == 0 or x.shape[-1] < 2:
        raise ShapeError(f"spearman needs >= 2 values along the last dim; got {tuple(x.shape)}")
    rank_x, rank_y = (_ranks(v.detach().double()) for v in (x, y))
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
    distance); with ``strict=True`` every step must also move the score strictly that way.

    Args:
        distortion: a kind of :func:`~percepfid.testing.distortions.distort` (``levels``
            then lie in ``[0, 1]``; ``value_range`` is that of ``reference`` and ``seed``
            seeds the same noise at every level; an unknown kind raises
            ``UnknownNameError``), or any callable ``distortion(images, level) -> images``
            (anything else raises ``DTypeError``).
        levels: at least three increasing distortion levels.
        higher_is_better: ``True`` for a similarity or quality score, ``False`` for a
            distance or loss.
        min_correlation: the rank correlation required, in ``(0, 1]``.
    """
    run = _Run("check_monotone", metric, reference, reference)
    levels = [float(level) for level in levels]
    if len(levels) < 3 or any(lo >= hi for lo, hi in zip(levels, levels[1:], strict=False)):
        raise ArgumentError(
            f"levels must be at least three strictly increasing values; got {levels}"
        )
    if not 0.0 < min_correlation <= 1.0:
        raise ArgumentError(f"min_correlation must be in (0, 1]; got {min_correlation!r}")
    if isinstance(distortion, str):
        label = repr(distortion)

        def apply(images: torch.Tensor, level: float) -> torch.Tensor:
            return Distortion(distortion, level, seed)(images, value_range=value_range)

    elif callable(distortion):
        apply = distortion
        label = getattr(distortion, "__name__", type(distortion).__name__)
    else:
        raise DTypeError(
            "distortion must be a distortion kind (str) or a callable (images, level) -> "
            f"images; got {type(distortion).__name__}"
        )
    rows = {
        f"level {level:g}": run(apply(reference, level), reference).reshape(-1).double().cpu()
        for level in levels
    }
    scores = torch.stack(list(rows.values())).T  # (items, levels)
    if not bool(torch.isfinite(scores).all()):
        run.fail("some scores are not finite", rows)
    sign = -1.0 if higher_is_better else 1.0
    direction = "decrease" if higher_is_better else "increase"
    grid = torch.tensor(levels, dtype=torch.float64).expand_as(scores)
    agreement = sign * spearman(grid, scores)
    if failing := _failing(~(agreement >= min_correlation)):
        run.fail(
            f"scores should {direction} with the level of {label}; Spearman agreement "
            f"{_format(agreement)} (per item), required >= {min_correlation:g}, failing {failing}",
            rows,
        )
    if strict and (failing := _failing(~(sign * scores.diff(dim=-1) > 0).all(-1))):
        message = f"scores should strictly {direction} at every step of {label} (strict=True)"
        run.fail(f"{message}; {failing} do not", rows)
