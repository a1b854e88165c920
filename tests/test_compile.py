"""Every loss under ``torch.compile(..., fullgraph=True)``, in the way the README documents.

``fullgraph=True`` makes dynamo raise at the first graph break, so a call that returns at
all was captured whole; a compile counter also checks that a second batch (new random crop
positions included) reuses the graph instead of recompiling. Compiled values and gradients
are compared with the eager module's.

Backend: dynamo's ``'eager'`` backend (capture only, the captured graph run by eager
autograd) for the losses, and ``'aot_eager'`` (AOTAutograd: functionalisation and a traced
backward) for the crop cut alone. Graph breaks are a property of the capture, which every
backend shares; AOTAutograd on a whole model costs about 4x the capture, and inductor's C++
code generation minutes on two CPU cores, testing nothing more about breaks
(``benchmarks/gpu_check.sh`` compiles the losses with inductor on CUDA).

Also the crop pieces that make the random crop compile: :func:`percepfid.rqi.crop_at`
against plain slicing and :class:`percepfid.rqi.CropSampler` against ``aligned_crop``'s own
draws.
"""

from __future__ import annotations

import pytest
import torch
from srnets import TinyRRDBNet
from test_lora_nriqa import _random_q
from test_rqi_model import SMALL  # the small MANIQA-RQI architecture of the model tests
from torch import nn
from torch._dynamo.testing import CompileCounterWithBackend

from percepfid import ArgumentError, DTypeError, HLFLoss, LoRANRIQALoss, RQILoss, ShapeError
from percepfid.rqi import CropSampler, aligned_crop, crop_at, crop_offsets

TINY = "timm:vit_tiny_patch16_224.augreg_in21k"


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def _images(seed: int, batch: int = 2, height: int = 40, width: int = 48):
    generator = torch.Generator().manual_seed(seed)
    sr = torch.rand(batch, 3, height, width, generator=generator)
    return sr, torch.rand(batch, 3, height, width, generator=generator)


def _value_and_grad(fn, sr, *args, **kwargs):
    sr = sr.detach().clone().requires_grad_(True)
    value = fn(sr, *args, **kwargs)
    (grad,) = torch.autograd.grad(value.sum(), sr)
    return value.detach(), grad


# ------------------------------------------------------------------ crop pieces (eager)


def test_crop_at_is_plain_slicing_values_and_gradients():
    x = torch.rand(3, 2, 9, 11, generator=torch.Generator().manual_seed(0))
    offsets = torch.tensor([[[0, 0], [4, 6]], [[2, 3], [2, 3]], [[5, 1], [0, 6]]])  # (B, K, 2)
    expected = torch.stack(
        [x[i, :, t : t + 4, c : c + 4] for i in range(3) for t, c in offsets[i].tolist()]
    )
    got = crop_at(x, offsets, 4)
    assert got.shape == (6, 2, 4, 4) and torch.equal(got, expected)
    # (B, 2): one crop per image; gradients land where the crops were cut, summed on overlap
    leaf = x.clone().requires_grad_(True)
    weights = torch.rand(3, 2, 4, 4, generator=torch.Generator().manual_seed(1))
    (crop_at(leaf, offsets[:, 0], 4) * weights).sum().backward()
    expected_grad = torch.zeros_like(x)
    for i, (top, left) in enumerate(offsets[:, 0].tolist()):
        expected_grad[i, :, top : top + 4, left : left + 4] += weights[i]
    assert torch.equal(leaf.grad, expected_grad)


@pytest.mark.parametrize("shape", [(2, 40, 48), (3, 20, 28), (2, 32, 32), (1, 32, 75)])
def test_sampler_draws_what_aligned_crop_draws(shape):
    """Same seed: offsets from the sampler give the crops aligned_crop draws itself, for
    larger, smaller (upsampled first) and exactly crop-sized images."""
    a, b = _images(3, *shape)
    own = aligned_crop(a, b, 32, generator=torch.Generator().manual_seed(9))
    offsets = CropSampler(32, generator=torch.Generator().manual_seed(9))(a)
    assert offsets.shape == (shape[0], 2) and offsets.dtype == torch.long
    passed = aligned_crop(a, b, 32, offsets=offsets)
    assert torch.equal(own[0], passed[0]) and torch.equal(own[1], passed[1])
    if shape[1:] == (40, 48):  # drawn as crop_offsets draws: all tops, then all lefts
        assert torch.equal(offsets, crop_offsets(40, 48, 32, 2, torch.Generator().manual_seed(9)))
    sampler = CropSampler(32, seed=9, device="cpu")
    assert torch.equal(sampler(a.shape), offsets)  # a shape is enough; default seeded generator


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_sampler_puts_positions_on_the_device_and_crops_match_the_cpu():
    a, b = _images(3, 2, 40, 48)
    offsets = CropSampler(32, seed=5, device="cuda")(a)
    assert offsets.device.type == "cuda"
    cut = aligned_crop(a.cuda(), b.cuda(), 32, offsets=offsets)
    own = aligned_crop(a, b, 32, generator=torch.Generator().manual_seed(5))
    assert torch.equal(cut[0].cpu(), own[0]) and torch.equal(cut[1].cpu(), own[1])


def test_rqi_offsets_keep_exact_antisymmetry_and_match_the_generator_path():
    torch.manual_seed(0)
    rqi = RQILoss(pretrained=False, model_kwargs=SMALL)
    a, b = _images(4)
    offsets = CropSampler(32, generator=torch.Generator().manual_seed(2))(a)
    forward = rqi.score(a, b, offsets=offsets)
    assert torch.equal(forward, -rqi.score(b, a, offsets=offsets))
    assert torch.equal(forward, rqi.score(a, b, generator=torch.Generator().manual_seed(2)))


def test_bad_offsets_raise_typed_errors():
    a, b = _images(5)
    good = torch.zeros(2, 2, dtype=torch.long)
    with pytest.raises(ShapeError, match="offsets"):
        aligned_crop(a, b, 32, offsets=good[:1])
    with pytest.raises(DTypeError, match="offsets"):
        aligned_crop(a, b, 32, offsets=good.float())
    with pytest.raises(ArgumentError, match=r"top in \[0, 8\], left in \[0, 16\]"):
        aligned_crop(a, b, 32, offsets=torch.tensor([[0, 0], [9, 0]]))
    with pytest.raises(ArgumentError, match="crop='random' only"):
        aligned_crop(a, b, 32, mode="center", offsets=good)
    with pytest.raises(ShapeError, match=r"\(B, C, H, W\)"):
        CropSampler(32)((2, 40, 48))
    with pytest.raises(ArgumentError, match="crop size"):
        CropSampler(0)


# ------------------------------------------------------------------ fullgraph compiles


def test_random_crop_without_offsets_names_the_fix_under_fullgraph():
    def step(a, b):
        x, y = aligned_crop(a, b, 32)
        return (x - y).sum()

    with pytest.raises(Exception, match="CropSampler"):
        torch.compile(step, fullgraph=True, backend="eager")(*_images(6))


def test_crop_cut_compiles_with_aot_autograd_and_takes_new_positions_without_recompiling():
    counter = CompileCounterWithBackend("aot_eager")
    compiled = torch.compile(crop_at, fullgraph=True, backend=counter)
    x = torch.rand(2, 3, 12, 10, generator=torch.Generator().manual_seed(0))
    sampler = CropSampler(8, seed=4)
    for _ in range(3):
        offsets = sampler(x)
        value, grad = _value_and_grad(compiled, x, offsets, 8)
        expected, expected_grad = _value_and_grad(crop_at, x, offsets, 8)
        assert torch.equal(value, expected) and torch.equal(grad, expected_grad)
    assert counter.frame_count == 1


@pytest.mark.parametrize("crop", ["random", "center", "squash"])
def test_rqi_loss_compiles_whole_in_every_crop_mode(crop):
    torch.manual_seed(0)
    rqi = RQILoss(pretrained=False, model_kwargs=SMALL, crop=crop, reduction="none")
    counter = CompileCounterWithBackend("eager")
    compiled = torch.compile(rqi, fullgraph=True, backend=counter)
    sampler = CropSampler(rqi.crop_size, generator=torch.Generator().manual_seed(1))
    for seed in (7, 8):  # two batches: the second must reuse the graph
        sr, gt = _images(seed)
        kwargs = {"offsets": sampler(sr)} if crop == "random" else {}
        value, grad = _value_and_grad(compiled, sr, gt, **kwargs)
        expected, expected_grad = _value_and_grad(rqi, sr, gt, **kwargs)
        torch.testing.assert_close(value, expected, rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(grad, expected_grad, rtol=1e-4, atol=1e-7)
        swapped = compiled(gt.clone().requires_grad_(True), sr, **kwargs)  # same guards
        assert torch.equal(swapped, -value)  # exactly antisymmetric, compiled
    assert counter.frame_count == 1
    if crop == "random":  # the positions are the ones a generator of the same seed draws
        sr, gt = _images(7)
        own = -rqi.score(sr, gt, generator=torch.Generator().manual_seed(1))
        assert torch.equal(compiled(sr, gt, offsets=CropSampler(32, seed=1)(sr)), own)


@pytest.mark.parametrize(("embedding", "crop"), [("cls", None), ("patch", None), ("cls", "tiles")])
def test_hlf_loss_compiles_whole(embedding, crop):
    loss = HLFLoss(TINY, pretrained=False, image_size=32, embedding=embedding, crop=crop)
    counter = CompileCounterWithBackend("eager")
    compiled = torch.compile(loss, fullgraph=True, backend=counter)
    for seed in (1, 2):
        sr, gt = _images(seed)
        value, grad = _value_and_grad(compiled, sr, gt)
        expected, expected_grad = _value_and_grad(loss, sr, gt)
        torch.testing.assert_close(value, expected, rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(grad, expected_grad, rtol=1e-4, atol=1e-8)
    assert counter.frame_count == 1


def test_lora_nriqa_training_step_compiles_whole():
    """The step is the SR network (with LoRA adapters) and the loss, compiled together."""
    torch.manual_seed(0)
    crit = LoRANRIQALoss(TinyRRDBNet(), iqa=_random_q(), rank=2, weight=0.05, base_loss=nn.L1Loss())

    def step(lr, hr):
        return crit(crit.model(lr), hr)

    counter = CompileCounterWithBackend("eager")
    compiled = torch.compile(step, fullgraph=True, backend=counter)
    generator = torch.Generator().manual_seed(3)
    for _ in range(2):
        lr, hr = (
            torch.rand(2, 3, 8, 8, generator=generator),
            torch.rand(2, 3, 16, 16, generator=generator),
        )
        value = compiled(lr, hr)
        grads = torch.autograd.grad(value, crit.trainable_parameters())
        expected = step(lr, hr)
        expected_grads = torch.autograd.grad(expected, crit.trainable_parameters())
        torch.testing.assert_close(value, expected, rtol=1e-5, atol=1e-7)
        for got, want in zip(grads, expected_grads, strict=True):
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-8)
    assert counter.frame_count == 1
