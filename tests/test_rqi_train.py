"""Training RQI heads: the learning check on synthetic IQA data, resume, CSV errors, the CLI,
and RQILoss on a backbone + head."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from scipy.stats import spearmanr
from torch import nn

from percepfid._errors import ArgumentError
from percepfid.data import Rating
from percepfid.losses.rqi import RQILoss
from percepfid.rqi import RQIHead
from percepfid.train import dense_pairs, train_rqi

LEVELS = 5


class RandomConv(nn.Module):
    """A small random-weight convolutional backbone: mean and std of its feature maps."""

    embed_dim = 64

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3)
        self.conv2 = nn.Conv2d(16, 32, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv2(F.relu(self.conv1(x))))
        return torch.cat([x.mean((2, 3)), x.std((2, 3))], 1)


def _backbone() -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return RandomConv()


def _scene(generator: torch.Generator, size: int = 48) -> torch.Tensor:
    """A smooth random colour field with a few sharp-edged patches (natural-ish statistics)."""
    x = F.interpolate(
        torch.rand(1, 3, 6, 6, generator=generator), size=(size, size), mode="bicubic"
    )
    for _ in range(3):
        top, left = torch.randint(0, size - 12, (2,), generator=generator).tolist()
        height, width = torch.randint(6, 20, (2,), generator=generator).tolist()
        x[..., top : top + height, left : left + width] = torch.rand(
            1, 3, 1, 1, generator=generator
        )
    return x.clamp(0, 1)


def _blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    if sigma == 0:
        return x
    kernel = torch.exp(-(torch.arange(-4, 5.0) ** 2) / (2 * sigma**2))
    kernel = (kernel / kernel.sum()).repeat(3, 1, 1, 1)
    x = F.conv2d(F.pad(x, (4, 4, 0, 0), mode="reflect"), kernel.view(3, 1, 1, 9), groups=3)
    return F.conv2d(F.pad(x, (0, 0, 4, 4), mode="reflect"), kernel.view(3, 1, 9, 1), groups=3)


def _distorted(reference: torch.Tensor, level: int, generator: torch.Generator) -> torch.Tensor:
    """Blur and noise that both grow with ``level`` (0 = pristine)."""
    x = _blur(reference, 0.6 * level)
    return (x + 0.02 * level * torch.randn(x.shape, generator=generator)).clamp(0, 1)


def _write_dataset(folder: Path, scenes: int, seed: int) -> Path:
    generator = torch.Generator().manual_seed(seed)
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for scene in range(scenes):
        reference = _scene(generator)
        for level in range(LEVELS):
            image = _distorted(reference, level, generator)
            name = f"s{scene}_l{level}.png"
            pixels = (image[0].permute(1, 2, 0) * 255).round().byte().numpy()
            Image.fromarray(pixels).save(folder / name)
            rows.append((name, f"scene{scene}", LEVELS - level))  # MOS from the level
    path = folder / "ratings.csv"
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image", "scene", "mos"])
        writer.writerows(rows)
    return path


def _held_out_srcc(loss: RQILoss, seed: int, scenes: int = 4) -> float:
    """SRCC (scipy) between predicted and true quality differences on new scenes, one
    ordering per unordered pair (so the sign symmetry cannot inflate it)."""
    generator = torch.Generator().manual_seed(seed)
    predicted, true = [], []
    for _ in range(scenes):
        reference = _scene(generator)
        images = [
            (_distorted(reference, level, generator) * 255).round() / 255 for level in range(LEVELS)
        ]
        for i in range(LEVELS):
            for j in range(i + 1, LEVELS):
                a, b = images[i][..., 8:40, 8:40], images[j][..., 8:40, 8:40]
                with torch.no_grad():
                    predicted.append(float(loss.score(a, b)))
                true.append((j - i) / (LEVELS - 1))  # level i is better than level j
    return float(spearmanr(predicted, true).statistic)


def test_learning_check_on_synthetic_iqa_data(tmp_path):
    """12 scenes x 5 distortion levels (blur + noise growing with the level, MOS = 5 - level),
    an RQI head on a random-weight conv backbone, 4 epochs (about 10 s). Observed: validation
    SRCC 0.977 (ordered pairs of the 2 held-out scenes); on 4 new scenes, one ordering per pair
    (scipy spearmanr), SRCC 0.86 against 0.33 for the same head untrained. Asserted:
    validation >= 0.9, new scenes >= 0.75 and at least 0.3 above the untrained head."""
    csv_path = _write_dataset(tmp_path / "data", scenes=12, seed=0)
    backbone = _backbone()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        head = RQIHead(64, hidden_dim=64)
    untrained = RQILoss(backbone, head=_copy(head), pretrained=False)
    result = train_rqi(
        csv_path,
        tmp_path / "run",
        backbone=backbone,
        head=head,
        pretrained=False,
        epochs=4,
        batch_size=16,
        lr=1e-3,
        crop_size=32,
        progress=False,
        seed=0,
    )
    assert len(result.history) == 4 and 1 <= result.best_epoch <= 4
    assert result.best_srcc == max(h["val_srcc"] for h in result.history)
    assert result.best_srcc >= 0.9
    trained = RQILoss(backbone, head=result.head, pretrained=False)
    held_out = _held_out_srcc(trained, seed=99)
    baseline = _held_out_srcc(untrained, seed=99)
    assert held_out >= 0.75, (held_out, baseline)
    assert held_out > baseline + 0.3
    # the saved best head loads back by path and gives identical scores
    loaded = RQILoss(backbone, head=str(tmp_path / "run" / "best"), pretrained=False)
    a, b = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32)
    assert torch.equal(loaded.score(a, b), trained.score(a, b))


def _copy(head: RQIHead) -> RQIHead:
    clone = RQIHead(head.embed_dim, hidden_dim=64)
    clone.load_state_dict(head.state_dict())
    return clone


def test_resume_continues_exactly(tmp_path):
    csv_path = _write_dataset(tmp_path / "data", scenes=4, seed=1)
    settings = dict(
        backbone=_backbone(),
        pretrained=False,
        batch_size=8,
        lr=1e-3,
        crop_size=32,
        progress=False,
        seed=3,
    )

    def head() -> RQIHead:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            return RQIHead(64, hidden_dim=16)

    straight = train_rqi(csv_path, tmp_path / "a", head=head(), epochs=2, **settings)
    train_rqi(csv_path, tmp_path / "b", head=head(), epochs=1, **settings)
    resumed = train_rqi(csv_path, tmp_path / "b", head=head(), epochs=2, resume=True, **settings)
    assert resumed.history == straight.history
    last_a = torch.load(tmp_path / "a" / "last.pt", weights_only=True)["head"]
    last_b = torch.load(tmp_path / "b" / "last.pt", weights_only=True)["head"]
    assert all(torch.equal(last_a[k], last_b[k]) for k in last_a)


def test_dense_pairs_labels_by_hand():
    rows = [
        Rating(Path("a"), 1.0, "x"),
        Rating(Path("b"), 3.0, "x"),
        Rating(Path("c"), 5.0, "y"),
        Rating(Path("d"), 2.0, "y"),
    ]
    # scores normalised over all rows: (s - 1) / 4 -> 0, 0.5, 1, 0.25
    assert dense_pairs(rows, ["x"]) == [(0, 1, -0.5), (1, 0, 0.5)]
    assert dense_pairs(rows, ["y"], higher_is_better=False) == [(2, 3, -0.75), (3, 2, 0.75)]
    assert len(dense_pairs(rows, ["x", "y"])) == 4


def test_csv_errors_name_what_is_missing(tmp_path):
    def read(csv_path):  # train_rqi reads the CSV before it builds anything
        train_rqi(csv_path, tmp_path / "out", pretrained=False)

    path = tmp_path / "r.csv"
    path.write_text("image,scene,score\na.png,s,1\n")
    with pytest.raises(
        ArgumentError, match=r"no column 'mos'.*'image', 'scene', 'score'.*columns\.score"
    ):
        read(path)
    path.write_text("image,group,mos\na.png,s,1\n")
    with pytest.raises(ArgumentError, match=r"no column 'scene'.*columns\.group"):
        read(path)
    path.write_text("image,scene,mos\na.png,s,1\nb.png,s,2\n")
    (tmp_path / "a.png").write_bytes(b"")
    with pytest.raises(ArgumentError, match=r"not found.*b\.png"):
        read(path)
    path.write_text("image,scene,mos\na.png,s,good\n")
    with pytest.raises(ArgumentError, match=r"row 2, column 'mos': expected a number; got 'good'"):
        read(path)
    with pytest.raises(ArgumentError, match="not found"):
        read(tmp_path / "absent.csv")


def test_cli_train_rqi(tmp_path, capsys):
    from percepfid.cli import main

    csv_path = _write_dataset(tmp_path / "data", scenes=3, seed=2)
    code = main(
        [
            "train-rqi",
            str(csv_path),
            "--output",
            str(tmp_path / "run"),
            "--backbone",
            "timm:vit_tiny_patch16_224.augreg_in21k",
            "--image-size",
            "32",
            "--random-weights",
            "--epochs",
            "1",
            "--crop-size",
            "32",
            "--no-progress",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    assert "best val SRCC" in out and "mean nothing" in out
    assert (tmp_path / "run" / "best" / "model.safetensors").is_file()
    assert (tmp_path / "run" / "last.pt").is_file()
    # a bad CSV: exit code 2 and the missing column named on stderr
    bad = tmp_path / "bad.csv"
    bad.write_text("path,scene,mos\nx.png,s,1\n")
    code = main(["train-rqi", str(bad), "--output", str(tmp_path / "bad"), "--random-weights"])
    assert code == 2
    err = capsys.readouterr().err
    assert "'image'" in err and "--image-column" in err


# ----------------------------------------------------------------------------- backbone mode


@pytest.fixture(scope="module")
def tiny_vit_loss() -> RQILoss:
    from percepfid.backbones import create_backbone

    backbone = create_backbone(
        "timm:vit_tiny_patch16_224.augreg_in21k", pretrained=False, image_size=32
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        head = RQIHead(192, hidden_dim=32)
    return RQILoss(backbone, head=head, embedding="patch", pretrained=False)


def test_backbone_head_exact_antisymmetry_and_gradients(tiny_vit_loss):
    generator = torch.Generator().manual_seed(0)
    a, b = (
        torch.rand(2, 3, 40, 56, generator=generator),
        torch.rand(2, 3, 40, 56, generator=generator),
    )
    assert torch.equal(tiny_vit_loss.score(a, b), -tiny_vit_loss.score(b, a))
    assert torch.equal(tiny_vit_loss.score(a, a), torch.zeros(2))
    sr = a.clone().requires_grad_(True)
    gt = b.clone().requires_grad_(True)
    tiny_vit_loss(sr, gt).backward()
    assert sr.grad is not None and sr.grad.abs().sum() > 0 and gt.grad is None
    assert all(p.grad is None for p in tiny_vit_loss.parameters())


def test_backbone_head_state_dict_holds_the_head_only(tiny_vit_loss):
    keys = set(tiny_vit_loss.state_dict())
    assert keys and all(k.startswith("model.head.") for k in keys)
    tiny_vit_loss.load_state_dict(tiny_vit_loss.state_dict(), strict=True)
    tiny_vit_loss.train()
    assert not tiny_vit_loss.model.backbone.training and not tiny_vit_loss.model.head.training
    tiny_vit_loss.eval()


def test_head_must_be_a_hub_head_for_training(tmp_path):
    csv_path = _write_dataset(tmp_path / "data", scenes=2, seed=4)

    class Plain(nn.Module):
        def forward(self, a, b):
            return (a - b).sum(-1)

    with pytest.raises(ArgumentError, match="HubHead"):
        train_rqi(
            csv_path,
            tmp_path / "run",
            backbone=_backbone(),
            head=Plain(),
            pretrained=False,
            epochs=1,
        )


def test_global_rng_is_left_untouched(tmp_path):
    """train_rqi leaves the caller's global torch RNG untouched."""
    csv_path = _write_dataset(tmp_path / "data", scenes=2, seed=5)
    torch.manual_seed(42)
    expected = torch.rand(3)
    torch.manual_seed(42)
    train_rqi(
        csv_path,
        tmp_path / "run",
        backbone=_backbone(),
        pretrained=False,
        epochs=1,
        crop_size=32,
        progress=False,
    )
    assert torch.equal(torch.rand(3), expected)


# ----------------------------------------------------------------------------- caching


def _counted_run(csv_path, out, **options):
    """Train with a fresh RandomConv and count the images it embeds."""
    backbone = _backbone()
    rows = {"n": 0}
    backbone.register_forward_hook(
        lambda m, args, out: rows.__setitem__("n", rows["n"] + len(args[0]))
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        head = RQIHead(64, hidden_dim=16)
    settings = dict(pretrained=False, batch_size=8, lr=1e-3, crop_size=32, progress=False, seed=3)
    result = train_rqi(csv_path, out, backbone=backbone, head=head, **settings | options)
    return result, rows["n"]


def test_cache_embeds_each_crop_once_with_the_uncached_results(tmp_path):
    """4 scenes of 5 images: 3 train scenes (60 ordered pairs), 1 validation scene (20)."""
    csv_path = _write_dataset(tmp_path / "data", scenes=4, seed=1)
    options = {"epochs": 3, "crop_positions": 2}
    cached, cached_rows = _counted_run(csv_path, tmp_path / "a", **options)
    uncached, uncached_rows = _counted_run(csv_path, tmp_path / "b", cache_mb=0, **options)
    # uncached: both images of every pair, every epoch; cached: each distinct (image,
    # position, flip) once: 15 train images x 2 positions x 2 flips, 5 centred val images
    assert uncached_rows == 3 * (2 * 60 + 2 * 20)
    assert 5 < cached_rows <= 15 * 2 * 2 + 5
    assert cached.best_epoch == uncached.best_epoch
    for row_a, row_b in zip(cached.history, uncached.history, strict=True):
        assert row_a["train_loss"] == pytest.approx(row_b["train_loss"], rel=1e-4, abs=1e-6)
        assert row_a["val_srcc"] == pytest.approx(row_b["val_srcc"], abs=1e-6)
    last_a = torch.load(tmp_path / "a" / "last.pt", weights_only=True)["head"]
    last_b = torch.load(tmp_path / "b" / "last.pt", weights_only=True)["head"]
    for key, value in last_b.items():
        torch.testing.assert_close(last_a[key], value, atol=1e-5, rtol=1e-4)


def test_fresh_crop_positions_keep_full_augmentation(tmp_path):
    """crop_positions=None draws a new position for every pair: the training inputs almost
    never repeat (48-pixel images, 32-pixel crops: 17 x 17 positions x 2 flips)."""
    csv_path = _write_dataset(tmp_path / "data", scenes=4, seed=1)
    _, pooled_rows = _counted_run(csv_path, tmp_path / "a", epochs=2, crop_positions=1)
    _, fresh_rows = _counted_run(csv_path, tmp_path / "b", epochs=2, crop_positions=None)
    assert pooled_rows <= 15 * 1 * 2 + 5
    assert fresh_rows > 0.9 * 2 * 2 * 60  # 240 training inputs drawn, nearly all distinct


def test_train_rqi_help_documents_every_option():
    import argparse

    from percepfid.cli import build_parser

    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    command = commands.choices["train-rqi"]
    for action in command._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        assert action.help, f"{action.option_strings or action.dest} has no help"
        takes_value = action.nargs != 0
        if action.option_strings and takes_value and not action.required:
            assert "default" in action.help, f"{action.option_strings} hides its default"
    text = command.format_help()
    for shown in ("(default: 10)", "(default: 0.0001)", "(default: 224)", "(default: scene)"):
        assert shown in text
