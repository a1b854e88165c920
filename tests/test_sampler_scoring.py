"""score_candidates: batched scoring of a candidate folder, content-hash cache."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import require
from PIL import Image

from percepfid import ArgumentError, EmptyBatchError
from percepfid.data import IQAWeightedSampler, find_candidates, score_candidates


class CountingBrightness:
    """Mean brightness; counts how many images it scored and in how many calls."""

    def __init__(self) -> None:
        self.images = 0
        self.calls = 0

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self.images += x.shape[0]
        self.calls += 1
        return x.mean(dim=(1, 2, 3))


def _write(path: Path, seed: int, size: tuple[int, int] = (6, 5)) -> float:
    rng = np.random.default_rng(seed)
    array = rng.integers(0, 256, size=(*size, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return float(array.astype(np.float64).mean() / 255.0)  # independent expected score


@pytest.fixture
def folder(tmp_path: Path) -> tuple[Path, list[list[float]]]:
    root = tmp_path / "gt"
    expected = [
        [_write(root / "a" / "0.png", 1), _write(root / "a" / "1.png", 2)],
        [
            _write(root / "b" / "0.png", 3),
            _write(root / "b" / "1.png", 4, (7, 7)),
            _write(root / "b" / "2.png", 5),
        ],
    ]
    (root / "b" / "notes.txt").write_text("not an image")
    return root, expected


def test_scores_match_independent_means_with_nan_padding(folder) -> None:
    root, expected = folder
    names, groups = find_candidates(root)
    assert names == ["a", "b"] and [len(g) for g in groups] == [2, 3]
    model = CountingBrightness()
    scores = score_candidates(root, model, batch_size=8, progress=False)
    assert scores.shape == (2, 3) and scores.dtype == torch.float64
    assert math.isnan(scores[0, 2])
    np.testing.assert_allclose(scores[0, :2].numpy(), expected[0], rtol=1e-6)
    np.testing.assert_allclose(scores[1].numpy(), expected[1], rtol=1e-6)
    # images of one size share a batch: 4 images of 6x5 and 1 of 7x7 -> two calls
    assert model.images == 5 and model.calls == 2
    sampler = IQAWeightedSampler(scores, temperature=0.1)
    assert all(not (i == 0 and k == 2) for i, k in sampler)


def test_cache_keyed_by_content(folder, tmp_path) -> None:
    root, _ = folder
    cache = tmp_path / "cache" / "scores.json"
    first = score_candidates(root, CountingBrightness(), cache=cache, progress=False)
    assert cache.is_file()
    model = CountingBrightness()
    again = score_candidates(root, model, cache=cache, progress=False)
    assert model.images == 0
    torch.testing.assert_close(again, first, equal_nan=True)
    # renaming a file costs nothing; editing one rescores only that one
    (root / "a" / "1.png").rename(root / "a" / "9.png")
    new_value = _write(root / "b" / "2.png", 99)
    model = CountingBrightness()
    third = score_candidates(root, model, cache=cache, progress=False)
    assert model.images == 1
    assert third[1, 2].item() == pytest.approx(new_value, rel=1e-6)
    # a different model name is a different cache entry
    other = CountingBrightness()
    score_candidates(root, other, cache=cache, cache_key="other-model", progress=False)
    assert other.images == 5


def test_explicit_lists_and_errors(folder, tmp_path) -> None:
    root, expected = folder
    scores = score_candidates(
        [[root / "b" / "0.png"], [root / "a" / "1.png", root / "a" / "0.png"]],
        CountingBrightness(),
        batch_size=1,
        progress=False,
    )
    assert scores[1].tolist() == pytest.approx([expected[0][1], expected[0][0]], rel=1e-6)
    with pytest.raises(ArgumentError, match="not found"):
        score_candidates([[tmp_path / "missing.png"]], CountingBrightness(), progress=False)
    with pytest.raises(ArgumentError, match="batch_size"):
        score_candidates(root, CountingBrightness(), batch_size=0, progress=False)
    (tmp_path / "empty" / "x").mkdir(parents=True)
    with pytest.raises(EmptyBatchError, match="no candidate"):
        score_candidates(tmp_path / "empty", CountingBrightness(), progress=False)
    with pytest.raises(ArgumentError, match="not a folder"):
        find_candidates(tmp_path / "nope")


def test_cli_score_candidates(folder, tmp_path) -> None:
    require("open_clip")
    import csv

    from srnets import register_tiny_clip

    from percepfid.cli import main

    root, _ = folder
    arch = register_tiny_clip()
    out = tmp_path / "scores.csv"
    argv = [
        "score-candidates",
        str(root),
        "--iqa",
        f"clipiqa:{arch}",
        "--random-weights",
        "--output",
        str(out),
        "--cache",
        str(tmp_path / "cache.json"),
        "--no-progress",
    ]
    assert main(argv) == 0
    rows = list(csv.DictReader(out.open()))
    assert [(r["item"], r["candidate"]) for r in rows] == [
        ("a", "0"),
        ("a", "1"),
        ("b", "0"),
        ("b", "1"),
        ("b", "2"),
    ]
    assert all(0.0 < float(r["score"]) < 1.0 for r in rows)
    assert main(["score-candidates", str(tmp_path / "nope"), "--no-progress"]) == 2
