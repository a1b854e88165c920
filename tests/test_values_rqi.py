"""RQI's evaluation protocols by value, at every scale.

Every crop the model sees is located in a hand-computed image pyramid (the documented
protocol of PAPERS.md section 2, resized with the bilinear matrices of ``resampling.py``),
SR and GT crops must sit at the same place, each scale must get its documented number of
crops, and the result must be the mean over all crops. The ``'official'`` protocol is also
run through the authors' own ``RQI.forward`` (``rqi-iqa``) with the same crop positions.
"""

from __future__ import annotations

import pytest
import torch
from conftest import require
from resampling import find_window, resize

from percepfid.rqi import evaluate

SIZE = 16


def _model(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """A cheap, position-sensitive, asymmetric two-input score (B,)."""
    ramp = torch.linspace(-1.0, 1.0, a.shape[-1], dtype=torch.float64)
    return (a.double() * ramp).mean(dim=(1, 2, 3)) - 0.5 * (b.double() ** 2).mean(dim=(1, 2, 3))


class Spy:
    """Records every crop pair it scores."""

    def __init__(self) -> None:
        self.calls: list[tuple[torch.Tensor, torch.Tensor]] = []

    def __call__(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        self.calls.append((a.clone(), b.clone()))
        return _model(a, b).to(a.dtype)

    def crops(self) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.cat([a for a, _ in self.calls]), torch.cat([b for _, b in self.calls])


def _pyramid(image: torch.Tensor, protocol: str) -> list[torch.Tensor]:
    """The documented levels, computed by hand in float64 (PAPERS.md section 2).

    ``paper``: scales 1, 1/2, 1/3 of the original, antialiased bilinear ([D]).
    ``official``: successive halving (``h // 2``), plain bilinear, as the released code.
    A level is used only while both sides stay >= the crop size.
    """
    levels = [image.double()]
    if protocol == "paper":
        for scale in (1 / 2, 1 / 3):
            size = (round(image.shape[-2] * scale), round(image.shape[-1] * scale))
            if min(size) < SIZE:
                break
            levels.append(resize(image.double(), size, antialias=True))
    else:
        for _ in range(2):
            size = (levels[-1].shape[-2] // 2, levels[-1].shape[-1] // 2)
            if min(size) < SIZE:
                break
            levels.append(resize(levels[-1], size, antialias=False))
    return levels


def _locate(crop_a, crop_b, image_index, levels_a, levels_b):
    """(level, top, left) of an aligned crop pair in the hand pyramids of one image."""
    for level, (la, lb) in enumerate(zip(levels_a, levels_b, strict=True)):
        where = find_window(la[image_index].float(), crop_a, atol=2e-6)
        if where is not None:
            assert find_window(lb[image_index].float(), crop_b, atol=2e-6) == where, (
                "SR and GT crops are not aligned"
            )
            return level, *where
    raise AssertionError("a crop matches no window of the documented pyramid")


# (height, width, expected crops per level)
CASES = {
    "paper": [((48, 72), (20, 20, 20)), ((40, 40), (20, 20)), ((16, 24), (20,))],
    "official": [((64, 96), (20, 10, 5)), ((40, 36), (20, 10)), ((20, 64), (20,))],
}


@pytest.mark.parametrize(
    ("protocol", "shape", "per_level"),
    [(p, s, n) for p, cases in CASES.items() for s, n in cases],
)
def test_protocol_values_at_every_scale(protocol, shape, per_level):
    generator = torch.Generator().manual_seed(11)
    sr = torch.rand(2, 3, *shape, generator=generator)
    gt = torch.rand(2, 3, *shape, generator=generator)
    spy = Spy()
    got = evaluate(
        spy, sr, gt, protocol, torch.Generator().manual_seed(5),
        crop_size=SIZE, antisymmetric=False, batch_size=8,
    )  # fmt: skip
    levels_a, levels_b = _pyramid(sr, protocol), _pyramid(gt, protocol)
    crops_a, crops_b = spy.crops()
    assert len(crops_a) == 2 * sum(per_level)
    # crops of one image are not mixed with the other's: find each crop in either image
    found = {0: [], 1: []}
    for crop_a, crop_b in zip(crops_a, crops_b, strict=True):
        for image in (0, 1):
            try:
                found[image].append(_locate(crop_a, crop_b, image, levels_a, levels_b))
                break
            except AssertionError:
                if image == 1:
                    raise
    expected = []
    for image in (0, 1):
        counts = [sum(1 for level, *_ in found[image] if level == k) for k in range(len(per_level))]
        assert counts == list(per_level), f"image {image}: crops per level {counts}"
        positions = {(level, top, left) for level, top, left in found[image]}
        assert len(positions) > len(per_level)  # random positions, not one fixed crop
        values = [
            _model(
                levels_a[level][image : image + 1, :, top : top + SIZE, left : left + SIZE],
                levels_b[level][image : image + 1, :, top : top + SIZE, left : left + SIZE],
            )
            for level, top, left in found[image]
        ]
        expected.append(torch.cat(values).mean())
    torch.testing.assert_close(got.double(), torch.stack(expected), rtol=0, atol=1e-6)


def test_protocol_default_antisymmetrises_a_callable():
    generator = torch.Generator().manual_seed(2)
    sr, gt = torch.rand(1, 3, 40, 36, generator=generator), torch.rand(1, 3, 40, 36)
    raw = evaluate(_model, sr, gt, "official", torch.Generator().manual_seed(1), crop_size=SIZE)
    forward = evaluate(
        _model, sr, gt, "official", torch.Generator().manual_seed(1), crop_size=SIZE,
        antisymmetric=False,
    )  # fmt: skip
    backward = evaluate(
        lambda a, b: _model(b, a), sr, gt, "official", torch.Generator().manual_seed(1),
        crop_size=SIZE, antisymmetric=False,
    )  # fmt: skip
    torch.testing.assert_close(raw, (forward - backward) / 2)


def test_image_exactly_the_crop_size_is_scored_once_per_scale():
    spy = Spy()
    sr, gt = torch.rand(1, 3, SIZE, SIZE), torch.rand(1, 3, SIZE, SIZE)
    got = evaluate(spy, sr, gt, "paper", crop_size=SIZE, antisymmetric=False)
    assert len(spy.crops()[0]) == 1
    assert torch.equal(spy.calls[0][0], sr) and torch.equal(spy.calls[0][1], gt)
    torch.testing.assert_close(got.double(), _model(sr, gt))


def test_input_range_is_mapped_to_unit_range():
    g = torch.Generator().manual_seed(4)
    sr, gt = torch.rand(1, 3, 24, 20, generator=g), torch.rand(1, 3, 24, 20, generator=g)
    unit = evaluate(_model, sr, gt, "paper", crop_size=SIZE)
    wide = evaluate(_model, sr * 255, gt * 255, "paper", crop_size=SIZE, input_range=(0, 255))
    torch.testing.assert_close(wide, unit, rtol=1e-5, atol=1e-6)


def test_official_protocol_equals_the_authors_forward(monkeypatch, tmp_path):
    """percepfid's ``'official'`` protocol and the authors' ``RQI.forward`` give the same
    score when the authors' crop positions are set to the ones percepfid drew.

    72 x 100 keeps every level's sides above the crop: where a side equals the crop size
    exactly, the authors' code feeds the whole (non-square) level uncropped, while percepfid
    cuts square crops (the model takes a fixed square input).
    """
    rqi_module = require("rqi.rqi")
    cv2 = require("cv2")
    # the authors' loader reads tensors wrongly (isinstance against the PIL module): give it
    # files, 8-bit like any image, and give percepfid the same values
    generator = torch.Generator().manual_seed(8)
    pair = torch.randint(0, 256, (2, 72, 100, 3), generator=generator, dtype=torch.uint8)
    paths = [str(tmp_path / f"{name}.png") for name in ("sr", "gt")]
    for path, image in zip(paths, pair, strict=True):
        assert cv2.imwrite(path, cv2.cvtColor(image.numpy(), cv2.COLOR_RGB2BGR))
    sr, gt = (image.permute(2, 0, 1)[None].float() / 255 for image in pair)
    spy = Spy()
    ours = evaluate(
        spy, sr, gt, "official", torch.Generator().manual_seed(3), crop_size=SIZE,
        antisymmetric=False,
    )  # fmt: skip
    levels_a, levels_b = _pyramid(sr, "official"), _pyramid(gt, "official")
    located = [_locate(a, b, 0, levels_a, levels_b) for a, b in zip(*spy.crops(), strict=True)]
    draws = [value for _, top, left in located for value in (left, top)]  # x then y

    class Positions:  # stands in for the `random` module inside rqi.rqi
        @staticmethod
        def randint(low, high):
            value = draws.pop(0)
            assert low <= value <= high
            return value

    monkeypatch.setattr(rqi_module, "random", Positions)
    authors = rqi_module.RQI.__new__(rqi_module.RQI)
    torch.nn.Module.__init__(authors)
    authors.device = torch.device("cpu")
    authors.crop_size = SIZE
    # their loader normalises to [-1, 1] before cropping; our model reads [0, 1]
    authors.model = lambda a, b: _model(a * 0.5 + 0.5, b * 0.5 + 0.5)
    theirs = authors.forward(*paths)
    assert not draws  # every position consumed: same crop count at every scale
    assert ours.item() == pytest.approx(theirs, abs=1e-6)
