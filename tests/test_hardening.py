"""Regression tests of issue 11 ("Hardening"), library items: each failed before its fix."""

from __future__ import annotations

import json
import math
import time

import numpy as np
import pytest
import scipy.stats
import torch
from safetensors.torch import save_file
from test_rqi_model import SMALL  # the small MANIQA-RQI architecture of the model tests
from torch import nn

import percepfid.hub as hub
from percepfid import (
    ArgmaxPatchSelector,
    ArgumentError,
    DTypeError,
    HLFLoss,
    IQAWeightedSampler,
    LoRANRIQALoss,
    RQILoss,
    ShapeError,
    WeightsError,
)
from percepfid.backbones import create_backbone, last_block_parameters
from percepfid.eval import plcc
from percepfid.heads import BackboneUpdate, CalibrationHead, load_head
from percepfid.iqa import NRHead
from percepfid.rqi import RQIHead


@pytest.fixture
def tiny(tiny_backbone_name):
    return tiny_backbone_name


# ----------------------------------------------------------------- 7: hollow random weights


@pytest.mark.parametrize(("alias", "size"), [("dinov2-s", 28), ("blip", 32)])
def test_random_weights_give_embeddings_that_depend_on_the_image(alias, size):
    # DINOv2's LayerScale (1e-5) and BLIP's init (std 1e-10) made every image embed alike
    loss = HLFLoss(alias, pretrained=False, image_size=size, reduction="none")
    x, y = torch.rand(2, 3, 40, 40), torch.rand(2, 3, 40, 40)
    with torch.no_grad():
        fidelity = loss.fidelity(x, y)
        same = loss.fidelity(x, x)
    assert (fidelity < 1 - 1e-3).all(), fidelity
    torch.testing.assert_close(same, torch.ones(2), rtol=0, atol=1e-5)


# ----------------------------------------------------------------------- 3: strict loading


def _saved_head(tmp_path, head=None):
    folder = tmp_path / "head"
    (head or CalibrationHead(scale=3.0, bias=-1.0)).save_pretrained(folder)
    return folder


@pytest.mark.parametrize(
    "weights",
    [{}, {"other": torch.zeros(1)}, {"scale": torch.tensor(3.0)}],
    ids=["empty", "other-keys", "missing-key"],
)
def test_a_head_whose_weights_do_not_fit_is_refused(tmp_path, weights):
    folder = _saved_head(tmp_path)
    assert load_head(folder).scale.item() == 3.0  # the intact folder loads
    save_file(weights, str(folder / "model.safetensors"))
    with pytest.raises(WeightsError, match="re-save or re-download"):
        load_head(folder)
    with pytest.raises(WeightsError):
        CalibrationHead.from_pretrained(folder)


def test_garbage_weights_and_bad_configs_are_weights_errors(tmp_path):
    folder = _saved_head(tmp_path)
    (folder / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(WeightsError):
        load_head(folder)
    folder = _saved_head(tmp_path / "b")
    (folder / "config.json").write_text("{not json")
    with pytest.raises(WeightsError, match="unreadable head config"):
        load_head(folder)
    (folder / "config.json").write_text("[1, 2]")
    with pytest.raises(WeightsError, match="JSON object"):
        CalibrationHead.from_pretrained(folder)
    config = {"percepfid_head": "CalibrationHead", "scale": "ten", "bias": 0.0}
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(WeightsError):
        load_head(folder)
    (folder / "model.safetensors").unlink()
    with pytest.raises(WeightsError, match="has no model.safetensors"):
        load_head(folder)


def test_rqi_and_nr_heads_load_strictly(tmp_path, tiny):
    RQIHead(8, hidden_dim=4).save_pretrained(tmp_path / "rqi")
    save_file({"norm.weight": torch.ones(24)}, str(tmp_path / "rqi" / "model.safetensors"))
    with pytest.raises(WeightsError):
        RQIHead.from_pretrained(tmp_path / "rqi")
    with pytest.raises(WeightsError):
        RQILoss(tiny, head=str(tmp_path / "rqi"), pretrained=False)
    nr = NRHead(tiny, hidden=4, image_size=32, pretrained_backbone=False)
    nr.save_pretrained(tmp_path / "nr")
    loaded = NRHead.from_pretrained(tmp_path / "nr")
    torch.testing.assert_close(loaded.mlp[0].weight, nr.mlp[0].weight)
    save_file({}, str(tmp_path / "nr" / "model.safetensors"))
    with pytest.raises(WeightsError):
        NRHead.from_pretrained(tmp_path / "nr")


def test_a_backbone_update_must_hold_exactly_its_blocks(tiny):
    backbone = create_backbone(tiny, pretrained=False, image_size=32)
    names = last_block_parameters(backbone.encoder, 1)
    own = backbone.encoder.state_dict()
    full = {name: own[name] + 1 for name in names}
    BackboneUpdate(backbone.spec.name, 1, full).apply(backbone)
    assert torch.equal(backbone.encoder.state_dict()[names[0]], full[names[0]])
    with pytest.raises(WeightsError, match="no tensors"):
        BackboneUpdate(backbone.spec.name, 1, {}).apply(backbone)
    partial = dict(list(full.items())[1:])
    with pytest.raises(WeightsError, match="lacks"):
        BackboneUpdate(backbone.spec.name, 1, partial).apply(backbone)


# ---------------------------------------------------------------------- 9: Hub and heads


def test_a_missing_head_folder_fails_fast_with_a_weights_error(tmp_path, tiny):
    for source in (str(tmp_path / "no" / "such" / "head"), "./heads/missing", tmp_path / "x"):
        with pytest.raises(WeightsError, match="does not exist"):
            load_head(source)
    with pytest.raises(WeightsError, match="does not exist"):
        RQILoss(tiny, head=str(tmp_path / "missing"), pretrained=False)


def test_offline_hub_heads_fail_fast_and_say_hf_hub_offline(monkeypatch, tmp_path, tiny):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # read at call time, after the import
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
    start = time.monotonic()
    with pytest.raises(WeightsError, match="HF_HUB_OFFLINE"):
        load_head("percepfid-test/no-such-head")
    with pytest.raises(WeightsError, match="HF_HUB_OFFLINE"):
        RQILoss(tiny, head="percepfid-test/no-such-head", pretrained=False)
    assert time.monotonic() - start < 10


@pytest.mark.parametrize(("size", "error"), [("12", DTypeError), (-1, ArgumentError)])
def test_download_validates_size_before_touching_the_cache(size, error, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(error, match="size"):
        hub.download("org/repo", "file.bin", size=size, cache_dir=tmp_path)


def test_a_refused_pickle_does_not_suggest_weights_only_false(tmp_path):
    torch.save({"object": _NotWeights()}, tmp_path / "evil.pt")
    with pytest.raises(WeightsError) as caught:
        hub.load_state_dict(tmp_path / "evil.pt")
    assert "weights_only=False" not in str(caught.value)
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


class _NotWeights:
    def __init__(self) -> None:
        self.payload = 1


# ---------------------------------------------------------------------- 10: frozen parts


class _TinyIQA(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x).mean(dim=(1, 2, 3))


def test_requires_grad_true_leaves_frozen_parts_frozen(tiny):
    hlf = HLFLoss(tiny, pretrained=False, image_size=32, head=CalibrationHead())
    hlf.requires_grad_(True)
    assert not any(p.requires_grad for p in hlf.backbone.parameters())
    assert all(p.requires_grad for p in hlf.head.parameters())  # a module head stays trainable
    hlf.backbone.requires_grad_(True)
    assert not any(p.requires_grad for p in hlf.backbone.parameters())

    rqi = RQILoss(pretrained=False, model_kwargs=SMALL).requires_grad_(True)
    assert not any(p.requires_grad for p in rqi.parameters())
    head = RQILoss(tiny, head=RQIHead(192, hidden_dim=4), pretrained=False)
    head.requires_grad_(True)
    assert not any(p.requires_grad for p in head.parameters())
    trained = RQILoss(tiny, head=RQIHead(192, hidden_dim=4), pretrained=False, train_head=True)
    trained.requires_grad_(False).requires_grad_(True)
    assert all(p.requires_grad for p in trained.model.head.parameters())
    assert not any(p.requires_grad for p in trained.model.backbone.parameters())

    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 3, 3, padding=1))
    lora = LoRANRIQALoss(net, iqa=_TinyIQA(), targets=r"0|2", rank=2)
    lora.requires_grad_(True)
    trainable = {n for n, p in lora.named_parameters() if p.requires_grad}
    assert trainable and all(".lora_" in f".{n}" for n in trainable)
    lora.requires_grad_(False)
    assert not any(p.requires_grad for p in lora.parameters())


# ----------------------------------------------------------------------------- 8: dtypes


def test_hlf_accepts_every_float_dtype_and_a_half_model(tiny):
    loss = HLFLoss(tiny, pretrained=False, image_size=32, reduction="none")
    x, y = torch.rand(2, 3, 40, 44), torch.rand(2, 3, 40, 44)
    reference = loss(x, y)
    for dtype in (torch.float64, torch.float16, torch.bfloat16):
        out = loss(x.to(dtype), y)
        assert out.dtype == torch.float32 and out.shape == (2,)
        torch.testing.assert_close(out, reference, rtol=0, atol=2e-2)
    half = HLFLoss(tiny, pretrained=False, image_size=32, reduction="none")
    half.load_state_dict(loss.state_dict())
    half.backbone.encoder.load_state_dict(loss.backbone.encoder.state_dict())
    half = half.half()  # the CPU has no half antialiased resize: preprocessed in fp32
    out = half(x.half(), y.half())
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out.float(), reference, rtol=0, atol=2e-2)


def test_rqi_accepts_every_float_dtype_and_returns_float32_under_autocast():
    loss = RQILoss(pretrained=False, model_kwargs=SMALL, crop="center", reduction="none")
    x, y = torch.rand(2, 3, 40, 36), torch.rand(2, 3, 40, 36)
    reference = loss(x, y)
    for dtype in (torch.float64, torch.float16, torch.bfloat16):
        out = loss(x.to(dtype), y.to(torch.float32 if dtype == torch.float64 else dtype))
        assert out.dtype == torch.float32
        torch.testing.assert_close(out, reference, rtol=0, atol=5e-2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert loss(x, y).dtype == torch.float32
        assert loss.score(x, y).dtype == torch.float32


def test_lora_nriqa_scores_any_float_dtype_in_the_iqa_models_dtype():
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 3, 3, padding=1))
    loss = LoRANRIQALoss(net, iqa=_TinyIQA(), targets=r"0|2", rank=2, reduction="none")
    sr, gt = torch.rand(2, 3, 8, 8), torch.rand(2, 3, 8, 8)
    reference = loss(sr, gt)
    for dtype in (torch.float64, torch.float16, torch.bfloat16):
        out = loss(sr.to(dtype), gt.to(dtype))
        assert out.dtype in (torch.float32, torch.float64)
        torch.testing.assert_close(out.float(), reference, rtol=0, atol=2e-2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert loss(sr, gt).dtype == torch.float32


def test_images_on_two_devices_name_both_arguments(monkeypatch, tiny):
    monkeypatch.setenv("PERCEPFID_CHECKS", "0")  # no value read-back from the meta tensor
    loss = HLFLoss(tiny, pretrained=False, image_size=32)
    with pytest.raises(DTypeError, match="sr and gt must be on the same device"):
        loss(torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 32, device="meta"))
    with pytest.raises(DTypeError, match="backbone"):
        loss.encode(torch.rand(1, 3, 32, 32, device="meta"))


# ---------------------------------------------------------------------- 11: RQI training


def test_rqi_antisymmetry_is_exact_with_dropout_in_train_mode(tiny):
    head = RQIHead(192, hidden_dim=16, dropout=0.5)
    loss = RQILoss(tiny, head=head, pretrained=False, train_head=True, reduction="none")
    loss.train()
    assert loss.model.head.training
    a, b = torch.rand(3, 3, 32, 32), torch.rand(3, 3, 32, 32)
    assert torch.equal(loss.score(a, a), torch.zeros(3))
    torch.manual_seed(1)
    forward = loss.score(a, b)
    torch.manual_seed(1)
    backward = loss.score(b, a)
    assert torch.equal(forward, -backward) and forward.abs().min() > 0
    # the masks are really random: another seed gives another score
    torch.manual_seed(2)
    assert not torch.equal(loss.score(a, b), forward)


@pytest.mark.parametrize("weight", [-1.0, float("nan"), float("inf")])
def test_rqi_refuses_a_negative_or_non_finite_weight(weight):
    with pytest.raises(ArgumentError, match="weight"):
        RQILoss(pretrained=False, model_kwargs=SMALL, weight=weight)


# --------------------------------------------------------------------------------- 12: AMO


def test_amo_never_returns_a_masked_out_candidate_when_scores_are_nan():
    selector = ArgmaxPatchSelector(lambda x: torch.full((x.shape[0],), math.nan), patch_size=4)
    mask = torch.tensor([[False, True, True], [False, False, True]])
    out = selector(torch.rand(2, 3, 3, 8, 8), mask)
    assert out.index.tolist() == [1, 2]
    assert mask[torch.arange(2), out.index].all()


def test_amo_refuses_explicit_corners_that_misalign_the_lr_crop():
    selector = ArgmaxPatchSelector(lambda x: x.mean(dim=(1, 2, 3)), patch_size=4, scale=2)
    candidates = torch.rand(2, 2, 3, 12, 12)
    out = selector(candidates, top=torch.tensor([2, 4]), left=torch.tensor([0, 8]))
    assert out.top.tolist() == [2, 4]
    with pytest.raises(ShapeError, match="multiples of 2"):
        selector(candidates, top=torch.tensor([1, 4]), left=torch.tensor([0, 8]))
    with pytest.raises(DTypeError, match="integers"):
        selector(candidates, top=torch.tensor([2.5, 4.0]), left=torch.tensor([0, 8]))


# ------------------------------------------------------------------------ 13: constructors


def test_sampler_seeds_and_numpy_integers():
    scores = torch.tensor([[1.0, 2.0], [3.0, 1.0], [0.5, 0.2]])
    with pytest.raises(ArgumentError, match="seed"):
        IQAWeightedSampler(scores, temperature=1.0, seed=2**64)
    top = IQAWeightedSampler(scores, temperature=1.0, seed=2**64 - 1)
    top.set_epoch(3)  # seed + epoch wraps around 2**64
    assert len(list(top)) == 3
    plain = IQAWeightedSampler(scores, temperature=1.0, seed=5, num_replicas=2, rank=1)
    numpy = IQAWeightedSampler(
        scores, temperature=1.0, seed=np.int64(5), num_replicas=np.int32(2), rank=np.int64(1)
    )
    plain.set_epoch(2)
    numpy.set_epoch(np.int64(2))
    assert list(plain) == list(numpy)
    with pytest.raises(DTypeError, match="epoch"):
        numpy.set_epoch(1.0)


def test_constructor_arguments_are_checked_at_construction(tiny):
    with pytest.raises(ArgumentError, match="image_size"):
        HLFLoss(tiny, pretrained=False, image_size=32.0)
    assert HLFLoss(tiny, pretrained=False, image_size=np.int64(32)).backbone.image_size == (32, 32)
    with pytest.raises(DTypeError, match="seed"):
        RQILoss(pretrained=False, model_kwargs=SMALL, seed="a")
    with pytest.raises(ArgumentError, match="seed"):
        RQILoss(pretrained=False, model_kwargs=SMALL, seed=-1)


def test_a_user_backbone_returning_a_scalar_is_a_shape_error():
    class Scalar(nn.Module):
        def forward(self, x):
            return x.mean()

    loss = HLFLoss(Scalar())
    with pytest.raises(ShapeError, match="Scalar"):
        loss(torch.rand(2, 3, 8, 8), torch.rand(2, 3, 8, 8))


# --------------------------------------------------------------- 6: reference embeddings


def test_a_reference_embedding_is_refused_under_other_preprocessing(tiny):
    backbone = create_backbone(tiny, pretrained=False, image_size=32)
    loss = HLFLoss(backbone)
    gt = torch.rand(2, 3, 40, 40)
    reference = loss.embed_reference(gt)
    sr = torch.rand(2, 3, 40, 40)
    torch.testing.assert_close(loss(sr, reference), loss(sr, gt))
    assert HLFLoss(backbone)(sr, reference).isfinite()  # same module, same settings
    with pytest.raises(ArgumentError, match="input_range"):
        HLFLoss(backbone, input_range=(0, 2))(sr, reference)
    other_size = HLFLoss(tiny, pretrained=False, image_size=48)
    with pytest.raises(ArgumentError, match="preprocessing"):
        other_size(sr, reference)


# ------------------------------------------------------------------------ 14: statistics


def test_plcc_is_scale_free_at_the_ends_of_float64():
    target = [1.0, 2.0, 3.5, 3.0]
    expected = scipy.stats.pearsonr([1.0, 2.0, 3.0, 5.0], target)[0]
    for scale in (1e200, 1e-300, 1e300):
        values = [v * scale for v in (1.0, 2.0, 3.0, 5.0)]
        assert plcc(values, target) == pytest.approx(expected, rel=1e-12)
