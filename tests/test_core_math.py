"""The core math against independent references (numpy formulas, scipy, torch's own ops).

Fast (pure tensor math, no models): these tests are also the narrow selection that
``tools/mutation.py`` runs against mutants of ``percepfid/functional``,
``percepfid/kernels/_reference.py``, the sampler's probabilities, the RQI crops and the LoRA
target selection. Properties draw a few examples locally and hundreds under
``HYPOTHESIS_PROFILE=ci``.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import examples, require
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from resampling import find_window, resize
from torch import nn

from percepfid import ArgumentError, DTypeError, EmptyBatchError, ShapeError, UnknownNameError
from percepfid.data import IQAWeightedSampler, candidate_probabilities
from percepfid.functional import (
    antisymmetrize,
    high_level_fidelity,
    hlf_loss,
    huber,
    reduce_loss,
    rqi_loss,
    rqi_score,
)
from percepfid.kernels import cosine_similarity
from percepfid.kernels._reference import (
    REDUCE_NONE,
    REDUCE_SUM,
    compute_dtype,
    cosine_backward_reference,
    cosine_forward_reference,
)
from percepfid.lora import find_lora_targets, inject_lora
from percepfid.rqi import aligned_crop, crop_at, crop_offsets, fit_to_crop

# The spec: the public cosine on the torch backend.
cosine_similarity_reference = functools.partial(cosine_similarity, backend="torch")

scipy_special = require("scipy.special")  # the [eval] extra; always in [test]

# ------------------------------------------------------------------ numpy references


def np_cosine(x: np.ndarray, y: np.ndarray, eps: float) -> np.ndarray:
    """cos = <x, y> / (max(|x|, eps) max(|y|, eps)) over the last axis, clipped to [-1, 1]."""
    dot = (x * y).sum(-1)
    nx, ny = np.sqrt((x * x).sum(-1)), np.sqrt((y * y).sum(-1))
    return np.clip(dot / (np.maximum(nx, eps) * np.maximum(ny, eps)), -1.0, 1.0)


def np_cosine_grad(x: np.ndarray, y: np.ndarray, eps: float, g: np.ndarray) -> np.ndarray:
    """d/dx of sum(g * cos) (the unclipped cosine), by the documented formula."""
    nx, ny = np.sqrt((x * x).sum(-1)), np.sqrt((y * y).sum(-1))
    cx, cy = np.maximum(nx, eps), np.maximum(ny, eps)
    cos = (x * y).sum(-1) / (cx * cy)
    a = (g / (cx * cy))[..., None]
    b = np.where(nx >= eps, g * cos / (cx * cx), 0.0)[..., None]
    return a * y - b * x


SHAPES = st.tuples(st.integers(1, 3), st.integers(1, 5), st.integers(1, 9))


def _pairs():
    return SHAPES.flatmap(
        lambda shape: st.tuples(
            hnp.arrays(np.float64, shape, elements=st.floats(-4, 4, width=64)),
            hnp.arrays(np.float64, shape, elements=st.floats(-4, 4, width=64)),
            hnp.arrays(np.float64, shape[:2], elements=st.floats(0.1, 3, width=64)),
            st.sampled_from([1e-8, 0.5, 3.0]),
        )
    )


# ---------------------------------------------------------------------- the cosine


@settings(max_examples=examples(25, 400))
@given(data=_pairs(), reduce=st.sampled_from([None, "sum", "mean"]), weighted=st.booleans())
def test_cosine_reference_matches_the_formula(data, reduce, weighted):
    x, y, w, eps = data
    weight = torch.from_numpy(w) if weighted else None
    got = cosine_similarity_reference(
        torch.from_numpy(x), torch.from_numpy(y), eps=eps, weight=weight, reduce=reduce
    )
    cos = np_cosine(x, y, eps) * (w if weighted else 1.0)
    if reduce == "sum":
        cos = cos.sum(-1)
    elif reduce == "mean":
        cos = cos.sum(-1) / (w.sum(-1) if weighted else cos.shape[-1])
    np.testing.assert_allclose(got.numpy(), cos, rtol=1e-10, atol=1e-12)
    public = cosine_similarity(
        torch.from_numpy(x), torch.from_numpy(y), eps=eps, weight=weight, reduce=reduce,
        backend="torch",
    )  # fmt: skip
    np.testing.assert_allclose(public.numpy(), cos, rtol=1e-10, atol=1e-12)


@settings(max_examples=examples(25, 400))
@given(data=_pairs(), reduce=st.sampled_from([REDUCE_NONE, REDUCE_SUM]), weighted=st.booleans())
def test_fused_forward_and_backward_references_match_the_formula(data, reduce, weighted):
    x, y, w, eps = data
    scale = 0.25 if reduce == REDUCE_SUM else 1.0
    weight = torch.from_numpy(w) if weighted else None
    tx, ty = torch.from_numpy(x), torch.from_numpy(y)
    out, stats = cosine_forward_reference(tx, ty, weight, eps, reduce, scale)
    per_token = np_cosine(x, y, eps) * (w if weighted else 1.0)
    expected = per_token.sum(-1) * scale if reduce == REDUCE_SUM else per_token
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-10, atol=1e-12)
    nx, ny = np.sqrt((x * x).sum(-1)), np.sqrt((y * y).sum(-1))
    raw = (x * y).sum(-1) / (np.maximum(nx, eps) * np.maximum(ny, eps))
    np.testing.assert_allclose(stats.numpy(), np.stack([raw, nx, ny]), rtol=1e-10, atol=1e-12)

    upstream = np.linspace(-1.0, 2.0, out.numel()).reshape(out.shape)
    g = upstream[..., None] * scale if reduce == REDUCE_SUM else upstream
    g = g * (w if weighted else 1.0)
    g = np.broadcast_to(g, x.shape[:2])
    # The gradient's terms are of size |g| (|x| + |y|) / (max(|x|, eps) max(|y|, eps)) and
    # cancel near |y| = eps: allow float64 rounding at that scale (2^-52 relative).
    terms = np.abs(g)[..., None] * (np.abs(x) + np.abs(y))
    magnitude = float((terms / (np.maximum(nx, eps) * np.maximum(ny, eps))[..., None]).max())
    atol = 1e-9 + 1e-13 * magnitude
    for need_dx, need_dy in ((True, True), (True, False), (False, True)):
        dx, dy = cosine_backward_reference(
            torch.from_numpy(upstream), tx, ty, weight, stats, eps, reduce, scale, need_dx, need_dy
        )
        if need_dx:
            np.testing.assert_allclose(dx.numpy(), np_cosine_grad(x, y, eps, g), atol=atol)
        else:
            assert dx.numel() == 0
        if need_dy:
            np.testing.assert_allclose(dy.numpy(), np_cosine_grad(y, x, eps, g), atol=atol)
        else:
            assert dy.numel() == 0


def test_cosine_reference_gradient_is_the_documented_derivative():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 5, dtype=torch.float64)
    x[0, 1] = 0.0  # a zero row: inside the eps ball, finite gradient
    x[1, 2] *= 1e-3
    y = torch.randn(2, 3, 5, dtype=torch.float64)
    y[1, 0] = torch.as_tensor(x[1, 0]) * 3.0  # parallel: the clamp must not zero the gradient
    xg = x.clone().requires_grad_(True)
    weight = torch.tensor([[1.0, 2.0, 0.5], [0.3, 1.0, 4.0]], dtype=torch.float64)
    for eps in (1e-8, 0.01):
        xg.grad = None
        cosine_similarity_reference(xg, y, eps=eps, weight=weight, reduce="sum").sum().backward()
        expected = np_cosine_grad(x.numpy(), y.numpy(), eps, weight.numpy())
        np.testing.assert_allclose(xg.grad.numpy(), expected, atol=1e-10)


def test_cosine_reference_dtypes_and_dim():
    assert compute_dtype(torch.float16) == torch.float32
    assert compute_dtype(torch.bfloat16, torch.float16) == torch.float32
    assert compute_dtype(torch.float32, torch.float64) == torch.float64
    x, y = torch.randn(4, 6, 3).half(), torch.randn(4, 6, 3).half()
    got = cosine_similarity_reference(x, y, dim=1)
    assert got.dtype == torch.float32 and got.shape == (4, 3)
    expected = np_cosine(
        x.float().numpy().transpose(0, 2, 1), y.float().numpy().transpose(0, 2, 1), 1e-8
    )
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-6, atol=1e-6)
    # fp16 rows with norms in the hundreds stay finite (no half-precision squares)
    big = torch.full((1, 2, 512), 200.0).half()
    assert torch.equal(cosine_similarity_reference(big, big), torch.ones(1, 2))
    # broadcasting of y against x
    z = torch.randn(1, 6, 3)
    np.testing.assert_allclose(
        cosine_similarity_reference(x.float(), z).numpy(),
        np_cosine(x.float().numpy(), np.broadcast_to(z.numpy(), (4, 6, 3)), 1e-8),
        rtol=1e-6,
        atol=1e-6,
    )


# ------------------------------------------------------------------- functional HLF


def test_reduce_loss_matches_hand_reductions():
    values = torch.tensor([1.0, -2.0, 4.5])
    assert reduce_loss(values, "mean").item() == pytest.approx(3.5 / 3)
    assert reduce_loss(values, "sum").item() == pytest.approx(3.5)
    assert reduce_loss(values, "none") is values
    assert reduce_loss(values).item() == pytest.approx(3.5 / 3)


@settings(max_examples=examples(20, 300))
@given(data=_pairs(), weight=st.floats(0.0, 5.0), reduction=st.sampled_from(["mean", "sum"]))
def test_hlf_matches_torch_cosine(data, weight, reduction):
    x, y, w, _ = data
    tx, ty = torch.from_numpy(x), torch.from_numpy(y)
    torch_pooled = F.cosine_similarity(tx[:, 0], ty[:, 0], dim=-1, eps=1e-300).numpy()
    pooled = np_cosine(x[:, 0], y[:, 0], 1e-8)
    np.testing.assert_allclose(high_level_fidelity(tx[:, 0], ty[:, 0]).numpy(), pooled, atol=1e-9)
    ok = (np.linalg.norm(x[:, 0], axis=-1) > 1e-8) & (np.linalg.norm(y[:, 0], axis=-1) > 1e-8)
    np.testing.assert_allclose(pooled[ok], torch_pooled[ok], atol=1e-9)
    tokens = np_cosine(x, y, 1e-8).mean(-1)
    np.testing.assert_allclose(high_level_fidelity(tx, ty).numpy(), tokens, atol=1e-9)
    weighted = (np_cosine(x, y, 1e-8) * w).sum(-1) / w.sum(-1)
    got = high_level_fidelity(tx, ty, weight=torch.from_numpy(w))
    np.testing.assert_allclose(got.numpy(), weighted, atol=1e-9)
    loss = hlf_loss(tx, ty, weight=weight, reduction=reduction)
    per_image = 1.0 - tokens
    expected = weight * (per_image.mean() if reduction == "mean" else per_image.sum())
    assert loss.item() == pytest.approx(expected, abs=1e-9)
    none = hlf_loss(tx[:, 0], ty[:, 0], weight=weight, reduction="none")
    np.testing.assert_allclose(none.numpy(), weight * (1.0 - pooled), atol=1e-9)


def test_hlf_eps_bounds_each_norm():
    x = torch.tensor([[1e-3, 0.0]], dtype=torch.float64)
    y = torch.tensor([[2.0, 0.0]], dtype=torch.float64)
    # |x| = 1e-3 < eps = 0.1: cos = 2e-3 / (0.1 * 2)
    assert high_level_fidelity(x, y, eps=0.1).item() == pytest.approx(0.01)
    assert hlf_loss(x, y, eps=0.1).item() == pytest.approx(0.99)
    assert hlf_loss(x, y).item() == pytest.approx(0.0, abs=1e-12)


# ------------------------------------------------------------------- functional RQI


def _g(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (2.0 * a - b**2).flatten(1).sum(1) + (a * b).flatten(1).mean(1)


@settings(max_examples=examples(20, 300))
@given(
    arrays=st.integers(1, 4).flatmap(
        lambda n: st.tuples(
            hnp.arrays(np.float64, (n, 5), elements=st.floats(-3, 3, width=64)),
            hnp.arrays(np.float64, (n, 5), elements=st.floats(-3, 3, width=64)),
        )
    )
)
def test_antisymmetrize_is_the_halved_difference(arrays):
    a, b = (torch.from_numpy(v) for v in arrays)
    got = antisymmetrize(_g, a, b)
    g_ab = (2 * arrays[0] - arrays[1] ** 2).sum(1) + (arrays[0] * arrays[1]).mean(1)
    g_ba = (2 * arrays[1] - arrays[0] ** 2).sum(1) + (arrays[0] * arrays[1]).mean(1)
    np.testing.assert_allclose(got.numpy(), (g_ab - g_ba) / 2, atol=1e-12)
    assert torch.equal(got, -antisymmetrize(_g, b, a))
    assert torch.equal(antisymmetrize(_g, a, a), torch.zeros(len(a), dtype=a.dtype))


def test_rqi_score_embeds_the_reference_without_autograd():
    torch.manual_seed(0)
    projection = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    grad_modes = []

    def features(x):
        grad_modes.append(torch.is_grad_enabled())
        return x @ projection

    weights = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)

    def compare(fa, fb):
        return (fa * weights).sum(1) - (fb**2).sum(1)

    a = torch.randn(2, 4, dtype=torch.float64, requires_grad=True)
    ref = torch.randn(2, 4, dtype=torch.float64, requires_grad=True)
    fa, fr = (a @ projection).detach(), (ref @ projection).detach()
    raw = (fa * weights).sum(1) - (fr**2).sum(1)
    flipped = (fr * weights).sum(1) - (fa**2).sum(1)

    score = rqi_score(features, compare, a, ref)
    assert grad_modes == [True, False]  # a first with autograd, the reference without
    torch.testing.assert_close(score.detach(), (raw - flipped) / 2)
    score.sum().backward()
    assert a.grad is not None and a.grad.abs().sum() > 0 and ref.grad is None
    plain = rqi_score(features, compare, a, ref, antisymmetric=False)
    torch.testing.assert_close(plain.detach(), raw)


def test_rqi_loss_and_huber_match_references():
    score = torch.tensor([0.5, -1.0, 2.0])
    assert rqi_loss(score).item() == pytest.approx(-1.5 / 3)
    assert rqi_loss(score, weight=0.1, reduction="sum").item() == pytest.approx(-0.15)
    torch.testing.assert_close(rqi_loss(score, weight=2.0, reduction="none"), -2.0 * score)
    pred = torch.tensor([0.0, 0.3, -2.0, 5.0, 1.0])
    target = torch.tensor([0.1, -0.5, 1.0, 5.0, 1.05])
    for delta in (0.05, 0.5, 1.0, 4.0):
        for reduction in ("mean", "sum", "none"):
            torch.testing.assert_close(
                huber(pred, target, delta=delta, reduction=reduction),
                F.huber_loss(pred, target, delta=delta, reduction=reduction),
            )
    assert huber(pred, target).item() == pytest.approx(F.huber_loss(pred, target, delta=1.0).item())


# ------------------------------------------------------------------------ the sampler


@settings(max_examples=examples(30, 400))
@given(
    scores=hnp.arrays(
        np.float64,
        st.tuples(st.integers(1, 4), st.integers(1, 6)),
        elements=st.one_of(st.floats(-50, 100, width=64), st.just(np.nan)),
    ),
    temperature=st.sampled_from([0.1, 1.0, 10.0, 37.5]),
    higher=st.booleans(),
    masked=st.booleans(),
)
def test_candidate_probabilities_match_scipy(scores, temperature, higher, masked):
    mask = np.arange(scores.shape[1])[None, :] % 3 != 1 if masked else np.ones_like(scores, bool)
    mask = np.broadcast_to(mask, scores.shape).copy()
    eligible = ~np.isnan(scores) & mask
    if not eligible.any(axis=1).all():
        return  # refused with ArgumentError (tested in test_sampler)
    signed = scores if higher else -scores
    kwargs = dict(temperature=temperature, higher_is_better=higher)
    if masked:
        kwargs["candidates"] = torch.from_numpy(mask)
    for mode in ("softmax", "argmax", "uniform"):
        got = candidate_probabilities(torch.from_numpy(scores), mode=mode, **kwargs).numpy()
        expected = np.zeros_like(scores)
        for i, row in enumerate(signed):
            idx = np.flatnonzero(eligible[i])
            if mode == "softmax":
                expected[i, idx] = scipy_special.softmax(row[idx] / temperature)
            elif mode == "uniform":
                expected[i, idx] = 1.0 / len(idx)
            else:
                expected[i, idx[np.argmax(row[idx])]] = 1.0  # np.argmax: first maximum
        np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-12)


def test_sampler_draws_follow_the_probabilities():
    scores = torch.tensor([[0.0, 10.0, 20.0], [5.0, float("nan"), 5.0]])
    sampler = IQAWeightedSampler(scores, temperature=10.0, num_samples=6000, seed=3)
    items, chosen = sampler.epoch_draw(0)
    assert len(sampler) == 6000 and items.shape == chosen.shape == (6000,)
    assert torch.bincount(items, minlength=2).tolist() == [3000, 3000]
    counts = np.zeros((2, 3))
    np.add.at(counts, (items.numpy(), chosen.numpy()), 1)
    expected = scipy_special.softmax(np.array([0.0, 1.0, 2.0]))
    np.testing.assert_allclose(counts[0] / 3000, expected, atol=0.03)
    np.testing.assert_allclose(counts[1] / 3000, [0.5, 0.0, 0.5], atol=0.03)
    argmax = IQAWeightedSampler(scores, mode="argmax", shuffle=False, num_samples=4)
    assert [pair for pair in argmax] == [(0, 2), (1, 0), (0, 2), (1, 0)]


def test_sampler_shards_and_pads_like_distributed_sampler():
    scores = torch.arange(10.0).reshape(5, 2)
    ranks = [
        list(IQAWeightedSampler(scores, num_replicas=3, rank=r, shuffle=False, seed=1))
        for r in range(3)
    ]
    assert [len(r) for r in ranks] == [2, 2, 2]
    # padded by wrapping around: items 0..4 then 0; rank r takes every third from r
    assert [[item for item, _ in r] for r in ranks] == [[0, 3], [1, 4], [2, 0]]
    dropped = IQAWeightedSampler(scores, num_replicas=3, rank=2, drop_last=True, shuffle=False)
    assert len(dropped) == 1 and [i for i, _ in dropped] == [2]
    later = IQAWeightedSampler(scores, seed=4)
    first = later.epoch_draw(0)
    later.set_epoch(1)
    assert not torch.equal(later.epoch_draw()[0], first[0]) or not torch.equal(
        later.epoch_draw()[1], first[1]
    )
    fresh = IQAWeightedSampler(scores, seed=4).epoch_draw(1)  # a pure function of (seed, epoch)
    assert all(torch.equal(f, s) for f, s in zip(fresh, later.epoch_draw(), strict=True))


# ----------------------------------------------------------------------- RQI crops


def test_crop_offsets_cover_every_position_in_bounds():
    generator = torch.Generator().manual_seed(0)
    offsets = crop_offsets(7, 12, 5, 4000, generator)
    assert offsets.shape == (4000, 2) and offsets.dtype == torch.int64
    assert set(offsets[:, 0].tolist()) == {0, 1, 2}  # tops: rows 0 .. 7 - 5
    assert set(offsets[:, 1].tolist()) == set(range(8))  # lefts: 0 .. 12 - 5
    assert torch.equal(crop_offsets(5, 5, 5, 3, None), torch.zeros(3, 2, dtype=torch.long))
    seeded = crop_offsets(30, 30, 4, 6, torch.Generator().manual_seed(1))
    assert torch.equal(seeded, crop_offsets(30, 30, 4, 6, torch.Generator().manual_seed(1)))
    assert torch.equal(crop_offsets(30, 30, 4, 6, None), crop_offsets(30, 30, 4, 6, None))


def test_crop_at_cuts_the_listed_windows_in_order():
    x = torch.arange(2 * 1 * 6 * 7, dtype=torch.float32).reshape(2, 1, 6, 7)
    one = crop_at(x, torch.tensor([[1, 2], [3, 0]]), 3)
    assert torch.equal(one[0], x[0, :, 1:4, 2:5]) and torch.equal(one[1], x[1, :, 3:6, 0:3])
    many = crop_at(x, torch.tensor([[[0, 0], [2, 4]], [[1, 1], [3, 3]]]), 3)
    expected = [x[0, :, 0:3, 0:3], x[0, :, 2:5, 4:7], x[1, :, 1:4, 1:4], x[1, :, 3:6, 3:6]]
    assert many.shape == (4, 1, 3, 3)
    assert all(torch.equal(many[i], e) for i, e in enumerate(expected))


def test_fit_to_crop_upsamples_the_short_side_bilinearly():
    x = torch.rand(2, 3, 8, 12, dtype=torch.float64)
    assert fit_to_crop(x, 8) is x and fit_to_crop(x, 5) is x
    up = fit_to_crop(x, 16)  # factor 2 exactly
    assert up.shape == (2, 3, 16, 24)
    torch.testing.assert_close(up, resize(x, (16, 24), antialias=False))
    odd = fit_to_crop(x, 11)  # 12 * 11 / 8 = 16.5 rounds to 16 (banker's) or 17
    assert odd.shape[-2] == 11 and odd.shape[-1] in (16, 17)
    torch.testing.assert_close(odd, resize(x, tuple(odd.shape[-2:]), antialias=False))
    tall = fit_to_crop(torch.rand(1, 3, 20, 4), 8)
    assert tall.shape == (1, 3, 40, 8)


def test_aligned_crop_modes():
    g = torch.Generator().manual_seed(0)
    a, b = torch.rand(3, 3, 20, 26, generator=g), torch.rand(3, 3, 20, 26, generator=g)
    ca, cb = aligned_crop(a, b, 8, mode="center")
    assert torch.equal(ca, a[..., 6:14, 9:17]) and torch.equal(cb, b[..., 6:14, 9:17])
    ra, rb = aligned_crop(a, b, 8, mode="squash")
    torch.testing.assert_close(ra, resize(a, (8, 8), antialias=True), atol=1e-6, rtol=0)
    torch.testing.assert_close(rb, resize(b, (8, 8), antialias=True), atol=1e-6, rtol=0)
    xa, xb = aligned_crop(a, b, 8, generator=torch.Generator().manual_seed(3))
    positions = set()
    for i in range(3):
        where = find_window(a[i], xa[i], atol=0)
        assert where is not None and where == find_window(b[i], xb[i], atol=0)
        positions.add(where)
    assert len(positions) > 1  # one position per image
    same = aligned_crop(a[..., :8, :8], b[..., :8, :8], 8)
    assert same[0] is not None and torch.equal(same[0], a[..., :8, :8])
    small_a, small_b = aligned_crop(a[..., :4, :6], b[..., :4, :6], 8, mode="center")
    up = resize(a[..., :4, :6].double(), (8, 12), antialias=False).float()
    assert small_a.shape == (3, 3, 8, 8)
    torch.testing.assert_close(small_a, up[..., :, 2:10], atol=1e-6, rtol=0)


# ------------------------------------------------------------------ LoRA targets


class _MLP(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim)


class _Attention(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)


class _Block(nn.Module):
    def __init__(self, dim: int = 8, norm: bool = True) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim) if norm else nn.Identity()
        self.attn = _Attention(dim)
        # two direct linears that expand and project back, plus a nested third: not an MLP
        self.gate = nn.Sequential(nn.Linear(dim, 2 * dim), nn.Linear(2 * dim, dim))
        self.gate.add_module("extra", nn.Sequential(nn.Linear(dim, dim)))
        self.mlp = _MLP(dim, 4 * dim)
        self.square = nn.Sequential(nn.Linear(dim, dim), nn.Linear(dim, dim))  # same width


class _Dense(nn.Module):
    def __init__(self, widths=(8, 12, 16), out: int = 8) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(widths[0], 4, 3)
        self.conv2 = nn.Conv2d(widths[1], 4, 3)
        self.conv3 = nn.Conv2d(widths[2], out, 3)


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Conv2d(3, 8, 3)
        self.dense = _Dense()  # before the blocks: 'auto' must keep the module order
        self.blocks = nn.Sequential(_Block(), _Block(norm=False))
        self.flat = _Dense(widths=(8, 8, 8))
        self.wrong_out = _Dense(out=6)
        self.dip = _Dense(widths=(8, 6, 10))  # not growing at the second conv
        self.two = nn.Sequential(nn.Conv2d(8, 8, 3), nn.Conv2d(16, 8, 3))
        self.nested = nn.Sequential(nn.LayerNorm(8), nn.Sequential(_MLP(8, 16), nn.Linear(8, 8)))


def test_presets_select_by_structure():
    # The structural rules of the zoo presets (tests/test_lora_zoo.py checks them on every
    # spandrel architecture): 'auto' takes the first family that finds layers, transformer
    # MLPs first; dense blocks need >= 3 convs with growing input channels.
    net = _Net()
    dense = ["dense.conv1", "dense.conv2", "dense.conv3"]
    mlp = find_lora_targets(net, "swinir-mlp")
    assert {"blocks.0.mlp.fc1", "blocks.0.mlp.fc2"} <= set(mlp)
    assert not any("attn" in name or name.startswith("dense") for name in mlp)
    assert find_lora_targets(net, "rrdb-convs") == dense  # not 'wrong_out', 'dip' or 'two'
    assert find_lora_targets(net, "auto") == mlp
    assert find_lora_targets(net) == mlp  # the default is 'auto'
    # a dense block as the whole network: its last conv is the network's output layer, never adapted
    assert find_lora_targets(_Dense(), "rrdb-convs") == ["conv1", "conv2"]
    assert find_lora_targets(net, r"head|dense\.conv[12]") == ["head", "dense.conv1", "dense.conv2"]
    with pytest.raises(ArgumentError, match="matches no"):
        find_lora_targets(net, r"dense\.conv")  # fullmatch, not search
    with pytest.raises(UnknownNameError):
        find_lora_targets(net, "swinir_mlp")
    with pytest.raises(UnknownNameError):
        find_lora_targets(net, "Xdense")  # no regex character: a misspelt preset
    plain = nn.Sequential(nn.Conv2d(3, 3, 1), nn.Linear(3, 3))
    messages = {
        "swinir-mlp": "found no transformer MLP",
        "rrdb-convs": "found no residual dense block",
        "auto": "found neither transformer MLPs nor residual conv blocks nor repeated body blocks",
    }
    for preset, message in messages.items():
        with pytest.raises(ArgumentError, match=preset) as info:
            find_lora_targets(plain, preset)
        assert message in str(info.value)


def test_regex_is_matched_in_full_and_ranks_follow_the_preset():
    net = _Net()
    assert find_lora_targets(net, r"blocks\.0\.mlp\.fc.") == [
        "blocks.0.mlp.fc1",
        "blocks.0.mlp.fc2",
    ]
    assert find_lora_targets(net, ["two.1", "head"]) == ["head", "two.1"]
    assert find_lora_targets(net, lambda name, m: isinstance(m, nn.Linear) and "qkv" in name) == [
        "blocks.0.attn.qkv",
        "blocks.1.attn.qkv",
    ]
    dense = inject_lora(nn.Sequential(_Dense()), "rrdb-convs")
    assert dense[0].conv1.lora_A["default"].weight.shape[0] == 24
    mlp = inject_lora(nn.Sequential(_Block()), "auto")
    assert mlp[0].mlp.fc1.lora_A["default"].weight.shape[0] == 48
    both = inject_lora(nn.Sequential(_Block(), _Dense()), "auto")
    assert both[0].mlp.fc1.lora_A["default"].weight.shape[0] == 48  # transformer MLPs first
    assert not hasattr(both[1].conv1, "lora_A")  # 'auto' takes one family
    custom = inject_lora(nn.Sequential(_Dense()), r"0\.conv1")
    assert custom[0].conv1.lora_A["default"].weight.shape[0] == 16


# ------------------------------------------------------- dtypes, clamps and boundaries


def test_fused_references_accumulate_in_float32_and_keep_input_dtypes():
    torch.manual_seed(0)
    x = (torch.randn(2, 5, 64) * 40).half()  # squared norms overflow float16
    y = torch.randn(2, 5, 64)
    for a, b in ((x, y), (y.half(), x.float()), (x, y.bfloat16())):
        out, stats = cosine_forward_reference(a, b, None, 1e-8, REDUCE_NONE, 1.0)
        assert out.dtype == stats.dtype == torch.float32
        expected = np_cosine(a.double().numpy(), b.double().numpy(), 1e-8)
        np.testing.assert_allclose(out.numpy(), expected, atol=1e-5)
        assert torch.isfinite(stats).all()
        grad = torch.ones_like(out)
        dx, dy = cosine_backward_reference(
            grad, a, b, None, stats, 1e-8, REDUCE_NONE, 1.0, True, True
        )
        assert dx.dtype == a.dtype and dy.dtype == b.dtype
        g = np.ones(out.shape)
        np.testing.assert_allclose(
            dx.double().numpy(), np_cosine_grad(a.double().numpy(), b.double().numpy(), 1e-8, g),
            rtol=1e-2, atol=1e-4,
        )  # fmt: skip
    # float64 on either side computes (and returns) float64
    for a, b in ((y.double(), y), (y, y.double())):
        out, stats = cosine_forward_reference(a, b, None, 1e-8, REDUCE_SUM, 0.5)
        assert out.dtype == stats.dtype == torch.float64


def test_rounding_never_leaves_the_unit_interval():
    torch.manual_seed(1)
    x = torch.randn(1, 4000, 37)
    for sign in (1.0, -1.0):
        out, stats = cosine_forward_reference(x, sign * x, None, 1e-8, REDUCE_NONE, 1.0)
        raw = stats[0]
        assert (raw.abs() > 1).any()  # rounding overshoots somewhere in float32 ...
        assert (out.abs() <= 1).all()  # ... and the value is clamped
        assert torch.equal(out[raw.abs() > 1], torch.full_like(out[raw.abs() > 1], sign))
        public = cosine_similarity_reference(x, sign * x)
        assert (public.abs() <= 1).all()


def test_norm_exactly_eps_uses_the_outer_branch():
    x = torch.tensor([[[3.0, 4.0]]], dtype=torch.float64)  # norm 5 == eps
    y = torch.tensor([[[1.0, 2.0]]], dtype=torch.float64)
    out, stats = cosine_forward_reference(x, y, None, 5.0, REDUCE_NONE, 1.0)
    grad = torch.ones_like(out)
    dx, dy = cosine_backward_reference(grad, x, y, None, stats, 5.0, REDUCE_NONE, 1.0, True, True)
    np.testing.assert_allclose(
        dx.numpy(), np_cosine_grad(x.numpy(), y.numpy(), 5.0, np.ones((1, 1)))
    )
    dy2, dx2 = cosine_backward_reference(
        grad, y, x, None, stats[[0, 2, 1]], 5.0, REDUCE_NONE, 1.0, True, True
    )
    np.testing.assert_allclose(dx2.numpy(), dx.numpy())
    assert torch.equal(dy2, dy)


def test_functional_options_reach_the_kernel():
    x = torch.tensor([[[1e-3, 0.0], [1.0, 1.0]]], dtype=torch.float64)
    y = torch.tensor([[[2.0, 0.0], [1.0, 0.0]]], dtype=torch.float64)
    # eps on token embeddings: (0.01 + 0.7071) / 2
    expected = (1e-3 * 2.0 / (0.1 * 2.0) + 1.0 / np.sqrt(2.0)) / 2
    assert high_level_fidelity(x, y, eps=0.1).item() == pytest.approx(expected)
    from percepfid.kernels import KernelUnavailableError

    for a, b in ((x, y), (x[:, 0], y[:, 0])):
        with pytest.raises(KernelUnavailableError):
            high_level_fidelity(a, b, backend="triton")  # float64 has no fused kernel
        with pytest.raises(KernelUnavailableError):
            hlf_loss(a, b, backend="triton")


def test_functional_errors_name_the_argument():
    with pytest.raises(ArgumentError, match=r"^delta must be a finite number"):
        huber(torch.zeros(2), torch.zeros(2), delta=0.0)
    with pytest.raises(ShapeError, match=r"^prediction and target must have the same shape"):
        huber(torch.zeros(2), torch.zeros(3))
    with pytest.raises(DTypeError, match=r"^score must be a torch.Tensor"):
        rqi_loss([1.0, 2.0])


# ---------------------------------------------------------- sampler defaults and inputs


def test_sampler_defaults():
    scores = torch.tensor([[60.0, 70.0, 50.0], [50.0, 40.0, 45.0]])
    expected = scipy_special.softmax(scores.double().numpy() / 10.0, axis=1)
    np.testing.assert_allclose(candidate_probabilities(scores).numpy(), expected, rtol=1e-12)
    sampler = IQAWeightedSampler(scores)
    np.testing.assert_allclose(sampler.probabilities.numpy(), expected, rtol=1e-12)
    assert sampler.temperature == 10.0 and sampler.mode == "softmax" and sampler.epoch == 0
    assert sampler.seed == 0 and sampler.shuffle is True
    explicit = IQAWeightedSampler(scores, seed=0)
    assert all(
        torch.equal(a, b)
        for a, b in zip(sampler.epoch_draw(0), explicit.epoch_draw(0), strict=True)
    )
    assert list(sampler) == list(zip(*(t.tolist() for t in explicit.epoch_draw(0)), strict=True))
    # shuffled by default: 40 items are not visited in order
    many = IQAWeightedSampler(torch.rand(40, 2))
    assert many.epoch_draw(0)[0].tolist() != list(range(40))
    assert sorted(many.epoch_draw(0)[0].tolist()) == list(range(40))
    # a rank or a world size alone: the other comes from the (absent) process group
    assert IQAWeightedSampler(scores, rank=0).num_replicas == 1
    assert IQAWeightedSampler(scores, num_replicas=2).rank == 0
    # integer scores are scores
    ints = IQAWeightedSampler(torch.tensor([[1, 3]], dtype=torch.int64), temperature=1.0)
    np.testing.assert_allclose(ints.probabilities.numpy(), [scipy_special.softmax([1.0, 3.0])])


@pytest.mark.parametrize(
    ("kwargs", "error", "pattern"),
    [
        (dict(scores=[1.0, 2.0]), ShapeError, r"^scores must have shape \(items, candidates\)"),
        (dict(scores=torch.zeros(0, 3)), EmptyBatchError, r"^scores must have at least one"),
        (dict(scores=torch.zeros(3, 0)), EmptyBatchError, r"^scores must have at least one"),
        (dict(scores=torch.zeros(2, 2, dtype=torch.bool)), DTypeError, r"^scores must hold"),
        (dict(scores=[["a", "b"]]), DTypeError, r"^scores must be a 2-D"),
        (dict(candidates=[[1, 0]]), DTypeError, r"^candidates must be a boolean mask"),
        (dict(candidates=[True, False]), ShapeError, r"^candidates must have shape"),
        (dict(mode="best"), ArgumentError, r"^mode must be one of"),
        (dict(temperature=0.0), ArgumentError, r"^temperature must be a finite number"),
        (dict(num_samples=0), ArgumentError, r"^num_samples must be a positive int"),
        (dict(seed=1.5), DTypeError, r"^seed must be an int"),
        (dict(seed=True), DTypeError, r"^seed must be an int"),
        (dict(num_replicas=1.5, rank=0), DTypeError, r"^num_replicas must be an int"),
        (dict(num_replicas=2, rank="1"), DTypeError, r"^rank must be an int"),
        (dict(num_replicas=True, rank=0), DTypeError, r"^num_replicas must be an int"),
    ],
)
def test_sampler_inputs_are_refused_by_name(kwargs, error, pattern):
    arguments = {"scores": torch.tensor([[1.0, 2.0]]), **kwargs}
    with pytest.raises(error, match=pattern):
        IQAWeightedSampler(**arguments)


def test_set_epoch_accepts_only_non_negative_ints():
    sampler = IQAWeightedSampler(torch.tensor([[1.0, 2.0]]))
    sampler.set_epoch(3)
    assert sampler.epoch == 3
    for bad in (-1, 1.5, True, "2"):
        with pytest.raises((ArgumentError, DTypeError), match=r"^epoch must be an int"):
            sampler.set_epoch(bad)


def test_crops_follow_the_callers_generator_and_refuse_bad_sizes():
    g = torch.Generator().manual_seed(0)
    a, b = torch.rand(2, 3, 12, 15, generator=g), torch.rand(2, 3, 12, 15, generator=g)
    xa, xb = aligned_crop(a, b, 5, generator=torch.Generator().manual_seed(9))
    offsets = crop_offsets(12, 15, 5, 2, torch.Generator().manual_seed(9))
    assert torch.equal(xa, crop_at(a, offsets, 5)) and torch.equal(xb, crop_at(b, offsets, 5))
    default = crop_offsets(12, 15, 5, 6, None)  # None: a fresh generator seeded with 0
    assert torch.equal(default, crop_offsets(12, 15, 5, 6, torch.Generator().manual_seed(0)))
    da, _ = aligned_crop(a, b, 5)
    assert torch.equal(da, crop_at(a, crop_offsets(12, 15, 5, 2, None), 5))
    for height, width in ((4, 10), (10, 4)):
        with pytest.raises(ArgumentError, match="does not fit"):
            crop_offsets(height, width, 5, 1, None)
    with pytest.raises(ArgumentError, match=r"^crop size must be a positive int"):
        crop_offsets(10, 10, 0, 1, None)
    with pytest.raises(ArgumentError, match=r"^crop must be one of 'random', 'center', 'squash'"):
        aligned_crop(a, b, 5, mode="zoom")


def test_sampler_reads_the_process_group_and_the_score_direction(monkeypatch):
    import torch.distributed as dist

    scores = torch.tensor([[1.0, 2.0], [3.0, 0.0]])
    monkeypatch.setattr(dist, "is_available", lambda: True)
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "get_world_size", lambda: 4)
    monkeypatch.setattr(dist, "get_rank", lambda: 3)
    sampler = IQAWeightedSampler(scores)
    assert (sampler.num_replicas, sampler.rank) == (4, 3)
    lower = IQAWeightedSampler(scores, temperature=1.0, higher_is_better=False)
    expected = scipy_special.softmax(-scores.double().numpy(), axis=1)
    np.testing.assert_allclose(lower.probabilities.numpy(), expected, rtol=1e-12)
