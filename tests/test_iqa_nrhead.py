"""The 'nr-head' NR-IQA model: fit from a CSV of (image, MOS), save, load by path and repo id."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.stats import spearmanr

from percepfid import ArgumentError, EmptyBatchError
from percepfid.data import read_image, read_rating_table
from percepfid.iqa import NRHead, NRHeadIQA, create_nriqa
from percepfid.train import train_nr_head
from percepfid.testing._fake_hub import FakeHub

BACKBONE = "timm:vit_tiny_patch16_224.augreg_in21k"


def _dataset(root: Path, count: int = 16) -> Path:
    """Images whose MOS is their (noisy) brightness: a relation a frozen encoder can expose."""
    rng = np.random.default_rng(0)
    lines = ["image,mos"]
    for index in range(count):
        level = index / (count - 1)
        array = np.clip(level * 200 + rng.normal(0, 20, (24, 24, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(array).save(root / f"img{index}.png")
        lines.append(f"img{index}.png,{1 + 4 * level:.3f}")
    (root / "mos.csv").write_text("\n".join(lines) + "\n")
    return root / "mos.csv"


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[NRHead, Path]:
    root = tmp_path_factory.mktemp("koniq-like")
    csv_path = _dataset(root)
    torch.manual_seed(0)
    head = train_nr_head(
        csv_path,
        BACKBONE,
        image_size=32,
        pretrained=False,
        hidden=32,
        epochs=150,
        batch_size=8,
        lr=3e-3,
        progress=False,
    )
    return head, csv_path


def _load_rows(csv_path: Path) -> tuple[torch.Tensor, list[float]]:
    rows = read_rating_table(csv_path)
    images = torch.stack([read_image(row.image) for row in rows])
    return images, [row.score for row in rows]


def test_training_fits_the_scores(trained) -> None:
    head, csv_path = trained
    images, mos = _load_rows(csv_path)
    iqa = NRHeadIQA(head)
    with torch.no_grad():
        predicted = iqa(images)
    assert spearmanr(predicted.numpy(), mos).statistic > 0.9
    assert iqa.score_range == (1.0, 5.0) and iqa.higher_is_better
    assert abs(predicted.mean().item() - float(np.mean(mos))) < 0.5


def test_state_dict_holds_only_the_head(trained) -> None:
    head, _ = trained
    keys = set(head.state_dict())
    assert keys == {
        "mlp.0.weight",
        "mlp.0.bias",
        "mlp.2.weight",
        "mlp.2.bias",
        "target_mean",
        "target_std",
    }


def test_save_and_load_by_path_gives_identical_scores(trained, tmp_path) -> None:
    head, csv_path = trained
    head.save_pretrained(tmp_path / "head")
    config = json.loads((tmp_path / "head" / "config.json").read_text())
    assert config["backbone"] == BACKBONE and config["hidden"] == 32
    images, _ = _load_rows(csv_path)
    # pretrained=False: the backbone stays random; the same seed rebuilds the same weights
    loaded = create_nriqa("nr-head", pretrained=False, weights=tmp_path / "head")
    loaded.head.backbone.load_state_dict(
        head.backbone.state_dict(keep_vars=False) or {}, strict=False
    )
    with torch.no_grad():
        expected = head.head(head.backbone(images))
        got = loaded.head.head(head.backbone(images))
    assert torch.equal(got, expected)
    assert loaded.name == f"nr-head:{BACKBONE}"
    with pytest.raises(ArgumentError, match="hold a head for backbone"):
        create_nriqa("nr-head:dinov2", pretrained=False, weights=tmp_path / "head")


def test_load_by_hub_repo_id(trained, tmp_path) -> None:
    head, _ = trained
    head.save_pretrained(tmp_path / "head")
    embeddings = torch.randn(3, head.backbone.embed_dim)
    with FakeHub() as hub, hub.activate(tmp_path / "hf_home"):
        hub.add_folder("someone/nr-head-tiny", tmp_path / "head")
        loaded = create_nriqa("nr-head", pretrained=False, weights="someone/nr-head-tiny")
    assert isinstance(loaded, NRHeadIQA)
    with torch.no_grad():
        assert torch.equal(loaded.head.head(embeddings), head.head(embeddings))


def test_untrained_head_and_errors(tmp_path) -> None:
    iqa = create_nriqa(f"nr-head:{BACKBONE}", pretrained=False, image_size=32, hidden=0)
    assert iqa(torch.rand(2, 3, 20, 20)).shape == (2,)
    assert not any(p.requires_grad for p in iqa.parameters())
    with pytest.raises(ArgumentError, match="needs trained weights"):
        create_nriqa(f"nr-head:{BACKBONE}")
    (tmp_path / "bad.csv").write_text("image,score\nx.png,1\n")
    with pytest.raises(ArgumentError, match=r"columns\.score"):
        train_nr_head(tmp_path / "bad.csv", BACKBONE, pretrained=False, progress=False)
    (tmp_path / "missing.csv").write_text("image,mos\nx.png,1\n")
    with pytest.raises(ArgumentError, match=r"not found.*x\.png"):
        train_nr_head(tmp_path / "missing.csv", BACKBONE, pretrained=False)
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "x.png")
    (tmp_path / "nan.csv").write_text("image,mos\nx.png,abc\n")
    with pytest.raises(ArgumentError, match=r"row 2, column 'mos': expected a number"):
        train_nr_head(tmp_path / "nan.csv", BACKBONE, pretrained=False)
    (tmp_path / "nan.csv").write_text("image,mos\nx.png,nan\n")
    with pytest.raises(ArgumentError, match="finite"):
        train_nr_head(tmp_path / "nan.csv", BACKBONE, pretrained=False)
    (tmp_path / "empty.csv").write_text("image,mos\n")
    with pytest.raises(EmptyBatchError):
        train_nr_head(tmp_path / "empty.csv", BACKBONE, pretrained=False)
    (tmp_path / "flat.csv").write_text("image,mos\nx.png,2\nx.png,2\n")
    with pytest.raises(ArgumentError, match="equal"):
        train_nr_head(tmp_path / "flat.csv", BACKBONE, pretrained=False, progress=False)


def test_training_leaves_the_global_rng_alone(tmp_path) -> None:
    # The trainer seeds its own head initialisation; the caller's global RNG must not move.
    csv_path = _dataset(tmp_path, count=4)
    options = dict(image_size=32, pretrained=False, hidden=4, epochs=1, batch_size=4)

    def train() -> NRHead:
        return train_nr_head(csv_path, BACKBONE, progress=False, seed=5, **options)

    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    first = train()
    assert torch.equal(torch.rand(3), expected)
    # and the seed still fixes the head's initialisation
    second = train()
    for (name, a), (_, b) in zip(
        first.state_dict().items(), second.state_dict().items(), strict=True
    ):
        if not name.startswith("backbone"):
            assert torch.equal(a, b), name
