"""LoRA injection: presets hit exactly the intended layers, only adapters train, merge, files."""

from __future__ import annotations

import pytest
import torch
from safetensors import safe_open
from srnets import (
    RRDB_DENSE_CONVS,
    SWINIR_MLP_LAYERS,
    TinyPlainNet,
    TinyRRDBNet,
    TinySwinIR,
)
from torch import nn

from percepfid import ArgumentError, DTypeError, UnknownNameError, WeightsError
from percepfid.lora import (
    find_lora_targets,
    has_lora,
    inject_lora,
    load_lora,
    lora_layer_names,
    lora_parameters,
    merge_lora,
    save_lora,
)

NETS = [
    (TinySwinIR, SWINIR_MLP_LAYERS, "swinir-mlp", 48),
    (TinyRRDBNet, RRDB_DENSE_CONVS, "rrdb-convs", 24),
]


def _image(size: int = 8) -> torch.Tensor:
    return torch.rand(2, 3, size, size)


@pytest.mark.parametrize(("net_cls", "expected", "preset", "rank"), NETS)
def test_presets_hit_exactly_the_intended_layers(net_cls, expected, preset, rank) -> None:
    net = net_cls()
    assert find_lora_targets(net, preset) == expected(net)
    assert find_lora_targets(net, "auto") == expected(net)
    inject_lora(net)
    assert lora_layer_names(net) == expected(net)
    # the preset's paper rank: A maps to `rank` channels
    first = net.get_submodule(expected(net)[0])
    assert next(iter(first.lora_A.values())).weight.shape[0] == rank


def test_presets_scale_with_depth_and_exclude_head_trunk_upsampler() -> None:
    net = TinyRRDBNet(blocks=3)
    found = find_lora_targets(net, "rrdb-convs")
    assert len(found) == 3 * 3 * 5
    assert not {"first", "trunk_conv", "up1", "hr", "last"} & set(found)
    swin = TinySwinIR(groups=3, depth=3)
    found = find_lora_targets(swin, "swinir-mlp")
    assert len(found) == 3 * 3 * 2
    assert not any("to_qkv" in n or n.endswith(".out") or "tail" in n for n in found)


def test_preset_that_does_not_apply_raises() -> None:
    with pytest.raises(ArgumentError, match="residual dense block"):
        find_lora_targets(TinySwinIR(), "rrdb-convs")
    with pytest.raises(ArgumentError, match="transformer MLP"):
        find_lora_targets(TinyRRDBNet(), "swinir-mlp")
    with pytest.raises(ArgumentError, match="neither"):
        inject_lora(TinyPlainNet())


def test_regex_list_and_predicate_targets() -> None:
    net = TinyPlainNet()
    assert find_lora_targets(net, r"body\.[02]") == ["body.0", "body.2"]
    assert find_lora_targets(net, ["body.2"]) == ["body.2"]
    assert find_lora_targets(net, lambda name, m: m.out_channels == 3) == ["body.2"]
    with pytest.raises(ArgumentError, match="matches no"):
        find_lora_targets(net, r"head\..*")
    with pytest.raises(ArgumentError, match="not Linear/Conv"):
        find_lora_targets(net, ["body.1"])
    with pytest.raises(UnknownNameError, match="swinir-mlp"):
        find_lora_targets(net, "swinir_mlp")
    with pytest.raises(DTypeError):
        find_lora_targets(net, 3)


@pytest.mark.parametrize(("net_cls", "expected", "preset", "rank"), NETS)
def test_fresh_adapters_change_nothing(net_cls, expected, preset, rank) -> None:
    net = net_cls()
    x = _image()
    before = net(x)
    inject_lora(net, preset)
    assert torch.equal(net(x), before)


@pytest.mark.parametrize(("net_cls", "expected", "preset", "rank"), NETS)
def test_only_adapters_get_gradients_and_base_stays_bit_identical(
    net_cls, expected, preset, rank
) -> None:
    net = net_cls()
    inject_lora(net, preset, rank=4)
    base = {n: p.detach().clone() for n, p in net.named_parameters() if ".lora_" not in n}
    adapters = lora_parameters(net)
    assert {id(p) for p in adapters} == {id(p) for p in net.parameters() if p.requires_grad}
    # the optimiser sees every parameter, with weight decay: frozen ones must not move
    optimiser = torch.optim.AdamW(net.parameters(), lr=1e-2, weight_decay=0.1)
    x, target = _image(), torch.rand(2, 3, 16, 16)
    for _ in range(3):
        optimiser.zero_grad()
        nn.functional.mse_loss(net(x), target).backward()
        for name, parameter in net.named_parameters():
            if ".lora_" in name:
                assert parameter.grad is not None, name
            else:
                assert parameter.grad is None, name
        optimiser.step()
    for name, parameter in net.named_parameters():
        if ".lora_" not in name:
            assert torch.equal(parameter, base[name]), name
    assert any(p.abs().sum() > 0 for n, p in net.named_parameters() if ".lora_B" in n)


def _train_a_little(net: nn.Module, steps: int = 3) -> None:
    optimiser = torch.optim.Adam(lora_parameters(net), lr=5e-2)
    x, target = _image(), torch.rand(2, 3, 16, 16)
    for _ in range(steps):
        optimiser.zero_grad()
        nn.functional.l1_loss(net(x), target).backward()
        optimiser.step()


@pytest.mark.parametrize(("net_cls", "expected", "preset", "rank"), NETS)
def test_merge_returns_plain_model_with_same_outputs(net_cls, expected, preset, rank) -> None:
    net = net_cls()
    inject_lora(net, preset, rank=4, alpha=8.0)
    _train_a_little(net)
    x = _image()
    adapted = net(x)
    merged = merge_lora(net)
    assert not has_lora(merged)
    assert all(type(merged.get_submodule(n)) in (nn.Linear, nn.Conv2d) for n in expected(net))
    torch.testing.assert_close(merged(x), adapted, rtol=1e-5, atol=1e-5)
    assert has_lora(net)  # the default merges a copy
    assert all(p.requires_grad for p in merged.parameters())
    assert set(merged.state_dict()) == set(net_cls().state_dict())


def test_merged_weight_equals_hand_computed_update() -> None:
    net = nn.Sequential(nn.Linear(6, 5))
    inject_lora(net, ["0"], rank=2, alpha=6.0)
    layer = net[0]
    a, b = layer.lora_A["default"].weight, layer.lora_B["default"].weight
    with torch.no_grad():
        b.normal_()
        a.normal_()
    expected = layer.base_layer.weight + (6.0 / 2) * b @ a
    merged = merge_lora(net, inplace=True)
    assert merged is net and isinstance(net[0], nn.Linear)
    torch.testing.assert_close(net[0].weight, expected)


@pytest.mark.parametrize(("net_cls", "expected", "preset", "rank"), NETS)
def test_save_and_load_adapters_alone(tmp_path, net_cls, expected, preset, rank) -> None:
    torch.manual_seed(1)
    net = net_cls()
    inject_lora(net, preset, rank=3)
    _train_a_little(net)
    path = save_lora(net, tmp_path / "adapter.safetensors")
    with safe_open(str(path), framework="pt") as handle:
        keys = set(handle.keys())
        metadata = handle.metadata()
    assert keys and all(".lora_" in k for k in keys)
    assert len(keys) == 2 * len(expected(net))
    assert metadata["rank"] == "3"
    torch.manual_seed(1)
    fresh = net_cls()  # same base weights, no adapters
    load_lora(fresh, path)
    x = _image()
    assert torch.equal(fresh(x), net(x))
    # loading into an already adapted model overwrites the adapters
    torch.manual_seed(1)
    other = net_cls()
    inject_lora(other, preset, rank=3)
    load_lora(other, path)
    assert torch.equal(other(x), net(x))


def test_load_rejects_wrong_architecture_and_foreign_files(tmp_path) -> None:
    net = TinyRRDBNet()
    inject_lora(net, rank=2)
    path = save_lora(net, tmp_path / "rrdb.safetensors")
    with pytest.raises(WeightsError, match="does not fit"):
        load_lora(TinySwinIR(), path)
    with pytest.raises(WeightsError, match="does not match"):
        wider = TinyRRDBNet()
        inject_lora(wider, rank=5)
        load_lora(wider, path)
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(1)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(WeightsError, match="not a percepfid LoRA file"):
        load_lora(TinyRRDBNet(), tmp_path / "other.safetensors")
    with pytest.raises(WeightsError, match="does not exist"):
        load_lora(TinyRRDBNet(), tmp_path / "missing.safetensors")


def test_bad_arguments() -> None:
    with pytest.raises(ArgumentError, match="rank"):
        inject_lora(TinyRRDBNet(), rank=0)
    with pytest.raises(ArgumentError, match="alpha"):
        inject_lora(TinyRRDBNet(), alpha=-1.0)
    net = TinyRRDBNet()
    inject_lora(net, rank=2)
    with pytest.raises(ArgumentError, match="already holds"):
        inject_lora(net)
    with pytest.raises(ArgumentError, match="no LoRA"):
        lora_parameters(TinyRRDBNet())
    with pytest.raises(ArgumentError, match="nothing to merge"):
        merge_lora(TinyRRDBNet())
