"""``percepfid fit-hlf`` end to end on generated images (random tiny backbone, offline)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from percepfid.cli import main
from percepfid.heads import CalibrationHead

TINY = "timm:vit_tiny_patch16_224.augreg_in21k"
BASE = ["--backbone", TINY, "--image-size", "32", "--random-weights", "--no-progress"]
# the fixture's CSV uses other column names than the defaults
COLUMNS = [
    "--sr-col",
    "sr_path",
    "--gt-col",
    "gt_path",
    "--score-col",
    "mos",
    "--group-col",
    "scene",
]


@pytest.fixture
def ratings_csv(tmp_path: Path) -> Path:
    rng = np.random.default_rng(3)
    rows = []
    for g in range(6):
        gt = (rng.random((16, 16, 3)) * 255).astype(np.uint8)
        Image.fromarray(gt).save(tmp_path / f"gt{g}.png")
        for v in range(3):
            level = 20.0 * v + 5.0
            sr = np.clip(gt + rng.normal(scale=level, size=gt.shape), 0, 255).astype(np.uint8)
            Image.fromarray(sr).save(tmp_path / f"sr{g}_{v}.png")
            rows.append([f"sr{g}_{v}.png", f"gt{g}.png", 5.0 - v - rng.random(), f"scene{g}"])
    path = tmp_path / "ratings.csv"
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["sr_path", "gt_path", "mos", "scene"])
        writer.writerows(rows)
    return path


def test_fit_hlf_cli_saves_a_loadable_head(
    ratings_csv: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "head"
    code = main(
        [
            "fit-hlf",
            str(ratings_csv),
            *BASE,
            *COLUMNS,
            "--val-fraction",
            "0.34",
            "-o",
            str(out),
            "--json",
        ]
    )
    assert code == 0
    captured = capsys.readouterr()
    assert "mean nothing" in captured.err
    report = json.loads(captured.out)
    assert report["random_weights"] is True
    assert report["train"]["n"] + report["val"]["n"] == 18
    assert len(report["val_groups"]) == 2 and set(report["val_groups"]).isdisjoint(
        report["train_groups"]
    )
    assert report["score_range"][1] > report["score_range"][0]
    head = CalibrationHead.from_pretrained(out)
    assert float(head.scale.detach()) == pytest.approx(report["head_config"]["scale"])
    cos = torch.linspace(-1, 1, 5)
    with torch.no_grad():
        expected = torch.sigmoid(
            report["head_config"]["scale"] * cos + report["head_config"]["bias"]
        )
        torch.testing.assert_close(head(cos), expected)

    # the table form (huggingface_hub printed a line while loading: drop it)
    capsys.readouterr()
    assert main(["fit-hlf", str(ratings_csv), *BASE, *COLUMNS, "--val-fraction", "0"]) == 0
    captured = capsys.readouterr()
    assert captured.out.splitlines()[0].split()[:2] == ["split", "n"]
    assert "head: sigmoid(" in captured.out
    assert "not saved" in captured.err


def test_fit_hlf_cli_errors(
    ratings_csv: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["fit-hlf", str(tmp_path / "none.csv"), *BASE]) == 2
    assert "ratings CSV not found" in capsys.readouterr().err
    assert main(["fit-hlf", str(ratings_csv), *BASE]) == 2  # default column 'sr' absent
    err = capsys.readouterr().err
    assert "percepfid fit-hlf: error:" in err and "no column 'sr'" in err
    assert "--sr-column" in err  # the message names the flag, not a Python keyword
    assert main(["fit-hlf", str(ratings_csv), *BASE, *COLUMNS, "--val-fraction", "1.5"]) == 2
    assert "--val-fraction" in capsys.readouterr().err


def test_fit_hlf_cli_mlp_head_with_unfrozen_blocks(
    ratings_csv: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from percepfid import HLFLoss
    from percepfid.heads import MLPCalibrationHead, load_head

    out = tmp_path / "tuned"
    args = ["fit-hlf", str(ratings_csv), *BASE, *COLUMNS]
    tuning = ["--head", "mlp", "--hidden", "8", "--unfreeze-blocks", "1", "--epochs", "2"]
    assert main([*args, *tuning, "--backbone-lr", "1e-4", "-o", str(out)]) == 0
    output = capsys.readouterr().out
    assert "head: MLPCalibrationHead(hidden=8)" in output
    assert "fine-tuned the last 1 backbone block(s) for 2 epoch(s); kept epoch" in output
    head = load_head(out)
    assert isinstance(head, MLPCalibrationHead) and head.backbone_update.blocks == 1
    report = json.loads((out / "fit_report.json").read_text())
    assert report["unfreeze_blocks"] == 1 and len(report["history"]) == 3
    # the kept epoch is the first with the best validation SRCC + PLCC of the head
    scores = [row["val_score"] for row in report["history"]]
    for row in report["history"]:
        if row["val_score"] is not None:
            assert row["val_score"] == pytest.approx(row["val_srcc_head"] + row["val_plcc_head"])
    ranked = [(score, -epoch) for epoch, score in enumerate(scores) if score is not None]
    assert ranked, "no validation score: the selection was not exercised"
    assert report["best_epoch"] == -max(ranked)[1]
    loss = HLFLoss(TINY, pretrained=False, image_size=32, head=str(out))
    value = loss(torch.rand(2, 3, 16, 16), torch.rand(2, 3, 16, 16))
    assert 0.0 <= float(value) <= 1.0

    assert main([*args, "--unfreeze-blocks", "99"]) == 2
    assert "--unfreeze-blocks must be an int in [1, 12]" in capsys.readouterr().err


def test_fit_hlf_cli_says_when_fine_tuning_did_not_beat_the_frozen_fit(
    ratings_csv: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import percepfid.train
    from percepfid.heads import BackboneUpdate

    head = CalibrationHead()
    head.backbone_update = BackboneUpdate(TINY, 1, {})
    result = percepfid.train.HLFFitResult(
        head=head,
        train={},
        val={},
        score_range=(0.0, 1.0),
        history=[{"epoch": e} for e in range(3)],
        best_epoch=0,
    )
    monkeypatch.setattr(percepfid.train, "fit_hlf_head", lambda *a, **k: result)
    args = ["fit-hlf", str(ratings_csv), *BASE, *COLUMNS, "--unfreeze-blocks", "1"]
    assert main(args) == 0
    output = capsys.readouterr().out
    assert "for 2 epoch(s); kept epoch 0: fine-tuning did not beat the frozen fit" in output
    result.best_epoch = 2
    assert main(args) == 0
    assert "did not beat" not in capsys.readouterr().out
