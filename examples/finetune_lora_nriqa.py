"""Fine-tune a small SR network through LoRA with an NR-IQA reward and AMO targets.

The recipe of Zhang et al. (arXiv 2504.18524, CVPR 2025), end to end on generated data:

1. every LR input has several candidate ground truths (here: the clean image plus
   sharpened, blurred and noisy versions, standing in for HGGT's enhanced GTs);
2. AMO: one random crop location per sample, shared by all candidates; the NR-IQA model
   scores each candidate's crop and the best one becomes the target;
3. the loss is L1(SR, target) - weight * q_scale * Q(SR), and only LoRA adapters train;
4. the adapters are merged into the weights at the end (no runtime cost) and saved alone.

Real use needs the CLIP-IQA weights from the Hugging Face Hub (or ``--iqa pyiqa:musiq`` with
the optional, non-commercial pyiqa). Offline, run the same pipeline on random weights:

    python examples/finetune_lora_nriqa.py --random-weights

With ``--random-weights`` the quality model is untrained, so every number printed is a
plumbing check and means nothing about image quality.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from percepfid import MissingDependencyError, WeightsError
from percepfid.data import ArgmaxPatchSelector
from percepfid.iqa import create_nriqa
from percepfid.lora import save_lora
from percepfid.losses.lora_nriqa import LoRANRIQALoss


class TinySwinSR(nn.Module):
    """A small SwinIR-shaped network: conv head, transformer blocks, pixel-shuffle tail."""

    def __init__(self, dim: int = 16, depth: int = 2, scale: int = 2) -> None:
        super().__init__()
        self.head = nn.Conv2d(3, dim, 3, padding=1)
        self.blocks = nn.ModuleList(Block(dim) for _ in range(depth))
        self.tail = nn.Sequential(
            nn.Conv2d(dim, 3 * scale * scale, 3, padding=1), nn.PixelShuffle(scale)
        )
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feat = self.head(x)
        b, c, h, w = feat.shape
        tokens = feat.flatten(2).transpose(1, 2)
        for block in self.blocks:
            tokens = block(tokens)
        feat = feat + tokens.transpose(1, 2).reshape(b, c, h, w)
        skip = F.interpolate(x, scale_factor=self.scale, mode="bilinear", align_corners=False)
        return skip + self.tail(feat)


class Block(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, 2, batch_first=True)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm1(x)
        x = x + self.attn(y, y, y, need_weights=False)[0]
        return x + self.mlp(self.norm2(x))


def generated_batch(batch: int, size: int, scale: int, generator: torch.Generator):
    """LR inputs (B, 3, size/scale, size/scale) and K=4 candidate GTs (B, 4, 3, size, size)."""
    coarse = torch.rand(batch, 3, size // 8, size // 8, generator=generator)
    clean = F.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False).clamp(
        0, 1
    )
    blurred = F.avg_pool2d(clean, 5, stride=1, padding=2, count_include_pad=False)
    sharpened = (clean + 1.0 * (clean - blurred)).clamp(0, 1)
    noisy = (clean + 0.08 * torch.randn(clean.shape, generator=generator)).clamp(0, 1)
    candidates = torch.stack([clean, sharpened, blurred, noisy], dim=1)
    lr = F.interpolate(clean, scale_factor=1 / scale, mode="bicubic", antialias=True).clamp(0, 1)
    return lr, candidates


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--random-weights",
        action="store_true",
        help="random IQA weights (offline plumbing demo; numbers mean nothing)",
    )
    parser.add_argument("--iqa", default="clipiqa", help="NR-IQA model name (default: clipiqa)")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--size", type=int, default=64, help="GT side in pixels")
    parser.add_argument("--patch", type=int, default=32, help="AMO crop side (GT pixels)")
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--weight", type=float, default=0.05, help="lambda_Q")
    parser.add_argument(
        "--q-scale",
        type=float,
        default=100.0,
        help="maps a [0, 1] score to the paper's 0-100 scale",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="where to save the adapters")
    args = parser.parse_args(argv)

    torch.manual_seed(args.seed)
    scale = 2
    pretrained = not args.random_weights
    iqa_options = (
        {"image_size": 64} if args.random_weights and args.iqa.startswith("clipiqa") else {}
    )
    if args.random_weights:
        print(
            "RANDOM WEIGHTS: the quality model is untrained; every number below is a "
            "plumbing check and means nothing about image quality."
        )
    try:
        iqa = create_nriqa(args.iqa, pretrained=pretrained, **iqa_options)
    except (WeightsError, MissingDependencyError) as error:
        print(f"cannot build the NR-IQA model {args.iqa!r}: {error}", file=sys.stderr)
        print(
            "Connect to the Hugging Face Hub once to cache the weights, or run with "
            "--random-weights for an offline plumbing demo.",
            file=sys.stderr,
        )
        return 2

    sr_net = TinySwinSR(scale=scale)  # stands in for a pretrained SwinIR
    crit = LoRANRIQALoss(
        sr_net,
        iqa=iqa,
        rank=8,
        weight=args.weight,
        q_scale=args.q_scale,
        base_loss=nn.L1Loss(),
        targets="swinir-mlp",
    )
    selector = ArgmaxPatchSelector(iqa, patch_size=args.patch, scale=scale)
    optimiser = torch.optim.AdamW(crit.trainable_parameters(), lr=args.lr)
    trainable = sum(p.numel() for p in crit.trainable_parameters())
    total = sum(p.numel() for p in sr_net.parameters())
    print(f"LoRA trains {trainable} of {total} parameters ({100 * trainable / total:.1f}%)")

    generator = torch.Generator().manual_seed(args.seed)
    lr_patch = args.patch // scale
    first_q = last_q = None
    for step in range(args.steps):
        lr_img, candidates = generated_batch(args.batch, args.size, scale, generator)
        pick = selector(candidates, generator=generator)  # AMO: best crop, shared location
        lr_crops = torch.stack(
            [
                lr_img[b, :, t // scale : t // scale + lr_patch, x // scale : x // scale + lr_patch]
                for b, (t, x) in enumerate(zip(pick.top.tolist(), pick.left.tolist(), strict=True))
            ]
        )
        sr = crit.model(lr_crops)
        loss = crit(sr, pick.patch)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        with torch.no_grad():
            q = crit.quality(sr).mean().item()
        first_q = q if first_q is None else first_q
        last_q = q
        print(
            f"step {step + 1}/{args.steps}: loss {loss.item():+.4f}  Q(SR) {q:.4f}  "
            f"AMO picks {pick.index.tolist()}"
        )

    merged = crit.merge()
    probe, _ = generated_batch(2, args.size, scale, generator)
    with torch.no_grad():
        gap = (merged(probe) - crit.model(probe)).abs().max().item()
    print(f"merged network: max |merged - adapted| = {gap:.2e} (plain layers, no LoRA at runtime)")
    out = args.out or Path(tempfile.mkdtemp(prefix="percepfid-lora-")) / "adapters.safetensors"
    print(f"adapters saved to {save_lora(crit.model, out)}")
    print(
        f"Q(SR) first step {first_q:.4f} -> last step {last_q:.4f}"
        + (" (random weights: meaningless)" if args.random_weights else "")
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
