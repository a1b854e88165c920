"""Agreement with human preferences: pairwise accuracy, HGGT misalignment, win rate, Thurstone."""

from __future__ import annotations

import warnings
from typing import Any, NamedTuple

import numpy as np
import torch

from .._errors import ArgumentError, NonFiniteError, RangeError, ShapeError
from ._inputs import (
    ArrayLike,
    check_same_length,
    group_masks,
    to_array,
    to_labels,
    to_vector,
    warn_constant,
)


def pairwise_accuracy(
    score_first: ArrayLike,
    score_second: ArrayLike,
    preference: ArrayLike,
    *,
    higher_is_better: bool = True,
) -> float:
    """Fraction of image pairs where the metric prefers the image that people preferred.

    SBS180K style: ``preference[i]`` is the fraction of raters who preferred the *second*
    image of pair ``i``. A pair counts when ``preference != 0.5`` (pairs without a human
    majority are excluded); the metric is right when it prefers the second image exactly
    when ``preference > 0.5``. A metric tie (equal scores) earns 0.5.

    Args:
        score_first, score_second: metric score of each pair's first and second image,
            ``(N,)``.
        preference: fraction of raters preferring the second image, in [0, 1], ``(N,)``.
        higher_is_better: whether a larger metric score means a better image.

    Returns:
        The accuracy in [0, 1], or NaN (with a :class:`ConstantInputWarning`) when every
        pair has ``preference == 0.5``.

    Raises:
        RangeError: ``preference`` lies outside [0, 1].
        ShapeError, NonFiniteError: bad inputs.

    Example:
        >>> pairwise_accuracy([0.2, 0.9, 0.5], [0.8, 0.1, 0.5], [1.0, 0.25, 0.9])
        0.8333333333333334
    """
    first = to_vector(score_first, "score_first")
    second = to_vector(score_second, "score_second")
    p = to_vector(preference, "preference")
    check_same_length(("score_first", first), ("score_second", second), ("preference", p))
    if np.any((p < 0) | (p > 1)):
        raise RangeError(
            "preference must be the fraction of raters preferring the second image, in "
            f"[0, 1]; got values in [{p.min()}, {p.max()}]"
        )
    decided = p != 0.5
    if not np.any(decided):
        return warn_constant("pairwise accuracy", "preference (every pair is 0.5)")
    margin = second - first if higher_is_better else first - second
    margin, human_second = margin[decided], p[decided] > 0.5
    credit = np.where(margin == 0, 0.5, ((margin > 0) == human_second).astype(np.float64))
    return float(np.mean(credit))


class MisalignmentRates(NamedTuple):
    """HGGT misalignment rates (lower is better).

    Attributes:
        positive: PM, fraction of sets where some positive ranks below some similar image.
        negative: NM, fraction of sets where some negative ranks above some similar image.
        positive_sets: number of sets with at least one positive and one similar image.
        negative_sets: number of sets with at least one negative and one similar image.
    """

    positive: float
    negative: float
    positive_sets: int
    negative_sets: int


_LABELS = {
    word: code
    for code, words in ((1, "positive pos p"), (0, "similar sim s"), (-1, "negative neg n"))
    for word in words.split()
}


def _label_codes(labels: Any) -> np.ndarray:
    array = to_labels(labels, "labels")
    if array.dtype.kind in "iuf":
        codes = array.astype(np.float64)
        if not np.all(np.isin(codes, (-1.0, 0.0, 1.0))):
            bad = sorted(set(codes.tolist()) - {-1.0, 0.0, 1.0})[:5]
            raise ArgumentError(
                "labels must be 1 (positive), 0 (similar) or -1 (negative), or the strings "
                f"'positive', 'similar', 'negative'; got {bad}"
            )
        return codes.astype(np.int64)
    codes = np.empty(len(array), dtype=np.int64)
    for index, label in enumerate(array.tolist()):
        key = str(label).strip().lower()
        if key not in _LABELS:
            raise ArgumentError(
                "labels must be 'positive', 'similar' or 'negative' (or 1, 0, -1); "
                f"got {label!r} at position {index}"
            )
        codes[index] = _LABELS[key]
    return codes


def misalignment_rates(
    scores: ArrayLike,
    labels: Any,
    groups: Any,
    *,
    higher_is_better: bool = True,
) -> MisalignmentRates:
    """HGGT positive / negative misalignment rates of a metric over annotated sets.

    Each set (one source image) holds candidates that people labelled ``positive`` (better
    than the reference), ``similar`` or ``negative`` (worse). A set is positively misaligned
    when some positive gets a strictly worse metric score than some similar candidate, and
    negatively misaligned when some negative gets a strictly better score than some similar
    candidate. Each rate is taken over the sets that have both kinds of candidates.

    Args:
        scores: metric score per candidate, shape ``(N,)``.
        labels: per candidate, ``'positive'``/``'similar'``/``'negative'`` or 1/0/-1.
        groups: set id per candidate (e.g. source image name), shape ``(N,)``.
        higher_is_better: whether a larger metric score means a better image.

    Returns:
        :class:`MisalignmentRates`; a rate is NaN (with a warning) when no set qualifies.

    Raises:
        ArgumentError: an unknown label.
        ShapeError, NonFiniteError: bad inputs.

    Example:
        >>> misalignment_rates([3, 2, 1, 5, 4, 6], ["pos", "sim", "neg"] * 2, [0, 0, 0, 1, 1, 1])
        MisalignmentRates(positive=0.0, negative=0.5, positive_sets=2, negative_sets=2)
    """
    s = to_vector(scores, "scores")
    codes = _label_codes(labels)
    g = to_labels(groups, "groups")
    check_same_length(("scores", s), ("labels", codes), ("groups", g))
    if not higher_is_better:
        s = -s
    # per kind (1: positive, -1: negative): [misaligned sets, sets with that kind and similar]
    counts = {1: [0, 0], -1: [0, 0]}
    for members in group_masks(g):
        set_scores, set_codes = s[members], codes[members]
        similar = set_scores[set_codes == 0]
        for code, count in counts.items():
            # scaled by the code, a negative is misaligned like a positive: below a similar
            kind = code * set_scores[set_codes == code]
            if kind.size and similar.size:
                count[0] += int(kind.min() < (code * similar).max())
                count[1] += 1
    rates = []
    for kind, (bad, sets) in zip(("positive", "negative"), counts.values(), strict=True):
        reason = f"the data (no set has a {kind} and a similar)"
        rates.append(bad / sets if sets else warn_constant(f"{kind} misalignment", reason))
    return MisalignmentRates(float(rates[0]), float(rates[1]), counts[1][1], counts[-1][1])


def win_rate(
    scores: ArrayLike,
    human_scores: ArrayLike,
    groups: Any,
    *,
    higher_is_better: bool = True,
    human_higher_is_better: bool = True,
) -> float:
    """Fraction of source images where the metric's top candidate is the humans' top one.

    Groups with a single candidate are skipped. When several candidates share the metric's
    best score, the group earns the fraction of them that are among the humans' best (the
    expected outcome of breaking the tie at random); ties in the human scores make every
    tied candidate a human top candidate.

    Args:
        scores, human_scores: metric and human (e.g. MOS) score per candidate, ``(N,)``.
        groups: source-image id per candidate, shape ``(N,)``.
        higher_is_better, human_higher_is_better: whether a larger score is better.

    Returns:
        The win rate in [0, 1], or NaN (with a warning) when no group has two candidates.

    Raises:
        ShapeError, NonFiniteError: bad inputs.

    Example:
        >>> win_rate([0.1, 0.9, 0.5, 0.5], [1, 5, 3, 2], ["a", "a", "b", "b"])
        0.75
    """
    s = to_vector(scores, "scores")
    h = to_vector(human_scores, "human_scores")
    g = to_labels(groups, "groups")
    check_same_length(("scores", s), ("human_scores", h), ("groups", g))
    if not higher_is_better:
        s = -s
    if not human_higher_is_better:
        h = -h
    credits = []
    for members in group_masks(g):
        if members.sum() < 2:
            continue
        set_scores, set_humans = s[members], h[members]
        metric_top = set_scores == set_scores.max()
        human_top = set_humans == set_humans.max()
        credits.append(float(np.sum(metric_top & human_top)) / float(np.sum(metric_top)))
    if not credits:
        return warn_constant("win rate", "the data (no group has two candidates)")
    return float(np.mean(credits))


def thurstone_case_v(wins: Any, *, clip: float = 0.01) -> np.ndarray:
    """Thurstone Case V scale values from a matrix of pairwise preference counts.

    ``wins[i, j]`` is how often item ``i`` was preferred over item ``j``. For every compared
    pair the preference proportion ``P_ij = wins_ij / (wins_ij + wins_ji)`` (clipped to
    ``[clip, 1 - clip]`` so unanimous pairs stay finite) is turned into a z-score
    ``Z_ij = Phi^-1(P_ij)``, and the scale values solve ``S_i - S_j ~ Z_ij`` in the least-squares
    sense with ``sum(S) = 0``. With every pair compared this is the classical solution
    ``S_i = mean_j Z_ij``. Units: standard deviations of the discriminal difference.

    Args:
        wins: square count matrix ``(K, K)``, non-negative; the diagonal is ignored.
        clip: smallest proportion used, in (0, 0.5).

    Returns:
        float64 numpy array of ``K`` scale values with zero mean (larger = preferred).

    Raises:
        ShapeError: ``wins`` is not square or has fewer than two items.
        RangeError: ``wins`` holds negative counts; ``clip`` outside (0, 0.5).
        NonFiniteError: ``wins`` holds NaN or infinity.

    Example:
        >>> thurstone_case_v([[0, 5], [5, 0]]).tolist()
        [0.0, 0.0]
    """
    counts = to_array(wins, "wins")
    if counts.ndim != 2 or counts.shape[0] != counts.shape[1] or counts.shape[0] < 2:
        raise ShapeError(
            f"wins must be a square (K, K) count matrix with K >= 2; got shape {counts.shape}"
        )
    if not np.all(np.isfinite(counts)):
        raise NonFiniteError("wins holds NaN or infinite counts")
    if np.any(counts < 0):
        raise RangeError(f"wins must hold non-negative counts; got minimum {counts.min()}")
    if not 0.0 < clip < 0.5:
        raise RangeError(f"clip must lie in (0, 0.5); got {clip!r}")
    k = counts.shape[0]
    first, second = np.triu_indices(k, 1)  # every pair i < j, row by row
    total = counts[first, second] + counts[second, first]
    compared = total > 0
    if not compared.any():
        raise ShapeError("wins holds no comparisons (every off-diagonal count is zero)")
    first, second, total = first[compared], second[compared], total[compared]
    proportion = np.clip(counts[first, second] / total, clip, 1.0 - clip)
    z = torch.special.ndtri(torch.from_numpy(proportion)).numpy()
    # one row S_i - S_j = Z_ij per compared pair, and a last row sum(S) = 0
    design = np.zeros((len(first) + 1, k))
    design[np.arange(len(first)), first] = 1.0
    design[np.arange(len(first)), second] = -1.0
    design[-1] = 1.0
    rhs = np.append(z, 0.0)
    solution, _, rank, _ = np.linalg.lstsq(design, rhs, rcond=None)
    if rank < k:
        warnings.warn(
            "the comparison graph of thurstone_case_v is disconnected: scale values of items "
            "in different components are not comparable",
            RuntimeWarning,
            stacklevel=2,
        )
    return solution - solution.mean()
