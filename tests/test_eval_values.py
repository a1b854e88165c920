"""``percepfid.eval`` by value on hand-worked examples, and the contract of its errors and
warnings (each names the argument or statistic at fault). Complements test_eval.py (scipy
agreement, properties); written against the survivors of ``tools/mutation.py eval``."""

from __future__ import annotations

import os
import warnings

import numpy as np
import pytest
import torch
from conftest import require

from percepfid import ArgumentError, NonFiniteError, RangeError, ShapeError
from percepfid.eval import (
    ConstantInputWarning,
    fit_logistic,
    grouped_correlation,
    krcc,
    misalignment_rates,
    pairwise_accuracy,
    plcc,
    rankdata,
    rmse,
    srcc,
    thurstone_case_v,
    win_rate,
)

stats = require("scipy.stats")  # the [eval] extra; always in [test]

# --------------------------------------------------------------- arguments by name

# function, keyword arguments of valid input (the array arguments first, in order)
CALLS = [
    (srcc, dict(pred=[1.0, 2.0, 3.0], target=[1.0, 3.0, 2.0])),
    (krcc, dict(pred=[1.0, 2.0, 3.0], target=[1.0, 3.0, 2.0])),
    (plcc, dict(pred=[1.0, 2.0, 3.0], target=[1.0, 3.0, 2.0])),
    (rmse, dict(pred=[1.0, 2.0, 3.0], target=[1.0, 3.0, 2.0])),
    (grouped_correlation, dict(pred=[1.0, 2.0, 3.0], target=[1.0, 3.0, 2.0], groups=[0, 0, 0])),
    (
        pairwise_accuracy,
        dict(score_first=[1.0, 2.0, 3.0], score_second=[2.0, 1.0, 3.0], preference=[1, 0, 0.5]),
    ),
    (misalignment_rates, dict(scores=[1.0, 2.0, 3.0], labels=[1, 0, -1], groups=[0, 0, 0])),
    (win_rate, dict(scores=[1.0, 2.0, 3.0], human_scores=[1.0, 3.0, 2.0], groups=[0, 0, 0])),
]


@pytest.mark.parametrize(("function", "kwargs"), CALLS, ids=lambda v: getattr(v, "__name__", ""))
def test_length_mismatch_names_every_argument(function, kwargs):
    for name in kwargs:
        bad = dict(kwargs, **{name: kwargs[name][:2]})
        with pytest.raises(ShapeError) as info:
            function(**bad)
        message = str(info.value)
        assert f"{name}: 2" in message
        # every other array argument that is checked is named with its length
        checked = [n for n in kwargs if f"{n}: 3" in message]
        assert checked, message
        assert all(f" {n}: " in f" {message}" for n in [name, *checked])


@pytest.mark.parametrize(("function", "kwargs"), CALLS, ids=lambda v: getattr(v, "__name__", ""))
def test_non_finite_input_names_the_argument(function, kwargs):
    for name, value in kwargs.items():
        if name in ("groups", "labels"):
            continue
        bad = dict(kwargs, **{name: [float("nan"), *value[1:]]})
        with pytest.raises(NonFiniteError, match=rf"^{name} holds 1 NaN"):
            function(**bad)


def test_bad_choices_name_the_option():
    with pytest.raises(ArgumentError, match=r"^fit must be one of 'logistic4', 'logistic5'"):
        fit_logistic([1, 2, 3, 4, 5], [1, 2, 3, 4, 5], "logistic3")
    for function in (plcc, rmse):
        with pytest.raises(ArgumentError, match=r"^fit must be one of None, 'logistic4'"):
            function([1, 2, 3, 4, 5], [1, 2, 3, 4, 5], fit="linear")
    with pytest.raises(ArgumentError, match=r"^method must be one of 'srcc', 'krcc', 'plcc'"):
        grouped_correlation([1, 2], [1, 2], [0, 0], method="pearson")
    with pytest.raises(ArgumentError, match="at least 5 points; got 4"):
        fit_logistic([1, 2, 3, 4], [1, 2, 3, 4], "logistic5")
    with pytest.raises(ArgumentError, match="at least 4 points; got 3"):
        fit_logistic([1, 2, 3], [1, 2, 3], "logistic4")
    fit_logistic([1, 2, 3, 4], [1, 2, 3, 5], "logistic4")  # exactly enough points
    with pytest.raises(ShapeError, match=r"^pred must be 1-D"):
        LOGISTIC([[1.0, 2.0], [3.0, 4.0]])
    with pytest.raises(ShapeError, match=r"^values must be 1-D"):
        rankdata(np.ones((2, 2)))


LOGISTIC = fit_logistic([0.0, 1.0, 2.0, 3.0, 4.0, 5.0], [0.1, 0.2, 0.9, 2.1, 2.8, 3.0])


# ------------------------------------------------------------------------ warnings


def _warns(match: str):
    return pytest.warns(ConstantInputWarning, match=match)


def test_constant_input_warnings_name_statistic_and_input():
    with _warns(r"^SRCC is undefined because pred is constant \(all values equal\); returning NaN"):
        assert np.isnan(srcc([1, 1, 1], [1, 2, 3]))
    with _warns(r"^SRCC is undefined because target is constant"):
        assert np.isnan(srcc([1, 2, 3], [2, 2, 2]))
    with _warns(r"^PLCC is undefined because pred is constant"):
        assert np.isnan(plcc([1, 1, 1, 1, 1], [1, 2, 3, 4, 5], fit="logistic4"))
    with _warns(r"^PLCC is undefined because target is constant"):
        assert np.isnan(plcc([1, 2, 3, 4, 5], [3, 3, 3, 3, 3], fit="logistic4"))
    with _warns(r"^grouped KRCC is undefined because every group is constant"):
        assert np.isnan(grouped_correlation([1, 2, 3], [1, 1, 2], [0, 0, 1], method="krcc"))
    with _warns(r"^pairwise accuracy is undefined because preference \(every pair is 0\.5\)"):
        assert np.isnan(pairwise_accuracy([1, 2], [2, 1], [0.5, 0.5]))
    with _warns(r"^win rate is undefined because the data \(no group has two candidates\)"):
        assert np.isnan(win_rate([1, 2], [1, 2], ["a", "b"]))
    with _warns(r"^positive misalignment is undefined because the data \(no set has a positive"):
        rates = misalignment_rates([2, 1], ["sim", "neg"], [0, 0])
    assert np.isnan(rates.positive) and rates.negative == 0.0
    with _warns(r"^negative misalignment is undefined because the data \(no set has a negative"):
        rates = misalignment_rates([1, 2], ["sim", "pos"], [0, 0])
    assert np.isnan(rates.negative) and rates.positive == 0.0


@pytest.mark.skipif(
    "MUTANT_UNDER_TEST" in os.environ, reason="mutmut's trampolines add a stack frame"
)
def test_warnings_point_at_the_caller():
    for call in (
        lambda: win_rate([1, 2], [1, 2], ["a", "b"]),
        lambda: pairwise_accuracy([1, 2], [2, 1], [0.5, 0.5]),
        lambda: misalignment_rates([1, 2], ["sim", "neg"], [0, 0]),
        lambda: grouped_correlation([1, 2], [1, 1], [0, 0]),
    ):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            call()
        assert caught and all(w.filename == __file__ for w in caught), [w.filename for w in caught]


# ------------------------------------------------------------------ preference values


def test_pairwise_accuracy_by_hand():
    first = [0.2, 0.9, 0.5, 0.3, 0.7, 0.1]
    second = [0.8, 0.1, 0.5, 0.3, 0.2, 0.4]
    preference = [1.0, 0.25, 0.9, 0.1, 0.5, 0.6]
    # pair 4 undecided (0.5) is dropped; ties (pairs 2, 3) earn 0.5
    # higher is better: right, right, tie, tie, (dropped), right -> 4 / 5
    assert pairwise_accuracy(first, second, preference) == pytest.approx(4 / 5)
    # lower is better: wrong, wrong, tie, tie, wrong -> 1 / 5
    assert pairwise_accuracy(first, second, preference, higher_is_better=False) == pytest.approx(
        1 / 5
    )
    as_tensor = torch.tensor(first, dtype=torch.float64)
    assert pairwise_accuracy(as_tensor, np.array(second), preference) == pytest.approx(0.8)
    for bad in ([1.5, 0.0, 0.0, 0.0, 0.0, 0.0], [-0.1, 0.0, 0.0, 0.0, 0.0, 0.0]):
        with pytest.raises(RangeError, match="preference"):
            pairwise_accuracy(first, second, bad)
    assert pairwise_accuracy([0.0], [1.0], [1.0]) == 1.0  # p = 1 is inside [0, 1]
    assert pairwise_accuracy([0.0], [1.0], [0.0]) == 0.0


def test_misalignment_rates_by_hand():
    scores = [5, 4, 6, 1, 9, 8, 3, 2, 7, 7, 1]
    labels = ["pos", "sim", "POSITIVE ", "n", "P", "Sim", "negative", "similar", "p", "s", "neg"]
    groups = ["a", "a", "a", "a", "b", "b", "b", "c", "d", "d", "e"]
    # a: positives {5, 6} vs similar {4}: fine; negative {1} below similar: fine
    # b: positive 9 > similar 8: fine; negative 3 < 8: fine
    # c: a similar alone: no set; d: positive 7 == similar 7: not strictly worse -> fine
    # e: a negative without similar: no set
    rates = misalignment_rates(scores, labels, groups)
    assert rates == (0.0, 0.0, 3, 2)
    flipped = misalignment_rates(scores, labels, groups, higher_is_better=False)
    assert flipped == (pytest.approx(2 / 3), 1.0, 3, 2)  # d stays fine (a tie)
    codes = misalignment_rates(
        [3, 2, 1, 5, 4, 6], np.array([1.0, 0.0, -1.0] * 2), [0, 0, 0, 1, 1, 1]
    )
    assert codes == (0.0, 0.5, 2, 2)
    with pytest.raises(ArgumentError, match=r"got \[2\.0\]"):
        misalignment_rates([1, 2], [2, 0], [0, 0])
    with pytest.raises(ArgumentError, match="'great' at position 1"):
        misalignment_rates([1, 2], ["sim", "great"], [0, 0])


def test_win_rate_by_hand():
    scores = [0.1, 0.9, 0.5, 0.5, 0.2, 0.3, 0.3, 0.8]
    humans = [1, 5, 3, 2, 4, 4, 1, 9]
    groups = ["a", "a", "b", "b", "c", "c", "c", "z"]
    # a: metric top 0.9 is the human top: 1; b: metric tie {0.5, 0.5}, human top one of
    # them: 1/2; c: metric tie {0.3, 0.3} vs human tie {4, 4}: one of two: 1/2; z skipped
    assert win_rate(scores, humans, groups) == pytest.approx((1 + 0.5 + 0.5) / 3)
    # lower is better for the metric: a: 0.1 (human 1, not top): 0; b: tie again: 1/2;
    # c: 0.2 (human 4, a top): 1
    assert win_rate(scores, humans, groups, higher_is_better=False) == pytest.approx(1.5 / 3)
    # lower is better for humans too: a: 0.1 has human 1, the best: 1; b: tie, human best
    # is 2 (one of two): 1/2; c: 0.2 has human 4, not the best (1): 0
    both = win_rate(scores, humans, groups, higher_is_better=False, human_higher_is_better=False)
    assert both == pytest.approx(1.5 / 3)
    assert win_rate(scores, humans, groups, human_higher_is_better=False) == pytest.approx(
        (0 + 0.5 + 0.5) / 3
    )


def test_thurstone_case_v_by_hand():
    wins = np.array([[0, 8, 6], [2, 0, 5], [4, 5, 0]], dtype=float)
    z = stats.norm.ppf(wins / (wins + wins.T + np.eye(3)))  # P_ij, diagonal unused
    np.fill_diagonal(z, 0.0)
    classical = z.sum(1) / 3  # complete design: S_i = mean_j Z_ij (Z_ii = 0)
    np.testing.assert_allclose(thurstone_case_v(wins), classical, atol=1e-12)
    np.testing.assert_allclose(thurstone_case_v(torch.tensor(wins)), classical, atol=1e-12)
    # unanimous pair: P clipped to 1 - clip; two items: S = (z / 2, -z / 2)
    for clip in (0.01, 0.2):
        expected = stats.norm.ppf(1 - clip) / 2
        np.testing.assert_allclose(
            thurstone_case_v([[0, 10], [0, 0]], clip=clip), [expected, -expected], atol=1e-12
        )
        np.testing.assert_allclose(
            thurstone_case_v([[0, 0], [10, 0]], clip=clip), [-expected, expected], atol=1e-12
        )
    # an incomplete but connected design: 0 > 1 > 2 compared only in sequence
    chain = thurstone_case_v([[0, 3, 0], [1, 0, 3], [0, 1, 0]])
    d = stats.norm.ppf(0.75)
    np.testing.assert_allclose(chain, [d, 0.0, -d], atol=1e-12)
    with pytest.warns(RuntimeWarning, match="disconnected"):
        thurstone_case_v([[0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 2], [0, 0, 1, 0]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        thurstone_case_v([[0, 1, 0], [1, 0, 1], [0, 1, 0]])  # connected: no warning
    for bad in ([[0, 1]], [[0]], np.zeros((2, 3)), np.zeros((2, 2, 2))):
        with pytest.raises(ShapeError, match="square"):
            thurstone_case_v(bad)
    with pytest.raises(ShapeError, match="no comparisons"):
        thurstone_case_v(np.zeros((3, 3)))
    for clip in (0.0, 0.5, 0.7, -0.1):
        with pytest.raises(RangeError, match="clip"):
            thurstone_case_v([[0, 1], [1, 0]], clip=clip)
    with pytest.raises(RangeError, match="non-negative"):
        thurstone_case_v([[0, -1], [1, 0]])
    with pytest.raises(NonFiniteError):
        thurstone_case_v([[0, float("nan")], [1, 0]])


# --------------------------------------------------------------- correlation values


def test_rankdata_and_rank_correlations_by_hand():
    np.testing.assert_array_equal(rankdata([10, 30, 20, 20, 5]), [2, 5, 3.5, 3.5, 1])
    np.testing.assert_array_equal(rankdata(torch.tensor([3.0, 1.0, 2.0])), [3, 1, 2])
    np.testing.assert_array_equal(rankdata([7, 7, 7]), [2, 2, 2])
    pred, target = [1, 2, 3, 4, 5], [2, 1, 4, 3, 5]
    # Spearman: 1 - 6 sum d^2 / (n (n^2 - 1)) = 1 - 6 * 4 / 120
    assert srcc(pred, target) == pytest.approx(0.8)
    # Kendall: 8 concordant, 2 discordant of 10 pairs
    assert krcc(pred, target) == pytest.approx(0.6)
    assert krcc(pred, target[::-1]) == pytest.approx(-0.6)
    # tau-b with ties: scipy's reference
    x, y = [1, 2, 2, 3, 4, 4, 5], [1, 3, 2, 2, 5, 4, 4]
    assert krcc(x, y) == pytest.approx(stats.kendalltau(x, y).statistic)
    assert krcc([3, 1, 2, 5, 4, 7, 6], [1, 2, 3, 4, 5, 6, 7]) == pytest.approx(
        stats.kendalltau([3, 1, 2, 5, 4, 7, 6], [1, 2, 3, 4, 5, 6, 7]).statistic
    )
    assert plcc([1, 2, 3], [2, 4, 6]) == 1.0 and plcc([1, 2, 3], [3, 2, 1]) == -1.0
    assert plcc([0, 1, 3], [1, 0, 5]) == pytest.approx(stats.pearsonr([0, 1, 3], [1, 0, 5])[0])


def test_rmse_by_hand_and_after_a_fit():
    assert rmse([1, 2, 3], [1, 2, 5]) == pytest.approx(np.sqrt(4 / 3))
    pred = np.array([0.0, 1.0, 2.0, 3.0, 4.0, 5.0])
    target = 2.0 / (1 + np.exp(-(pred - 2.5) / 0.7)) + 1.0  # an exact logistic4
    assert rmse(pred, target, fit="logistic4") == pytest.approx(0.0, abs=1e-4)
    assert rmse(pred, target) > 0.5
    assert rmse([2, 2, 2, 2, 2], [1, 2, 3, 4, 5], fit="logistic4") == pytest.approx(
        rmse([2, 2, 2, 2, 2], [1, 2, 3, 4, 5])  # constant pred: no fit
    )


def test_logistic_fits_recover_exact_curves_and_map_new_scores():
    x = np.linspace(-3.0, 4.0, 15)
    four = (5.0 - 1.0) / (1 + np.exp(-(x - 0.5) / 0.8)) + 1.0
    fit = fit_logistic(x, four, "logistic4")
    assert fit.converged and fit.kind == "logistic4"
    np.testing.assert_allclose(fit(x), four, atol=1e-4)
    np.testing.assert_allclose(fit([0.5]), [3.0], atol=1e-4)
    decreasing = fit_logistic(x, four[::-1].copy(), "logistic4")
    np.testing.assert_allclose(decreasing(x), four[::-1], atol=1e-4)
    five = 2.0 * (0.5 - 1 / (1 + np.exp(1.5 * (x - 0.2)))) + 0.3 * x + 1.0
    fit5 = fit_logistic(x, five, "logistic5")
    np.testing.assert_allclose(fit5(x), five, atol=1e-4)
    np.testing.assert_allclose(fit_logistic(x, -five, "logistic5")(x), -five, atol=1e-4)
    assert plcc(x, four, fit="logistic4") == pytest.approx(1.0, abs=1e-8)
    assert plcc(x, five, fit="logistic5") == pytest.approx(1.0, abs=1e-8)
    assert plcc(x, four) < 0.99


def test_logistic_fit_falls_back_to_the_least_squares_line(monkeypatch):
    scipy_optimize = require("scipy.optimize")

    def fail(*args, **kwargs):
        raise RuntimeError("no convergence")

    monkeypatch.setattr(scipy_optimize, "curve_fit", fail)
    x = np.array([0.0, 1.0, 2.0, 4.0, 7.0])
    y = np.array([1.0, 0.5, 3.0, 2.0, 6.0])
    with pytest.warns(RuntimeWarning, match="logistic4 fit did not converge"):
        fit = fit_logistic(x, y, "logistic4")
    assert fit.converged is False and fit.params[1] == 0.0
    slope, intercept = np.polyfit(x, y, 1)  # the ordinary least-squares line
    np.testing.assert_allclose(fit(x), slope * x + intercept, atol=1e-12)
    np.testing.assert_allclose(fit([10.0]), [slope * 10 + intercept], atol=1e-12)
    with pytest.warns(RuntimeWarning, match="logistic5 fit did not converge"):
        assert plcc(x, y, fit="logistic5") == pytest.approx(stats.pearsonr(x, y)[0])


def test_grouped_correlation_by_hand():
    pred = [1, 2, 3, 3, 2, 1, 5, 5, 9]
    target = [1, 2, 3, 1, 2, 3, 1, 2, 4]
    groups = ["a"] * 3 + ["b"] * 3 + ["c"] * 2 + ["d"]  # c: constant pred, d: one item
    assert grouped_correlation(pred, target, groups) == pytest.approx(0.0)
    assert grouped_correlation(pred, target, groups, method="krcc") == pytest.approx(0.0)
    assert grouped_correlation(pred, target, groups, method="plcc") == pytest.approx(0.0)
    skewed = grouped_correlation([1, 2, 3, 1, 2, 4], [1, 2, 3, 1, 3, 2], [0, 0, 0, 1, 1, 1])
    assert skewed == pytest.approx((1.0 + 0.5) / 2)
    constant_target = grouped_correlation([1, 2, 3, 4], [1, 2, 5, 5], [0, 0, 1, 1])
    assert constant_target == pytest.approx(1.0)


def test_logistic_fit_of_a_constant_maps_to_the_mean():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        flat_pred = fit_logistic([2.0, 2.0, 2.0, 2.0, 2.0], [1.0, 2.0, 3.0, 4.0, 5.0])
        flat_target = fit_logistic([1.0, 2.0, 3.0, 4.0, 5.0], [7.0, 7.0, 7.0, 7.0, 7.0])
    assert flat_pred.pred_std == 1.0 and flat_target.target_std == 1.0
    np.testing.assert_allclose(flat_pred([2.0]), [3.0], atol=1e-6)
    np.testing.assert_allclose(flat_target([1.0, 3.0, 5.0]), [7.0, 7.0, 7.0], atol=1e-6)


def test_logistic_mappings_are_the_documented_formulas():
    from percepfid.eval import LogisticFit

    x = np.array([-40.0, -2.0, -0.5, 0.0, 0.3, 1.7, 3.0, 60.0])
    b1, b2, b3, b4, b5 = 2.5, -1.0, 0.4, 0.7, 0.3
    four = LogisticFit("logistic4", (b1, b2, b3, b4), 0.0, 1.0, 0.0, 1.0)
    expected4 = (b1 - b2) / (1 + np.exp(-(x - b3) / b4)) + b2
    np.testing.assert_allclose(four(x), expected4, rtol=1e-12, atol=1e-12)
    five = LogisticFit("logistic5", (b1, 1.5, b3, b4, b5), 0.0, 1.0, 0.0, 1.0)
    expected5 = b1 * (0.5 - 1 / (1 + np.exp(1.5 * (x - b3)))) + b4 * x + b5
    np.testing.assert_allclose(five(x), expected5, rtol=1e-12, atol=1e-12)
    # the standardisation: x -> (x - mean) / std, y -> y * std + mean
    scaled = LogisticFit("logistic4", (b1, b2, b3, b4), 2.0, 4.0, -1.0, 3.0)
    np.testing.assert_allclose(scaled(2.0 + 4.0 * x), 3.0 * expected4 - 1.0, rtol=1e-12)
    line = LogisticFit("logistic4", (0.5, 0.25), 1.0, 2.0, 3.0, 4.0, converged=False)
    np.testing.assert_allclose(line([1.0, 5.0]), [4.0, 4.0 * 1.25 + 3.0])


def test_correlations_stay_inside_the_unit_interval_despite_rounding():
    rng = np.random.default_rng(0)
    overshoot = 0
    for _ in range(200):
        x = rng.normal(size=int(rng.integers(3, 60))) * 10.0 ** rng.integers(-3, 4)
        for y in (x, -x, 3.0 * x + 1.0):
            xc, yc = x - x.mean(), y - y.mean()
            raw = np.dot(xc, yc) / np.sqrt(np.dot(xc, xc) * np.dot(yc, yc))
            overshoot += abs(raw) > 1.0
            assert -1.0 <= plcc(x, y) <= 1.0
            assert -1.0 <= srcc(x, y) <= 1.0 and -1.0 <= krcc(x, y) <= 1.0
    assert overshoot  # the raw formula does leave [-1, 1] on some of these


def test_more_messages_name_their_input():
    with pytest.raises(NonFiniteError, match=r"^values holds 1 NaN"):
        rankdata([1.0, float("nan")])
    with _warns(r"^PLCC is undefined because pred is constant"):
        plcc([1, 1, 1], [1, 2, 3])
    with _warns(r"^PLCC is undefined because target is constant"):
        plcc([1, 2, 3], [1, 1, 1])
    with _warns(r"^KRCC is undefined because target is constant"):
        krcc([1, 2, 3], [1, 1, 1])
    with pytest.raises(ShapeError, match=r"^groups must be 1-D"):
        grouped_correlation([1, 2], [1, 2], [[0, 0]])
    with pytest.raises(ShapeError, match=r"^groups must be 1-D"):
        win_rate([1, 2], [1, 2], [[0, 0]])


def test_preference_edge_cases_by_hand():
    # a negative tied with a similar is not "above" it
    assert misalignment_rates([5, 5], ["neg", "sim"], [0, 0]).negative == 0.0
    assert misalignment_rates([5, 5], ["pos", "sim"], [0, 0]).positive == 0.0
    with pytest.raises(ArgumentError, match=r"got \[2\.0\]$"):
        misalignment_rates([1, 2, 3], [2, -1, 0], [0, 0, 0])
    with pytest.raises(ArgumentError, match=r"got \[2\.0, 3\.0, 4\.0, 5\.0, 6\.0\]$"):
        misalignment_rates([1] * 6, [2, 3, 4, 5, 6, 7], [0] * 6)
    for bad in ("labels", "groups"):
        arguments = {"scores": [1, 2], "labels": ["pos", "sim"], "groups": [0, 0]}
        arguments[bad] = [arguments[bad]]
        with pytest.raises(ShapeError, match=rf"^{bad} must be 1-D"):
            misalignment_rates(**arguments)
    # Thurstone: the diagonal is ignored; a missing pair does not stop the others
    wins = np.array([[0, 0, 6], [0, 0, 5], [4, 5, 0]], dtype=float)
    diagonal = wins + np.diag([7.0, 3.0, 9.0])
    np.testing.assert_allclose(thurstone_case_v(diagonal), thurstone_case_v(wins), atol=1e-12)
    d02, d12 = stats.norm.ppf(0.6), stats.norm.ppf(0.5)
    # least squares of S0 - S2 = d02, S1 - S2 = d12, sum S = 0
    s2 = -(d02 + d12) / 3
    np.testing.assert_allclose(thurstone_case_v(wins), [d02 + s2, d12 + s2, s2], atol=1e-12)
    single = torch.tensor(wins, dtype=torch.float32)  # counts are read as float64
    np.testing.assert_allclose(thurstone_case_v(single), thurstone_case_v(wins), atol=1e-14)
    with pytest.warns(RuntimeWarning, match="in different components are not comparable"):
        thurstone_case_v([[0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 2], [0, 0, 1, 0]])


def test_tensor_inputs_are_read_in_float64():
    x32 = torch.tensor([0.1, 0.7, 0.2, 0.9, 0.35], dtype=torch.float32)
    y = [1.0, 3.0, 2.0, 5.0, 2.5]
    as64 = x32.double().numpy()
    # float32 arithmetic would differ by ~1e-8
    assert plcc(x32, y) == pytest.approx(stats.pearsonr(as64, y)[0], rel=1e-12, abs=0)
    assert rmse(x32, y) == pytest.approx(np.sqrt(np.mean((as64 - np.array(y)) ** 2)), rel=1e-12)
    # groups as a tensor, and a single-candidate group before the others
    groups = torch.tensor([0, 1, 1, 2, 2])
    assert win_rate([5, 1, 2, 3, 4], [1, 1, 2, 2, 1], groups) == pytest.approx(0.5)
