"""The MANIQA-RQI architecture: strict loading of the released key listing, agreement with the
authors' module (when ``rqi-iqa`` is installed), and the pieces against hand-written math."""

from __future__ import annotations

import json
from importlib import resources

import pytest
import torch
from conftest import require

from percepfid import WeightsError
from percepfid._errors import ArgumentError, ShapeError
from percepfid.losses.rqi import RQILoss
from percepfid.rqi import (
    MANIQARQI,
    SMALL_MODEL_KWARGS,
    RQIHead,
    TransposedAttention,
    create_maniqa_rqi,
    evaluate,
    load_released_weights,
)
from percepfid.rqi._swin import WindowAttention, _shift_mask

# A small MANIQA-RQI (32x32 input, 4-block ViT) for fast tests; test_rqi_loss uses it too.
SMALL = SMALL_MODEL_KWARGS


def _listing() -> dict:
    text = resources.files("percepfid.rqi").joinpath("rqi_keys.json").read_text()
    return json.loads(text)


@pytest.fixture(scope="module")
def released() -> RQILoss:
    """The full-size released architecture behind RQILoss (random weights), built once."""
    torch.manual_seed(0)
    return RQILoss(pretrained=False)


def test_listing_is_the_released_checkpoint_layout():
    listing = _listing()
    assert listing["repo_id"] == "shaolin999/rqi" and listing["filename"] == "rqi_weights.pt"
    tensors = listing["tensors"]
    assert len(tensors) == listing["num_tensors"] == 322
    total = 0
    for shape, _ in tensors.values():
        count = 1
        for side in shape:
            count *= side
        total += count
    assert total == listing["num_elements"]
    # The checkpoint holds the ViT too (the authors load it strictly into a model with .vit).
    assert tensors["vit.pos_embed"][0] == [1, 785, 768]
    assert tensors["vit.patch_embed.proj.weight"][0] == [768, 3, 8, 8]
    assert tensors["conv0_x.weight"][0] == [1536, 3072, 1, 1]
    assert tensors["conv0_x2.weight"][0] == [768, 3072, 1, 1]  # present though unused
    assert tensors["swintransformer1.layers.0.blocks.1.attn_mask"][0] == [49, 16, 16]
    assert "swintransformer1.layers.0.blocks.0.attn_mask" not in tensors


@pytest.mark.slow
def test_released_architecture_has_the_listed_layout(released):
    ours = {
        k: [list(v.shape), str(v.dtype).removeprefix("torch.")]
        for k, v in released.model.state_dict().items()
    }
    assert ours == _listing()["tensors"]
    assert released.state_dict() == {}  # frozen weights are not part of the loss's checkpoint


@pytest.mark.slow
def test_released_architecture_scores_a_large_pair(released):
    """A 240 x 230 pair is cropped to 224 and scored (the training step itself is measured
    in benchmarks/bench_rqi.py)."""
    assert released.crop_size == 224
    with torch.no_grad():
        score = released.score(torch.rand(1, 3, 240, 230), torch.rand(1, 3, 240, 230))
    assert score.shape == (1,) and torch.isfinite(score).all() and score.abs().item() > 0


@pytest.mark.slow
def test_released_architecture_loads_listing_strictly(released):
    """A state dict with exactly the listed names and shapes loads with strict=True (zero-stride
    tensors: no memory for 145 M values). Overwrites the fixture's weights: keep it last."""
    listing = _listing()["tensors"]
    dtypes = {"float32": torch.float32, "int64": torch.int64}
    fake = {k: torch.zeros((), dtype=dtypes[d]).expand(shape) for k, (shape, d) in listing.items()}
    result = released.model.load_state_dict(fake, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    assert torch.count_nonzero(released.model.conv0_x.weight) == 0


def _authors_module(monkeypatch, **vit_overrides):
    """The authors' MANIQA_RQI class, with timm forced to build the ViT without a download."""
    # rqi-iqa (import name ``rqi``): installed, it must import (its __init__ needs opencv);
    # missing, the test skips, or fails under PERCEPFID_REQUIRE_REFERENCES=1.
    MANIQA_RQI = require("rqi.models.maniqa").MANIQA_RQI  # noqa: N806 - the authors' class
    timm = require("timm")
    create = timm.create_model

    def offline_create(name, pretrained=False, **kwargs):
        return create(name, pretrained=False, **{**kwargs, **vit_overrides})

    monkeypatch.setattr(timm, "create_model", offline_create)
    return MANIQA_RQI


@pytest.mark.slow
def test_listing_equals_authors_module_layout(monkeypatch):
    maniqa_rqi = _authors_module(monkeypatch)
    state = maniqa_rqi().state_dict()
    got = {k: [list(v.shape), str(v.dtype).removeprefix("torch.")] for k, v in state.items()}
    assert got == _listing()["tensors"]


def test_matches_authors_module_outputs(monkeypatch):
    """The authors' model (small sizes, random weights) loaded into ours gives the same scores."""
    maniqa_rqi = _authors_module(monkeypatch, img_size=32, embed_dim=32, depth=10, num_heads=2)
    torch.manual_seed(1)
    theirs = maniqa_rqi(
        embed_dim=32, dim_mlp=32, img_size=32, patch_size=8, window_size=2, num_heads=[2, 2]
    ).eval()
    ours = MANIQARQI(
        img_size=32,
        vit_kwargs=dict(embed_dim=32, depth=10, num_heads=2),
        embed_dim=32,
        dim_mlp=32,
        window_size=2,
        num_heads=(2, 2),
    ).eval()
    ours.load_state_dict(theirs.state_dict(), strict=True)
    generator = torch.Generator().manual_seed(2)
    a, b = (
        torch.rand(3, 3, 32, 32, generator=generator),
        torch.rand(3, 3, 32, 32, generator=generator),
    )
    with torch.no_grad():
        expected = theirs((a - 0.5) / 0.5, (b - 0.5) / 0.5)  # their loader normalises outside
        got = ours(a, b)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-6)
    assert not torch.allclose(got, ours(b, a))  # the raw model is not antisymmetric


def test_transposed_attention_matches_formula():
    torch.manual_seed(0)
    block = TransposedAttention(6, drop=0.0).eval()
    x = torch.randn(2, 5, 6)
    q, k, v = block.c_q(x), block.c_k(x), block.c_v(x)
    expected = torch.empty_like(x)
    for i in range(2):
        attention = torch.softmax(q[i] @ k[i].T / 6**0.5, dim=-1)
        # the released model's read-back: transpose, then a row-major reshape
        expected[i] = (attention @ v[i]).T.contiguous().view(5, 6) + x[i]
    torch.testing.assert_close(block(x), expected)


def test_shift_mask_matches_brute_force():
    height = width = 6
    window, shift = 3, 1
    mask = _shift_mask(height, width, window, shift)
    assert mask.shape == ((height // window) * (width // window), window * window, window * window)

    def region(i: int, size: int) -> int:  # band of a shifted coordinate
        return 0 if i < size - window else (1 if i < size - shift else 2)

    for w_row in range(height // window):
        for w_col in range(width // window):
            cells = [
                (w_row * window + r, w_col * window + c)
                for r in range(window)
                for c in range(window)
            ]
            for p, (r1, c1) in enumerate(cells):
                for q, (r2, c2) in enumerate(cells):
                    same = (region(r1, height), region(c1, width)) == (
                        region(r2, height),
                        region(c2, width),
                    )
                    assert mask[w_row * (width // window) + w_col, p, q] == (
                        0.0 if same else -100.0
                    )


def test_window_attention_matches_explicit_softmax():
    torch.manual_seed(0)
    attention = WindowAttention(dim=8, window=2, num_heads=2).eval()
    x = torch.randn(4, 4, 8)  # 2 images x 2 windows, 4 tokens each
    mask = torch.tensor([[0.0, -100.0, 0.0, -100.0]]).expand(4, 4).clone()[None].repeat(2, 1, 1)
    mask[1] = 0.0
    qkv = attention.qkv(x).reshape(4, 4, 3, 2, 4).permute(2, 0, 3, 1, 4)
    q, k, v = qkv[0], qkv[1], qkv[2]
    bias = attention.relative_position_bias_table[attention.relative_position_index.flatten()]
    bias = bias.reshape(4, 4, 2).permute(2, 0, 1)
    logits = q @ k.transpose(-2, -1) / 2.0 + bias + mask.repeat(2, 1, 1)[:, None]
    expected = attention.proj((logits.softmax(-1) @ v).transpose(1, 2).reshape(4, 4, 8))
    torch.testing.assert_close(attention(x, mask), expected)


def test_relative_position_index_is_a_bijection_on_offsets():
    attention = WindowAttention(dim=4, window=3, num_heads=1)
    index = attention.relative_position_index
    assert index.shape == (9, 9) and index.dtype == torch.int64
    rows, cols = torch.div(torch.arange(9), 3, rounding_mode="floor"), torch.arange(9) % 3
    for p in range(9):
        for q in range(9):
            dr, dc = int(rows[p] - rows[q]), int(cols[p] - cols[q])
            assert int(index[p, q]) == (dr + 2) * 5 + (dc + 2)


def test_small_config_shapes_and_gradients():
    torch.manual_seed(0)
    model = MANIQARQI(**SMALL).eval()
    features = model.features(torch.rand(3, 3, 32, 32))
    assert features.shape == (3, 32 * 4, 4, 4)
    a = torch.rand(3, 3, 32, 32, requires_grad=True)
    out = model(a, torch.rand(3, 3, 32, 32))
    assert out.shape == (3,)
    out.sum().backward()
    assert a.grad is not None and torch.isfinite(a.grad).all() and a.grad.abs().sum() > 0


def test_wrong_input_size_names_the_expected_shape():
    model = MANIQARQI(**SMALL)
    with pytest.raises(ShapeError, match=r"\(B, 3, 32, 32\)"):
        model.features(torch.rand(1, 3, 40, 32))


def test_bad_config_raises():
    with pytest.raises(ArgumentError, match="feature_indices"):
        MANIQARQI(**{**SMALL, "feature_indices": (0, 9)})
    with pytest.raises(ArgumentError, match="num_heads"):
        MANIQARQI(**{**SMALL, "depths": (2, 2, 2)})


def test_evaluate_an_rqi_loss_that_does_not_crop_needs_crop_size(tiny_backbone_name):
    loss = RQILoss(tiny_backbone_name, head=RQIHead(192, hidden_dim=4), pretrained=False)
    assert loss.crop_size is None
    sr, gt = torch.rand(2, 3, 40, 48), torch.rand(2, 3, 40, 48)
    with pytest.raises(ArgumentError, match="pass crop_size="):
        evaluate(loss, sr, gt)
    scores = evaluate(loss, sr, gt, "official", crop_size=32)
    assert scores.shape == (2,) and torch.isfinite(scores).all()


def test_load_released_weights_from_local_file(tmp_path):
    torch.manual_seed(0)
    source = MANIQARQI(**SMALL).eval()
    path = tmp_path / "rqi_weights.pt"
    torch.save(source.state_dict(), path)
    loaded = create_maniqa_rqi(pretrained=True, weights=str(path), **SMALL)
    x, y = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded(x, y), source(x, y))
    # a checkpoint that does not fit is refused and the message names the keys
    state = source.state_dict()
    state.pop("conv0_x2.weight")
    torch.save(state, path)
    with pytest.raises(WeightsError, match="conv0_x2.weight"):
        load_released_weights(MANIQARQI(**SMALL), str(path))


def test_pretrained_offline_raises_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(WeightsError, match="shaolin999/rqi"):
        load_released_weights(MANIQARQI(**SMALL))
