"""Every registered backbone builds offline with random weights and embeds odd-sized images."""

from __future__ import annotations

import pytest
import torch

from percepfid import ArgumentError, UnknownNameError
from percepfid.backbones import (
    Backbone,
    PreprocessConfig,
    block_list,
    create_backbone,
    get_spec,
    last_block_parameters,
    list_backbones,
    tile_grid,
)

ALIASES = [
    "dinov2",
    "dinov2-s",
    "dinov2-b",
    "dinov2-l",
    "dinov3",
    "dinov3-s",
    "dinov3-b",
    "dinov3-l",
    "clip",
    "clip-l",
    "pe-core",
    "pe-core-l",
    "siglip2",
    "blip",
]
# Small input sizes that are multiples of each model's patch size.
_SIZE = {14: 56, 16: 64}
_PATCH = {"dinov2": 14, "clip-l": 14, "pe-core-l": 14}
# The documented pooled embedding sizes (DESIGN.md table).
_EMBED_DIM = {
    "dinov2": 768,
    "dinov2-s": 384,
    "dinov2-b": 768,
    "dinov2-l": 1024,
    "dinov3": 768,
    "dinov3-s": 384,
    "dinov3-b": 768,
    "dinov3-l": 1024,
    "clip": 512,
    "clip-l": 768,
    "pe-core": 1024,
    "pe-core-l": 1024,
    "siglip2": 768,
    "blip": 256,
}


def _patch(alias: str) -> int:
    return _PATCH.get(alias.split("-")[0], _PATCH.get(alias, 16))


def test_every_documented_alias_is_registered():
    assert set(ALIASES) <= set(list_backbones())
    assert list_backbones("*dinov2*", aliases=False) == [
        "timm:vit_base_patch14_dinov2.lvd142m",
        "timm:vit_large_patch14_dinov2.lvd142m",
        "timm:vit_small_patch14_dinov2.lvd142m",
    ]


@pytest.mark.slow
@pytest.mark.parametrize("alias", ALIASES)
def test_alias_builds_and_embeds_odd_sizes(alias):
    size = _SIZE[_patch(alias)]
    backbone = create_backbone(alias, pretrained=False, image_size=size)
    assert isinstance(backbone, Backbone)
    assert backbone.embed_dim == _EMBED_DIM[alias]
    images = torch.rand(2, 3, 97, 131)
    with torch.no_grad():
        pooled = backbone(images)
        tokens = backbone(images, embedding="patch")
    assert pooled.shape == (2, backbone.embed_dim)
    grid = size // _patch(alias)
    assert tokens.shape == (2, grid * grid, backbone.token_dim)
    assert torch.isfinite(pooled).all() and torch.isfinite(tokens).all()
    # random weights still see the image (issue 11, item 7): two images, two embeddings
    cosine = torch.nn.functional.cosine_similarity(pooled[0], pooled[1], dim=0)
    assert cosine < 1 - 1e-3, (alias, cosine)
    # frozen, eval-locked, out of the state dict
    assert not any(p.requires_grad for p in backbone.parameters())
    backbone.train()
    assert not backbone.training and not any(m.training for m in backbone.modules())
    assert backbone.state_dict() == {}
    # "the last N blocks" (for fit_hlf_head(unfreeze_blocks=N)) is found in every family:
    # one block plus everything after it, up to the tower's last parameter
    names = [name for name, _ in backbone.encoder.named_parameters()]
    last_one = last_block_parameters(backbone.encoder, 1)
    list_name, blocks = block_list(backbone.encoder)
    assert len(blocks) >= 2 and last_one[-1] == names[-1]
    assert any(n.startswith(f"{list_name}.{len(blocks) - 1}.") for n in last_one)
    assert not any(n.startswith(f"{list_name}.{len(blocks) - 2}.") for n in last_one)
    assert set(last_one) < set(last_block_parameters(backbone.encoder, 2))
    if alias.startswith("clip"):  # open_clip keeps its output projection above the blocks
        assert "visual.proj" in last_one


def test_gradients_flow_to_the_input(tiny_backbone_name):
    backbone = create_backbone(tiny_backbone_name, pretrained=False, image_size=32)
    images = torch.rand(2, 3, 45, 70, requires_grad=True)
    projection = torch.randn(backbone.embed_dim)
    (backbone(images) @ projection).sum().backward()
    assert images.grad is not None and images.grad.abs().sum() > 0


def test_tiles_cover_the_image_and_group_per_image(tiny_backbone_name):
    backbone = create_backbone(tiny_backbone_name, pretrained=False, image_size=32)
    images = torch.rand(3, 3, 70, 100)
    rows, cols = tile_grid(70, 100, (32, 32))
    assert (rows, cols) == (2, 3)
    with torch.no_grad():
        tiles = backbone(images, crop="tiles")
        single = backbone(images[1:2], crop="tiles")
    assert tiles.shape == (3, 6, 192)
    torch.testing.assert_close(tiles[1:2], single, rtol=1e-4, atol=1e-5)
    # one tile for a small image: still (B, T, D)
    with torch.no_grad():
        assert backbone(torch.rand(2, 3, 20, 20), crop="tiles").shape == (2, 1, 192)


def test_preprocessing_matches_a_hand_computed_centre_crop():
    config = PreprocessConfig(
        image_size=(4, 4),
        resize_size=4,
        mean=(0.5, 0.5, 0.5),
        std=(0.25, 0.25, 0.25),
        interpolation="bilinear",
        crop="center",
    )
    backbone = create_backbone(torch.nn.Flatten(), preprocess=config)
    images = torch.rand(1, 3, 4, 10)  # shortest side already 4: only the centre crop applies
    out = backbone.preprocess(images)
    expected = (images[..., 3:7] - 0.5) / 0.25
    torch.testing.assert_close(out, expected)


def test_input_range_minus_one_to_one_is_mapped_before_normalising(tiny_backbone_name):
    a = create_backbone(tiny_backbone_name, pretrained=False, image_size=32)
    b = create_backbone(a.encoder, preprocess=a.preprocess.config, input_range=(-1, 1))
    images = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(a(images), b(images * 2 - 1), rtol=1e-4, atol=1e-5)


def test_unknown_name_suggests_close_matches():
    with pytest.raises(UnknownNameError, match="dinov2"):
        create_backbone("dinov", pretrained=False)
    with pytest.raises(ArgumentError, match="unknown source"):
        get_spec("torchhub:resnet50")


def test_image_size_must_fit_the_patch_size():
    with pytest.raises(ArgumentError, match="patch size 16"):
        create_backbone("dinov3-s", pretrained=False, image_size=56)


def test_full_specs_resolve():
    spec = get_spec("hf:Salesforce/blip-itm-base-coco@abc123")
    assert (spec.source, spec.model, spec.tag) == ("hf", "Salesforce/blip-itm-base-coco", "abc123")
    assert get_spec("dinov2").name == "timm:vit_base_patch14_dinov2.lvd142m"
    assert get_spec("DINOv2-L").name == "timm:vit_large_patch14_dinov2.lvd142m"
    spec = get_spec("open_clip:ViT-B-16/openai")
    assert spec is get_spec("clip")


def test_user_module_backbone():
    module = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(75, 8))
    backbone = create_backbone(module)
    out = backbone(torch.rand(2, 3, 5, 5))
    assert out.shape == (2, 8)
    assert not any(p.requires_grad for p in backbone.parameters())


def test_last_blocks_need_a_block_list_and_a_count_in_range(tiny_backbone_name):
    backbone = create_backbone(tiny_backbone_name, pretrained=False, image_size=32)
    for count in (0, 13, 1.0, True):
        with pytest.raises(ArgumentError, match=r"unfreeze_blocks must be an int in \[1, 12\]"):
            last_block_parameters(backbone.encoder, count)
    flat = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 4))
    with pytest.raises(ArgumentError, match="cannot find the transformer blocks"):
        last_block_parameters(flat, 1)
