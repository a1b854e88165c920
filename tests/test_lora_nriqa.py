"""LoRANRIQALoss: the formula, LoRA-only training, the reward raising Q, state dict, merge."""

from __future__ import annotations

import pytest
import torch
from conftest import require
from srnets import TinyPlainNet, TinyRRDBNet, TinySwinIR, register_tiny_clip
from torch import nn

from percepfid import ArgumentError, DTypeError, ShapeError
from percepfid.lora import lora_parameters
from percepfid.losses.lora_nriqa import LoRANRIQALoss


def _random_q() -> nn.Module:
    """A fixed random-weight NR model: a small conv net ending in a scalar per image."""
    generator = torch.Generator().manual_seed(1234)
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.Tanh(),
        nn.Conv2d(8, 8, 3, padding=1),
        nn.Tanh(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 1),
    )
    with torch.no_grad():
        for parameter in net.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.3)
    return net


class _ResidualSR(nn.Module):
    """A tiny RRDBNet around a bilinear upsampling skip: outputs start inside [0, 1], like a
    trained SR network's, so the clamp before Q does not cut the gradient."""

    def __init__(self) -> None:
        super().__init__()
        self.body = TinyRRDBNet()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        up = nn.functional.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
        return up + self.body(x)


def _lr_batch() -> torch.Tensor:
    return torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(7)) * 0.6 + 0.2


def test_forward_is_base_minus_weighted_q() -> None:
    q = _random_q()
    crit = LoRANRIQALoss(
        TinyRRDBNet(), iqa=q, rank=2, weight=0.05, q_scale=100.0, base_loss=nn.L1Loss()
    )
    sr = torch.rand(2, 3, 16, 16) * 1.4 - 0.2  # outside [0, 1]: clamped before Q
    hr = torch.rand(2, 3, 16, 16)
    with torch.no_grad():
        expected = (sr - hr).abs().mean() - 0.05 * 100.0 * q(sr.clamp(0, 1)).mean()
    torch.testing.assert_close(crit(sr, hr), expected)
    reward_only = LoRANRIQALoss(TinyRRDBNet(), iqa=q, rank=2, weight=0.5)
    torch.testing.assert_close(reward_only(sr, hr), -0.5 * q(sr.clamp(0, 1)).mean().detach())


def test_lower_is_better_model_is_negated() -> None:
    def darkness(x: torch.Tensor) -> torch.Tensor:
        return 1 - x.mean(dim=(1, 2, 3))

    crit = LoRANRIQALoss(
        TinyRRDBNet(), iqa=darkness, rank=2, weight=1.0, iqa_kwargs={"higher_is_better": False}
    )
    sr = torch.rand(2, 3, 8, 8)
    torch.testing.assert_close(crit(sr, sr), (1 - sr.mean(dim=(1, 2, 3))).mean())


def _train(crit: LoRANRIQALoss, lr_img: torch.Tensor, hr: torch.Tensor, steps: int, lr: float):
    optimiser = torch.optim.Adam(crit.trainable_parameters(), lr=lr)
    for _ in range(steps):
        optimiser.zero_grad()
        crit(crit.model(lr_img), hr).backward()
        optimiser.step()


def test_reward_raises_q_and_base_loss_can_pull_the_other_way() -> None:
    torch.manual_seed(0)
    q = _random_q()
    lr_img = _lr_batch()
    plain = _ResidualSR()
    with torch.no_grad():
        start_sr = plain(lr_img)
        start_q = q(start_sr.clamp(0, 1)).mean().item()
    assert 0 < start_sr.min() and start_sr.max() < 1

    # reward only: Q goes up
    net = _ResidualSR()
    net.load_state_dict(plain.state_dict())
    crit = LoRANRIQALoss(net, iqa=q, rank=4, weight=1.0)
    base = {n: p.detach().clone() for n, p in net.named_parameters() if ".lora_" not in n}
    _train(crit, lr_img, start_sr, steps=40, lr=3e-2)
    with torch.no_grad():
        rewarded_q = q(crit.model(lr_img).clamp(0, 1)).mean().item()
    assert rewarded_q > start_q + 0.03, (start_q, rewarded_q)  # measured: 0.747 -> 0.809
    for name, parameter in net.named_parameters():  # only the adapters moved
        if ".lora_" not in name:
            assert torch.equal(parameter, base[name]), name

    # a target of lower quality and a dominant base loss: Q goes down despite the reward
    hr = start_sr.detach().clone().clamp(0, 1).requires_grad_(True)
    for _ in range(20):
        (grad,) = torch.autograd.grad(q(hr).sum(), hr)
        hr = (hr - 0.05 * grad.sign()).clamp(0, 1).detach().requires_grad_(True)
    hr = hr.detach()
    assert q(hr).mean().item() < start_q - 0.1
    net = _ResidualSR()
    net.load_state_dict(plain.state_dict())
    crit = LoRANRIQALoss(net, iqa=q, rank=4, weight=1e-3, base_loss=nn.MSELoss())
    _train(crit, lr_img, hr, steps=40, lr=3e-2)
    with torch.no_grad():
        pulled_q = q(crit.model(lr_img).clamp(0, 1)).mean().item()
    assert pulled_q < start_q - 0.03, (start_q, pulled_q)  # measured: 0.747 -> 0.686


def test_q_stays_in_eval_and_frozen() -> None:
    crit = LoRANRIQALoss(TinySwinIR(dim=8), iqa=_random_q(), rank=2)
    crit.train()
    assert crit.model.training and not crit.iqa.training
    assert not any(p.requires_grad for p in crit.iqa.parameters())
    assert {id(p) for p in crit.trainable_parameters()} == {
        id(p) for p in crit.parameters() if p.requires_grad
    }
    assert {id(p) for p in crit.trainable_parameters()} == {
        id(p) for p in lora_parameters(crit.model)
    }


def test_state_dict_holds_only_adapters_and_round_trips() -> None:
    torch.manual_seed(2)
    crit = LoRANRIQALoss(TinyRRDBNet(), iqa=_random_q(), rank=2, base_loss=nn.L1Loss())
    _train(crit, _lr_batch(), torch.rand(2, 3, 16, 16), steps=2, lr=1e-2)
    state = crit.state_dict()
    assert state and all(".lora_" in key for key in state)
    assert len(state) == 2 * 15  # A and B of the 15 dense-block convs
    torch.manual_seed(2)
    other = LoRANRIQALoss(TinyRRDBNet(), iqa=_random_q(), rank=2, base_loss=nn.L1Loss())
    other.load_state_dict(state)  # strict: frozen entries are filled from the live module
    x = _lr_batch()
    assert torch.equal(other.model(x), crit.model(x))


def test_merge_gives_plain_network_with_same_outputs() -> None:
    crit = LoRANRIQALoss(TinySwinIR(), iqa=_random_q(), rank=3)
    _train(crit, _lr_batch(), torch.rand(2, 3, 16, 16), steps=3, lr=1e-2)
    merged = crit.merge()
    x = _lr_batch()
    torch.testing.assert_close(merged(x), crit.model(x), rtol=1e-5, atol=1e-5)
    assert not any("lora" in name for name, _ in merged.named_modules())


def test_clipiqa_reward_plumbing() -> None:
    require("open_clip")
    arch = register_tiny_clip()
    crit = LoRANRIQALoss(
        TinyRRDBNet(),
        iqa=f"clipiqa:{arch}",
        pretrained=False,
        weight=0.05,
        q_scale=100.0,
        base_loss=nn.L1Loss(),
    )
    loss = crit(crit.model(_lr_batch()), torch.rand(2, 3, 16, 16))
    loss.backward()
    grads = [p.grad for p in crit.trainable_parameters()]
    assert all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads)
    assert all(p.grad is None for p in crit.iqa.parameters())


def test_bad_inputs_raise_typed_errors() -> None:
    with pytest.raises(ArgumentError, match="neither"):
        LoRANRIQALoss(TinyPlainNet(), iqa=_random_q())
    with pytest.raises(ArgumentError, match="matches no"):
        LoRANRIQALoss(TinyRRDBNet(), iqa=_random_q(), targets=r"decoder\..*")
    with pytest.raises(DTypeError, match="model"):
        LoRANRIQALoss(lambda x: x, iqa=_random_q())
    with pytest.raises(DTypeError, match="weight"):
        LoRANRIQALoss(TinyRRDBNet(), iqa=_random_q(), weight="0.05")
    with pytest.raises(DTypeError, match="base_loss"):
        LoRANRIQALoss(TinyRRDBNet(), iqa=_random_q(), base_loss=1.0)
    crit = LoRANRIQALoss(TinyRRDBNet(), iqa=_random_q(), rank=2)
    with pytest.raises(ShapeError, match="same shape"):
        crit(torch.rand(2, 3, 16, 16), torch.rand(2, 3, 8, 8))
    with pytest.raises(ShapeError, match="^gt "):
        crit(torch.rand(2, 3, 16, 16), torch.rand(3, 16, 16))
