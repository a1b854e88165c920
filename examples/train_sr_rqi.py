"""Train a tiny x2 super-resolution network for a few steps with L1 + RQILoss.

RQILoss maximises the Relative Quality Index of SR against GT (Su et al., arXiv 2503.13074)
with the released MANIQA-RQI weights (Hub repo ``shaolin999/rqi``, about 580 MB, licence not
stated by the authors). The images are generated here, so nothing else is needed.

    python examples/train_sr_rqi.py                   # released weights (downloads them)
    python examples/train_sr_rqi.py --random-weights  # offline plumbing demo

With ``--random-weights`` the RQI model has random weights: the pipeline runs end to end,
but its numbers mean nothing.
"""

from __future__ import annotations

import argparse
import sys
import time

import torch
import torch.nn.functional as F
from _images import edge_images  # examples/_images.py
from torch import nn

from percepfid import WeightsError
from percepfid.losses.rqi import RQILoss


class TinySR(nn.Module):
    """conv -> ReLU -> conv -> PixelShuffle(2), plus a bilinear skip."""

    def __init__(self, width: int = 32) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, width, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(width, 12, 3, padding=1),
            nn.PixelShuffle(2),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
        return (skip + self.body(x)).clamp(0, 1)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--random-weights", action="store_true", help="random RQI weights (offline demo)"
    )
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--size", type=int, default=224, help="GT side (the RQI model crops 224)")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--rqi-weight", type=float, default=0.1, help="weight of -RQI next to L1")
    args = parser.parse_args()

    try:
        rqi = RQILoss(pretrained=not args.random_weights, weight=args.rqi_weight)
    except WeightsError as error:
        print(f"could not load the released RQI weights: {error}", file=sys.stderr)
        print(
            "run with --random-weights for an offline demo (its numbers mean nothing)",
            file=sys.stderr,
        )
        return 1
    if args.random_weights:
        print("NOTE: random RQI weights (--random-weights): the RQI numbers below mean nothing")

    generator = torch.Generator().manual_seed(0)
    hr = edge_images(args.batch, args.size, generator)
    lr = F.interpolate(hr, scale_factor=0.5, mode="bicubic", antialias=True).clamp(0, 1)
    torch.manual_seed(0)
    model = TinySR()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    for step in range(1, args.steps + 1):
        start = time.perf_counter()
        sr = model(lr)
        pixel = F.l1_loss(sr, hr)
        perceptual = rqi(sr, hr)  # = weight * mean(-RQI(sr, hr)); lower is better
        loss = pixel + perceptual
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        print(
            f"step {step}: L1 {pixel.item():.4f}  RQI(sr, gt) {-perceptual.item() / args.rqi_weight:+.4f}  "
            f"total {loss.item():.4f}  ({time.perf_counter() - start:.1f} s)"
        )
    with torch.no_grad():
        print(f"RQI(gt, gt) = {rqi.score(hr, hr).tolist()} (exactly 0 by construction)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
