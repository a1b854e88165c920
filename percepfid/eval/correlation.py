"""Correlation with human scores: SRCC, KRCC (tau-b), PLCC with optional logistic fit, RMSE."""

from __future__ import annotations

import logging
import math
import warnings
from dataclasses import dataclass
from typing import Literal

import numpy as np

from .._checks import check_choice
from .._errors import ArgumentError
from .._imports import require
from ._inputs import (
    ArrayLike,
    check_same_length,
    group_masks,
    to_labels,
    to_vector,
    warn_constant,
)

logger = logging.getLogger(__name__)

FitKind = Literal["logistic4", "logistic5"]
_FITS = (None, "logistic4", "logistic5")


def rankdata(values: ArrayLike) -> np.ndarray:
    """Ranks starting at 1 (float64), tied values sharing the average of their ranks.

    Example:
        >>> rankdata([10, 30, 20, 20]).tolist()
        [1.0, 4.0, 2.5, 2.5]
    """
    _, inverse, counts = np.unique(
        to_vector(values, "values"), return_inverse=True, return_counts=True
    )
    last = np.cumsum(counts)  # the rank of the last member of each tie group
    return (last - (counts - 1) / 2)[inverse.reshape(-1)]


def _pearson(x: np.ndarray, y: np.ndarray, statistic: str, names: tuple[str, str]) -> float:
    if np.all(x == x[0]):  # not np.ptp: max - min overflows for values near +-1e308
        return warn_constant(statistic, names[0], stacklevel=4)
    if np.all(y == y[0]):
        return warn_constant(statistic, names[1], stacklevel=4)
    # Pearson's r is scale-free: bring both to unit magnitude first, so sums of squares of
    # values near 1e200 (or 1e-200) neither overflow nor underflow.
    xc, yc = (v / np.max(np.abs(v)) for v in (x, y))
    xc, yc = (c - c.mean() for c in (xc, yc))
    xc, yc = (c / np.max(np.abs(c)) for c in (xc, yc))
    r = float(np.dot(xc, yc) / math.sqrt(float(np.dot(xc, xc)) * float(np.dot(yc, yc))))
    return max(-1.0, min(1.0, r))


def _pair(pred: ArrayLike, target: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    x, y = to_vector(pred, "pred"), to_vector(target, "target")
    check_same_length(("pred", x), ("target", y))
    return x, y


def srcc(pred: ArrayLike, target: ArrayLike) -> float:
    """Spearman rank-order correlation coefficient (ties get average ranks).

    Args:
        pred: metric scores, shape ``(N,)``; list, numpy array or torch tensor.
        target: human scores (e.g. MOS), shape ``(N,)``.

    Returns:
        The correlation in [-1, 1], or NaN (with a :class:`ConstantInputWarning`) when
        either input is constant or has a single element.

    Raises:
        ShapeError: the inputs differ in length or are not 1-D.
        NonFiniteError: an input holds NaN or infinity.

    Example:
        >>> srcc([1, 2, 3, 4], [10, 20, 40, 30])
        0.8
    """
    x, y = _pair(pred, target)
    return _pearson(rankdata(x), rankdata(y), "SRCC", ("pred", "target"))


def _count_inversions(values: np.ndarray) -> int:
    """Number of pairs i < j with values[i] > values[j], by a bottom-up merge sort
    vectorised over blocks (the block index folded into the sort key), O(n log^2 n)."""
    n = len(values)
    current = np.unique(values, return_inverse=True)[1].reshape(-1).astype(np.int64)
    span = int(current.max()) + 1
    total, width, positions = 0, 1, np.arange(n)
    while width < n:
        block = positions // width
        pair = block // 2
        keys = pair * span + current
        is_left = block % 2 == 0
        left_keys = keys[is_left]
        upper = np.searchsorted(left_keys, (pair[~is_left] + 1) * span, side="left")
        at_most = np.searchsorted(left_keys, keys[~is_left], side="right")
        total += int(np.sum(upper - at_most))
        current = current[np.argsort(keys, kind="stable")]
        width *= 2
    return total


def _tie_pairs(*columns: np.ndarray) -> int:
    counts = np.unique(np.stack(columns, axis=1), axis=0, return_counts=True)[1].astype(np.int64)
    return int(np.sum(counts * (counts - 1) // 2))


def krcc(pred: ArrayLike, target: ArrayLike) -> float:
    """Kendall rank correlation coefficient, tau-b (corrected for ties), in O(n log^2 n).

    Arguments, return value and errors as for :func:`srcc`.

    Example:
        >>> krcc([1, 2, 3], [1, 3, 2])
        0.3333333333333333
    """
    x, y = _pair(pred, target)
    total_pairs = len(x) * (len(x) - 1) // 2
    ties_x, ties_y = _tie_pairs(x), _tie_pairs(y)
    if total_pairs - ties_x == 0:
        return warn_constant("KRCC", "pred")
    if total_pairs - ties_y == 0:
        return warn_constant("KRCC", "target")
    order = np.lexsort((y, x))  # by x, then y: equal-x runs have ascending y
    discordant = _count_inversions(y[order])
    numerator = total_pairs - ties_x - ties_y + _tie_pairs(x, y) - 2 * discordant
    tau = numerator / math.sqrt((total_pairs - ties_x) * (total_pairs - ties_y))
    return max(-1.0, min(1.0, tau))


def _logistic4(x: np.ndarray, b1: float, b2: float, b3: float, b4: float) -> np.ndarray:
    z = np.clip(-(x - b3) / b4, -500.0, 500.0)
    return (b1 - b2) / (1.0 + np.exp(z)) + b2


def _logistic5(x: np.ndarray, b1: float, b2: float, b3: float, b4: float, b5: float) -> np.ndarray:
    z = np.clip(b2 * (x - b3), -500.0, 500.0)
    return b1 * (0.5 - 1.0 / (1.0 + np.exp(z))) + b4 * x + b5


_FUNCTIONS = {"logistic4": _logistic4, "logistic5": _logistic5}


@dataclass(frozen=True)
class LogisticFit:
    """A fitted monotone mapping from metric scores to the human scale.

    Attributes:
        kind: ``'logistic4'`` or ``'logistic5'``.
        params: the fitted parameters (b1, ..., b4 or b5) in standardised units.
        pred_mean, pred_std, target_mean, target_std: the standardisation.
        converged: False when the optimiser failed and the mapping fell back to the
            least-squares line.
    """

    kind: str
    params: tuple[float, ...]
    pred_mean: float
    pred_std: float
    target_mean: float
    target_std: float
    converged: bool = True

    def __call__(self, pred: ArrayLike) -> np.ndarray:
        """Map metric scores to the human scale."""
        x = (to_vector(pred, "pred") - self.pred_mean) / self.pred_std
        if self.converged:
            mapped = _FUNCTIONS[self.kind](x, *self.params)
        else:
            mapped = self.params[0] * x + self.params[1]
        return mapped * self.target_std + self.target_mean


def fit_logistic(pred: ArrayLike, target: ArrayLike, kind: FitKind = "logistic4") -> LogisticFit:
    """Least-squares fit of a monotone logistic mapping ``target ~ f(pred)`` (VQEG practice):
    a :class:`LogisticFit`, callable on new scores.

    ``logistic4``: ``f(x) = (b1 - b2) / (1 + exp(-(x - b3) / b4)) + b2``.
    ``logistic5``: ``f(x) = b1 * (0.5 - 1 / (1 + exp(b2 * (x - b3)))) + b4 * x + b5``.
    Several starting points are tried and the one with the smallest squared error is kept.

    Args:
        pred, target: as for :func:`srcc`, ``N`` at least the number of parameters.
        kind: ``'logistic4'`` or ``'logistic5'``.

    Raises:
        MissingDependencyError: scipy is not installed.
        ArgumentError: ``kind`` is unknown or there are fewer points than parameters.
        ShapeError, NonFiniteError: bad inputs.
    """
    check_choice(kind, "fit", ("logistic4", "logistic5"))
    x, y = _pair(pred, target)
    n_params = 4 if kind == "logistic4" else 5
    if len(x) < n_params:
        raise ArgumentError(
            f"fit={kind!r} needs at least {n_params} points; got {len(x)}. "
            "Use fit=None for raw PLCC."
        )
    x_mean, x_std = float(x.mean()), float(x.std()) or 1.0
    y_mean, y_std = float(y.mean()), float(y.std()) or 1.0
    xs, ys = (x - x_mean) / x_std, (y - y_mean) / y_std
    function = _FUNCTIONS[kind]
    require("scipy", f"plcc(fit={kind!r})")
    import scipy.optimize

    sign = 1.0 if np.dot(xs, ys) >= 0 else -1.0
    lo, hi = float(ys.min()), float(ys.max())
    if kind == "logistic4":
        starts = [
            (hi, lo, 0.0, sign * 1.0),
            (hi, lo, 0.0, sign * 0.3),
            # a wide, nearly linear sigmoid: the fit can only improve on the straight line
            (sign * 10.0, -sign * 10.0, 0.0, 10.0),
        ]
    else:
        starts = [
            (hi - lo, sign * 1.0, 0.0, 0.0, 0.0),
            (hi - lo, sign * 3.0, 0.0, 0.0, 0.0),
            (0.0, 1.0, 0.0, sign * 1.0, 0.0),
        ]
    best: tuple[float, tuple[float, ...]] | None = None
    for start in starts:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                params, _ = scipy.optimize.curve_fit(function, xs, ys, p0=start, maxfev=20000)
            except (RuntimeError, ValueError, scipy.optimize.OptimizeWarning) as error:
                logger.debug("logistic fit from %s failed: %s", start, error)
                continue
        residual = float(np.sum((function(xs, *params) - ys) ** 2))
        if np.isfinite(residual) and (best is None or residual < best[0]):
            best = (residual, tuple(float(p) for p in params))
    if best is None:
        warnings.warn(
            f"the {kind} fit did not converge; falling back to a straight line (raw PLCC)",
            RuntimeWarning,
            stacklevel=2,
        )
        slope = float(np.dot(xs, ys) / len(xs))
        return LogisticFit(kind, (slope, 0.0), x_mean, x_std, y_mean, y_std, converged=False)
    return LogisticFit(kind, best[1], x_mean, x_std, y_mean, y_std)


def plcc(pred: ArrayLike, target: ArrayLike, fit: FitKind | None = None) -> float:
    """Pearson linear correlation coefficient, raw or after a logistic fit.

    Args:
        pred, target: as for :func:`srcc`.
        fit: ``None`` (raw PLCC), ``'logistic4'`` or ``'logistic5'`` (map ``pred`` through
            the fitted monotone logistic first, see :func:`fit_logistic`; needs scipy).

    Returns and raises as :func:`srcc`, and raises ``ArgumentError`` for an unknown ``fit``
    and ``MissingDependencyError`` for a fit without scipy.

    Example:
        >>> round(plcc([1, 2, 3, 4], [2, 4, 6, 8.5]), 4)
        0.9984
    """
    check_choice(fit, "fit", _FITS)
    x, y = _pair(pred, target)
    names = ("pred", "target")
    if fit is not None and np.ptp(x) > 0 and np.ptp(y) > 0:  # a constant input cannot be fitted
        x, names = fit_logistic(x, y, fit)(x), ("fitted pred", "target")
    return _pearson(x, y, "PLCC", names)


def rmse(pred: ArrayLike, target: ArrayLike, fit: FitKind | None = None) -> float:
    """Root mean squared error between ``pred`` and ``target``, in the units of ``target``.

    With ``fit`` (``'logistic4'`` or ``'logistic5'``), a non-constant ``pred`` is first
    mapped through the logistic of :func:`fit_logistic`. Raises as :func:`plcc` does.
    """
    check_choice(fit, "fit", _FITS)
    x, y = _pair(pred, target)
    if fit is not None and np.ptp(x) > 0:
        x = fit_logistic(x, y, fit)(x)
    return float(np.sqrt(np.mean((x - y) ** 2)))


_METHODS = {"srcc": srcc, "krcc": krcc, "plcc": plcc}


def grouped_correlation(
    pred: ArrayLike,
    target: ArrayLike,
    groups: ArrayLike,
    method: Literal["srcc", "krcc", "plcc"] = "srcc",
) -> float:
    """Correlation computed within each source image (group) and averaged over groups.

    Groups with fewer than two items, or where ``pred`` or ``target`` is constant, have no
    defined correlation and are skipped (logged at debug level).

    Args:
        pred, target: as for :func:`srcc`.
        groups: a group id per item (e.g. the source image name), shape ``(N,)``.
        method: ``'srcc'``, ``'krcc'`` or ``'plcc'`` (raw).

    Returns:
        The mean of the per-group correlations, or NaN (with a
        :class:`ConstantInputWarning`) when no group has a defined correlation.

    Raises:
        ArgumentError: unknown ``method``.
        ShapeError, NonFiniteError: bad inputs.

    Example:
        >>> grouped_correlation([1, 2, 3, 3, 2, 1], [1, 2, 3, 1, 2, 3], ["a"] * 3 + ["b"] * 3)
        0.0
    """
    check_choice(method, "method", tuple(_METHODS))
    x, y = _pair(pred, target)
    g = to_labels(groups, "groups")
    check_same_length(("pred", x), ("groups", g))
    statistic = _METHODS[method]
    values, skipped = [], 0
    for members in group_masks(g):
        xs, ys = x[members], y[members]
        if len(xs) < 2 or np.ptp(xs) == 0 or np.ptp(ys) == 0:
            skipped += 1
            continue
        values.append(statistic(xs, ys))
    if skipped:
        logger.debug("grouped_correlation skipped %d constant or single-item groups", skipped)
    if not values:
        return warn_constant(f"grouped {method.upper()}", "every group")
    return float(np.mean(values))
