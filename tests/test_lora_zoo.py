"""LoRA on every SR architecture of spandrel's main package (random weights, tiny sizes).

For each architecture: ``targets='auto'`` adapts layers inside repeated blocks and never
the stem or the upsampler (checked by running the network, independently of how the
presets decide); fresh adapters leave the output unchanged; a few optimiser steps move
only adapter tensors (buffers included) and do change the output; the merged network
matches the adapted one, holds no LoRA, and its state dict, written to a file, loads back
through spandrel's own detection as the same architecture with the same outputs; adapters
saved alone load into a fresh copy. The README's coverage row is checked too.
"""

from __future__ import annotations

import copy
import importlib.util
import re
import sys
from pathlib import Path

import pytest
import torch
from conftest import require
from torch import nn

require("spandrel")
require("peft")

import spandrel  # noqa: E402

from percepfid import ArgumentError, DTypeError, MissingDependencyError, WeightsError  # noqa: E402
from percepfid.lora import (  # noqa: E402
    PRESET_RANKS,
    find_lora_targets,
    has_lora,
    inject_lora,
    load_lora,
    load_sr_model,
    lora_family,
    lora_parameters,
    merge_lora,
    save_lora,
    save_sr_model,
)

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from sr_zoo import first_output, zoo  # noqa: E402


def _coverage_module():
    spec = importlib.util.spec_from_file_location(
        "lora_coverage", ROOT / "benchmarks" / "lora_coverage.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


COVERAGE = _coverage_module()
ZOO = zoo()
# The architectures the issue names, which must stay in the zoo.
REQUIRED = {
    "SwinIR", "HAT", "Swin2SR", "DAT", "ATD", "DRCT", "RGT", "CRAFT", "ESRGAN", "RCAN",
    "Compact", "SPAN", "PLKSR", "RealPLKSR", "OmniSR", "SAFMN", "RealCUGAN", "DITN", "MoSR",
}  # fmt: skip
EXPECTED_FAMILY = {
    **dict.fromkeys(["SwinIR", "HAT", "Swin2SR", "DAT", "ATD", "DRCT", "RGT", "CRAFT"], "transformer-mlp"),
    **dict.fromkeys(["ESRGAN", "RCAN"], "residual-convs"),
    **dict.fromkeys(["Compact", "SPAN", "PLKSR", "RealPLKSR", "OmniSR", "SAFMN"], "body-convs"),
}  # fmt: skip


def _run(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return first_output(net(x.clone()))  # RCAN scales its input in place


def _forward_facts(net: nn.Module, x: torch.Tensor) -> tuple[list[str], set[str]]:
    """Layers in the order a training-mode forward pass calls them (all experts of a
    mixture, the training branches of re-parameterised blocks), and the layers whose output
    goes straight into a PixelShuffle (the upsampler). Runs on a copy."""
    net = copy.deepcopy(net).train()
    for module in net.modules():  # as while fine-tuning: batch norms use their statistics
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eval()
    called: list[str] = []
    outputs: dict[int, tuple[str, torch.Tensor]] = {}
    upsampler: set[str] = set()
    hooks = []
    for name, module in net.named_modules():
        if isinstance(module, (nn.Linear, nn.Conv2d)):

            def record(m, args, out, name=name):
                called.append(name)
                outputs[id(out)] = (name, out)  # keep `out` alive: ids are not reused

            hooks.append(module.register_forward_hook(record))
        if isinstance(module, nn.PixelShuffle):

            def shuffle(m, args):
                if id(args[0]) in outputs:
                    upsampler.add(outputs[id(args[0])][0])

            hooks.append(module.register_forward_pre_hook(shuffle))
    with torch.no_grad():
        _run(net, x)
    for hook in hooks:
        hook.remove()
    return called, upsampler


def _in_repeated_block(net: nn.Module, name: str) -> bool:
    """Some enclosing module's class occurs at least twice in the network (a repeated block),
    or the layer is one of several identical layers in a list."""
    counts: dict[type, int] = {}
    for module in net.modules():
        counts[type(module)] = counts.get(type(module), 0) + 1
    parts = name.split(".")
    for i in range(1, len(parts)):
        module = net.get_submodule(".".join(parts[:i]))
        if counts[type(module)] >= 2 and not type(module).__module__.startswith("torch."):
            return True
        if isinstance(module, (nn.Sequential, nn.ModuleList)) and i == len(parts) - 1:
            layer = net.get_submodule(name)
            twins = [c for c in module.children() if type(c) is type(layer) and c is not layer]
            if any(c.weight.shape == layer.weight.shape for c in twins):
                return True
    return False


def _non_lora_state(net: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in net.state_dict().items() if ".lora_" not in k}


def _readme_rows() -> dict[str, str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    start = text.index(COVERAGE.HEADER)
    lines = text[start:].splitlines()[2:]
    rows = {}
    for line in lines:
        if not line.startswith("|"):
            break
        rows[line.split("|")[1].strip()] = line
    return rows


def test_zoo_holds_every_required_architecture_and_the_readme_lists_it() -> None:
    assert REQUIRED <= set(ZOO)
    assert list(_readme_rows()) == list(ZOO), (
        "README coverage table and benchmarks/sr_zoo.py differ"
    )


@pytest.mark.parametrize("name", list(ZOO))
def test_auto_lora_on_the_zoo(name: str, tmp_path: Path) -> None:
    entry = ZOO[name]
    torch.manual_seed(0)
    net = entry.tiny().eval()
    base_state = copy.deepcopy(net.state_dict())
    x = torch.rand(1, 3, entry.size, entry.size)
    base = _run(net, x)
    called, upsampler = _forward_facts(net, x)

    # where the adapters go
    family = lora_family(net)
    if name in EXPECTED_FAMILY:
        assert family == EXPECTED_FAMILY[name]
    layers = find_lora_targets(net, "auto")
    assert layers
    assert called[0] not in layers, "the stem must not be adapted"
    assert called[-1] not in layers, "the output layer must not be adapted"
    assert not upsampler & set(layers), "the upsampler must not be adapted"
    outside = [n for n in layers if not _in_repeated_block(net, n)]
    assert not outside, f"adapted outside repeated blocks: {outside}"
    assert set(layers) <= set(called), "every adapted layer takes part in the forward pass"

    # fresh adapters change nothing
    inject_lora(net, "auto")
    rank = PRESET_RANKS[family]
    assert next(iter(net.get_submodule(layers[0]).lora_A.values())).weight.shape[0] == rank
    adapter_count = sum(p.numel() for p in lora_parameters(net))
    assert adapter_count == COVERAGE.adapter_size(merge_lora(net), layers, rank)
    assert (_run(net, x) - base).abs().max() <= 1e-6

    # a few steps move only adapter tensors (parameters and buffers), and move the output
    frozen = _non_lora_state(net)
    net.train()
    optimiser = torch.optim.Adam(lora_parameters(net), lr=1e-2)
    for _ in range(3):
        out = _run(net, x)
        loss = (out - torch.rand_like(out)).abs().mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    after = _non_lora_state(net)
    assert set(after) == set(frozen)
    moved = [k for k in frozen if not torch.equal(frozen[k], after[k])]
    assert not moved, f"frozen tensors changed: {moved[:5]}"
    # a re-parameterised network (SPAN) re-derives its inference convs from the base weights
    # in eval(): its unmerged adapters act in train() mode; merging carries them over.
    net.train(entry.reparam)
    with torch.no_grad():
        adapted = _run(net, x)
    assert (adapted - base).abs().max() > 1e-5, "training the adapters must change the output"

    # merge: plain network, same outputs
    merged = merge_lora(net).eval()
    assert not has_lora(merged) and has_lora(net)
    assert set(merged.state_dict()) == set(base_state)
    with torch.no_grad():
        merged_out = _run(merged, x)
    scale = max(1.0, adapted.abs().max().item())
    assert (merged_out - adapted).abs().max() <= 1e-4 * scale

    # checkpoint out: spandrel detects the same architecture and gives the same outputs
    with pytest.raises(ArgumentError, match="still holds LoRA"):
        save_sr_model(net, tmp_path / "adapted.safetensors")
    path = save_sr_model(merged, tmp_path / "merged.safetensors")
    reloaded = load_sr_model(path).eval()
    assert type(reloaded) is type(merged)
    with torch.no_grad():
        torch.testing.assert_close(_run(reloaded, x), merged_out, rtol=1e-5, atol=1e-5)

    # adapters alone: a fresh copy of the base network plus the file gives the adapted net
    adapter_file = save_lora(net, tmp_path / "adapters.safetensors")
    fresh = entry.tiny()
    fresh.load_state_dict(base_state)
    load_lora(fresh, adapter_file)
    fresh.train(entry.reparam)
    net.train(entry.reparam)
    with torch.no_grad():
        torch.testing.assert_close(_run(fresh, x), _run(net, x), rtol=1e-6, atol=1e-6)

    # the README row (reference configuration; the round trip is what this test just did)
    row = COVERAGE.format_row(COVERAGE.reference_row(entry), round_trip=True)
    assert _readme_rows()[name] == row


def test_aliases_and_explicit_presets_that_find_nothing() -> None:
    swinir = ZOO["SwinIR"].tiny()
    esrgan = ZOO["ESRGAN"].tiny()
    assert find_lora_targets(swinir, "swinir-mlp") == find_lora_targets(swinir, "transformer-mlp")
    assert find_lora_targets(esrgan, "rrdb-convs") == find_lora_targets(esrgan, "residual-convs")
    # ESRGAN's dense convs sit in Sequential(conv, LeakyReLU) wrappers: 5 per dense block
    assert len(find_lora_targets(esrgan, "residual-convs")) == 2 * 3 * 5
    with pytest.raises(ArgumentError, match=r"'transformer-mlp' \(8 layers\)"):
        find_lora_targets(swinir, "residual-convs")
    with pytest.raises(ArgumentError, match=r"'residual-convs' \(30 layers\)"):
        find_lora_targets(esrgan, "transformer-mlp")
    # DAT: the spatial-gate FFN (fc1 d->h, fc2 h/2->d) is found, attention qkv/proj are not
    dat = ZOO["DAT"].tiny()
    found = find_lora_targets(dat, "transformer-mlp")
    assert found and all(re.search(r"\.ffn\.fc[12]$", n) for n in found)


class _MyConv(nn.Conv2d):
    """A custom conv class (subclass), as some code bases define."""


class _WrappedDense(nn.Module):
    def __init__(self, c: int = 8, g: int = 4) -> None:
        super().__init__()
        self.convs = nn.ModuleList(
            nn.Sequential(_MyConv(c + i * g, g if i < 3 else c, 3, padding=1), nn.LeakyReLU())
            for i in range(4)
        )

    def forward(self, x):
        feats = [x]
        for conv in self.convs[:-1]:
            feats.append(conv(torch.cat(feats, 1)))
        return x + self.convs[-1](torch.cat(feats, 1))


def test_wrapped_custom_convs_in_dense_blocks_are_found() -> None:
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        _WrappedDense(),
        _WrappedDense(),
        nn.Conv2d(8, 3, 3, padding=1),
    )
    # the dense block's convs are children of a ModuleList, each inside Sequential(conv, act)
    found = find_lora_targets(net, "auto")
    assert found == [f"{b}.convs.{i}.0" for b in (1, 2) for i in range(4)]
    assert lora_family(net) == "residual-convs"


def test_batch_norm_statistics_stay_frozen_and_merge_releases_them() -> None:
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        *[
            nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
            for _ in range(2)
        ],
        nn.Conv2d(8, 3, 3, padding=1),
    )
    inject_lora(net, r"[12]\.0", rank=2)
    before = net[1][1].running_mean.clone()
    net.train()
    net(torch.rand(2, 3, 8, 8) * 5).sum().backward()
    assert torch.equal(net[1][1].running_mean, before)
    merged = merge_lora(net).train()
    merged(torch.rand(2, 3, 8, 8) * 5)
    assert not torch.equal(merged[1][1].running_mean, before)


def test_load_sr_model_accepts_modules_descriptors_and_paths(tmp_path: Path) -> None:
    torch.manual_seed(0)
    net = ZOO["Compact"].tiny().eval()
    assert load_sr_model(net) is net
    path = tmp_path / "compact.pth"
    torch.save(net.state_dict(), path)
    descriptor = spandrel.ModelLoader().load_from_file(path)
    assert load_sr_model(descriptor) is descriptor.model
    loaded = load_sr_model(str(path))
    x = torch.rand(1, 3, 8, 8)
    torch.testing.assert_close(loaded(x), net(x))
    # inject_lora takes a path too and returns the network it loaded
    adapted = inject_lora(path)
    assert has_lora(adapted) and type(adapted) is type(net)
    with pytest.raises(WeightsError, match="does not exist"):
        load_sr_model(tmp_path / "missing.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match="spandrel cannot load"):
        load_sr_model(tmp_path / "junk.pth")
    with pytest.raises(DTypeError, match="spandrel ImageModelDescriptor"):
        load_sr_model(3)


def test_load_sr_model_without_spandrel_names_the_extra(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "spandrel", None)
    with pytest.raises(MissingDependencyError, match=r"percepfid\[sr\]"):
        load_sr_model(tmp_path / "model.pth")


def test_lora_nriqa_loss_takes_a_checkpoint(tmp_path: Path) -> None:
    from percepfid import LoRANRIQALoss

    torch.manual_seed(0)
    net = ZOO["SwinIR"].tiny().eval()
    path = save_sr_model(net, tmp_path / "swinir.safetensors")
    crit = LoRANRIQALoss(path, iqa=lambda img: img.mean(dim=(1, 2, 3)), base_loss=nn.L1Loss())
    assert type(crit.model) is type(net) and has_lora(crit.model)
    descriptor = spandrel.ModelLoader().load_from_file(path)
    crit = LoRANRIQALoss(descriptor, iqa=lambda img: img.mean(dim=(1, 2, 3)))
    assert crit.model is descriptor.model and has_lora(descriptor.model)


def test_importing_percepfid_lora_does_not_import_spandrel() -> None:
    import subprocess

    code = "import sys, percepfid, percepfid.lora; print('spandrel' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False", out.stdout + out.stderr
