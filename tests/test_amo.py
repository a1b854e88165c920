"""ArgmaxPatchSelector (AMO): picks the argmax, shares the crop location, builds no graph."""

from __future__ import annotations

import pytest
import torch

from percepfid import ArgumentError, DTypeError, ShapeError
from percepfid.data import ArgmaxPatchSelector


def brightness(x: torch.Tensor) -> torch.Tensor:
    return x.mean(dim=(1, 2, 3))


class Recorder:
    """An NR model that records what it was asked to score and whether autograd was on."""

    def __init__(self) -> None:
        self.inputs: list[torch.Tensor] = []
        self.grad_enabled: list[bool] = []

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self.inputs.append(x.clone())
        self.grad_enabled.append(torch.is_grad_enabled())
        return x.mean(dim=(1, 2, 3))


def _constant_candidates(levels: list[list[float]], size: int = 12) -> torch.Tensor:
    values = torch.tensor(levels).view(len(levels), len(levels[0]), 1, 1, 1)
    return values.expand(-1, -1, 3, size, size).clone()


def test_picks_the_argmax_per_sample() -> None:
    candidates = _constant_candidates([[0.2, 0.9, 0.5], [0.7, 0.1, 0.3]])
    out = ArgmaxPatchSelector(brightness, patch_size=4)(candidates)
    assert out.index.tolist() == [1, 0]
    assert torch.equal(
        out.patch, torch.stack([candidates[0, 1, :, :4, :4], candidates[1, 0, :, :4, :4]])
    )
    torch.testing.assert_close(out.scores, torch.tensor([[0.2, 0.9, 0.5], [0.7, 0.1, 0.3]]))


def test_lower_is_better_ties_and_mask() -> None:
    candidates = _constant_candidates([[0.4, 0.8, 0.8, 0.1]])
    best = ArgmaxPatchSelector(brightness, patch_size=4)(candidates)
    assert best.index.tolist() == [1]  # tie between 1 and 2 goes to the lowest index
    darkest = ArgmaxPatchSelector(brightness, patch_size=4, iqa_kwargs={"higher_is_better": False})(
        candidates
    )
    assert darkest.index.tolist() == [3]
    masked = ArgmaxPatchSelector(brightness, patch_size=4)(
        candidates, torch.tensor([[True, False, False, True]])
    )
    assert masked.index.tolist() == [0]
    assert masked.scores[0, 1].isnan() and masked.scores[0, 2].isnan()


def test_depends_on_the_crop_not_the_whole_image() -> None:
    # candidate 0 is brighter on the left half, candidate 1 on the right half
    candidates = torch.zeros(1, 2, 3, 8, 16)
    candidates[0, 0, :, :, :8] = 1.0
    candidates[0, 1, :, :, 8:] = 1.0
    selector = ArgmaxPatchSelector(brightness, patch_size=8)
    zero = torch.tensor([0])
    assert selector(candidates, top=zero, left=torch.tensor([0])).index.tolist() == [0]
    assert selector(candidates, top=zero, left=torch.tensor([8])).index.tolist() == [1]


def test_one_crop_location_shared_by_all_candidates() -> None:
    batch, count, size, patch = 3, 4, 20, 6
    candidates = torch.rand(batch, count, 3, size, size)
    recorder = Recorder()
    selector = ArgmaxPatchSelector(recorder, patch_size=patch)
    out = selector(candidates, generator=torch.Generator().manual_seed(0))
    (scored,) = recorder.inputs
    scored = scored.view(batch, count, 3, patch, patch)
    for b in range(batch):
        t, l_ = int(out.top[b]), int(out.left[b])
        assert torch.equal(scored[b], candidates[b, :, :, t : t + patch, l_ : l_ + patch])
        assert torch.equal(
            out.patch[b], candidates[b, out.index[b], :, t : t + patch, l_ : l_ + patch]
        )
    # locations differ between samples (random), and are reproducible with a generator
    again = selector(candidates, generator=torch.Generator().manual_seed(0))
    assert torch.equal(again.top, out.top) and torch.equal(again.left, out.left)
    assert len(set(zip(out.top.tolist(), out.left.tolist(), strict=True))) > 1


def test_crop_corners_align_with_the_scale() -> None:
    selector = ArgmaxPatchSelector(brightness, patch_size=8, scale=4)
    out = selector(torch.rand(16, 2, 3, 30, 30))
    assert (out.top % 4 == 0).all() and (out.left % 4 == 0).all()
    assert (out.top <= 22).all() and (out.left <= 22).all()
    with pytest.raises(ArgumentError, match="divisible"):
        ArgmaxPatchSelector(brightness, patch_size=6, scale=4)


def test_no_autograd_graph() -> None:
    recorder = Recorder()
    candidates = torch.rand(2, 3, 3, 10, 10, requires_grad=True)
    out = ArgmaxPatchSelector(recorder, patch_size=5)(candidates)
    assert recorder.grad_enabled == [False]
    assert not out.patch.requires_grad and out.patch.grad_fn is None
    assert not out.scores.requires_grad
    assert out.index.dtype == torch.long


def test_chunked_scoring_matches() -> None:
    candidates = torch.rand(3, 5, 3, 9, 9)
    location = {"top": torch.tensor([0, 1, 2]), "left": torch.tensor([3, 2, 1])}
    whole = ArgmaxPatchSelector(brightness, patch_size=4)(candidates, **location)
    chunked = ArgmaxPatchSelector(brightness, patch_size=4, chunk_size=2)(candidates, **location)
    assert torch.equal(whole.index, chunked.index)
    torch.testing.assert_close(whole.scores, chunked.scores)


@pytest.mark.parametrize(
    ("candidates", "kwargs", "error", "words"),
    [
        (torch.rand(2, 3, 8, 8), {}, ShapeError, "(B, K, 3, H, W)"),
        (torch.rand(1, 2, 3, 4, 4), {}, ShapeError, "smaller than patch_size"),
        (torch.zeros(1, 2, 3, 8, 8, dtype=torch.uint8), {}, DTypeError, "floating"),
        (
            torch.rand(1, 2, 3, 8, 8),
            {"mask": torch.tensor([[False, False]])},
            ArgumentError,
            "no eligible",
        ),
        (torch.rand(1, 2, 3, 8, 8), {"mask": torch.tensor([True, True])}, ShapeError, "mask"),
        (torch.rand(1, 2, 3, 8, 8), {"mask": torch.ones(1, 2)}, DTypeError, "bool"),
        (
            torch.rand(1, 2, 3, 8, 8),
            {"top": torch.tensor([5]), "left": torch.tensor([0])},
            ShapeError,
            "inside",
        ),
        (torch.rand(1, 2, 3, 8, 8), {"top": torch.tensor([0])}, ArgumentError, "both"),
    ],
)
def test_bad_inputs(candidates, kwargs, error, words) -> None:
    selector = ArgmaxPatchSelector(brightness, patch_size=5)
    with pytest.raises(error) as caught:
        selector(candidates, **kwargs)
    assert words in str(caught.value)


def test_bad_construction() -> None:
    with pytest.raises(ArgumentError, match="patch_size"):
        ArgmaxPatchSelector(brightness, patch_size=0)
    with pytest.raises(ArgumentError, match="chunk_size"):
        ArgmaxPatchSelector(brightness, patch_size=4, chunk_size=0)
