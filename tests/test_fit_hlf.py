"""Fitting the HLF calibration head on a synthetic human-rated set made here."""

from __future__ import annotations

import contextlib
import copy
import csv
import dataclasses
import json
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import stats

from percepfid.backbones import create_backbone
from percepfid.heads import CalibrationHead, MLPCalibrationHead, load_head
from percepfid.losses.hlf import HLFLoss
from percepfid.train.hlf import (
    HLF_COLUMNS,
    HumanRating,
    RatingsError,
    fit_hlf_head,
    read_ratings,
)

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


@contextlib.contextmanager
def _pushes_to(hub, repo_id: str):
    """Route push_to_hub's upload into the fake Hub."""

    def upload_folder(*, repo_id, folder_path, **kwargs):
        hub.add_folder(repo_id, Path(folder_path))
        return "https://hub/commit"

    with mock.patch("huggingface_hub.hub_mixin.HfApi") as api_class:
        api = api_class.return_value
        api.create_repo.return_value.repo_id = repo_id
        api.upload_folder.side_effect = upload_folder
        yield


def test_head_round_trips_through_save_push_and_load(rated, backbone, tmp_path) -> None:
    from percepfid.testing._fake_hub import FakeHub

    root, ratings, cosine = rated
    out = tmp_path / "head"
    with FakeHub() as hub, hub.activate(tmp_path / "hf_home"):
        with _pushes_to(hub, "percepfid-test/hlf-head"):
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
        read_ratings(root / "ratings.csv", dataclasses.replace(HLF_COLUMNS, score="mos"))
    bad = tmp_path / "bad.csv"
    bad.write_text("sr,gt,score\nnope.png,gt_0.png,3\n")
    with pytest.raises(RatingsError, match=r"not found.*nope\.png"):
        read_ratings(bad, dataclasses.replace(HLF_COLUMNS, root=root))
    bad.write_text(f"sr,gt,score\n{ratings[0].sr},{ratings[0].gt},high\n")
    with pytest.raises(RatingsError, match="row 2, column 'score'"):
        read_ratings(bad)
    one_group = [r for r in ratings if r.group == "src0"]
    with pytest.raises(ValueError, match="at least 2 groups"):
        fit_hlf_head(one_group, backbone, val_fraction=0.5)
    with pytest.raises(ValueError, match="val_fraction"):
        fit_hlf_head(ratings, backbone, val_fraction=1.0)


def test_mlp_head_fits_and_loads_into_hlfloss(rated, backbone, tmp_path) -> None:
    root, ratings, cosine = rated
    out = tmp_path / "mlp"
    result = fit_hlf_head(ratings, backbone, head="mlp", val_fraction=0.25, seed=1, output_dir=out)
    assert isinstance(result.head, MLPCalibrationHead)
    # the MLP's predictions explain the human scores better than the raw cosine does
    assert result.val["plcc_head"] > result.val["plcc_cosine"] + 0.01
    assert result.train["rmse_head"] < 0.05
    # its input statistics come from the training features and are saved with it
    assert not torch.equal(result.head.feature_std, torch.ones(3))
    report = json.loads((out / "fit_report.json").read_text())
    assert report["head_config"] == {"class": "MLPCalibrationHead", "hidden": 16}
    loaded = load_head(out)
    assert isinstance(loaded, MLPCalibrationHead) and loaded.backbone_update is None
    torch.testing.assert_close(loaded.feature_mean, result.head.feature_mean)
    # HLFLoss(head=folder) feeds the MLP the features of the pair: check against features
    # computed here with torch's own cosine and the stated formula
    loss = HLFLoss(backbone, head=str(out))
    sr = torch.stack([_image(np.asarray(Image.open(r.sr))) for r in ratings[:4]])
    gt = torch.stack([_image(np.asarray(Image.open(r.gt))) for r in ratings[:4]])
    with torch.no_grad():
        e_sr, e_gt = backbone(sr), backbone(gt)
        cos = torch.nn.functional.cosine_similarity(e_sr, e_gt, dim=1)
        diff = (e_sr - e_gt).abs() / e_gt.norm(dim=1, keepdim=True) * e_sr.shape[1] ** 0.5
        features = torch.stack([cos, diff.mean(1), diff.amax(1)], dim=1)
        expected = result.head.from_features(features)
        torch.testing.assert_close(loss.fidelity(sr, gt), expected, atol=1e-5, rtol=1e-5)


@pytest.fixture(scope="module")
def noise_rated(tmp_path_factory) -> list[HumanRating]:
    """Human scores that fall linearly with the noise level: the random backbone's cosine
    ranks them imperfectly, so only changing the backbone can fix the ranking."""
    root = tmp_path_factory.mktemp("noise")
    rng = np.random.default_rng(0)
    ratings = []
    for g in range(16):
        gt = (rng.random((SIDE, SIDE, 3)) * 255).astype(np.uint8)
        Image.fromarray(gt).save(root / f"gt{g}.png")
        for v in range(VARIANTS):
            level = rng.uniform(0, 120)
            noisy = np.clip(gt + rng.normal(scale=level, size=gt.shape), 0, 255).astype(np.uint8)
            Image.fromarray(noisy).save(root / f"sr{g}_{v}.png")
            ratings.append(
                HumanRating(root / f"sr{g}_{v}.png", root / f"gt{g}.png", 5 - level / 30, f"s{g}")
            )
    return ratings


def test_unfreezing_the_last_blocks_learns_what_a_head_alone_cannot(
    noise_rated, backbone, tmp_path
) -> None:
    before = {k: v.clone() for k, v in backbone.encoder.state_dict().items()}
    options = {"val_fraction": 0.25, "seed": 1, "batch_size": 8}
    frozen = fit_hlf_head(noise_rated, backbone, **options)
    out = tmp_path / "tuned"
    tuned = fit_hlf_head(
        noise_rated, backbone, unfreeze_blocks=2, epochs=8, lr=1e-2, backbone_lr=1e-4, **options
    )
    # the caller's backbone is untouched
    after = backbone.encoder.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    # a monotone head cannot change the ranking
    assert frozen.train["srcc_head"] == pytest.approx(frozen.train["srcc_cosine"], abs=1e-9)
    # the tuned blocks can: with every pair in training (no validation split, so the last
    # epoch is kept) they rank the training pairs better than any monotone head
    whole = {"val_fraction": 0.0, "seed": 1, "batch_size": 8}
    frozen_all = fit_hlf_head(noise_rated, backbone, **whole)
    tuned_all = fit_hlf_head(
        noise_rated,
        backbone,
        unfreeze_blocks=2,
        epochs=8,
        lr=1e-2,
        backbone_lr=1e-4,
        output_dir=out,
        **whole,
    )
    assert tuned_all.best_epoch == 8
    assert tuned_all.train["srcc_head"] > frozen_all.train["srcc_head"] + 0.03
    assert tuned_all.train["rmse_head"] < 0.6 * frozen_all.train["rmse_head"]
    # the kept epoch is the best on validation, and never worse than the frozen fit
    kept = tuned.history[tuned.best_epoch]
    assert kept["val_score"] == max(row["val_score"] for row in tuned.history)
    assert kept["val_score"] == pytest.approx(kept["val_srcc_head"] + kept["val_plcc_head"])
    # the reported validation statistics are those of the kept epoch (checked with scipy's
    # numbers through percepfid.eval in test_eval), and never below the frozen fit's
    assert tuned.val["srcc_head"] == pytest.approx(kept["val_srcc_head"], abs=1e-6)
    assert tuned.val["plcc_head"] == pytest.approx(kept["val_plcc_head"], abs=1e-6)
    frozen_score = frozen.val["srcc_head"] + frozen.val["plcc_head"]
    assert tuned.val["srcc_head"] + tuned.val["plcc_head"] >= frozen_score - 1e-6
    assert len(tuned.history) == 9 and tuned.history[0]["train_mse"] is None

    # only the last two blocks and the final norm were changed and saved
    update = tuned_all.head.backbone_update
    assert update.backbone == backbone.spec.name and update.blocks == 2
    assert sorted(update.state) == sorted(
        k for k in before if k.startswith(("model.blocks.10.", "model.blocks.11.", "model.norm."))
    )
    changed = {k for k in update.state if not torch.equal(update.state[k], before[k])}
    assert changed and changed <= set(update.state)
    config = json.loads((out / "config.json").read_text())
    assert config["percepfid_backbone"] == {"name": backbone.spec.name, "blocks": 2}
    assert (out / "backbone.safetensors").is_file()

    # HLFLoss(head=folder) loads the tuned blocks into a copy of the backbone; the expected
    # value is computed here by loading them by hand and taking torch's cosine
    loss = HLFLoss(backbone, head=str(out))
    assert loss.backbone is not backbone
    assert all(torch.equal(before[k], v) for k, v in backbone.encoder.state_dict().items())
    manual = copy.deepcopy(backbone)
    manual.encoder.load_state_dict(update.state, strict=False)
    sr = torch.stack([_image(np.asarray(Image.open(r.sr))) for r in noise_rated[:4]])
    gt = torch.stack([_image(np.asarray(Image.open(r.gt))) for r in noise_rated[:4]])
    with torch.no_grad():
        cos = torch.nn.functional.cosine_similarity(manual(sr), manual(gt), dim=1)
        torch.testing.assert_close(loss.fidelity(sr, gt), tuned_all.head(cos), atol=1e-5, rtol=1e-5)
    # the tuned blocks stay frozen inside the loss and out of its checkpoint
    assert not any(p.requires_grad for p in loss.backbone.parameters())
    assert not any(k.startswith("backbone.") for k in loss.state_dict())


def test_backbone_update_errors(noise_rated, backbone, tmp_path) -> None:
    from percepfid import ArgumentError, WeightsError

    out = tmp_path / "tuned"
    fit_hlf_head(
        noise_rated[:16], backbone, unfreeze_blocks=1, epochs=1, val_fraction=0.0, output_dir=out
    )
    other = create_backbone(
        "timm:vit_tiny_patch16_384.augreg_in21k_ft_in1k", pretrained=False, image_size=32
    )
    with pytest.raises(ArgumentError, match="fine-tuned.*Pass backbone="):
        HLFLoss(other, head=str(out))
    (out / "backbone.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(WeightsError, match="unreadable backbone update"):
        load_head(out)
    (out / "backbone.safetensors").unlink()
    with pytest.raises(WeightsError, match="backbone.safetensors"):
        HLFLoss(backbone, head=str(out))
    with pytest.raises(ValueError, match="unfreeze_blocks"):
        fit_hlf_head(noise_rated, backbone, unfreeze_blocks=13)
    with pytest.raises(ValueError, match="unfreeze_blocks"):
        fit_hlf_head(noise_rated, backbone, unfreeze_blocks=-1)
    with pytest.raises(ValueError, match="head"):
        fit_hlf_head(noise_rated, backbone, head="linear")


def test_pushed_head_carries_its_backbone_update(noise_rated, backbone, tmp_path) -> None:
    from percepfid.testing._fake_hub import FakeHub

    with FakeHub() as hub, hub.activate(tmp_path / "hf_home"):
        with _pushes_to(hub, "percepfid-test/tuned-head"):
            result = fit_hlf_head(
                noise_rated[:16],
                backbone,
                unfreeze_blocks=1,
                epochs=1,
                val_fraction=0.0,
                push_to_hub="percepfid-test/tuned-head",
            )
        pushed = load_head("percepfid-test/tuned-head")
    assert result.best_epoch == 1  # no validation split: the last epoch is kept
    update = pushed.backbone_update
    assert update is not None and update.blocks == 1
    assert update.state.keys() == result.head.backbone_update.state.keys()
    assert all(
        torch.equal(update.state[k], v) for k, v in result.head.backbone_update.state.items()
    )


@contextlib.contextmanager
def _rows_through_block(backbone, index: int):
    """Count the rows that really run through block ``index`` (a skipped block returns its
    input unchanged; the hook is copied along when fit_hlf_head copies the backbone)."""
    counter = {"rows": 0}

    def hook(module, args, output):
        if output is not args[0]:
            counter["rows"] += args[0].shape[0]

    handle = backbone.encoder.model.blocks[index].register_forward_hook(hook)
    try:
        yield counter
    finally:
        handle.remove()


def _assert_same_fit(cached, uncached) -> None:
    for split in ("train", "val"):
        assert cached.__getattribute__(split).keys() == uncached.__getattribute__(split).keys()
        for key, value in uncached.__getattribute__(split).items():
            assert cached.__getattribute__(split)[key] == pytest.approx(value, abs=1e-4), key
    for name, value in uncached.head.state_dict().items():
        torch.testing.assert_close(cached.head.state_dict()[name], value, atol=1e-4, rtol=1e-4)
    assert cached.best_epoch == uncached.best_epoch
    for row_a, row_b in zip(cached.history, uncached.history, strict=True):
        for key, value in row_b.items():
            assert row_a[key] == pytest.approx(value, abs=1e-4), key


def test_frozen_fit_embeds_each_image_once_with_the_uncached_results(noise_rated, backbone) -> None:
    ratings = noise_rated[:16]  # 4 groups: 16 SR images and 4 GT images
    options = {"val_fraction": 0.25, "seed": 1, "batch_size": 8}
    with _rows_through_block(backbone, 0) as uncached_rows:
        uncached = fit_hlf_head(ratings, backbone, cache_mb=0, **options)
    with _rows_through_block(backbone, 0) as cached_rows:
        cached = fit_hlf_head(ratings, backbone, **options)
    assert uncached_rows["rows"] == 32  # every pair embeds its SR and its GT
    assert cached_rows["rows"] == 20  # every distinct image once
    _assert_same_fit(cached, uncached)


def test_fine_tuning_runs_the_frozen_blocks_once_with_the_uncached_results(
    noise_rated, backbone
) -> None:
    ratings = noise_rated[:16]
    options = {"val_fraction": 0.25, "seed": 1, "batch_size": 8, "unfreeze_blocks": 2}
    options |= {"lr": 1e-2, "backbone_lr": 1e-3}
    with _rows_through_block(backbone, 0) as uncached_rows:
        uncached = fit_hlf_head(ratings, backbone, epochs=3, cache_mb=0, **options)
    with _rows_through_block(backbone, 0) as cached_rows:
        cached = fit_hlf_head(ratings, backbone, epochs=3, **options)
    with _rows_through_block(backbone, 0) as longer_rows:
        fit_hlf_head(ratings, backbone, epochs=4, **options)
    # the frozen first block runs for the split's check (the whole tower and the prefix on
    # one image) and for the frozen embedding of the 20 images (which keeps their prefix
    # activations) only, however many epochs follow; uncached, it runs on every pair in
    # every epoch
    assert cached_rows["rows"] == longer_rows["rows"] == 2 + 20
    assert uncached_rows["rows"] == 168  # 32 + 8 + 3 * 32 + 32
    _assert_same_fit(cached, uncached)
    update_a, update_b = cached.head.backbone_update.state, uncached.head.backbone_update.state
    for name, value in update_b.items():
        torch.testing.assert_close(update_a[name], value, atol=1e-4, rtol=1e-4)


class _ParallelBlocks(torch.nn.Module):
    """A tower whose blocks all read the input (not one after the other): it cannot be run
    from a cached activation, so the trainer must run it whole."""

    def __init__(self) -> None:
        super().__init__()
        self.blocks = torch.nn.ModuleList(torch.nn.Linear(3, 8) for _ in range(3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.mean((2, 3))
        return sum(block(x) for block in self.blocks)


def test_a_tower_that_cannot_be_split_runs_whole(noise_rated, caplog) -> None:
    torch.manual_seed(0)
    tower = _ParallelBlocks()
    options = {"val_fraction": 0.25, "seed": 1, "batch_size": 8, "unfreeze_blocks": 1}
    options |= {"epochs": 2, "lr": 1e-2, "backbone_lr": 1e-2}
    uncached = fit_hlf_head(noise_rated[:16], tower, cache_mb=0, **options)
    with caplog.at_level("WARNING", logger="percepfid.train.hlf"):
        cached = fit_hlf_head(noise_rated[:16], tower, **options)
    assert "cannot run backbone '_ParallelBlocks' in two parts" in caplog.text
    _assert_same_fit(cached, uncached)


def test_saved_config_and_report_hold_the_fit(noise_rated, backbone, tmp_path) -> None:
    """config.json holds the fitted scale and bias and the backbone; fit_report.json is
    strict JSON (undefined statistics are null) and names the folder."""
    out = tmp_path / "head"
    flat = [dataclasses.replace(r, score=3.0) for r in noise_rated[:16]]  # no ranking
    result = fit_hlf_head(flat, backbone, score_range=(1, 5), val_fraction=0.25, output_dir=out)
    config = json.loads((out / "config.json").read_text())
    assert config["scale"] == float(result.head.scale.detach()) != 10.0
    assert config["bias"] == float(result.head.bias.detach()) != -5.0
    assert config["percepfid_fitted_on"] == {
        "backbone": backbone.spec.name,
        "embedding": "cls",
        "image_size": None,
    }

    def refuse(constant: str) -> None:
        raise AssertionError(f"bare {constant} in fit_report.json")

    report = json.loads((out / "fit_report.json").read_text(), parse_constant=refuse)
    assert report["train"]["srcc_cosine"] is None and report["val"]["plcc_head"] is None
    assert report["output_dir"] == str(out) == result.output_dir
    assert report["backbone"] == backbone.spec.name
    # the head loads back with its fitted values
    loaded = load_head(out)
    assert float(loaded.scale.detach()) == config["scale"]
