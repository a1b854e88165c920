"""Fitting the HLF calibration head on a synthetic human-rated set made here."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import stats

from percepfid.backbones import create_backbone
from percepfid.heads import CalibrationHead, load_head
from percepfid.losses.hlf import HLFLoss
from percepfid.train.hlf import HumanRating, RatingsError, fit_hlf_head, read_ratings

TINY = "timm:vit_tiny_patch16_224.augreg_in21k"
GROUPS, VARIANTS, SIDE = 12, 4, 24


def _image(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(array.astype(np.float32) / 255.0).permute(2, 0, 1)


@pytest.fixture(scope="module")
def backbone():
    torch.manual_seed(0)
    return create_backbone(TINY, pretrained=False, image_size=32)


@pytest.fixture(scope="module")
def rated(tmp_path_factory, backbone) -> tuple[Path, list[HumanRating], np.ndarray]:
    """GT images, SR variants at growing noise, and human scores (1..5) that saturate."""
    root = tmp_path_factory.mktemp("ratings")
    rng = np.random.default_rng(0)
    pairs = []
    for g in range(GROUPS):
        gt = (rng.random((SIDE, SIDE, 3)) * 255).astype(np.uint8)
        gt_path = root / f"gt_{g}.png"
        Image.fromarray(gt).save(gt_path)
        for v in range(VARIANTS):
            level = rng.uniform(0, 120)
            noisy = np.clip(gt + rng.normal(scale=level, size=gt.shape), 0, 255).astype(np.uint8)
            sr_path = root / f"sr_{g}_{v}.png"
            Image.fromarray(noisy).save(sr_path)
            pairs.append((sr_path, gt_path, f"src{g}"))
    loss = HLFLoss(backbone)
    sr = torch.stack([_image(np.asarray(Image.open(s))) for s, _, _ in pairs])
    gt = torch.stack([_image(np.asarray(Image.open(t))) for _, t, _ in pairs])
    with torch.no_grad():
        cosine = loss.cosine(sr, gt).double().numpy()
    # people saturate: a logistic in the cosine, plus rater noise
    slope = 4.0 / cosine.std()
    mos = 1 + 4 / (1 + np.exp(-slope * (cosine - np.median(cosine))))
    mos += rng.normal(scale=0.05, size=len(mos))
    with (root / "ratings.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["sr", "gt", "score", "group"])
        for (s, t, g), m in zip(pairs, mos, strict=True):
            writer.writerow([s.name, t.name, f"{m:.6f}", g])
    ratings = read_ratings(root / "ratings.csv")
    return root, ratings, cosine


def test_fitted_head_beats_raw_cosine_on_held_out_groups(rated, backbone, tmp_path) -> None:
    root, ratings, cosine = rated
    result = fit_hlf_head(root / "ratings.csv", backbone, val_fraction=0.25, seed=1)
    assert set(result.train_groups).isdisjoint(result.val_groups)
    assert len(result.val_groups) == 3 and len(result.train_groups) == 9
    val = np.array([r.group in result.val_groups for r in ratings])
    human = np.array([r.score for r in ratings])
    with torch.no_grad():
        predicted = result.head(torch.tensor(cosine, dtype=torch.float32)).numpy()
    raw = stats.pearsonr(cosine[val], human[val]).statistic
    fitted = stats.pearsonr(predicted[val], human[val]).statistic
    assert fitted > raw + 0.01
    assert result.val["plcc_head"] == pytest.approx(fitted, abs=1e-5)
    assert result.val["plcc_cosine"] == pytest.approx(raw, abs=1e-5)
    # a monotone head keeps the ranking
    assert result.val["srcc_head"] == pytest.approx(result.val["srcc_cosine"], abs=1e-9)
    assert result.train["n"] + result.val["n"] == GROUPS * VARIANTS
    assert result.score_range == (
        pytest.approx(human[~val].min()),
        pytest.approx(human[~val].max()),
    )


def test_head_round_trips_through_save_push_and_load(rated, backbone, tmp_path) -> None:
    from percepfid.testing._fake_hub import FakeHub

    root, ratings, cosine = rated
    out = tmp_path / "head"
    with FakeHub() as hub, hub.activate(tmp_path / "hf_home"):

        def upload_folder(*, repo_id, folder_path, **kwargs):
            hub.add_folder(repo_id, Path(folder_path))
            return "https://hub/commit"

        with mock.patch("huggingface_hub.hub_mixin.HfApi") as api_class:
            api = api_class.return_value
            api.create_repo.return_value.repo_id = "percepfid-test/hlf-head"
            api.upload_folder.side_effect = upload_folder
            result = fit_hlf_head(
                ratings,
                backbone,
                val_fraction=0.0,
                output_dir=out,
                push_to_hub="percepfid-test/hlf-head",
            )
        assert result.val == {} and result.repo_id == "percepfid-test/hlf-head"
        pushed = CalibrationHead.from_pretrained("percepfid-test/hlf-head")

    report = json.loads((out / "fit_report.json").read_text())
    assert report["backbone"] == backbone.spec.name
    assert report["head_config"]["scale"] == pytest.approx(float(result.head.scale.detach()))
    x = torch.tensor(cosine, dtype=torch.float32)
    with torch.no_grad():
        expected = result.head(x)
        assert torch.equal(CalibrationHead.from_pretrained(out).eval()(x), expected)
        assert torch.equal(load_head(out).eval()(x), expected)
        assert torch.equal(pushed.eval()(x), expected)
        # HLFLoss(head=folder) predicts human fidelity with the fitted head
        loss = HLFLoss(backbone, head=str(out))
        sr = _image(np.asarray(Image.open(ratings[0].sr)))[None]
        gt = _image(np.asarray(Image.open(ratings[0].gt)))[None]
        assert float(loss.fidelity(sr, gt)) == pytest.approx(float(expected[0]), abs=1e-5)


def test_fit_errors(rated, backbone, tmp_path) -> None:
    root, ratings, _ = rated
    with pytest.raises(RatingsError, match="no column 'mos'"):
        read_ratings(root / "ratings.csv", score_col="mos")
    bad = tmp_path / "bad.csv"
    bad.write_text("sr,gt,score\nnope.png,gt_0.png,3\n")
    with pytest.raises(RatingsError, match="do not exist"):
        read_ratings(bad, root=root)
    bad.write_text(f"sr,gt,score\n{ratings[0].sr},{ratings[0].gt},high\n")
    with pytest.raises(RatingsError, match="row 2, column 'score'"):
        read_ratings(bad)
    one_group = [r for r in ratings if r.group == "src0"]
    with pytest.raises(ValueError, match="at least 2 groups"):
        fit_hlf_head(one_group, backbone, val_fraction=0.5)
    with pytest.raises(ValueError, match="val_fraction"):
        fit_hlf_head(ratings, backbone, val_fraction=1.0)
