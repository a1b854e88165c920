"""Fine-tune a small SR network for a few steps with HLFLoss.

    python examples/quickstart.py                  # DINOv2 weights from the Hugging Face Hub
    python examples/quickstart.py --random-weights # offline plumbing demo: numbers mean nothing

The images are generated (smooth shapes and textures), downscaled x2 to make LR inputs.
"""

from __future__ import annotations

import argparse
import math
import sys

import torch
import torch.nn.functional as F
from torch import nn

from percepfid import HLFLoss, WeightsError


def make_images(count: int, size: int, generator: torch.Generator) -> torch.Tensor:
    """Natural-looking test images: blurred colour blobs, stripes and a gradient."""
    ys, xs = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    images = []
    for _ in range(count):
        r = torch.rand(8, generator=generator)
        image = torch.stack(
            [
                0.5 + 0.4 * torch.sin(2 * math.pi * (xs * (1 + 4 * r[0]) + r[1])),
                0.5 + 0.4 * torch.cos(2 * math.pi * (ys * (1 + 4 * r[2]) + r[3])),
                xs * r[4] + ys * (1 - r[4]),
            ]
        )
        cy, cx, radius = r[5], r[6], 0.1 + 0.3 * r[7]
        disc = (((ys - cy) ** 2 + (xs - cx) ** 2) < radius**2).float()
        image = image * (1 - disc) + disc * torch.rand(3, 1, 1, generator=generator)
        images.append(image.clamp(0, 1))
    return torch.stack(images)


class TinySR(nn.Module):
    """A x2 ESPCN-style network with a bicubic skip connection."""

    def __init__(self, channels: int = 32) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, channels, 3, padding=1),
            nn.GELU(),
            nn.Conv2d(channels, channels, 3, padding=1),
            nn.GELU(),
            nn.Conv2d(channels, 3 * 4, 3, padding=1),
            nn.PixelShuffle(2),
        )

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        base = F.interpolate(lr, scale_factor=2, mode="bicubic", align_corners=False)
        return (base + self.body(lr)).clamp(0, 1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--backbone",
        default=None,
        help="default: dinov2 (pretrained); a tiny timm ViT with --random-weights",
    )
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--size", type=int, default=96, help="HR image side")
    parser.add_argument("--hlf-weight", type=float, default=0.5)
    parser.add_argument(
        "--random-weights",
        action="store_true",
        help="random backbone weights (offline); the numbers then mean nothing",
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)

    generator = torch.Generator().manual_seed(0)
    hr = make_images(6, args.size, generator).to(args.device)
    lr = F.interpolate(
        hr, scale_factor=0.5, mode="bicubic", align_corners=False, antialias=True
    ).clamp(0, 1)

    if args.random_weights:
        print(
            "NOTE: --random-weights: the backbone has random weights; the numbers below only "
            "show the pipeline runs and mean nothing about image quality."
        )
        # A small ViT keeps the offline demo fast; any registered name works with --backbone.
        backbone = args.backbone or "timm:vit_tiny_patch16_224.augreg_in21k"
        hlf = HLFLoss(backbone, pretrained=False, image_size=56 if "dinov2" in backbone else 64)
    else:
        args.backbone = args.backbone or "dinov2"
        try:
            hlf = HLFLoss(args.backbone)
        except WeightsError as error:
            print(
                f"Could not load pretrained weights for {args.backbone!r}: {error}\n"
                "Run with --random-weights for an offline plumbing demo.",
                file=sys.stderr,
            )
            return 2
    hlf = hlf.to(args.device)
    torch.manual_seed(0)
    model = TinySR().to(args.device)
    optimiser = torch.optim.AdamW(model.parameters(), lr=2e-3)

    with torch.no_grad():
        before = hlf.fidelity(model(lr), hr)
    reference = hlf.embed_reference(hr)  # the GTs never change: embed them once
    for step in range(1, args.steps + 1):
        sr = model(lr)
        pixel = F.l1_loss(sr, hr)
        semantic = hlf(sr, reference)
        loss = pixel + args.hlf_weight * semantic
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        if step == 1 or step % 5 == 0 or step == args.steps:
            print(
                f"step {step:3d}  loss {loss.item():.4f}  (L1 {pixel.item():.4f}, HLF {semantic.item():.4f})"
            )
    with torch.no_grad():
        after = hlf.fidelity(model(lr), hr)
    print(f"fidelity before: {before.mean().item():.4f}  after: {after.mean().item():.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
