"""HLFLoss: properties through percepfid.testing, functional agreement, heads, bad inputs."""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from percepfid import (
    ArgumentError,
    DTypeError,
    EmptyBatchError,
    HLFLoss,
    NonFiniteError,
    RangeError,
    ShapeError,
    UnknownNameError,
)
from percepfid.functional import high_level_fidelity, hlf_fidelity, hlf_loss
from percepfid.heads import CalibrationHead, MLPCalibrationHead
from percepfid.testing import (
    check_batch_invariance,
    check_dtype_consistency,
    check_gradients,
    check_identity,
    check_range,
    check_symmetric,
)
from percepfid.testing.strategies import image_pairs

TINY = "timm:vit_tiny_patch16_224.augreg_in21k"


@pytest.fixture(scope="module")
def loss() -> HLFLoss:
    return HLFLoss(TINY, pretrained=False, image_size=32, reduction="none")


def _fidelity(loss):
    return lambda a, b: loss.fidelity(a, b)


def test_identity_symmetry_range(loss):
    a, b = torch.rand(3, 3, 40, 57), torch.rand(3, 3, 40, 57)
    check_identity(loss, a, 0.0, atol=1e-5)
    check_identity(_fidelity(loss), a, 1.0, atol=1e-5)
    check_symmetric(_fidelity(loss), a, b, atol=1e-5)
    check_range(_fidelity(loss), a, b, -1.0, 1.0)


@pytest.mark.parametrize("kind", ["random", "constant", "zeros"])
def test_gradients_finite_nonzero_and_only_through_sr(loss, kind):
    gt = torch.rand(2, 3, 48, 48)
    sr = {
        "random": torch.rand(2, 3, 48, 48),
        "constant": torch.full((2, 3, 48, 48), 0.5),
        "zeros": torch.zeros(2, 3, 48, 48),
    }[kind]
    check_gradients(loss, sr, gt)


def test_batch_invariance_and_bf16_autocast(loss):
    a, b = torch.rand(4, 3, 33, 47), torch.rand(4, 3, 33, 47)
    check_batch_invariance(loss, a, b, atol=1e-5)
    check_dtype_consistency(_fidelity(loss), a, b, tolerance=5e-2)


def test_backbone_unchanged_by_an_optimiser_step(loss):
    before = {k: v.clone() for k, v in loss.backbone.encoder.state_dict().items()}
    sr = torch.rand(2, 3, 32, 32, requires_grad=True)
    optimiser = torch.optim.SGD([sr, *loss.parameters()], lr=10.0)
    loss(sr, torch.rand(2, 3, 32, 32)).mean().backward()
    optimiser.step()
    after = loss.backbone.encoder.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(p.grad is None for p in loss.parameters())


def test_module_matches_the_functional_form(loss):
    sr, gt = torch.rand(2, 3, 40, 40), torch.rand(2, 3, 40, 40)
    with torch.no_grad():
        e_sr, e_gt = loss.backbone(sr), loss.backbone(gt)
    expected = torch.nn.functional.cosine_similarity(e_sr.double(), e_gt.double(), dim=1)
    torch.testing.assert_close(loss.fidelity(sr, gt).double(), expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(hlf_fidelity(sr, gt, loss.backbone), loss.fidelity(sr, gt))
    torch.testing.assert_close(hlf_loss(e_sr, e_gt, reduction="none"), loss(sr, gt))
    torch.testing.assert_close(
        hlf_loss(e_sr, e_gt, reduction="sum", weight=3.0), 3.0 * loss(sr, gt).sum()
    )


def test_patch_fidelity_is_the_mean_of_token_cosines():
    loss = HLFLoss(TINY, pretrained=False, image_size=32, embedding="patch")
    sr, gt = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        t_sr = loss.backbone(sr, embedding="patch")
        t_gt = loss.backbone(gt, embedding="patch")
    expected = torch.nn.functional.cosine_similarity(t_sr.double(), t_gt.double(), dim=-1).mean(1)
    torch.testing.assert_close(loss.fidelity(sr, gt).double(), expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(
        high_level_fidelity(t_sr, t_gt).double(), expected, rtol=1e-5, atol=1e-6
    )


@pytest.mark.parametrize("embedding", ["cls", "patch", "cls+patch"])
@pytest.mark.parametrize("crop", ["center", "squash", "tiles"])
def test_every_embedding_and_crop_is_zero_on_identical_images(embedding, crop):
    loss = HLFLoss(TINY, pretrained=False, image_size=32, embedding=embedding, crop=crop)
    x = torch.rand(2, 3, 70, 45)
    assert abs(loss(x, x.clone()).item()) < 1e-5
    assert loss(x, torch.rand(2, 3, 70, 45)).item() > 1e-4


def test_tiles_see_the_border_that_a_centre_crop_drops():
    gt = torch.rand(1, 3, 32, 96)
    sr = gt.clone()
    sr[..., :, :16] = 1 - sr[..., :, :16]  # change only the left border
    centre = HLFLoss(TINY, pretrained=False, image_size=32, crop="center")
    tiles = HLFLoss(TINY, pretrained=False, image_size=32, crop="tiles")
    assert abs(centre(sr, gt).item()) < 1e-6
    assert tiles(sr, gt).item() > 1e-4


def test_reference_embedding_is_reused(loss):
    sr, gt = torch.rand(2, 3, 36, 36), torch.rand(2, 3, 36, 36)
    reference = loss.embed_reference(gt)
    assert not reference.pooled.requires_grad and len(reference) == 2
    torch.testing.assert_close(loss(sr, reference), loss(sr, gt))
    with pytest.raises(ShapeError, match="reference embedding"):
        loss(torch.rand(2, 3, 30, 30), reference)
    other = HLFLoss(TINY, pretrained=False, image_size=32, embedding="patch")
    with pytest.raises(ArgumentError, match="embed_reference"):
        other(sr, reference)


def test_reduction_and_weight():
    sr, gt = torch.rand(3, 3, 32, 32), torch.rand(3, 3, 32, 32)
    per_image = HLFLoss(TINY, pretrained=False, image_size=32, reduction="none")
    torch.manual_seed(0)
    values = per_image(sr, gt)
    for reduction, expected in (("mean", values.mean()), ("sum", values.sum())):
        module = HLFLoss(per_image.backbone, reduction=reduction, weight=0.01)
        torch.testing.assert_close(module(sr, gt), 0.01 * expected)


def test_calibration_head_maps_fidelity_and_is_the_only_state(tmp_path):
    head = CalibrationHead(scale=4.0, bias=-2.0)
    loss = HLFLoss(TINY, pretrained=False, image_size=32, head=head, reduction="none")
    sr, gt = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32)
    cosine = loss.cosine(sr, gt)
    torch.testing.assert_close(loss.fidelity(sr, gt), torch.sigmoid(4.0 * cosine - 2.0))
    assert set(loss.state_dict()) == {"head.scale", "head.bias"}
    # strict round trip of the checkpoint into a fresh loss
    fresh = HLFLoss(loss.backbone, head=CalibrationHead())
    fresh.load_state_dict(loss.state_dict(), strict=True)
    torch.testing.assert_close(fresh.fidelity(sr, gt), loss.fidelity(sr, gt))
    # a head saved with save_pretrained loads by path
    head.save_pretrained(tmp_path / "head")
    by_path = HLFLoss(loss.backbone, head=str(tmp_path / "head"), reduction="none")
    assert torch.equal(by_path.fidelity(sr, gt), loss.fidelity(sr, gt))


def test_mlp_head_uses_embedding_features():
    """The head's prediction from features computed by hand on the backbone's embeddings:
    ``[cos, mean d, max d]`` with ``d = |e_sr - e_gt| / |e_gt| * sqrt(D)``, standardised."""
    head = MLPCalibrationHead(hidden=4)
    head.set_feature_statistics(torch.tensor([[0.2, 1.0, 3.0], [0.9, 0.5, 2.0], [0.5, 2.0, 6.0]]))
    loss = HLFLoss(TINY, pretrained=False, image_size=32, head=head, reduction="none")
    sr, gt = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32)
    values = loss.fidelity(sr, gt)
    with torch.no_grad():
        e_sr, e_gt = loss.backbone(sr), loss.backbone(gt)
        cosine = torch.nn.functional.cosine_similarity(e_sr, e_gt, dim=1)
        d = (e_sr - e_gt).abs() / e_gt.norm(dim=1, keepdim=True) * e_sr.shape[1] ** 0.5
        features = torch.stack([cosine, d.mean(1), d.amax(1)], dim=1)
        standard = (features - head.feature_mean) / head.feature_std
        expected = torch.sigmoid(head.net(standard).squeeze(-1))
    assert (d.mean(1) - cosine).abs().min() > 1e-3  # each feature matters
    torch.testing.assert_close(values, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(loss(sr, gt), 1 - expected, rtol=1e-5, atol=1e-6)


@settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    pair=image_pairs(batch=st.integers(1, 3), height=st.integers(8, 70), width=st.integers(8, 70))
)
def test_properties_hold_for_random_pairs(loss, pair):
    a, b = pair
    fidelity = loss.fidelity(a, b)
    assert fidelity.shape == (a.shape[0],)
    assert ((fidelity >= -1) & (fidelity <= 1)).all()
    torch.testing.assert_close(fidelity, loss.fidelity(b, a), atol=1e-5, rtol=0)
    assert (loss(a, a.clone()).abs() < 1e-5).all()


def test_train_keeps_the_backbone_in_eval(loss):
    loss.train()
    assert loss.training and not loss.backbone.training
    assert not any(m.training for m in loss.backbone.modules())


def test_compiles(loss):
    compiled = torch.compile(HLFLoss(loss.backbone), backend="eager")
    sr = torch.rand(2, 3, 32, 32, requires_grad=True)
    gt = torch.rand(2, 3, 32, 32)
    torch.testing.assert_close(
        compiled(sr, gt), HLFLoss(loss.backbone)(sr, gt), rtol=1e-5, atol=1e-6
    )


# ------------------------------------------------------------------ bad inputs


@pytest.mark.parametrize(
    ("sr", "gt", "error", "match"),
    [
        (torch.rand(3, 32, 32), torch.rand(3, 32, 32), ShapeError, "unsqueeze"),
        (torch.rand(2, 1, 32, 32), torch.rand(2, 1, 32, 32), ShapeError, "3 channels"),
        (
            (torch.rand(2, 3, 32, 32) * 255).to(torch.uint8),
            torch.rand(2, 3, 32, 32),
            DTypeError,
            "255",
        ),
        (torch.rand(2, 3, 32, 32), torch.rand(2, 3, 30, 32), ShapeError, "same shape"),
        (torch.rand(0, 3, 32, 32), torch.rand(0, 3, 32, 32), EmptyBatchError, "empty batch"),
        (torch.full((1, 3, 32, 32), float("nan")), torch.rand(1, 3, 32, 32), NonFiniteError, "NaN"),
        (torch.rand(1, 3, 32, 32) * 255, torch.rand(1, 3, 32, 32), RangeError, "input_range"),
        ([[0.0]], torch.rand(1, 3, 32, 32), DTypeError, "torch.Tensor"),
    ],
)
def test_bad_inputs_raise_typed_errors(loss, sr, gt, error, match):
    with pytest.raises(error, match=match):
        loss(sr, gt)


def test_bad_arguments_raise_typed_errors(loss):
    with pytest.raises(ArgumentError, match="reduction"):
        HLFLoss(loss.backbone, reduction="avg")
    with pytest.raises(ArgumentError, match="embedding"):
        HLFLoss(loss.backbone, embedding="pooled")
    with pytest.raises(ArgumentError, match="input_range"):
        HLFLoss(loss.backbone, input_range=(1, 0))
    with pytest.raises(ArgumentError, match="weight"):
        HLFLoss(loss.backbone, weight=-1.0)
    with pytest.raises(UnknownNameError, match="Did you mean"):
        HLFLoss("dinvo2", pretrained=False)
    with pytest.raises(ArgumentError, match="crop"):
        HLFLoss(TINY, pretrained=False, image_size=32, crop="random")


def test_input_range_minus_one_to_one(loss):
    x = torch.rand(2, 3, 32, 32)
    y = torch.rand(2, 3, 32, 32)
    signed = HLFLoss(TINY, pretrained=False, image_size=32, input_range=(-1, 1), reduction="none")
    signed.backbone.encoder.load_state_dict(loss.backbone.encoder.state_dict())
    torch.testing.assert_close(signed(x * 2 - 1, y * 2 - 1), loss(x, y), rtol=1e-4, atol=1e-5)


def test_one_call_visits_few_files_and_checks_each_input_once(monkeypatch):
    # The data path of a loss call is short and one-way: at most 7 percepfid files, and one
    # value check (one host sync) per input tensor.
    import sys
    from pathlib import Path

    import percepfid
    from percepfid import _checks

    loss = HLFLoss(TINY, pretrained=False, image_size=32, kernel="torch")
    sr, gt = torch.rand(2, 3, 32, 32, requires_grad=True), torch.rand(2, 3, 32, 32)
    loss(sr, gt)  # warm up lazy imports
    root = str(Path(percepfid.__file__).parent)
    files: set[str] = set()

    def profile(frame, event, arg):  # noqa: ARG001
        if event == "call" and frame.f_code.co_filename.startswith(root):
            files.add(frame.f_code.co_filename[len(root) + 1 :])

    checked: list[int] = []
    original = _checks.check_image

    def counting(x, name, **kwargs):
        checked.append(id(x))
        return original(x, name, **kwargs)

    monkeypatch.setattr(_checks, "check_image", counting)
    monkeypatch.setattr(sys.modules[HLFLoss.__module__], "check_image", counting, raising=False)
    sys.setprofile(profile)
    try:
        loss(sr, gt)
    finally:
        sys.setprofile(None)
    assert len(files) <= 7, sorted(files)
    assert sorted(checked) == sorted([id(sr), id(gt)])


def test_a_head_fitted_on_another_backbone_is_refused(tmp_path):
    # A head records what it was fitted on; a loss with another backbone refuses it.
    head = CalibrationHead(scale=3.0, bias=-1.0)
    head.save_pretrained(tmp_path / "h", config={"percepfid_fitted_on": {"backbone": "timm:other"}})
    with pytest.raises(ArgumentError, match="fitted on backbone 'timm:other'"):
        HLFLoss(TINY, pretrained=False, image_size=32, head=str(tmp_path / "h"))
    loss = HLFLoss(TINY, pretrained=False, image_size=32)
    name = loss.backbone.spec.name
    head.save_pretrained(tmp_path / "ok", config={"percepfid_fitted_on": {"backbone": name}})
    same = HLFLoss(loss.backbone, head=str(tmp_path / "ok"))
    assert same.head.fitted_on == {"backbone": name}
