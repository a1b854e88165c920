"""Values, not shapes: HLF's ``'cls+patch'`` against cosines computed by hand, the LoRA default
scale against ``W x + B A x``, and each backbone family's preprocessing against its own
library's transform on the same PIL image."""

from __future__ import annotations

from dataclasses import asdict

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import TINY_BACKBONE, require
from PIL import Image
from torch import nn

from percepfid import HLFLoss
from percepfid.backbones import create_backbone
from percepfid.lora import inject_lora, merge_lora

# ----------------------------------------------------------------------- cls+patch


class Tower(nn.Module):
    """A user backbone returning ``(pooled, tokens)`` of different widths."""

    def __init__(self) -> None:
        super().__init__()
        self.patch = nn.Conv2d(3, 8, 4, stride=4)
        self.pool = nn.Linear(8, 6)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        tokens = self.patch(x).flatten(2).transpose(1, 2)  # (B, N, 8)
        return self.pool(torch.tanh(tokens).mean(1)), tokens


def _hand_cosines(pooled_a, tokens_a, pooled_b, tokens_b):
    cls = F.cosine_similarity(pooled_a, pooled_b, dim=-1)
    patch = F.cosine_similarity(tokens_a, tokens_b, dim=-1).mean(1)
    return cls, patch


def test_cls_patch_is_the_mean_of_the_two_cosines_by_hand():
    torch.manual_seed(0)
    tower = Tower().eval()
    g = torch.Generator().manual_seed(1)
    sr, gt = torch.rand(3, 3, 16, 20, generator=g), torch.rand(3, 3, 16, 20, generator=g)
    with torch.no_grad():
        cls, patch = _hand_cosines(*tower(sr), *tower(gt))
    assert (cls - patch).abs().min() > 1e-3  # the two fidelities differ: a swap shows
    for embedding, expected in (("cls", cls), ("patch", patch), ("cls+patch", (cls + patch) / 2)):
        loss = HLFLoss(tower, embedding=embedding, reduction="none")
        torch.testing.assert_close(loss.fidelity(sr, gt), expected, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(loss(sr, gt), 1 - expected, rtol=1e-5, atol=1e-6)
        reference = loss.embed_reference(gt)  # the cached GT path gives the same values
        torch.testing.assert_close(loss.fidelity(sr, reference), expected, rtol=1e-5, atol=1e-6)


def test_cls_patch_on_a_timm_backbone_uses_its_own_outputs():
    loss = HLFLoss(TINY_BACKBONE, pretrained=False, image_size=32, embedding="cls+patch")
    g = torch.Generator().manual_seed(2)
    sr, gt = torch.rand(2, 3, 40, 36, generator=g), torch.rand(2, 3, 40, 36, generator=g)
    with torch.no_grad():
        a, b = loss.backbone(sr, embedding="cls+patch"), loss.backbone(gt, embedding="cls+patch")
        # the timm model's own pooled output and tokens on the preprocessed input
        timm_model = loss.backbone.encoder.model
        features = timm_model.forward_features(loss.backbone.preprocess(sr))
        torch.testing.assert_close(a.pooled, timm_model.forward_head(features, pre_logits=True))
        torch.testing.assert_close(a.tokens, features[:, timm_model.num_prefix_tokens :])
        cls, patch = _hand_cosines(a.pooled, a.tokens, b.pooled, b.tokens)
        assert (cls - patch).abs().min() > 1e-4
        torch.testing.assert_close(loss.fidelity(sr, gt), (cls + patch) / 2, rtol=1e-5, atol=1e-6)


# -------------------------------------------------------------------- LoRA scaling


def test_lora_default_scale_is_one_on_a_linear():
    torch.manual_seed(0)
    net = inject_lora(nn.Sequential(nn.Linear(6, 5)), ["0"], rank=3)
    layer = net[0]
    weight, bias = layer.base_layer.weight.detach(), layer.base_layer.bias.detach()
    a, b = layer.lora_A["default"].weight, layer.lora_B["default"].weight
    assert a.shape == (3, 6) and b.shape == (5, 3) and torch.count_nonzero(b) == 0
    with torch.no_grad():
        b.normal_()
    x = torch.randn(4, 6)
    expected = x @ weight.T + bias + x @ a.detach().T @ b.detach().T  # scale alpha/rank = 1
    torch.testing.assert_close(net(x), expected, rtol=1e-5, atol=1e-6)
    merged = merge_lora(net)
    torch.testing.assert_close(merged[0].weight, weight + b.detach() @ a.detach())
    torch.testing.assert_close(merged(x), expected, rtol=1e-5, atol=1e-6)
    # an explicit alpha scales the update by alpha / rank
    doubled = inject_lora(nn.Sequential(nn.Linear(6, 5)), ["0"], rank=3, alpha=6.0)
    layer2 = doubled[0]
    with torch.no_grad():
        layer2.lora_B["default"].weight.copy_(b)
        layer2.lora_A["default"].weight.copy_(a)
    w2, b2 = layer2.base_layer.weight.detach(), layer2.base_layer.bias.detach()
    torch.testing.assert_close(
        doubled(x), x @ w2.T + b2 + 2.0 * (x @ a.detach().T @ b.detach().T), rtol=1e-5, atol=1e-5
    )


def test_lora_default_scale_is_one_on_a_conv_with_the_preset_rank():
    torch.manual_seed(0)

    class Dense(nn.Module):  # a residual dense block: 'rrdb-convs', rank 24
        def __init__(self) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(4, 2, 3, padding=1)
            self.conv2 = nn.Conv2d(6, 2, 3, padding=1)
            self.conv3 = nn.Conv2d(8, 4, 3, padding=1)

    net = inject_lora(nn.Sequential(Dense()), "rrdb-convs")
    layer = net[0].conv2
    a, b = layer.lora_A["default"].weight, layer.lora_B["default"].weight
    assert a.shape == (24, 6, 3, 3) and b.shape == (2, 24, 1, 1)
    with torch.no_grad():
        b.normal_()
    x = torch.randn(2, 6, 7, 9)
    base = layer.base_layer
    expected = F.conv2d(x, base.weight, base.bias, padding=1) + F.conv2d(
        F.conv2d(x, a, padding=1), b
    )
    torch.testing.assert_close(layer(x), expected.detach(), rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------------ preprocessing


def _photo(height: int = 260, width: int = 300) -> Image.Image:
    """An RGB test image with smooth structure (resampling filters agree on it within a few
    levels) and enough detail that a one-pixel offset shows."""
    g = torch.Generator().manual_seed(0)
    coarse = torch.rand(1, 3, height // 10, width // 10, generator=g)
    smooth = F.interpolate(coarse, size=(height, width), mode="bilinear", align_corners=False)
    array = (smooth[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    return Image.fromarray(array)


def _tensor(image: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.array(image)).permute(2, 0, 1)[None].float() / 255


def _compare(backbone, transform, image: Image.Image) -> None:
    """percepfid's differentiable preprocessing vs the library's PIL transform."""
    expected = transform(image)[None]
    with torch.no_grad():
        got = backbone.preprocess(_tensor(image))
    assert got.shape == expected.shape
    error = (got - expected).abs()
    # resampling tolerance: PIL resizes 8-bit images (rounding), torch in float32
    assert error.mean() < 0.01 and error.max() < 0.08, (error.mean(), error.max())
    shifted = (got[..., :, 1:] - expected[..., :, :-1]).abs().mean()
    assert shifted > 2 * error.mean()  # the tolerance would catch a one-pixel offset


@pytest.fixture(scope="module")
def photo() -> Image.Image:
    return _photo()


def _timm_cfg(timm, name: str) -> dict:
    return timm.data.resolve_data_config(
        pretrained_cfg=timm.models.get_pretrained_cfg(name).to_dict()
    )


def test_timm_preprocessing_matches_timm_transform():
    """vit_tiny (crop_pct 0.9): mean, std, filter, resize (248) and crop are timm's."""
    timm = require("timm")
    backbone = create_backbone(TINY_BACKBONE, pretrained=False)
    cfg = _timm_cfg(timm, "vit_tiny_patch16_224.augreg_in21k")
    config = backbone.preprocess.config
    assert config.mean == tuple(cfg["mean"]) and config.std == tuple(cfg["std"])
    assert config.interpolation == cfg["interpolation"] and config.crop == "center"
    assert config.image_size == tuple(cfg["input_size"][-2:])
    _compare(backbone, timm.data.create_transform(**cfg), _photo(300, 376))


def test_timm_resize_size_is_timms_scale_size():
    timm = require("timm")
    cfg = _timm_cfg(timm, "vit_tiny_patch16_224.augreg_in21k")
    backbone = create_backbone(TINY_BACKBONE, pretrained=False)
    resize = next(t for t in timm.data.create_transform(**cfg).transforms if hasattr(t, "size"))
    assert backbone.preprocess.config.resize_size == resize.size


def _dinov2(timm):
    backbone = create_backbone("dinov2-s", pretrained=False)
    cfg = _timm_cfg(timm, "vit_small_patch14_dinov2.lvd142m")
    return backbone, cfg, dict(cfg, input_size=(3, 224, 224), crop_pct=224 / 256)


def test_dinov2_preprocessing_is_timms_transform_at_256_then_224():
    """[D] PAPERS.md section 1: shortest side 256, centre crop 224 (timm's default for these
    weights is 518 with crop_pct 1.0: the mean, std and filter are timm's, the size is not).
    300 x 375 resizes to 256 x 320 exactly (even margins)."""
    timm = require("timm")
    backbone, cfg, ours = _dinov2(timm)
    assert cfg["input_size"][-1] == 518  # upstream's own size differs on purpose
    config = backbone.preprocess.config
    assert config.mean == tuple(cfg["mean"]) and config.std == tuple(cfg["std"])
    assert config.interpolation == cfg["interpolation"]
    _compare(backbone, timm.data.create_transform(**ours), _photo(300, 375))


@pytest.mark.parametrize("shape", [(260, 300), (300, 376)], ids=["odd-margin", "long-side"])
def test_dinov2_centre_crop_geometry_matches_torchvision(shape):
    timm = require("timm")
    backbone, _, ours = _dinov2(timm)
    _compare(backbone, timm.data.create_transform(**ours), _photo(*shape))


def _open_clip_transform(open_clip, model: str, tag: str):
    """open_clip's own eval transform for (model, tag), as create_model_and_transforms
    builds it (defaults, then the tag's settings, then the tower's size), without weights."""
    from open_clip.transform import PreprocessCfg, image_transform_v2, merge_preprocess_dict

    cfg = merge_preprocess_dict(asdict(PreprocessCfg()), open_clip.get_pretrained_cfg(model, tag))
    size = open_clip.get_model_config(model)["vision_cfg"]["image_size"]
    cfg["size"] = (size, size) if isinstance(size, int) else tuple(size)
    return image_transform_v2(PreprocessCfg(**cfg), is_train=False)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("alias", "model", "tag"),
    [
        ("clip", "ViT-B-16", "openai"),
        ("pe-core", "PE-Core-B-16", "meta"),
        ("siglip2", "ViT-B-16-SigLIP2", "webli"),
    ],
)
def test_open_clip_preprocessing_matches_open_clip(photo, alias, model, tag):
    open_clip = require("open_clip")
    backbone = create_backbone(alias, pretrained=False)
    _compare(backbone, _open_clip_transform(open_clip, model, tag), photo)


@pytest.mark.slow
def test_blip_preprocessing_matches_the_blip_image_processor(photo):
    transformers = require("transformers")
    processor = transformers.BlipImageProcessor()  # defaults: 384 x 384 bicubic, OpenAI stats
    backbone = create_backbone("blip", pretrained=False)

    def transform(image):
        return processor(images=image, return_tensors="pt")["pixel_values"][0]

    _compare(backbone, transform, photo)
