"""Fit an HLF calibration head on human fidelity ratings and use it in HLFLoss.

    python examples/fit_hlf_head.py --ratings ratings.csv --output-dir my-hlf-head
    python examples/fit_hlf_head.py --ratings ratings.csv --head mlp --unfreeze-blocks 2
    python examples/fit_hlf_head.py --random-weights   # offline plumbing demo on generated
                                                        # ratings: the numbers mean nothing

ratings.csv has one row per rated pair: ``sr`` and ``gt`` (image paths, relative to the
CSV), ``score`` (human fidelity, any scale) and ``group`` (the source image; groups never
cross the train/validation split). The fitted head maps the cosine to predicted human
fidelity in [0, 1]; ``HLFLoss(backbone, head="my-hlf-head")`` loads it (or a Hub repo id
after ``--push-to-hub``), together with the backbone's last blocks when
``--unfreeze-blocks`` fine-tuned them. The same as ``percepfid fit-hlf ratings.csv -o my-hlf-head``.
"""

from __future__ import annotations

import argparse
import csv
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from percepfid import HLFLoss
from percepfid.train.hlf import fit_hlf_head, read_ratings

TINY = "timm:vit_tiny_patch16_224.augreg_in21k"


def load(path: Path) -> torch.Tensor:
    """An image file as a (1, 3, H, W) float tensor in [0, 1]."""
    array = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(array).permute(2, 0, 1)[None]


def make_ratings(folder: Path, groups: int = 8, variants: int = 4) -> Path:
    """Generated GT images, noisy copies, and made-up scores that fall with the noise."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    ys, xs = np.mgrid[0:32, 0:32] / 32.0
    rows = []
    for g in range(groups):
        phase = rng.uniform(0, 6.28, 3)
        gt = np.stack([0.5 + 0.4 * np.sin(5 * xs + p + 2 * ys) for p in phase], axis=-1)
        Image.fromarray((gt * 255).astype(np.uint8)).save(folder / f"gt{g}.png")
        for v in range(variants):
            noise = rng.uniform(0.0, 0.3)
            sr = np.clip(gt + rng.normal(scale=noise, size=gt.shape), 0, 1)
            Image.fromarray((sr * 255).astype(np.uint8)).save(folder / f"sr{g}_{v}.png")
            score = 1 + 4 / (1 + np.exp(20 * (noise - 0.15)))
            rows.append([f"sr{g}_{v}.png", f"gt{g}.png", round(score, 3), f"scene{g}"])
    path = folder / "ratings.csv"
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["sr", "gt", "score", "group"])
        writer.writerows(rows)
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ratings", type=Path, help="ratings CSV (default: generated demo)")
    parser.add_argument("--backbone", default="dinov2")
    parser.add_argument("--output-dir", type=Path, help="where to save the head")
    parser.add_argument("--push-to-hub", help="Hub repo id to push the head to")
    parser.add_argument("--head", choices=("calibration", "mlp"), default="calibration")
    parser.add_argument(
        "--unfreeze-blocks", type=int, default=0, help="fine-tune the last N backbone blocks"
    )
    parser.add_argument("--epochs", type=int, default=5, help="fine-tuning epochs")
    parser.add_argument(
        "--random-weights", action="store_true", help="offline plumbing demo: numbers mean nothing"
    )
    args = parser.parse_args()
    backbone, image_size = args.backbone, None
    if args.random_weights:
        print("--random-weights: random backbone, the fitted head means nothing (plumbing demo)")
        if backbone == "dinov2":
            backbone, image_size = TINY, 32  # a small random network keeps the demo quick
    with tempfile.TemporaryDirectory() as tmp:
        ratings = args.ratings or make_ratings(Path(tmp) / "ratings")
        output_dir = args.output_dir or Path(tmp) / "head"
        torch.manual_seed(0)
        result = fit_hlf_head(
            ratings,
            backbone,
            pretrained=not args.random_weights,
            image_size=image_size,
            val_fraction=0.25,
            head=args.head,
            unfreeze_blocks=args.unfreeze_blocks,
            epochs=args.epochs,
            output_dir=output_dir,
            push_to_hub=args.push_to_hub,
        )
        for split, stats in (("train", result.train), ("val", result.val)):
            print(
                f"{split:5s} n={stats['n']:3d}  cosine SRCC {stats['srcc_cosine']:.3f} "
                f"PLCC {stats['plcc_cosine']:.3f}  head PLCC {stats['plcc_head']:.3f}"
            )
        print(f"head saved to {output_dir}")
        # The fitted head in use: predicted human fidelity in [0, 1] for one pair.
        torch.manual_seed(0)  # the same random backbone as the fit (random-weights demo)
        loss = HLFLoss(
            backbone,
            pretrained=not args.random_weights,
            image_size=image_size,
            head=str(output_dir),
        )
        first = read_ratings(ratings)[0]
        sr, gt = (load(path) for path in (first.sr, first.gt))
        with torch.no_grad():
            predicted = float(loss.fidelity(sr, gt))
        print(f"{first.sr.name}: human {first.score}, predicted fidelity {predicted:.3f} (0..1)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
