"""Tests of percepfid.testing: every check passes on a known-good metric and fails on a
constructed bad one; distortions match independent references and grow with their level;
strategies produce the documented shapes, dtypes and ranges."""

from __future__ import annotations

import doctest
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import scipy.ndimage
import scipy.stats
import torch
import torch.nn.functional as F
from hypothesis import find, given, settings
from hypothesis import strategies as st

import percepfid.testing
from percepfid import ArgumentError, DTypeError, ShapeError, UnknownNameError
from percepfid.testing import (
    DISTORTION_KINDS,
    Distortion,
    check_antisymmetric,
    check_batch_invariance,
    check_dtype_consistency,
    check_gradients,
    check_identity,
    check_monotone,
    check_range,
    check_symmetric,
    distort,
    down_up_sample,
    gaussian_blur,
    gaussian_noise,
    quantize,
    spearman,
)
from percepfid.testing import checks as checks_module
from percepfid.testing import distortions as distortions_module
from percepfid.testing import strategies as strategies_module
from percepfid.testing.strategies import (
    FLOAT_DTYPES,
    RELATIONS,
    DistortedPair,
    distorted,
    distortions,
    image_pairs,
    images,
)

FAST = settings(max_examples=20, deadline=None)


def _rand(*shape: int, seed: int = 0, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


@pytest.fixture
def pair() -> tuple[torch.Tensor, torch.Tensor]:
    return _rand(3, 3, 12, 10, seed=1), _rand(3, 3, 12, 10, seed=2)


# ----------------------------------------------------------------------------------------
# known-good metrics


def mse(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a - b).pow(2).flatten(1).mean(1)


def mse_to_target(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """A loss whose reference is a fixed target: no gradient into b."""
    return (a - b.detach()).pow(2).flatten(1).mean(1)


def cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return F.cosine_similarity(a.flatten(1), b.flatten(1), dim=1)


def brightness_gap(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return a.flatten(1).mean(1) - b.flatten(1).mean(1)


def sse(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a - b).pow(2).flatten(1).sum(1)


# ----------------------------------------------------------------------------------------
# constructed bad metrics


def one_sided(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Penalises only a > b: asymmetric."""
    return (a - b).clamp(min=0).pow(2).flatten(1).mean(1)


def batch_centred_mse(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Subtracts the batch mean: each value depends on the other images."""
    return mse(a - a.mean(), b - b.mean())


def sorted_mse(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Returns the values sorted: correct alone, wrong order in a batch."""
    return mse(a, b).sort().values


def sse_expanded(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """|a|^2 + |b|^2 - 2 a.b through a matmul: cancels catastrophically in bf16."""
    fa, fb = a.flatten(1), b.flatten(1)
    return (fa * fa).sum(1) + (fb * fb).sum(1) - 2 * (fa @ fb.T).diagonal()


# ----------------------------------------------------------------------------------------
# check_identity


def test_identity_passes_for_distance_and_similarity(pair):
    a, _ = pair
    check_identity(mse, a, 0.0, atol=0.0)
    check_identity(cosine, a, 1.0, atol=1e-6)
    check_identity(mse, a, torch.zeros(3))


def test_identity_fails_with_offset_and_reports_items(pair):
    a, _ = pair
    with pytest.raises(AssertionError, match=r"check_identity failed.*item\(s\) \[0, 1, 2\]"):
        check_identity(lambda x, y: mse(x, y) + 1e-3, a, 0.0)


def test_identity_fails_for_cosine_of_all_zero_images():
    zeros = torch.zeros(2, 3, 4, 4)
    with pytest.raises(AssertionError, match="metric\\(x, x\\)"):
        check_identity(cosine, zeros, 1.0)


def test_identity_fails_on_nan():
    with pytest.raises(AssertionError):
        check_identity(lambda x, y: mse(x, y) * torch.nan, torch.rand(2, 3, 4, 4), 0.0)


def test_identity_receives_a_copy_not_the_same_object(pair):
    a, _ = pair
    with pytest.raises(AssertionError):
        check_identity(lambda x, y: torch.zeros(len(x)) if x is y else torch.ones(len(x)), a, 0.0)


def test_identity_rejects_bad_metric_output_shape(pair):
    a, _ = pair
    with pytest.raises(AssertionError, match=r"shape \(3,\)"):
        check_identity(lambda x, y: mse(x, y)[:, None], a, 0.0)
    with pytest.raises(AssertionError, match="must return a tensor"):
        check_identity(lambda x, y: "zero", a, 0.0)


def test_identity_accepts_scalar_output(pair):
    a, _ = pair
    check_identity(lambda x, y: mse(x, y).mean(), a, 0.0)
    check_identity(lambda x, y: 0.0, a, 0.0)


# ----------------------------------------------------------------------------------------
# check_symmetric / check_antisymmetric / check_range


def test_symmetric_passes_for_mse_and_cosine(pair):
    check_symmetric(mse, *pair)
    check_symmetric(cosine, *pair)


def test_symmetric_fails_for_one_sided_distance(pair):
    with pytest.raises(AssertionError, match=r"metric\(a, b\) == metric\(b, a\)"):
        check_symmetric(one_sided, *pair)


def test_antisymmetric_passes_exactly_for_brightness_gap(pair):
    check_antisymmetric(brightness_gap, *pair, exact=True)


def test_antisymmetric_fails_for_a_distance(pair):
    with pytest.raises(AssertionError, match="-metric"):
        check_antisymmetric(mse, *pair)


def test_antisymmetric_exact_is_stricter_than_tolerance(pair):
    def nearly(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return brightness_gap(a, b) + 1e-7 * a.flatten(1).mean(1)

    check_antisymmetric(nearly, *pair)
    with pytest.raises(AssertionError, match="exact"):
        check_antisymmetric(nearly, *pair, exact=True)


def test_range_passes_and_fails(pair):
    check_range(cosine, *pair, -1.0, 1.0)
    check_range(mse, *pair, low=0.0)
    with pytest.raises(AssertionError, match=r"in \[0, 0.01\]"):
        check_range(mse, *pair, 0.0, 0.01)
    with pytest.raises(AssertionError, match="finite"):
        check_range(lambda a, b: mse(a, b) / 0.0, *pair)
    with pytest.raises(ArgumentError):
        check_range(mse, *pair, 1.0, 0.0)


def test_misuse_raises_typed_errors(pair):
    a, b = pair
    with pytest.raises(DTypeError, match="callable"):
        check_symmetric("mse", a, b)
    with pytest.raises(ShapeError, match="same shape"):
        check_symmetric(mse, a, b[:2])
    with pytest.raises(DTypeError):
        check_symmetric(mse, (a * 255).to(torch.uint8), b)


# ----------------------------------------------------------------------------------------
# check_gradients


def test_gradients_pass_for_a_loss_with_a_fixed_target(pair):
    check_gradients(mse_to_target, *pair)


def test_gradients_fail_when_they_leak_into_the_reference(pair):
    with pytest.raises(AssertionError, match="reaches the reference b"):
        check_gradients(mse, *pair)
    # a metric meant to be differentiable in both arguments passes with first_only=False
    check_gradients(mse, *pair, first_only=False)
    with pytest.raises(AssertionError, match="not connected to b"):
        check_gradients(mse_to_target, *pair, first_only=False)


def test_gradients_fail_for_detached_output(pair):
    with pytest.raises(AssertionError, match="does not require grad"):
        check_gradients(lambda a, b: mse(a, b).detach(), *pair)


def test_gradients_fail_when_zero_for_some_image(pair):
    a, b = pair

    def ignores_last(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        values = mse_to_target(x, y)
        return torch.cat([values[:-1], values[-1:].detach()])

    with pytest.raises(AssertionError, match=r"zero everywhere in image\(s\) \[2\]"):
        check_gradients(ignores_last, a, b)
    with pytest.raises(AssertionError, match="zero everywhere"):
        check_gradients(lambda x, y: mse_to_target(torch.round(x), y), a, b)


def test_gradients_fail_when_not_finite(pair):
    a, _ = pair
    # sqrt of a zero distance: finite value, NaN gradient (inf * 0)
    with pytest.raises(AssertionError, match="NaN or inf"):
        check_gradients(lambda x, y: mse_to_target(x, y).sqrt(), a, a.clone())
    with pytest.raises(AssertionError, match="not finite"):
        check_gradients(lambda x, y: mse_to_target(x, y).log() * 0 + torch.inf, *pair)


def test_gradients_leave_inputs_and_parameters_alone(pair):
    a, b = pair
    scale = torch.nn.Linear(1, 1)

    def module_metric(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return scale(mse_to_target(x, y)[:, None]).squeeze(1)

    check_gradients(module_metric, a, b)
    assert scale.weight.grad is None
    assert a.grad is None and not a.requires_grad and not b.requires_grad


# ----------------------------------------------------------------------------------------
# check_batch_invariance


def test_batch_invariance_passes_for_per_image_metrics(pair):
    check_batch_invariance(mse, *pair)
    check_batch_invariance(cosine, *pair)


def test_batch_invariance_fails_for_batch_statistics(pair):
    a, b = pair
    brightness = torch.tensor([0.2, 0.6, 1.0]).view(3, 1, 1, 1)
    with pytest.raises(AssertionError, match="each item alone"):
        check_batch_invariance(batch_centred_mse, a * brightness, b)


def test_batch_invariance_fails_for_position_dependence():
    # values ascending in batch order: each item alone is right, only the shuffle catches it
    a = _rand(4, 3, 8, 8, seed=3)
    b = a + torch.tensor([0.01, 0.02, 0.03, 0.04]).view(4, 1, 1, 1)
    check_batch_invariance(mse, a, b)
    with pytest.raises(AssertionError, match="shuffled batch"):
        check_batch_invariance(sorted_mse, a, b)
    with pytest.raises(AssertionError):
        check_batch_invariance(lambda x, y: mse(x, y) * torch.arange(1, len(x) + 1), a, b)


def test_batch_invariance_needs_per_item_values_and_two_items(pair):
    a, b = pair
    with pytest.raises(AssertionError, match="scalar"):
        check_batch_invariance(lambda x, y: mse(x, y).mean(), a, b)
    with pytest.raises(ArgumentError, match="at least 2"):
        check_batch_invariance(mse, a[:1], b[:1])


# ----------------------------------------------------------------------------------------
# check_dtype_consistency


def test_dtype_consistency_passes_for_elementwise_distance(pair):
    check_dtype_consistency(sse, *pair, tolerance=1e-2)
    check_dtype_consistency(cosine, *pair)
    check_dtype_consistency(mse, *pair, cast_inputs=True)


def test_dtype_consistency_passes_for_a_small_convnet(pair):
    torch.manual_seed(0)
    features = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.Conv2d(8, 8, 3)
    )

    def feature_cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return F.cosine_similarity(features(a).flatten(1).float(), features(b).flatten(1).float())

    check_dtype_consistency(feature_cosine, *pair, tolerance=2e-2)


def test_dtype_consistency_fails_for_cancellation_in_bf16_matmul(pair):
    with pytest.raises(AssertionError, match="bfloat16 autocast"):
        check_dtype_consistency(sse_expanded, *pair, tolerance=1e-2)


def test_dtype_consistency_fails_on_overflow_in_float16(pair):
    a, b = pair
    with pytest.raises(AssertionError, match="not finite under autocast"):
        check_dtype_consistency(sse_expanded, a * 300, b * 300, dtype=torch.float16, rtol=1.0)


def test_dtype_consistency_rejects_wide_dtype(pair):
    with pytest.raises(ArgumentError, match="bfloat16"):
        check_dtype_consistency(mse, *pair, dtype=torch.float64)


# ----------------------------------------------------------------------------------------
# spearman and check_monotone


@FAST
@given(
    st.lists(st.integers(0, 4), min_size=3, max_size=9).flatmap(
        lambda xs: st.tuples(
            st.just(xs), st.lists(st.integers(0, 4), min_size=len(xs), max_size=len(xs))
        )
    )
)
def test_spearman_matches_scipy_with_ties(values):
    x, y = values
    ours = spearman(torch.tensor(x, dtype=torch.float32), torch.tensor(y, dtype=torch.float32))
    if len(set(x)) == 1 or len(set(y)) == 1:
        assert torch.isnan(ours)
    else:
        expected = scipy.stats.spearmanr(x, y).statistic
        assert ours.item() == pytest.approx(expected, abs=1e-12)


def test_spearman_batched_and_shape_errors():
    x = torch.tensor([[1.0, 2.0, 3.0], [3.0, 2.0, 1.0]])
    assert spearman(x, torch.tensor([1.0, 2.0, 3.0]).expand(2, 3)).tolist() == [1.0, -1.0]
    with pytest.raises(ShapeError):
        spearman(torch.ones(1), torch.ones(1))


@pytest.mark.parametrize("kind", DISTORTION_KINDS)
def test_monotone_passes_for_mse_and_cosine(kind):
    x = _rand(2, 3, 16, 16, seed=4)
    check_monotone(mse, x, kind, higher_is_better=False, strict=True)
    check_monotone(cosine, x, kind, higher_is_better=True, strict=True)


def test_monotone_fails_in_the_wrong_direction():
    x = _rand(2, 3, 16, 16, seed=4)
    with pytest.raises(AssertionError, match="should decrease"):
        check_monotone(mse, x, "blur", higher_is_better=True)


def test_monotone_fails_for_u_shaped_metric():
    x = _rand(2, 3, 16, 16, seed=4)
    middle = mse(distort(x, "noise", 0.5, generator=torch.Generator().manual_seed(0)), x)

    def u_shaped(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return (mse(a, b) - middle).abs()

    with pytest.raises(AssertionError, match="Spearman"):
        check_monotone(u_shaped, x, "noise", higher_is_better=False)


def test_monotone_strict_catches_a_plateau():
    x = _rand(2, 3, 16, 16, seed=4)

    def saturating(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return mse(a, b).clamp(max=mse(distort(x, "blur", 0.6), x).min())

    check_monotone(saturating, x, "blur", higher_is_better=False, min_correlation=0.8)
    with pytest.raises(AssertionError, match="strict"):
        check_monotone(saturating, x, "blur", higher_is_better=False, strict=True)


def test_monotone_fails_for_constant_metric():
    x = _rand(2, 3, 8, 8)
    with pytest.raises(AssertionError, match="nan"):
        check_monotone(lambda a, b: torch.zeros(len(a)), x, "blur", higher_is_better=False)


def test_monotone_accepts_a_callable_distortion_in_natural_units():
    x = _rand(2, 3, 16, 16, seed=5)
    check_monotone(mse, x, gaussian_blur, levels=[0.0, 0.5, 1.0, 2.0, 4.0], higher_is_better=False)


def test_monotone_argument_errors():
    x = _rand(1, 3, 8, 8)
    with pytest.raises(ArgumentError, match="increasing"):
        check_monotone(mse, x, "blur", levels=[0.0, 0.5, 0.5], higher_is_better=False)
    with pytest.raises(ArgumentError, match="at least three"):
        check_monotone(mse, x, "blur", levels=[0.0, 1.0], higher_is_better=False)
    with pytest.raises(UnknownNameError, match="'blur'"):
        check_monotone(mse, x, "blurr", higher_is_better=False)
    with pytest.raises(DTypeError):
        check_monotone(mse, x, 3, higher_is_better=False)


# ----------------------------------------------------------------------------------------
# distortions


@pytest.mark.parametrize("sigma", [0.4, 1.3, 2.7, 6.0])
def test_blur_matches_scipy_gaussian_filter(sigma):
    x = _rand(2, 3, 13, 17, dtype=torch.float64)
    expected = np.stack(
        [
            [
                scipy.ndimage.gaussian_filter(x[i, c].numpy(), sigma, mode="nearest", truncate=3.0)
                for c in range(3)
            ]
            for i in range(2)
        ]
    )
    np.testing.assert_allclose(gaussian_blur(x, sigma).numpy(), expected, atol=1e-12)


def _high_frequency_energy(x: torch.Tensor) -> float:
    spectrum = (
        torch.fft.fftshift(torch.fft.fft2(x.double() - x.double().mean()), dim=(-2, -1)).abs() ** 2
    )
    height, width = x.shape[-2:]
    fy = torch.arange(height) - height // 2
    fx = torch.arange(width) - width // 2
    high = (fy[:, None].abs() > height // 4) | (fx[None, :].abs() > width // 4)
    return float(spectrum[..., high].sum())


def test_blur_and_downsampling_remove_high_frequencies_monotonically():
    x = _rand(1, 3, 32, 32, seed=6)
    blurred = [_high_frequency_energy(gaussian_blur(x, s)) for s in (0.0, 0.5, 1.0, 2.0)]
    resampled = [_high_frequency_energy(down_up_sample(x, f)) for f in (1.0, 1.5, 2.0, 4.0)]
    assert blurred == sorted(blurred, reverse=True) and len(set(blurred)) == 4
    assert resampled == sorted(resampled, reverse=True) and len(set(resampled)) == 4


def test_down_up_sample_averages_a_checkerboard():
    board = ((torch.arange(16)[:, None] + torch.arange(16)[None]) % 2).float().expand(1, 3, 16, 16)
    result = down_up_sample(board, 2.0)
    assert (result - 0.5).abs().max() < 0.02  # a 2x2-period pattern is gone
    assert torch.equal(down_up_sample(board, 1.0), board)


def test_distortions_keep_constant_images_and_tiny_sizes():
    for height, width in [(1, 1), (2, 3), (5, 4)]:
        constant = torch.full((1, 3, height, width), 0.25)
        torch.testing.assert_close(gaussian_blur(constant, 2.5), constant)
        torch.testing.assert_close(down_up_sample(constant, 3.0), constant)


@pytest.mark.parametrize("std", [0.01, 0.05, 0.1])
def test_noise_has_the_requested_std(std):
    grey = torch.full((2, 3, 64, 64), 0.5)
    noisy = gaussian_noise(grey, std, generator=torch.Generator().manual_seed(0))
    assert (noisy - grey).std().item() == pytest.approx(std, rel=0.03)
    assert (noisy - grey).mean().abs().item() < std * 0.05


def test_noise_is_seeded_clamped_and_scaled():
    x = _rand(2, 3, 16, 16)
    noisy = [gaussian_noise(x, 0.2, generator=torch.Generator().manual_seed(s)) for s in (1, 1, 2)]
    assert torch.equal(noisy[0], noisy[1]) and not torch.equal(noisy[0], noisy[2])
    assert noisy[0].min() >= 0 and noisy[0].max() <= 1
    free = gaussian_noise(x, 0.2, generator=torch.Generator().manual_seed(1), value_range=None)
    assert free.min() < 0 or free.max() > 1
    # same seed at two strengths: the same pattern, scaled
    weak = gaussian_noise(x, 0.1, generator=torch.Generator().manual_seed(1), value_range=None)
    torch.testing.assert_close(free - x, 2 * (weak - x))


def test_quantize_hand_checked():
    x = torch.tensor([0.1, 0.3, 0.6, 0.9, 1.2]).view(1, 1, 1, 5)
    assert quantize(x, 3).flatten().tolist() == [0.0, 0.5, 0.5, 1.0, 1.0]
    assert quantize(x, 2).flatten().tolist() == [0.0, 0.0, 1.0, 1.0, 1.0]
    signed = torch.tensor([-0.9, -0.2, 0.2, 0.7]).view(1, 1, 1, 4)
    assert quantize(signed, 5, value_range=(-1, 1)).flatten().tolist() == [-1.0, 0.0, 0.0, 0.5]


def test_quantize_error_is_at_most_half_a_step():
    x = _rand(2, 3, 16, 16)
    for levels in (2, 5, 17, 256):
        q = quantize(x, levels)
        assert q.unique().numel() <= levels
        assert (q - x).abs().max() <= 0.5 / (levels - 1) + 1e-7


@pytest.mark.parametrize("kind", DISTORTION_KINDS)
def test_distort_level_zero_is_identity_and_dtype_is_kept(kind):
    x = _rand(2, 3, 9, 11)
    assert torch.equal(distort(x, kind, 0.0), x)
    for dtype in (torch.float64, torch.bfloat16, torch.float16):
        y = distort(x.to(dtype), kind, 0.7, generator=torch.Generator().manual_seed(0))
        assert y.dtype == dtype and y.shape == x.shape
        assert torch.isfinite(y).all() and y.min() >= 0 and y.max() <= 1


@pytest.mark.parametrize("kind", DISTORTION_KINDS)
def test_distort_is_monotone_in_level_in_any_value_range(kind):
    x = 2 * _rand(2, 3, 16, 16, seed=7) - 1
    levels = [0.0, 0.1, 0.3, 0.5, 0.7, 1.0]
    check_monotone(mse, x, kind, levels, higher_is_better=False, strict=True, value_range=(-1, 1))
    assert distort(x, kind, 1.0, value_range=(-1, 1)).abs().max() <= 1


def test_distort_argument_errors():
    x = _rand(1, 3, 8, 8)
    with pytest.raises(UnknownNameError, match="Did you mean 'noise'"):
        distort(x, "nois", 0.5)
    with pytest.raises(ArgumentError, match=r"\[0, 1\]"):
        distort(x, "blur", 1.5)
    with pytest.raises(ArgumentError):
        gaussian_blur(x, -1.0)
    with pytest.raises(ArgumentError):
        quantize(x, 1)
    with pytest.raises(ArgumentError):
        down_up_sample(x, 0.5)
    with pytest.raises(ShapeError):
        gaussian_blur(x[0], 1.0)
    with pytest.raises(DTypeError):
        Distortion("noise", 0.5, seed="1")


def test_distortion_object_is_reproducible():
    x = _rand(2, 3, 8, 8)
    noise = Distortion("noise", 0.4, seed=3)
    assert torch.equal(noise(x), noise(x))
    assert torch.equal(
        noise(x), distort(x, "noise", 0.4, generator=torch.Generator().manual_seed(3))
    )


# ----------------------------------------------------------------------------------------
# strategies


@FAST
@given(st.data())
def test_images_have_documented_shape_dtype_and_range(data):
    value_range = data.draw(st.sampled_from([(0.0, 1.0), (-1.0, 1.0), (0.0, 255.0)]))
    dtype = data.draw(st.sampled_from(FLOAT_DTYPES))
    x = data.draw(
        images(
            batch=st.integers(1, 3),
            height=st.integers(1, 9),
            width=st.integers(1, 9),
            dtype=dtype,
            value_range=value_range,
        )
    )
    assert x.ndim == 4 and x.shape[1] == 3
    assert 1 <= x.shape[0] <= 3 and 1 <= x.shape[2] <= 9 and 1 <= x.shape[3] <= 9
    assert x.dtype == dtype and x.device.type == "cpu"
    assert x.min() >= value_range[0] and x.max() <= value_range[1]


@FAST
@given(
    images(
        batch=2,
        height=5,
        width=7,
        dtype=st.sampled_from(FLOAT_DTYPES),
        value_range=st.just((-1, 1)),
    )
)
def test_images_fixed_sizes_and_drawn_dtype(x):
    assert x.shape == (2, 3, 5, 7) and x.dtype in FLOAT_DTYPES
    assert x.min() >= -1 and x.max() <= 1


def test_images_reach_edge_cases():
    zeros = find(images(), lambda x: bool((x == 0).all()))
    assert zeros.abs().sum() == 0
    binary = find(images(patterns=["binary"]), lambda x: x.unique().numel() == 2)
    assert set(binary.unique().tolist()) == {0.0, 1.0}
    odd = find(images(), lambda x: x.shape[2] % 2 == 1 and x.shape[3] % 2 == 1 and x.shape[0] > 1)
    assert odd.shape[2] % 2 == 1


@FAST
@given(images(patterns=["uniform", "smooth"], height=16, width=16))
def test_images_are_varied(x):
    assert x.std() > 0.01


@FAST
@given(image_pairs(dtype=st.sampled_from([torch.float32, torch.float64]), relations=RELATIONS))
def test_image_pairs_are_aligned(pair):
    a, b = pair
    assert a.shape == b.shape and a.dtype == b.dtype and a.device == b.device
    assert a.min() >= 0 and a.max() <= 1 and b.min() >= 0 and b.max() <= 1


def test_image_pairs_relations():
    same = find(image_pairs(relations=["identical"]), lambda p: True)
    assert torch.equal(*same)
    apart = find(image_pairs(relations=["independent"], patterns=["uniform"]), lambda p: True)
    assert not torch.equal(*apart)


@FAST
@given(image_pairs(batch=st.integers(2, 4), relations=["independent", "distorted"]))
def test_mse_properties_hold_on_drawn_pairs(pair):
    check_symmetric(mse, *pair)
    check_batch_invariance(mse, *pair)
    check_range(mse, *pair, 0.0, 1.0)


@FAST
@given(image_pairs(height=st.integers(1, 4), width=st.integers(1, 4), relations=["independent"]))
def test_independent_pairs_differ_in_every_item(pair):
    a, b = pair
    assert not (a == b).flatten(1).all(1).any()
    check_gradients(mse_to_target, a, b)


@FAST
@given(distortions(kinds=["blur", "noise"]))
def test_distortions_strategy(distortion):
    assert isinstance(distortion, Distortion)
    assert distortion.kind in ("blur", "noise") and 0.0 <= distortion.level <= 1.0


@FAST
@given(distorted("noise", st.floats(0.1, 0.9), height=12, width=12))
def test_distorted_pairs_reproduce_their_distortion(drawn):
    assert isinstance(drawn, DistortedPair)
    assert drawn.distortion.kind == "noise" and 0.1 <= drawn.distortion.level <= 0.9
    assert drawn.distorted.shape == drawn.reference.shape
    torch.testing.assert_close(drawn.distortion(drawn.reference), drawn.distorted)


@FAST
@given(distorted(level=0.0, value_range=(-1, 1), dtype=torch.float64))
def test_distorted_at_level_zero_is_the_reference(drawn):
    assert torch.equal(drawn.distorted, drawn.reference)
    assert drawn.reference.dtype == torch.float64 and drawn.reference.min() >= -1


def test_strategies_validate_arguments_eagerly():
    with pytest.raises(ArgumentError, match="batch"):
        images(batch=0)
    with pytest.raises(DTypeError):
        images(dtype=torch.int64)
    with pytest.raises(ArgumentError):
        images(value_range=(1, 0))
    with pytest.raises(UnknownNameError, match="pattern"):
        images(patterns=["stripes"])
    with pytest.raises(UnknownNameError, match="relation"):
        image_pairs(relations=["mirrored"])
    with pytest.raises(UnknownNameError):
        distortions(kinds=["jpeg"])
    with pytest.raises(ArgumentError):
        distorted("blur", 2.0)


def test_testing_imports_without_hypothesis():
    code = textwrap.dedent(
        """
        import sys
        sys.modules["hypothesis"] = None  # makes `import hypothesis` raise ImportError
        import percepfid.testing
        from percepfid import MissingDependencyError
        assert callable(percepfid.testing.check_symmetric)
        try:
            import percepfid.testing.strategies
        except MissingDependencyError as error:
            assert "pip install 'percepfid[test]'" in str(error), error
        else:
            raise SystemExit("strategies imported without hypothesis")
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr + result.stdout


@pytest.mark.parametrize(
    "module", [percepfid.testing, checks_module, distortions_module, strategies_module]
)
def test_docstring_examples_run(module):
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0 and result.attempted > 0


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_kit_runs_on_cuda():
    a, b = _rand(3, 3, 16, 16, seed=1).cuda(), _rand(3, 3, 16, 16, seed=2).cuda()
    check_symmetric(mse, a, b)
    check_batch_invariance(mse, a, b)
    check_gradients(mse_to_target, a, b)
    check_dtype_consistency(sse, a, b, tolerance=1e-2)
    check_monotone(mse, a, "noise", higher_is_better=False, strict=True)
    noisy = distort(a, "noise", 0.5, generator=torch.Generator().manual_seed(0))
    expected = distort(a.cpu(), "noise", 0.5, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(noisy.cpu(), expected)  # one seed, same noise on both devices
    drawn = find(images(device="cuda"), lambda x: True)
    assert drawn.is_cuda
