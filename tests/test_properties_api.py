"""Property test of the public API (issue 11, "Done when"): every constructor and call of the
four losses, the sampler, the AMO selector and the kernel, driven with generated good and
bad arguments, returns a finite result of the documented shape or raises a
PercepfidError subclass; no other exception type escapes."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_rqi_model import SMALL  # the small MANIQA-RQI architecture of the model tests
from torch import nn

from percepfid import (
    ArgmaxPatchSelector,
    HLFLoss,
    IQAWeightedSampler,
    LoRANRIQALoss,
    PercepfidError,
    RQILoss,
)
from percepfid.kernels import cosine_similarity
from percepfid.rqi import RQIHead

SETTINGS = settings(
    max_examples=30,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def _outcome(call):
    """Run ``call``: its result, or None when it raised a PercepfidError. Any other
    exception fails the test (it propagates)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return call()
    except PercepfidError:
        return None


def _assert_finite(value: torch.Tensor, shape: tuple[int, ...]) -> None:
    assert isinstance(value, torch.Tensor)
    assert tuple(value.shape) == shape, (tuple(value.shape), shape)
    assert torch.isfinite(value).all(), value


@st.composite
def arguments(draw, **options):
    """Keyword arguments, each drawn from its ``(good, bad)`` strategies: all good, or one
    of them (chosen by Hypothesis) bad, so both the call path and every refusal are met."""
    bad = draw(st.sampled_from([None] * len(options) + list(options)))
    return {
        name: draw(choices[1] if name == bad else choices[0]) for name, choices in options.items()
    }


def _sample(*values):
    return st.sampled_from(list(values))


def _reduced_shape(reduction: str, batch: int) -> tuple[int, ...]:
    return (batch,) if reduction == "none" else ()


# ----------------------------------------------------------------------- shared arguments

REDUCTIONS = (_sample("mean", "sum", "none"), _sample("avg", "", None, 1))
WEIGHTS = (
    st.one_of(st.floats(0, 1e3), _sample(2, np.float64(0.5))),
    _sample(-1.0, math.nan, math.inf, "1", None, True),
)
RANGES = (
    _sample((0.0, 1.0), (-1, 1), (0, 255), [0.0, 2.0]),
    _sample((1, 0), (0, math.nan), (0,), "ab", None, (0, math.inf)),
)


@st.composite
def image_pairs(draw, input_range=(0.0, 1.0)):
    """``(sr, gt)``: aligned good pairs of any float dtype and layout, and bad ones."""
    batch = draw(st.integers(1, 2))
    height, width = draw(st.integers(1, 40)), draw(st.integers(1, 40))
    dtype = draw(st.sampled_from([torch.float32, torch.float64, torch.float16, torch.bfloat16]))
    low, high = input_range if isinstance(input_range, tuple) else (0.0, 1.0)
    rng = torch.Generator().manual_seed(draw(st.integers(0, 2**32)))
    shape = (batch, 3, height, width)
    sr = torch.rand(shape, dtype=torch.float64, generator=rng) * (high - low) + low
    gt = torch.rand(shape, dtype=torch.float64, generator=rng) * (high - low) + low
    sr, gt = sr.to(dtype), gt.to(draw(st.sampled_from([dtype, torch.float32])))
    flaw = draw(
        st.sampled_from(
            [None] * 10
            + [
                "transposed",
                "nan",
                "range",
                "int",
                "empty",
                "rank",
                "channels",
                "mismatch",
                "list",
                "none",
            ]
        )
    )
    if flaw == "transposed":  # a non-contiguous view: still good
        sr = sr.transpose(2, 3).contiguous().transpose(2, 3)
    elif flaw == "nan":
        sr = sr.clone()
        sr[0, 0, 0, 0] = math.nan
    elif flaw == "range":
        sr = sr + (high - low) * 3
    elif flaw == "int":
        sr = (sr.float() * 255).to(torch.uint8)
    elif flaw == "empty":
        sr, gt = sr[:0], gt[:0]
    elif flaw == "rank":
        sr, gt = sr[0], gt[0]
    elif flaw == "channels":
        sr, gt = sr[:, :1], gt[:, :1]
    elif flaw == "mismatch":
        gt = gt[..., : max(1, width - 1)] if width > 1 else torch.cat([gt, gt], dim=-1)
    elif flaw == "list":
        sr = sr.tolist()
    elif flaw == "none":
        gt = None
    return sr, gt


class TinyEncoder(nn.Module):
    """A fast user backbone: any image size -> (B, 6) pooled and (B, 4, 6) tokens."""

    embed_dim = 6
    token_dim = 6

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, padding=1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        tokens = nn.functional.adaptive_avg_pool2d(self.conv(x), 2).flatten(2).transpose(1, 2)
        return tokens.mean(1), tokens


class TinyIQA(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x).mean(dim=(1, 2, 3))


# --------------------------------------------------------------------------------- HLFLoss


@pytest.fixture(scope="module")
def tiny_hlf(tiny_backbone_name):
    return HLFLoss(tiny_backbone_name, pretrained=False, image_size=32, reduction="none")


HLF_OPTIONS = dict(
    backbone=(_sample("module", "module", "tiny"), _sample("no-such-backbone", "timm:", 3, None)),
    embedding=(_sample("cls", "patch", "cls+patch"), _sample("token", 1, None)),
    crop=(_sample(None, "center", "squash", "tiles"), _sample("random", 4, "")),
    reduction=REDUCTIONS,
    weight=WEIGHTS,
    input_range=RANGES,
    eps=(_sample(1e-8, 1.0, 1e-3), _sample(0.0, -1.0, math.nan, "x")),
    image_size=(
        _sample(None, 32, (32, 48), np.int64(32)),
        _sample(32.0, 0, (32,), "32", 30, (32, 32, 32), -16),
    ),
    kernel=(_sample("auto", "torch"), _sample("cuda", None, "Torch")),
)


@SETTINGS
@given(args=arguments(**HLF_OPTIONS), data=st.data())
def test_hlf_constructor_and_call(tiny_backbone_name, args, data):
    backbone = args.pop("backbone")
    if backbone == "module":
        backbone = TinyEncoder()
    elif backbone == "tiny":
        backbone = tiny_backbone_name
    loss = _outcome(lambda: HLFLoss(backbone, pretrained=False, **args))
    if loss is None:
        return
    sr, gt = data.draw(image_pairs(loss.input_range))
    out = _outcome(lambda: loss(sr, gt))
    if out is not None:
        _assert_finite(out, _reduced_shape(loss.reduction, sr.shape[0]))
    fidelity = _outcome(lambda: loss.fidelity(sr, gt))
    if fidelity is not None:
        _assert_finite(fidelity, (sr.shape[0],))
        assert (fidelity.abs() <= 1 + 1e-5).all()


@SETTINGS
@given(pair=image_pairs(), reuse=st.booleans())
def test_hlf_calls_on_a_registered_backbone(tiny_hlf, pair, reuse):
    sr, gt = pair
    if reuse:
        reference = _outcome(lambda: tiny_hlf.embed_reference(gt))
        if reference is None:
            return
        gt = reference
    out = _outcome(lambda: tiny_hlf(sr, gt))
    if out is not None:
        _assert_finite(out, (sr.shape[0],))


# --------------------------------------------------------------------------------- RQILoss

RQI_OPTIONS = dict(
    backbone=(_sample(None, "module"), _sample("no-such-backbone", 2)),
    head=(_sample(None, "head"), _sample("no/such/folder", 3, "")),
    antisymmetric=(st.booleans(), st.booleans()),
    reduction=REDUCTIONS,
    weight=WEIGHTS,
    input_range=RANGES,
    crop=(_sample("random", "center", "resize"), _sample("tiles", None)),
    crop_size=(_sample(None, np.int64(32)), _sample(16, 0, -3, 32.0, "32")),
    generator=(_sample(None, "generator"), _sample(0, "gen")),
    seed=(_sample(0, 2**64 - 1, np.int64(3)), _sample(2**64, -1, "a", 1.5, None)),
    embedding=(_sample("cls", "patch"), _sample("cls+patch", None)),
    train_head=(st.booleans(), st.booleans()),
)


@SETTINGS
@given(args=arguments(**RQI_OPTIONS), data=st.data())
def test_rqi_constructor_and_call(args, data):
    if args["backbone"] == "module":
        args["backbone"] = TinyEncoder()
    else:
        args["crop_size"] = None if args["crop_size"] == np.int64(32) else args["crop_size"]
    if args["head"] == "head":
        args["head"] = RQIHead(6, hidden_dim=4, dropout=0.25)
    if args["generator"] == "generator":
        args["generator"] = torch.Generator().manual_seed(1)
    small = SMALL if args["backbone"] is None else None
    loss = _outcome(lambda: RQILoss(pretrained=False, model_kwargs=small, **args))
    if loss is None:
        return
    loss.train(data.draw(st.booleans()))
    sr, gt = data.draw(image_pairs(loss.input_range))
    out = _outcome(lambda: loss(sr, gt))
    if out is not None:
        _assert_finite(out, _reduced_shape(loss.reduction, sr.shape[0]))
    score = _outcome(lambda: loss.score(sr, gt))
    if score is not None:
        _assert_finite(score, (sr.shape[0],))


# --------------------------------------------------------------------------- LoRANRIQALoss

LORA_OPTIONS = dict(
    model=(_sample("net"), _sample("net-no-conv", None)),
    iqa=(_sample("module", "callable"), _sample("no-such-iqa", 3)),
    rank=(_sample(None, 1, 4, np.int64(2)), _sample(0, -2, 2.5)),
    alpha=(_sample(None, 1.0, 8.0), _sample(0.0, -1.0, math.nan)),
    targets=(_sample(r"0|2", ["0"], ["0", "2"]), _sample("auto", "nothing-matches", 5)),
    weight=WEIGHTS,
    base_loss=(_sample(None, "l1", "per-image"), _sample(3, "l2")),
    q_scale=(_sample(1.0, 100.0), _sample(0.0, -1.0, math.inf)),
    reduction=REDUCTIONS,
    input_range=RANGES,
)


@SETTINGS
@given(args=arguments(**LORA_OPTIONS), data=st.data())
def test_lora_nriqa_constructor_and_call(args, data):
    model = args.pop("model")
    if model == "net":
        model = nn.Sequential(
            nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 3, 3, padding=1)
        )
    elif model == "net-no-conv":
        model = nn.Sequential(nn.Identity())
    scorers = {"module": TinyIQA(), "callable": lambda x: x.mean(dim=(1, 2, 3))}
    args["iqa"] = scorers.get(args["iqa"], args["iqa"])
    base = {"l1": nn.L1Loss(), "per-image": lambda sr, gt: (sr - gt).abs().mean(dim=(1, 2, 3))}
    args["base_loss"] = base.get(args["base_loss"], args["base_loss"])
    loss = _outcome(lambda: LoRANRIQALoss(model, pretrained=False, **args))
    if loss is None:
        return
    sr, gt = data.draw(image_pairs(loss.input_range))
    out = _outcome(lambda: loss(sr, gt))
    if out is not None:
        _assert_finite(out, _reduced_shape(loss.reduction, sr.shape[0]))


# ----------------------------------------------------------------------- IQAWeightedSampler


@st.composite
def score_tables(draw, good=True):
    kinds = ["good"] if good else ["1d", "empty", "strings", "all-nan", "inf"]
    kind = draw(st.sampled_from(kinds))
    items, candidates = draw(st.integers(1, 5)), draw(st.integers(1, 4))
    values = draw(
        st.lists(
            st.one_of(st.floats(-100, 100), st.just(math.nan)),
            min_size=items * candidates,
            max_size=items * candidates,
        )
    )
    table = np.array(values, dtype=np.float64).reshape(items, candidates)
    table[:, 0] = np.nan_to_num(table[:, 0], nan=1.0)  # one present candidate per item
    if kind == "1d":
        return table[0]
    if kind == "empty":
        return np.zeros((0, candidates))
    if kind == "strings":
        return [["a"] * candidates] * items
    if kind == "all-nan":
        table[0] = np.nan
    if kind == "inf":
        table[0, 0] = np.inf
    return draw(st.sampled_from([table, torch.from_numpy(table), table.tolist()]))


SAMPLER_OPTIONS = dict(
    scores=(score_tables(), score_tables(good=False)),
    mode=(_sample("softmax", "argmax", "uniform"), _sample("max", None)),
    temperature=(_sample(10.0, 0.1, 1.0), _sample(1e-300, 0.0, -1.0, math.nan, "t")),
    candidates=(_sample(None, "mask"), _sample("bad-shape", "float")),
    num_samples=(_sample(None, 1, 7, np.int64(3)), _sample(0, 2.0, -1)),
    seed=(_sample(0, 2**64 - 1, np.int64(9)), _sample(2**64, -1, "s")),
    shuffle=(st.booleans(), st.booleans()),
    world=(_sample((1, 0), (2, 1), (3, 2), (np.int64(2), np.int64(0))), _sample((2, 2), (0, 0))),
    drop_last=(st.booleans(), st.booleans()),
    epoch=(_sample(0, 5, 2**70, np.int64(4)), _sample(-1, 1.0, "e")),
)


@settings(SETTINGS, max_examples=40)
@given(args=arguments(**SAMPLER_OPTIONS))
def test_sampler_constructor_and_iteration(args):
    scores, mask = args["scores"], args.pop("candidates")
    shape = np.shape(np.asarray(scores, dtype=object))
    if mask == "mask" and len(shape) == 2:
        mask = torch.ones(shape, dtype=torch.bool)
        mask[:, -1] = shape[1] == 1
    elif mask == "bad-shape":
        mask = torch.ones(1, 9, dtype=torch.bool)
    elif mask == "float":
        mask = torch.ones(shape) if len(shape) == 2 else torch.ones(1)
    elif isinstance(mask, str):
        mask = None
    world, epoch = args.pop("world"), args.pop("epoch")
    sampler = _outcome(
        lambda: IQAWeightedSampler(candidates=mask, num_replicas=world[0], rank=world[1], **args)
    )
    if sampler is None:
        return
    if _outcome(lambda: sampler.set_epoch(epoch) or True) is None:
        return
    drawn = list(sampler)
    assert len(drawn) == len(sampler)
    table = torch.as_tensor(np.asarray(scores, dtype=np.float64))
    for item, candidate in drawn:
        assert 0 <= item < table.shape[0] and 0 <= candidate < table.shape[1]
        assert not math.isnan(table[item, candidate])
        if isinstance(mask, torch.Tensor):
            assert mask[item, candidate]


# --------------------------------------------------------------------- ArgmaxPatchSelector

AMO_OPTIONS = dict(
    iqa=(_sample("module", "callable", "nan"), _sample("no-such-iqa", None)),
    patch_size=(_sample(4, 6, np.int64(4)), _sample(0, 4.0, 5)),
    scale=(_sample(1, 2, np.int64(2)), _sample(0, 3, -1)),
    chunk_size=(_sample(None, 1, 3), _sample(0, 2.0)),
    batch=(st.integers(1, 2), st.just(0)),
    count=(st.integers(1, 3), st.just(0)),
    side=(st.integers(6, 12), st.integers(1, 3)),
    mask=(_sample(None, "first-off"), _sample("all-off", "float", "bad-shape")),
    corners=(_sample(None, "aligned"), _sample("odd", "float", "outside", "half")),
    generator=(_sample(None, "generator"), _sample(7, "g")),
    dtype=(_sample(torch.float32, torch.float64), _sample(torch.int64, torch.bool)),
)


@settings(SETTINGS, max_examples=50)
@given(args=arguments(**AMO_OPTIONS))
def test_amo_constructor_and_call(args):
    scorers = {
        "module": TinyIQA(),
        "callable": lambda x: x.mean(dim=(1, 2, 3)),
        "nan": lambda x: torch.full((x.shape[0],), math.nan),
    }
    iqa = scorers.get(args["iqa"], args["iqa"])
    selector = _outcome(
        lambda: ArgmaxPatchSelector(
            iqa,
            args["patch_size"],
            scale=args["scale"],
            pretrained=False,
            chunk_size=args["chunk_size"],
        )
    )
    if selector is None:
        return
    batch, count, side = args["batch"], args["count"], args["side"]
    candidates = torch.rand(batch, count, 3, side, side).to(args["dtype"])
    mask = args["mask"]
    if mask == "first-off":
        mask = torch.ones(batch, count, dtype=torch.bool)
        mask[:, 0] = count == 1
    elif mask == "all-off":
        mask = torch.zeros(batch, count, dtype=torch.bool)
    elif mask == "float":
        mask = torch.ones(batch, count)
    elif mask == "bad-shape":
        mask = torch.ones(batch + 1, count, dtype=torch.bool)
    top = left = None
    p, s = selector.patch_size, selector.scale
    corners = args["corners"]
    if corners == "aligned":
        top = left = torch.zeros(batch, dtype=torch.long) + s * (max(side - p, 0) // s // 2)
    elif corners == "odd":
        top = left = torch.ones(batch, dtype=torch.long)
    elif corners == "float":
        top = left = torch.zeros(batch) + 0.5
    elif corners == "outside":
        top = left = torch.full((batch,), side, dtype=torch.long)
    elif corners == "half":
        top = torch.zeros(batch, dtype=torch.long)
    generator = args["generator"]
    if generator == "generator":
        generator = torch.Generator().manual_seed(3)
    out = _outcome(lambda: selector(candidates, mask, top=top, left=left, generator=generator))
    if out is None:
        return
    _assert_finite(out.patch, (batch, 3, p, p))
    assert out.index.shape == (batch,) and out.top.shape == (batch,)
    assert (out.top % s == 0).all() and (out.left % s == 0).all()
    if isinstance(mask, torch.Tensor):
        assert mask[torch.arange(batch), out.index].all()


# ---------------------------------------------------------------------------------- kernel

KERNEL_OPTIONS = dict(
    shapes=(
        _sample(((2, 5), (2, 5)), ((2, 3, 4), (2, 3, 4)), ((2, 3, 4), (1, 3, 4)), ((4,), (4,))),
        _sample(((2, 5), (2, 4)), ((2, 3), (3, 2))),
    ),
    scale=(_sample(1.0, 1e-30, 1e3, 0.0), _sample(1.0)),
    dtype=(
        _sample(torch.float32, torch.float64, torch.float16, torch.bfloat16),
        _sample(torch.int64, torch.bool),
    ),
    dim=(_sample(-1, 0), _sample(5, 1.0, None)),
    eps=(_sample(1e-8, 1.0), _sample(0.0, -1.0, math.nan, "e")),
    weight=(_sample(None, "ones"), _sample("bad-shape", "list")),
    reduce=(_sample(None, "mean", "sum"), _sample("max", 1)),
    backend=(_sample("auto", "torch"), _sample("cuda", None)),
)


@settings(SETTINGS, max_examples=50)
@given(args=arguments(**KERNEL_OPTIONS))
def test_kernel_call(args):
    # finite embeddings; NaN inputs propagate as in torch (the kernel does not read values)
    shapes, scale, dtype = args["shapes"], args["scale"], args["dtype"]
    rng = torch.Generator().manual_seed(0)
    x = (torch.randn(shapes[0], dtype=torch.float64, generator=rng) * scale).to(dtype)
    y = (torch.randn(shapes[1], dtype=torch.float64, generator=rng) * scale).to(dtype)
    dim, weight, reduce = args["dim"], args["weight"], args["reduce"]
    cos_shape = None
    try:
        full = torch.broadcast_shapes(x.shape, y.shape)
        cos_shape = tuple(n for i, n in enumerate(full) if i != dim % len(full))
    except (RuntimeError, TypeError):
        pass
    if weight == "ones":
        weight = None if cos_shape is None else torch.ones(cos_shape)
    elif weight == "bad-shape":
        weight = torch.ones(7, 7, 7)
    elif weight == "list":
        weight = [1.0, 2.0]
    out = _outcome(
        lambda: cosine_similarity(
            x, y, dim=dim, eps=args["eps"], weight=weight, reduce=reduce, backend=args["backend"]
        )
    )
    if out is None:
        return
    expected = cos_shape if reduce is None else cos_shape[:-1]
    _assert_finite(out, expected)
    bound = cos_shape[-1] if reduce == "sum" else 1  # sum of unit weights of cosines
    assert (out.abs() <= bound + 1e-2).all()
