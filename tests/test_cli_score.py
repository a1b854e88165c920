"""``percepfid score`` end to end on generated images (random tiny backbone, offline)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from percepfid.cli import main
from percepfid.commands._pairs import pairs_from_folders
from percepfid.data import batches_by_size

TINY = "timm:vit_tiny_patch16_224.augreg_in21k"
HLF = ["--metric", f"hlf:{TINY}", "--image-size", "32", "--random-weights", "--no-progress"]
SIZES = [(20, 24), (16, 16), (20, 24), (16, 16), (20, 24)]


def _save(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


@pytest.fixture
def folders(tmp_path: Path) -> tuple[Path, Path]:
    rng = np.random.default_rng(0)
    for i, (h, w) in enumerate(SIZES):
        reference = (rng.random((h, w, 3)) * 255).astype(np.uint8)
        noise = rng.integers(-40 * i, 40 * i + 1, reference.shape)
        distorted = np.clip(reference.astype(int) + noise, 0, 255).astype(np.uint8)
        _save(tmp_path / "gt" / f"img{i}.png", reference)
        _save(tmp_path / "sr" / f"img{i}.png", distorted)
    return tmp_path / "gt", tmp_path / "sr"


def _read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def _reference_scores(gt: Path, sr: Path) -> list[float]:
    """HLF fidelity computed one pair at a time, outside the CLI, with the same seed."""
    from percepfid.losses.hlf import HLFLoss

    torch.manual_seed(0)
    loss = HLFLoss(TINY, pretrained=False, image_size=32).eval()

    def load(path: Path) -> torch.Tensor:
        array = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 255.0
        return torch.from_numpy(array).permute(2, 0, 1)[None]

    with torch.no_grad():
        return [
            float(loss.fidelity(load(sr / f"img{i}.png"), load(gt / f"img{i}.png")))
            for i in range(len(SIZES))
        ]


def test_score_folders_matches_per_pair_reference(
    folders, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    gt, sr = folders
    out = tmp_path / "scores.csv"
    code = main(
        ["score", *HLF, "--ref", str(gt), "--dist", str(sr), "--batch-size", "2", "-o", str(out)]
    )
    assert code == 0
    assert "scores mean nothing" in capsys.readouterr().err
    rows = _read_csv(out)
    assert [Path(r["distorted"]).name for r in rows] == [f"img{i}.png" for i in range(5)]
    assert [Path(r["reference"]).parent for r in rows] == [gt] * 5
    expected = _reference_scores(gt, sr)
    np.testing.assert_allclose([float(r["score"]) for r in rows], expected, atol=1e-5)
    # noisier images (higher index) are not more faithful than the clean copy img0
    assert float(rows[0]["score"]) == pytest.approx(1.0, abs=1e-5)


def test_score_json_batch_size_one_and_pairs_csv(
    folders, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    gt, sr = folders
    out_json = tmp_path / "out" / "scores.json"
    assert (
        main(
            [
                "score",
                *HLF,
                "--ref",
                str(gt),
                "--dist",
                str(sr),
                "--batch-size",
                "1",
                "-o",
                str(out_json),
            ]
        )
        == 0
    )
    document = json.loads(out_json.read_text())
    assert document["metadata"]["random_weights"] is True
    assert "mean nothing" in document["metadata"]["warning"]
    assert document["metadata"]["count"] == 5
    by_folder = [row["score"] for row in document["rows"]]

    pairs = tmp_path / "pairs.csv"
    with pairs.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["sr", "gt"])
        for i in (3, 1, 4):
            writer.writerow([f"sr/img{i}.png", f"gt/img{i}.png"])  # relative to the CSV
    capsys.readouterr()
    assert main(["score", *HLF, "--pairs", str(pairs), "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)["rows"]
    assert [Path(r["distorted"]).name for r in rows] == ["img3.png", "img1.png", "img4.png"]
    np.testing.assert_allclose(
        [r["score"] for r in rows], [by_folder[i] for i in (3, 1, 4)], atol=1e-5
    )


def test_batches_group_sizes_and_keep_order(folders) -> None:
    gt, sr = folders
    pairs = pairs_from_folders(sr, gt)
    batches = batches_by_size([(p.distorted_size, p.reference_size) for p in pairs], 2)
    assert [[pairs[i].index for i in batch] for batch in batches] == [[0, 2], [4], [1, 3]]
    assert all(len({pairs[i].distorted_size for i in batch}) == 1 for batch in batches)


def test_score_bad_input_exit_codes(
    folders, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    gt, sr = folders

    def run(*argv: str) -> tuple[int, str]:
        code = main(["score", *HLF, *argv])
        return code, capsys.readouterr().err

    code, err = run("--ref", str(gt), "--dist", str(tmp_path / "nope"))
    assert code == 2 and "--dist folder" in err and "does not exist" in err
    empty = tmp_path / "empty"
    empty.mkdir()
    code, err = run("--ref", str(gt), "--dist", str(empty))
    assert code == 2 and "holds no images" in err
    code, err = run("--dist", str(sr))
    assert code == 2 and "pass --ref DIR" in err
    code, err = main(["score", "--metric", "ssim", "--dist", str(sr)]), capsys.readouterr().err
    assert code == 2 and "--metric must be" in err

    # unmatched names: an SR output without a GT of the same name
    _save(sr / "extra.png", np.zeros((16, 16, 3), np.uint8))
    code, err = run("--ref", str(gt), "--dist", str(sr))
    assert code == 2 and "extra.png" in err and "--skip-unmatched" in err
    out = tmp_path / "skip.csv"
    code, err = run("--ref", str(gt), "--dist", str(sr), "--skip-unmatched", "-o", str(out))
    assert code == 0 and len(_read_csv(out)) == 5
    (sr / "extra.png").unlink()

    # --match stem pairs img0.png with img0.jpg
    jpg = tmp_path / "jpg"
    _save(jpg / "img0.jpg", np.asarray(Image.open(sr / "img0.png")))
    code, err = run("--ref", str(gt), "--dist", str(jpg))
    assert code == 2 and "Try --match stem" in err
    code, err = run("--ref", str(gt), "--dist", str(jpg), "--match", "stem", "-o", str(out))
    assert code == 0 and Path(_read_csv(out)[0]["reference"]).name == "img0.png"

    # an unreadable image is named
    (sr / "img2.png").write_bytes(b"not an image at all")
    code, err = run("--ref", str(gt), "--dist", str(sr))
    assert code == 2 and "cannot read image" in err and "img2.png" in err

    # a pair of different sizes
    _save(sr / "img2.png", np.zeros((8, 8, 3), np.uint8))
    code, err = run("--ref", str(gt), "--dist", str(sr))
    assert code == 2 and "different sizes" in err and "img2.png" in err

    # pairs CSV problems
    pairs = tmp_path / "pairs.csv"
    pairs.write_text("image_a,image_b\nsr/img0.png,gt/img0.png\n")
    code, err = run("--pairs", str(pairs))
    assert code == 2 and "no distorted-image column" in err and "--dist-col" in err
    pairs.write_text("sr,gt\nsr/missing.png,gt/img0.png\n")
    code, err = run("--pairs", str(pairs))
    assert code == 2 and "do not exist" in err and "missing.png" in err
    assert run("--ref", str(gt), "--dist", str(sr), "--batch-size", "0")[0] == 2


def test_score_no_reference_metric(folders, capsys: pytest.CaptureFixture[str]) -> None:
    _, sr = folders
    argv = [
        "score", "--metric", f"nr:nr-head:{TINY}", "--image-size", "32", "--random-weights",
        "--no-progress", "--dist", str(sr), "--format", "json",
    ]  # fmt: skip
    assert main(argv) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["metadata"]["metric"] == f"nr:nr-head:{TINY}"
    rows = document["rows"]
    assert len(rows) == 5 and all(row["reference"] == "" for row in rows)
    # each row holds the model's own score of that image (same seed, one image at a time)
    from percepfid.iqa import create_nriqa

    torch.manual_seed(0)
    model = create_nriqa(f"nr-head:{TINY}", pretrained=False, image_size=32).eval()
    by_name = {Path(row["distorted"]).name: row["score"] for row in rows}
    with torch.no_grad():
        for i in range(len(SIZES)):
            array = np.asarray(Image.open(sr / f"img{i}.png").convert("RGB"), np.float32) / 255
            expected = float(model(torch.from_numpy(array).permute(2, 0, 1)[None]))
            assert by_name[f"img{i}.png"] == pytest.approx(expected, rel=1e-4, abs=1e-5)
    assert len(set(by_name.values())) == len(SIZES)  # distinct images, distinct scores


def test_score_pretrained_offline_fails_with_weights_exit_code(
    folders, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from percepfid.testing._fake_hub import FakeHub

    gt, sr = folders
    with FakeHub() as server, server.activate(tmp_path / "hf_home"), server.offline():
        code = main(
            [
                "score",
                "--metric",
                "hlf:dinov2-s",
                "--image-size",
                "28",
                "--ref",
                str(gt),
                "--dist",
                str(sr),
            ]
        )
    assert code == 4
    err = capsys.readouterr().err
    assert "percepfid score: error:" in err and "percepfid weights download" in err


def test_score_with_a_head_that_carries_tuned_blocks(
    folders, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--head`` loads the fine-tuned blocks saved with a head into the scoring backbone."""
    import copy

    from percepfid.backbones import create_backbone
    from percepfid.heads import load_head
    from percepfid.train.hlf import HumanRating, fit_hlf_head

    gt, sr = folders
    ratings = [
        HumanRating(sr / f"img{i}.png", gt / f"img{i}.png", 5.0 - i, f"g{i}")
        for i in range(len(SIZES))
    ]
    torch.manual_seed(0)  # the random backbone `score --random-weights --seed 0` builds
    backbone = create_backbone(TINY, pretrained=False, image_size=32)
    head_dir = tmp_path / "head"
    fit_hlf_head(
        ratings,
        backbone,
        unfreeze_blocks=1,
        epochs=2,
        backbone_lr=1e-3,
        val_fraction=0.0,
        batch_size=1,
        output_dir=head_dir,
    )
    out = tmp_path / "scores.csv"
    argv = ["score", *HLF, "--head", str(head_dir), "--ref", str(gt), "--dist", str(sr)]
    assert main([*argv, "-o", str(out)]) == 0
    scores = [float(row["score"]) for row in _read_csv(out)]

    # expected: the head on torch's cosine of the backbone with the blocks loaded by hand
    head = load_head(head_dir).eval()
    tuned = copy.deepcopy(backbone)
    tuned.encoder.load_state_dict(head.backbone_update.state, strict=False)

    def load(path: Path) -> torch.Tensor:
        array = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 255.0
        return torch.from_numpy(array).permute(2, 0, 1)[None]

    with torch.no_grad():
        expected, untuned = [], []
        for i in range(len(SIZES)):
            a, b = load(sr / f"img{i}.png"), load(gt / f"img{i}.png")
            for model, into in ((tuned, expected), (backbone, untuned)):
                cos = torch.nn.functional.cosine_similarity(model(a), model(b), dim=1)
                into.append(float(head(cos)))
    np.testing.assert_allclose(scores, expected, atol=1e-5)
    assert not np.allclose(scores, untuned, atol=1e-5)  # the blocks did matter
