"""IQAWeightedSampler (SMA/SMP): distributions against scipy, limits, masks, sharding."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import examples
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.special import softmax
from scipy.stats import chisquare
from torch.utils.data import DataLoader, Dataset

from percepfid import ArgumentError, DTypeError, NonFiniteError, ShapeError
from percepfid.data import IQAWeightedSampler, candidate_probabilities

NAN = float("nan")
SCORES = [
    [62.0, 70.0, 55.0, NAN],
    [40.0, 41.0, 52.0, 47.0],
    [80.0, NAN, 71.0, 75.0],
]


def _counts(sampler: IQAWeightedSampler, item: int, candidates: int) -> np.ndarray:
    counts = np.zeros(candidates, dtype=np.int64)
    for i, k in sampler:
        if i == item:
            counts[k] += 1
    return counts


def _expected_softmax(row: list[float], temperature: float) -> np.ndarray:
    row = np.asarray(row, dtype=np.float64)
    present = ~np.isnan(row)
    p = np.zeros_like(row)
    p[present] = softmax(row[present] / temperature)
    return p


@pytest.mark.parametrize("temperature", [4.0, 10.0])
def test_frequencies_match_softmax_chi_square(temperature: float) -> None:
    draws_per_item = 6000
    sampler = IQAWeightedSampler(
        SCORES, temperature=temperature, num_samples=3 * draws_per_item, seed=123
    )
    sampler.set_epoch(0)
    for item, row in enumerate(SCORES):
        expected = _expected_softmax(row, temperature)
        counts = _counts(sampler, item, len(row))
        assert counts.sum() == draws_per_item
        keep = expected > 0
        assert counts[~keep].sum() == 0
        result = chisquare(counts[keep], expected[keep] * draws_per_item)
        assert result.pvalue > 1e-3, (item, counts, expected)
        # the test has power: the same draws reject a uniform distribution
        uniform = np.full(keep.sum(), draws_per_item / keep.sum())
        assert chisquare(counts[keep], uniform).pvalue < 1e-6


def test_probabilities_equal_scipy_softmax() -> None:
    probabilities = candidate_probabilities(SCORES, temperature=10.0)
    for item, row in enumerate(SCORES):
        np.testing.assert_allclose(
            probabilities[item].numpy(), _expected_softmax(row, 10.0), rtol=1e-12
        )


def test_temperature_to_zero_is_argmax() -> None:
    cold = candidate_probabilities(SCORES, temperature=1e-6)
    argmax = candidate_probabilities(SCORES, mode="argmax")
    assert torch.equal(cold, argmax)
    assert argmax.argmax(dim=1).tolist() == [1, 2, 0]
    sampler = IQAWeightedSampler(SCORES, temperature=1e-6, num_samples=300, seed=1)
    assert {(i, k) for i, k in sampler} == {(0, 1), (1, 2), (2, 0)}


def test_temperature_to_infinity_is_uniform() -> None:
    hot = candidate_probabilities(SCORES, temperature=1e9)
    uniform = candidate_probabilities(SCORES, mode="uniform")
    torch.testing.assert_close(hot, uniform, rtol=0, atol=1e-7)
    assert uniform[1].tolist() == [0.25] * 4
    assert uniform[0].tolist() == pytest.approx([1 / 3, 1 / 3, 1 / 3, 0])
    sampler = IQAWeightedSampler(SCORES, temperature=1e9, num_samples=3 * 3000, seed=5)
    counts = _counts(sampler, 1, 4)
    assert chisquare(counts, np.full(4, counts.sum() / 4)).pvalue > 1e-3


def test_argmax_ties_go_to_lowest_index() -> None:
    probabilities = candidate_probabilities([[1.0, 3.0, 3.0], [NAN, 2.0, 2.0]], mode="argmax")
    assert probabilities.argmax(dim=1).tolist() == [1, 1]
    assert probabilities.sum().item() == 2.0


def test_lower_is_better_negates() -> None:
    probabilities = candidate_probabilities([[1.0, 3.0]], mode="argmax", higher_is_better=False)
    assert probabilities.tolist() == [[1.0, 0.0]]


def test_masked_candidates_never_drawn() -> None:
    scores = torch.tensor([[90.0, 10.0, 20.0], [5.0, 95.0, NAN]])
    positives = torch.tensor([[False, True, True], [True, False, True]])  # SMP
    sampler = IQAWeightedSampler(scores, candidates=positives, temperature=100.0, num_samples=4000)
    drawn = set()
    for epoch in range(3):
        sampler.set_epoch(epoch)
        drawn |= set(sampler)
    assert drawn == {(0, 1), (0, 2), (1, 0)}


def test_two_ranks_disjoint_and_cover_the_epoch() -> None:
    scores = torch.randn(12, 3) * 10
    ranks = [
        IQAWeightedSampler(scores, seed=7, num_replicas=2, rank=r, temperature=5.0)
        for r in range(2)
    ]
    for epoch in (0, 3):
        for sampler in ranks:
            sampler.set_epoch(epoch)
        draws = [list(s) for s in ranks]
        assert len(draws[0]) == len(draws[1]) == 6 == len(ranks[0])
        items = [{i for i, _ in d} for d in draws]
        assert items[0].isdisjoint(items[1])
        assert items[0] | items[1] == set(range(12))
        # the union is exactly the single-process epoch with the same seed
        single = IQAWeightedSampler(scores, seed=7, temperature=5.0)
        single.set_epoch(epoch)
        assert sorted(draws[0] + draws[1]) == sorted(single)


def test_uneven_split_pads_to_equal_length_or_drops() -> None:
    scores = torch.rand(7, 2)
    padded = [IQAWeightedSampler(scores, num_replicas=3, rank=r) for r in range(3)]
    assert [len(list(s)) for s in padded] == [3, 3, 3] == [len(s) for s in padded]
    assert set().union(*({i for i, _ in s} for s in padded)) == set(range(7))
    dropped = [IQAWeightedSampler(scores, num_replicas=3, rank=r, drop_last=True) for r in range(3)]
    assert [len(list(s)) for s in dropped] == [2, 2, 2]


def test_same_seed_and_epoch_same_draw() -> None:
    scores = torch.rand(20, 4) * 100
    a = IQAWeightedSampler(scores, seed=3)
    b = IQAWeightedSampler(scores, seed=3)
    a.set_epoch(2)
    b.set_epoch(2)
    assert list(a) == list(b)
    torch.rand(100)  # the global RNG does not matter
    assert list(a) == list(b)
    b.set_epoch(3)
    assert list(a) != list(b)
    c = IQAWeightedSampler(scores, seed=4)
    c.set_epoch(2)
    assert list(a) != list(c)


def test_num_samples_repeats_items_evenly() -> None:
    sampler = IQAWeightedSampler(torch.rand(5, 2), num_samples=15)
    items = [i for i, _ in sampler]
    assert len(items) == 15
    assert all(items.count(i) == 3 for i in range(5))


def test_works_with_dataloader() -> None:
    class Pairs(Dataset):
        def __getitem__(self, index: tuple[int, int]) -> torch.Tensor:
            item, candidate = index
            return torch.tensor([item, candidate])

        def __len__(self) -> int:
            return 4

    sampler = IQAWeightedSampler(torch.rand(4, 3), seed=0)
    batches = list(DataLoader(Pairs(), sampler=sampler, batch_size=2))
    assert torch.cat(batches)[:, 0].sort().values.tolist() == [0, 1, 2, 3]


@settings(max_examples=examples(40, 400), deadline=None)
@given(
    st.lists(
        st.lists(st.floats(-50, 50) | st.just(NAN), min_size=3, max_size=3), min_size=1, max_size=5
    ),
    st.floats(0.05, 50.0),
)
def test_probabilities_are_a_distribution_over_eligible(rows, temperature) -> None:
    scores = torch.tensor(rows, dtype=torch.float64)
    scores[:, 0] = scores[:, 0].nan_to_num(0.0)  # every row keeps one candidate
    p = candidate_probabilities(scores, temperature=temperature)
    torch.testing.assert_close(p.sum(dim=1), torch.ones(len(rows), dtype=torch.float64))
    assert (p[scores.isnan()] == 0).all()
    # softmax is monotone: a better eligible score never gets a smaller probability
    for row, prob in zip(scores, p, strict=True):
        present = ~row.isnan()
        order = row[present].argsort()
        assert (prob[present][order].diff() >= -1e-12).all()


@pytest.mark.parametrize(
    ("kwargs", "error", "words"),
    [
        ({"scores": [[1.0, 2.0], [NAN, NAN]]}, ArgumentError, "items [1]"),
        (
            {"scores": [[1.0, 2.0]], "candidates": torch.tensor([[False, False]])},
            ArgumentError,
            "no eligible",
        ),
        ({"scores": [[1.0, 2.0]], "temperature": -1.0}, ArgumentError, "temperature"),
        ({"scores": [[1.0, 2.0]], "temperature": 0.0}, ArgumentError, "temperature"),
        ({"scores": [[1.0, 2.0]], "mode": "best"}, ArgumentError, "mode"),
        ({"scores": [1.0, 2.0]}, ShapeError, "(items, candidates)"),
        ({"scores": [[1.0, math.inf]]}, NonFiniteError, "infinite"),
        ({"scores": [[1.0, 2.0]], "candidates": [[1, 0]]}, DTypeError, "boolean"),
        ({"scores": [[1.0, 2.0]], "candidates": torch.tensor([[True]])}, ShapeError, "shape"),
        ({"scores": [[1.0, 2.0]], "num_replicas": 2, "rank": 2}, ArgumentError, "rank"),
        ({"scores": [[1.0, 2.0]], "num_samples": 0}, ArgumentError, "num_samples"),
    ],
)
def test_bad_inputs_raise_typed_errors(kwargs, error, words) -> None:
    with pytest.raises(error, match=None) as caught:
        IQAWeightedSampler(**kwargs)
    assert words in str(caught.value)


def test_set_epoch_rejects_negative() -> None:
    with pytest.raises(ArgumentError, match="epoch"):
        IQAWeightedSampler([[1.0]]).set_epoch(-1)


def test_python_float_scores_keep_float64_precision():
    # Lists of Python floats are float64: 1e300 must stay finite (it became inf in float32).
    from percepfid.data import candidate_probabilities

    probabilities = candidate_probabilities([[1e300, 1.0], [2.0, 3e300]], mode="argmax")
    assert probabilities.tolist() == [[1.0, 0.0], [0.0, 1.0]]
    near = candidate_probabilities([[1.0, 1.0 + 1e-12]], mode="argmax")  # below float32 eps
    assert near.tolist() == [[0.0, 1.0]]
