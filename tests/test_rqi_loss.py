"""RQILoss and the functional RQI: exact antisymmetry, gradients only into SR, frozen model,
crops from a generator, both evaluation protocols, typed errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import examples, in_ci_profile
from hypothesis import given, settings
from hypothesis import strategies as st
from test_rqi_model import SMALL  # the small MANIQA-RQI architecture of the model tests

from percepfid._errors import ArgumentError, DTypeError, RangeError, ShapeError
from percepfid.functional import antisymmetrize, huber, rqi_loss, rqi_score
from percepfid.losses.rqi import RQILoss
from percepfid.rqi import PROTOCOLS, RQIHead, aligned_crop, crop_offsets, evaluate

# the small MANIQA-RQI makes each example cost a forward pass: dozens in CI, not hundreds
SETTINGS = settings(max_examples=examples(6, 40), deadline=None, derandomize=not in_ci_profile())


@pytest.fixture(scope="module")
def loss_fn() -> RQILoss:
    torch.manual_seed(0)
    return RQILoss(pretrained=False, model_kwargs=SMALL)


def _pair(seed: int, batch: int, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    a = torch.rand(batch, 3, height, width, generator=generator)
    return a, torch.rand(batch, 3, height, width, generator=generator)


sizes = st.tuples(st.integers(1, 3), st.integers(12, 72), st.integers(12, 72))


# ----------------------------------------------------------------------------- properties


@SETTINGS
@given(seed=st.integers(0, 2**16), shape=sizes)
def test_exact_antisymmetry_and_zero_on_identical_pairs(loss_fn, seed, shape):
    a, b = _pair(seed, *shape)
    forward = loss_fn.score(a, b, generator=torch.Generator().manual_seed(seed))
    backward = loss_fn.score(b, a, generator=torch.Generator().manual_seed(seed))
    assert forward.shape == (shape[0],)
    assert torch.equal(forward, -backward)
    assert torch.equal(loss_fn.score(a, a), torch.zeros(shape[0]))
    # also while a carries a graph (the reference branch runs without autograd)
    a_grad = a.clone().requires_grad_(True)
    assert torch.equal(loss_fn.score(a_grad, a).detach(), torch.zeros(shape[0]))


@SETTINGS
@given(seed=st.integers(0, 2**16), shape=sizes)
def test_gradient_flows_to_sr_only(loss_fn, seed, shape):
    sr, gt = _pair(seed, *shape)
    sr.requires_grad_(True)
    gt.requires_grad_(True)
    loss = loss_fn(sr, gt)
    assert loss.ndim == 0
    loss.backward()
    assert sr.grad is not None and torch.isfinite(sr.grad).all() and sr.grad.abs().sum() > 0
    assert gt.grad is None
    assert all(p.grad is None for p in loss_fn.parameters())


@SETTINGS
@given(seed=st.integers(0, 2**16), shape=sizes)
def test_same_generator_seed_same_result(loss_fn, seed, shape):
    a, b = _pair(seed, *shape)
    first = loss_fn.score(a, b, generator=torch.Generator().manual_seed(7))
    second = loss_fn.score(a, b, generator=torch.Generator().manual_seed(7))
    assert torch.equal(first, second)


@settings(max_examples=examples(4, 16), deadline=None, derandomize=not in_ci_profile())
@given(
    seed=st.integers(0, 2**16),
    shape=st.sampled_from([(1, 20, 28), (2, 32, 32), (1, 40, 75), (1, 97, 64)]),
    protocol=st.sampled_from(sorted(PROTOCOLS)),
)
def test_protocols_on_small_and_large_images(loss_fn, seed, shape, protocol):
    """Sizes below, at and above the model's 32 px crop (the released model's is 224)."""
    sr, gt = _pair(seed, *shape)
    run = dict(protocol=protocol, batch_size=128)
    first = evaluate(loss_fn, sr, gt, generator=torch.Generator().manual_seed(seed), **run)
    second = evaluate(loss_fn, sr, gt, generator=torch.Generator().manual_seed(seed), **run)
    assert first.shape == (shape[0],) and torch.isfinite(first).all()
    assert torch.equal(first, second)
    swapped = evaluate(loss_fn, gt, sr, generator=torch.Generator().manual_seed(seed), **run)
    assert torch.equal(swapped, -first)  # same crops, swapped roles


# ----------------------------------------------------------------------------- protocol


def test_protocol_mean_over_crops_matches_manual_computation(loss_fn):
    """At 64 x 40 with a 32 crop the official schedule is 20 crops at scale 1 only (64 // 2 is
    32 but 40 // 2 = 20 < 32 stops it); recompute those crops by hand."""
    sr, gt = _pair(3, 1, 40, 64)
    got = evaluate(loss_fn, sr, gt, "official", torch.Generator().manual_seed(5), batch_size=32)
    offsets = crop_offsets(40, 64, 32, 20, torch.Generator().manual_seed(5))
    crops_sr = torch.cat([sr[..., t : t + 32, left : left + 32] for t, left in offsets.tolist()])
    crops_gt = torch.cat([gt[..., t : t + 32, left : left + 32] for t, left in offsets.tolist()])
    with torch.no_grad():
        expected = (loss_fn.model(crops_sr, crops_gt) - loss_fn.model(crops_gt, crops_sr)) / 2
    torch.testing.assert_close(got, expected.mean(0, keepdim=True), rtol=1e-4, atol=1e-6)


def test_protocol_schedules():
    assert PROTOCOLS["paper"].scales == (1.0, 0.5, 1 / 3) and PROTOCOLS["paper"].crops == (
        20,
        20,
        20,
    )
    assert PROTOCOLS["official"].scales == (1.0, 0.5, 0.25) and PROTOCOLS["official"].crops == (
        20,
        10,
        5,
    )


def test_protocol_uses_all_scales_on_a_large_image():
    """Count crops and crop sizes seen by the model on a 130 x 140 image (crop 32)."""
    seen: list[tuple[int, ...]] = []

    def model(a, b):
        seen.append(tuple(a.shape))
        return (a - b).mean(dim=(1, 2, 3))

    model.img_size = 32
    sr, gt = _pair(0, 2, 130, 140)
    evaluate(model, sr, gt, "official", batch_size=64)
    # official: 130x140 -> 65x70 -> 32x35: 20 + 10 + 5 crops per image, both orders
    assert sum(s[0] for s in seen) == 2 * 2 * (20 + 10 + 5)
    seen.clear()
    evaluate(model, sr, gt, "paper", batch_size=64)
    # paper: 130x140, 65x70, 43x47: 20 crops each
    assert sum(s[0] for s in seen) == 2 * 2 * 60
    assert all(s[1:] == (3, 32, 32) for s in seen)


def test_raw_callable_is_antisymmetrised_unless_asked():
    def model(a, b):
        return (2 * a - b).mean(dim=(1, 2, 3))

    model.img_size = 32
    sr, gt = _pair(1, 2, 40, 40)
    sym = evaluate(model, sr, gt, "official")
    raw = evaluate(model, sr, gt, "official", antisymmetric=False)
    assert not torch.allclose(sym, raw)
    torch.testing.assert_close(
        sym, 0.5 * raw - 0.5 * evaluate(model, gt, sr, "official", antisymmetric=False)
    )


# ----------------------------------------------------------------------------- functional


def test_antisymmetrize_and_rqi_score_definitions():
    def g(x, y):
        return (3 * x - y).sum(dim=1) + 0.1

    a, b = torch.rand(4, 5), torch.rand(4, 5)
    torch.testing.assert_close(
        antisymmetrize(g, a, b), ((3 * a - b).sum(1) - (3 * b - a).sum(1)) / 2
    )
    assert torch.equal(antisymmetrize(g, a, a), torch.zeros(4))
    raw = rqi_score(lambda x: x * 2, g, a, b, antisymmetric=False)
    torch.testing.assert_close(raw, g(2 * a, 2 * b))
    torch.testing.assert_close(rqi_loss(raw, weight=0.5), -0.5 * raw.mean())
    torch.testing.assert_close(rqi_loss(raw, reduction="sum"), -raw.sum())


@pytest.mark.parametrize("delta", [0.05, 0.5, 1.0, 3.0])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_huber_matches_torch(delta, reduction):
    generator = torch.Generator().manual_seed(0)
    prediction, target = (
        torch.randn(50, generator=generator),
        torch.rand(50, generator=generator) * 2 - 1,
    )
    expected = F.huber_loss(prediction, target, delta=delta, reduction=reduction)
    torch.testing.assert_close(
        huber(prediction, target, delta=delta, reduction=reduction), expected
    )


def test_huber_gradcheck_float64():
    prediction = torch.randn(7, dtype=torch.float64, requires_grad=True)
    target = torch.randn(7, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda p: huber(p, target, delta=0.3), (prediction,))


def test_head_gradcheck_float64():
    torch.manual_seed(0)
    head = RQIHead(4, hidden_dim=8).double()
    a, b = (
        torch.randn(3, 5, 4, dtype=torch.float64, requires_grad=True),
        torch.randn(3, 5, 4, dtype=torch.float64),
    )
    assert torch.autograd.gradcheck(lambda x: antisymmetrize(head, x, b), (a,))


# ----------------------------------------------------------------------------- module


def test_frozen_model_out_of_state_dict_and_locked_in_eval(loss_fn):
    assert loss_fn.higher_is_better is False and loss_fn.is_differentiable is True
    assert loss_fn.state_dict() == {}
    assert all(not p.requires_grad for p in loss_fn.parameters())
    loss_fn.load_state_dict({}, strict=True)
    parent = torch.nn.Sequential(torch.nn.Conv2d(3, 3, 1), loss_fn)
    assert set(parent.state_dict()) == {"0.weight", "0.bias"}
    parent.load_state_dict(parent.state_dict(), strict=True)
    parent.train()
    assert loss_fn.training and not any(m.training for m in loss_fn.model.modules())
    loss_fn.eval()


def test_reduction_weight_and_input_range(loss_fn):
    sr, gt = _pair(4, 3, 32, 32)
    scores = loss_fn.score(sr, gt)
    none = RQILoss(pretrained=False, model_kwargs=SMALL, reduction="none", weight=0.5)
    none.model.load_state_dict(loss_fn.model.state_dict())
    torch.testing.assert_close(none(sr, gt), -0.5 * scores)
    signed = RQILoss(pretrained=False, model_kwargs=SMALL, input_range=(-1, 1))
    signed.model.load_state_dict(loss_fn.model.state_dict())
    torch.testing.assert_close(signed.score(sr * 2 - 1, gt * 2 - 1), scores)
    torch.testing.assert_close(loss_fn(sr, gt), -scores.mean())


def test_raw_model_is_not_antisymmetric(loss_fn):
    raw = RQILoss(pretrained=False, model_kwargs=SMALL, antisymmetric=False)
    raw.model.load_state_dict(loss_fn.model.state_dict())
    sr, gt = _pair(5, 2, 32, 32)
    with torch.no_grad():
        expected = loss_fn.model(sr, gt)
    torch.testing.assert_close(raw.score(sr, gt), expected)
    assert not torch.allclose(raw.score(sr, gt), -raw.score(gt, sr))
    torch.testing.assert_close(loss_fn.score(sr, gt), (expected - loss_fn.model(gt, sr)) / 2)


def test_crops_come_from_the_generator_not_the_global_rng(loss_fn):
    sr, gt = _pair(6, 2, 64, 64)
    torch.manual_seed(0)
    first = loss_fn.score(sr, gt, generator=torch.Generator().manual_seed(1))
    torch.manual_seed(123)
    second = loss_fn.score(sr, gt, generator=torch.Generator().manual_seed(1))
    assert torch.equal(first, second)
    a, b = aligned_crop(sr, gt, 32, generator=torch.Generator().manual_seed(2))
    offsets = crop_offsets(64, 64, 32, 2, torch.Generator().manual_seed(2))
    for i, (top, left) in enumerate(offsets.tolist()):
        assert torch.equal(a[i], sr[i, :, top : top + 32, left : left + 32])
        assert torch.equal(b[i], gt[i, :, top : top + 32, left : left + 32])


def test_small_images_are_upsampled_not_rejected():
    x = torch.rand(1, 3, 10, 20)
    a, b = aligned_crop(x, x, 32, mode="center")
    assert a.shape == (1, 3, 32, 32) and torch.equal(a, b)


# ----------------------------------------------------------------------------- errors


def test_bad_inputs_raise_typed_errors(loss_fn):
    good = torch.rand(1, 3, 32, 32)
    with pytest.raises(ShapeError, match="gt"):
        loss_fn(good, torch.rand(1, 3, 32, 30))
    with pytest.raises(ShapeError, match="sr"):
        loss_fn(torch.rand(3, 32, 32), good)
    with pytest.raises(DTypeError, match="sr"):
        loss_fn((good * 255).to(torch.uint8), good)
    with pytest.raises(RangeError, match="gt"):
        loss_fn(good, good * 255)
    with pytest.raises(ArgumentError, match="protocol"):
        evaluate(loss_fn, good, good, protocol="mine")
    with pytest.raises(ShapeError, match="^gt "):
        loss_fn.score(good, torch.rand(1, 1, 32, 32))


def test_bad_settings_raise():
    with pytest.raises(ArgumentError, match="reduction"):
        RQILoss(pretrained=False, model_kwargs=SMALL, reduction="avg")
    with pytest.raises(ArgumentError, match="crop"):
        RQILoss(pretrained=False, model_kwargs=SMALL, crop="tiles")
    with pytest.raises(ArgumentError, match="head= needs backbone="):
        RQILoss(pretrained=False, head=RQIHead(8))
    with pytest.raises(ArgumentError, match="crop_size"):
        RQILoss(pretrained=False, model_kwargs=SMALL, crop_size=48)
    with pytest.raises(DTypeError, match="generator"):
        RQILoss(pretrained=False, model_kwargs=SMALL, generator=0)


@pytest.mark.parametrize("generator", ["seed", 3, object()])
def test_generator_that_is_not_a_torch_generator_is_refused(generator):
    with pytest.raises(DTypeError, match="generator must be a torch.Generator"):
        RQILoss(pretrained=False, model_kwargs=SMALL, generator=generator)
    with pytest.raises(DTypeError, match="generator must be a torch.Generator"):
        crop_offsets(32, 32, 16, 2, generator)
