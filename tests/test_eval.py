"""percepfid.eval against scipy and against hand-computed cases."""

from __future__ import annotations

import math
import sys
from statistics import NormalDist

import numpy as np
import pytest
import torch
from conftest import examples
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from percepfid import eval as pe
from percepfid._errors import (
    ArgumentError,
    DTypeError,
    EmptyBatchError,
    MissingDependencyError,
    NonFiniteError,
    RangeError,
    ShapeError,
)
from percepfid.eval import ConstantInputWarning


def _tied_data(seed: int, n: int, levels: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.integers(0, levels, n).astype(float)
    y = np.round(x * 0.5 + rng.normal(size=n), 1)
    return x, y


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("n, levels", [(7, 3), (50, 5), (400, 20), (2500, 2500)])
def test_correlations_match_scipy_with_ties(seed: int, n: int, levels: int) -> None:
    x, y = _tied_data(seed, n, levels)
    assert pe.srcc(x, y) == pytest.approx(stats.spearmanr(x, y).statistic, abs=1e-12)
    assert pe.krcc(x, y) == pytest.approx(stats.kendalltau(x, y).statistic, abs=1e-12)
    assert pe.plcc(x, y) == pytest.approx(stats.pearsonr(x, y).statistic, abs=1e-12)


@settings(max_examples=examples(60, 400), deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(-3, 3), st.integers(-3, 3)),
        min_size=2,
        max_size=40,
    )
)
def test_rank_correlations_property_vs_scipy(pairs: list[tuple[int, int]]) -> None:
    x = np.array([p[0] for p in pairs], dtype=float)
    y = np.array([p[1] for p in pairs], dtype=float)
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        with pytest.warns(ConstantInputWarning):
            assert math.isnan(pe.krcc(x, y))
        return
    assert pe.krcc(x, y) == pytest.approx(stats.kendalltau(x, y).statistic, abs=1e-12)
    assert pe.srcc(x, y) == pytest.approx(stats.spearmanr(x, y).statistic, abs=1e-12)
    assert pe.krcc(x, y) == pytest.approx(pe.krcc(y, x), abs=1e-12)


def test_rankdata_matches_scipy() -> None:
    values = np.array([3.0, 1.0, 3.0, 2.0, 3.0, -1.0, 2.0])
    np.testing.assert_allclose(pe.rankdata(values), stats.rankdata(values))


def test_accepts_lists_numpy_and_torch() -> None:
    x, y = _tied_data(0, 30, 6)
    expected = stats.spearmanr(x, y).statistic
    assert pe.srcc(x.tolist(), y.tolist()) == pytest.approx(expected)
    assert pe.srcc(torch.tensor(x, dtype=torch.float32), y) == pytest.approx(expected)
    tracked = torch.tensor(x, requires_grad=True).reshape(-1, 1)  # (N, 1) model output
    assert pe.srcc(tracked, torch.tensor(y)) == pytest.approx(expected)


@pytest.mark.parametrize(
    "statistic",
    [pe.srcc, pe.krcc, pe.plcc, lambda x, y: pe.plcc(x, y, fit="logistic4")],
)
def test_constant_input_warns_and_returns_nan(statistic) -> None:
    with pytest.warns(ConstantInputWarning, match="pred is constant"):
        assert math.isnan(statistic([1.0, 1.0, 1.0, 1.0, 1.0], [1.0, 2.0, 3.0, 4.0, 5.0]))
    with pytest.warns(ConstantInputWarning, match="target is constant"):
        assert math.isnan(statistic([1.0, 2.0, 3.0, 4.0, 5.0], [2.0] * 5))


def test_bad_inputs_raise_typed_errors() -> None:
    with pytest.raises(ShapeError, match="same length; got pred: 3, target: 2"):
        pe.srcc([1, 2, 3], [1, 2])
    with pytest.raises(ShapeError, match=r"1-D .*\(2, 3\)"):
        pe.plcc(np.ones((2, 3)), np.ones((2, 3)))
    with pytest.raises(NonFiniteError, match="target holds 1 NaN"):
        pe.krcc([1, 2, 3], [1, float("nan"), 3])
    with pytest.raises(EmptyBatchError, match="pred is empty"):
        pe.srcc([], [])
    with pytest.raises(DTypeError, match="pred must be a sequence of numbers"):
        pe.srcc(["a", "b"], [1, 2])
    with pytest.raises(ArgumentError, match="fit must be one of"):
        pe.plcc([1, 2, 3], [1, 2, 3], fit="cubic")
    with pytest.raises(ArgumentError, match="needs at least 5 points"):
        pe.plcc([1, 2, 3, 4], [1, 2, 3, 5], fit="logistic5")


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("kind", ["logistic4", "logistic5"])
def test_logistic_fit_improves_plcc_on_monotone_nonlinear_data(seed: int, kind: str) -> None:
    rng = np.random.default_rng(seed)
    x = rng.uniform(-3, 3, 200)
    y = 5.0 / (1.0 + np.exp(-2.0 * x)) + rng.normal(scale=0.1, size=200)
    raw = stats.pearsonr(x, y).statistic
    fitted = pe.plcc(x, y, fit=kind)
    assert fitted >= raw
    assert fitted > raw + 0.02  # a clearly visible gain on a saturating curve
    assert pe.rmse(x, y, fit=kind) < pe.rmse(x * np.polyfit(x, y, 1)[0] + np.polyfit(x, y, 1)[1], y)


def test_logistic4_fit_recovers_the_generating_curve() -> None:
    x = np.linspace(0.0, 1.0, 60)
    truth = (9.0 - 1.0) / (1.0 + np.exp(-(x - 0.4) / 0.08)) + 1.0
    fit = pe.fit_logistic(x, truth, "logistic4")
    np.testing.assert_allclose(fit(x), truth, atol=1e-4)
    assert fit.converged
    # decreasing relations are fitted too
    assert pe.plcc(-x, truth, fit="logistic4") == pytest.approx(1.0, abs=1e-8)


def test_logistic_fit_without_scipy_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "scipy", None)
    monkeypatch.setitem(sys.modules, "scipy.optimize", None)
    with pytest.raises(MissingDependencyError, match=r"percepfid\[eval\]"):
        pe.plcc([1, 2, 3, 4, 5], [1, 2, 3, 5, 9], fit="logistic4")
    assert pe.plcc([1, 2, 3], [1, 2, 4]) > 0.9  # raw statistics still work


def test_grouped_correlation_hand_case_and_scipy() -> None:
    pred = [1, 2, 3, 3, 2, 1, 5, 5, 7]
    target = [1, 2, 3, 1, 2, 3, 4, 9, 2]
    groups = ["a", "a", "a", "b", "b", "b", "c", "c", "c"]
    # a: +1, b: -1, c: pred (5, 5, 7) vs (4, 9, 2)
    c = stats.spearmanr([5, 5, 7], [4, 9, 2]).statistic
    assert pe.grouped_correlation(pred, target, groups) == pytest.approx((1 - 1 + c) / 3)
    kc = stats.kendalltau([5, 5, 7], [4, 9, 2]).statistic
    assert pe.grouped_correlation(pred, target, groups, method="krcc") == pytest.approx(
        (1 - 1 + kc) / 3
    )
    # constant and single-item groups are skipped
    assert pe.grouped_correlation([1, 2, 3, 4, 4], [1, 2, 5, 1, 2], [0, 0, 1, 2, 2]) == 1.0
    with pytest.warns(ConstantInputWarning):
        assert math.isnan(pe.grouped_correlation([1, 1, 2], [1, 2, 3], [0, 0, 1]))
    with pytest.raises(ArgumentError, match="method"):
        pe.grouped_correlation([1, 2], [1, 2], [0, 0], method="pearson")


def test_pairwise_accuracy_hand_cases() -> None:
    # pair 0: humans prefer second (1.0), metric too -> 1
    # pair 1: humans prefer first (0.25), metric prefers first -> 1
    # pair 2: humans prefer second (0.9), metric tie -> 0.5
    # pair 3: no majority (0.5) -> excluded
    # pair 4: humans prefer first (0.0), metric prefers second -> 0
    first = [0.2, 0.9, 0.5, 0.1, 0.3]
    second = [0.8, 0.1, 0.5, 0.9, 0.4]
    pref = [1.0, 0.25, 0.9, 0.5, 0.0]
    assert pe.pairwise_accuracy(first, second, pref) == pytest.approx(2.5 / 4)
    # a distance (lower is better) flips every decided non-tie pair
    assert pe.pairwise_accuracy(first, second, pref, higher_is_better=False) == pytest.approx(
        1.5 / 4
    )
    with pytest.warns(ConstantInputWarning):
        assert math.isnan(pe.pairwise_accuracy([1, 2], [2, 1], [0.5, 0.5]))
    with pytest.raises(RangeError, match=r"in \[0, 1\]"):
        pe.pairwise_accuracy([1], [2], [3.0])


def test_misalignment_rates_hand_cases() -> None:
    scores = [
        # set 0: positive 0.9 > similar 0.5, 0.6 > negative 0.1 -> aligned
        0.9, 0.5, 0.6, 0.1,
        # set 1: positive 0.4 below similar 0.5 -> PM; negative 0.3 below -> aligned
        0.4, 0.5, 0.3,
        # set 2: negative 0.7 above similar 0.6 -> NM; no positive
        0.7, 0.6,
        # set 3: positive and negative but no similar -> counted in neither
        0.1, 0.9,
        # set 4: positive ties a similar (0.5 == 0.5) -> not strictly below -> aligned
        0.5, 0.5,
    ]  # fmt: skip
    labels = (
        ["positive", "similar", "similar", "negative"]
        + ["pos", "sim", "neg"]
        + ["negative", "similar"]
        + ["positive", "negative"]
        + ["positive", "similar"]
    )
    groups = [0] * 4 + [1] * 3 + [2] * 2 + [3] * 2 + [4] * 2
    rates = pe.misalignment_rates(scores, labels, groups)
    assert rates.positive_sets == 3  # sets 0, 1, 4
    assert rates.negative_sets == 3  # sets 0, 1, 2
    assert rates.positive == pytest.approx(1 / 3)
    assert rates.negative == pytest.approx(1 / 3)
    # integer labels and a lower-is-better metric (negated scores) give the same answer
    codes = [{"p": 1, "s": 0, "n": -1}[label[0]] for label in labels]
    flipped = pe.misalignment_rates(
        torch.tensor([-s for s in scores]), np.array(codes), groups, higher_is_better=False
    )
    assert flipped == rates
    with pytest.raises(ArgumentError, match="'better' at position 0"):
        pe.misalignment_rates([1.0], ["better"], [0])
    with pytest.raises(ArgumentError, match=r"\[2\.0\]"):
        pe.misalignment_rates([1.0], [2], [0])


def test_win_rate_hand_cases() -> None:
    scores = [0.1, 0.9, 0.5, 0.5, 0.7, 0.2, 0.3, 1.0]
    human = [1, 5, 3, 2, 4, 4, 1, 3]
    groups = ["a", "a", "b", "b", "c", "c", "c", "d"]
    # a: metric top = item 1, human top = item 1 -> 1
    # b: metric tie (items 2, 3), human top = item 2 -> 0.5
    # c: metric top = item 4, human tops (tie) = items 4, 5 -> 1
    # d: single candidate -> skipped
    assert pe.win_rate(scores, human, groups) == pytest.approx(2.5 / 3)
    # the worst candidate under lower-is-better for both scales: a: item 0 metric and human
    assert pe.win_rate(
        scores, human, groups, higher_is_better=False, human_higher_is_better=False
    ) == (pytest.approx((1 + 0.5 + 0) / 3))
    with pytest.warns(ConstantInputWarning):
        assert math.isnan(pe.win_rate([1.0, 2.0], [1.0, 2.0], [0, 1]))


def test_thurstone_case_v_complete_design_matches_classical_solution() -> None:
    wins = np.array([[0, 8, 9], [2, 0, 6], [1, 4, 0]], dtype=float)
    z = NormalDist().inv_cdf
    proportions = {(0, 1): 0.8, (0, 2): 0.9, (1, 2): 0.6}
    table = np.zeros((3, 3))
    for (i, j), p in proportions.items():
        table[i, j] = z(p)
        table[j, i] = -z(p)
    expected = table.mean(axis=1)  # S_i = mean_j Z_ij (Case V, complete design)
    np.testing.assert_allclose(pe.thurstone_case_v(wins), expected, atol=1e-12)
    np.testing.assert_allclose(pe.thurstone_case_v(torch.tensor(wins)), expected, atol=1e-12)


def test_thurstone_case_v_chain_and_clipping() -> None:
    z = NormalDist().inv_cdf
    # a chain 0-1-2 without the 0-2 comparison: differences reproduce the z-scores exactly
    wins = [[0, 3, 0], [1, 0, 7], [0, 3, 0]]
    scores = pe.thurstone_case_v(wins)
    assert scores[0] - scores[1] == pytest.approx(z(0.75))
    assert scores[1] - scores[2] == pytest.approx(z(0.7))
    assert scores.sum() == pytest.approx(0.0, abs=1e-12)
    # unanimous pairs are clipped to finite values
    unanimous = pe.thurstone_case_v([[0, 10], [0, 0]], clip=0.05)
    assert unanimous[0] - unanimous[1] == pytest.approx(z(0.95))
    with pytest.warns(RuntimeWarning, match="disconnected"):
        pe.thurstone_case_v(np.array([[0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 2], [0, 0, 1, 0]]))
    with pytest.raises(ShapeError, match="square"):
        pe.thurstone_case_v([[1, 2, 3]])
    with pytest.raises(RangeError, match="non-negative"):
        pe.thurstone_case_v([[0, -1], [1, 0]])
    with pytest.raises(ShapeError, match="no comparisons"):
        pe.thurstone_case_v([[0, 0], [0, 0]])


def test_import_does_not_load_scipy() -> None:
    import subprocess

    code = "import sys, percepfid.eval; assert 'scipy' not in sys.modules, 'scipy imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
