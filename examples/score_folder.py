"""Score a folder of SR outputs against their ground truths, then correlate with human scores.

    python examples/score_folder.py --ref GT_DIR --dist SR_DIR [--human mos.csv]
    python examples/score_folder.py --random-weights   # offline plumbing demo on generated
                                                        # images: the numbers mean nothing

It runs the same pipeline as the command line:

    percepfid score --metric hlf:dinov2 --ref GT_DIR --dist SR_DIR -o scores.csv
    percepfid correlate scores.csv --human mos.csv --key distorted --human-key image --match name

Without --ref/--dist it writes a small demo set (GT images and copies with growing noise)
to a temporary folder, with made-up "human" scores that fall with the noise.
"""

from __future__ import annotations

import argparse
import csv
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from percepfid.cli import main as percepfid

TINY = "timm:vit_tiny_patch16_224.augreg_in21k"


def make_demo(folder: Path, count: int = 6) -> tuple[Path, Path, Path]:
    """GT images, noisy 'SR' copies and a CSV of human-like scores (1..5)."""
    rng = np.random.default_rng(0)
    gt_dir, sr_dir = folder / "gt", folder / "sr"
    gt_dir.mkdir(parents=True)
    sr_dir.mkdir()
    ys, xs = np.mgrid[0:48, 0:64] / 48.0
    rows = []
    for i in range(count):
        phase = rng.uniform(0, 6.28, 3)
        gt = np.stack([0.5 + 0.4 * np.sin(6 * xs + p + 3 * ys) for p in phase], axis=-1)
        noise = 0.04 * i
        sr = np.clip(gt + rng.normal(scale=noise, size=gt.shape), 0, 1)
        name = f"{i:04d}.png"
        Image.fromarray((gt * 255).astype(np.uint8)).save(gt_dir / name)
        Image.fromarray((sr * 255).astype(np.uint8)).save(sr_dir / name)
        rows.append([name, round(5.0 - 3.5 * noise / 0.2 + rng.normal(scale=0.1), 2)])
    human = folder / "mos.csv"
    with human.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image", "mos"])
        writer.writerows(rows)
    return gt_dir, sr_dir, human


def run(args: argparse.Namespace, workdir: Path) -> int:
    if args.dist is None:
        args.ref, args.dist, args.human = make_demo(workdir / "demo")
        print(f"demo images written to {args.dist.parent}")
    metric = args.metric
    extra: list[str] = []
    if args.random_weights:
        extra = ["--random-weights", "--image-size", "32"]
        if metric == "hlf:dinov2":
            metric = f"hlf:{TINY}"  # a small random network keeps the demo quick
    scores = workdir / "scores.csv"
    argv = ["score", "--metric", metric, "--dist", str(args.dist), "-o", str(scores), *extra]
    if args.ref is not None:
        argv += ["--ref", str(args.ref)]
    code = percepfid(argv)
    if code != 0:
        return code
    print(scores.read_text())
    if args.human is not None:
        code = percepfid(
            ["correlate", str(scores), "--human", str(args.human), "--key", "distorted",
             "--human-key", "image", "--human-col", "mos", "--match", "name"]
        )  # fmt: skip
    return code


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ref", type=Path, help="folder of ground truths")
    parser.add_argument("--dist", type=Path, help="folder of SR outputs (same file names)")
    parser.add_argument("--human", type=Path, help="CSV with columns image, mos")
    parser.add_argument("--metric", default="hlf:dinov2", help="hlf:<backbone>, rqi, nr:<name>")
    parser.add_argument(
        "--random-weights", action="store_true", help="offline plumbing demo: numbers mean nothing"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        return run(args, Path(tmp))


if __name__ == "__main__":
    sys.exit(main())
