"""Fine-tune any spandrel-loadable SR checkpoint through LoRA with L1 + HLF + RQI + NR-IQA.

The workflow, end to end:

1. load the network from a checkpoint (``.pth`` / ``.safetensors``; spandrel detects the
   architecture: ESRGAN, SwinIR, HAT, DAT, SPAN, Compact, ...) and attach LoRA adapters
   where ``targets='auto'`` puts them for that architecture;
2. every LR input has several candidate ground truths (here: the clean image plus
   sharpened, blurred and noisy versions, standing in for enhanced GTs); an NR-IQA model
   scores them once and ``IQAWeightedSampler`` draws the target of each step by
   ``softmax(score / temperature)``;
3. the loss is ``L1 + w_hlf * HLF + w_rqi * RQI - weight * q_scale * Q(SR)``; only the
   adapters train;
4. before/after scores on held-out images, a before/after PNG grid, the merged checkpoint
   (spandrel loads it back as the same architecture) and the adapters alone are saved.

Real use (downloads the HLF, RQI and CLIP-IQA weights from the Hugging Face Hub once):

    python examples/finetune_spandrel.py 4x_model.pth --out runs/ft

Offline, on an architecture built with random weights (written to a checkpoint first, so
the spandrel loading path runs too):

    python examples/finetune_spandrel.py --arch SPAN --random-weights

With ``--random-weights`` every network is untrained: the numbers printed are a plumbing
check and mean nothing about image quality.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F
from _images import edge_images  # examples/_images.py
from torch import nn

from percepfid import (
    HLFLoss,
    IQAWeightedSampler,
    LoRANRIQALoss,
    MissingDependencyError,
    RQILoss,
    WeightsError,
)
from percepfid.iqa import create_nriqa
from percepfid.lora import load_sr_model, lora_family, save_lora, save_sr_model
from percepfid.rqi import SMALL_MODEL_KWARGS


def small_architecture(name: str) -> nn.Module:
    """A small x2 network of a spandrel architecture, random weights (offline demo only)."""
    import importlib

    def arch(module: str):
        return importlib.import_module(f"spandrel.architectures.{module}")

    builders = {
        "SwinIR": lambda: arch("SwinIR").SwinIR(
            embed_dim=24, depths=[2, 2], num_heads=[2, 2], window_size=4, img_size=16,
            upscale=2, upsampler="pixelshuffledirect", drop_path_rate=0.0,
        ),
        "ESRGAN": lambda: arch("ESRGAN").ESRGAN(num_filters=16, num_blocks=2, scale=2),
        "SPAN": lambda: arch("SPAN").SPAN(num_in_ch=3, num_out_ch=3, feature_channels=16, upscale=2),
        "Compact": lambda: arch("Compact").Compact(num_feat=16, num_conv=4, upscale=2),
        "RCAN": lambda: arch("RCAN").RCAN(n_resgroups=2, n_resblocks=2, n_feats=16, reduction=4, scale=2),
        "SAFMN": lambda: arch("SAFMN").SAFMN(dim=16, n_blocks=2, upscaling_factor=2),
    }  # fmt: skip
    if name not in builders:
        raise SystemExit(f"--arch must be one of {sorted(builders)}; got {name!r}")
    return builders[name]()


def candidate_ground_truths(count: int, size: int, generator: torch.Generator) -> torch.Tensor:
    """(count, K=4, 3, size, size): clean, sharpened, blurred and noisy versions of
    synthetic images."""
    clean = edge_images(count, size, generator)
    blurred = F.avg_pool2d(clean, 5, stride=1, padding=2, count_include_pad=False)
    sharpened = (clean + (clean - blurred)).clamp(0, 1)
    noisy = (clean + 0.08 * torch.randn(clean.shape, generator=generator)).clamp(0, 1)
    return torch.stack([clean, sharpened, blurred, noisy], dim=1)


def downscale(hr: torch.Tensor, scale: int) -> torch.Tensor:
    return F.interpolate(hr, scale_factor=1 / scale, mode="bicubic", antialias=True).clamp(0, 1)


def upscale(net: nn.Module, lr: torch.Tensor) -> torch.Tensor:
    out = net(lr.clone())  # some architectures scale their input in place
    return out[0] if isinstance(out, (tuple, list)) else out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "checkpoint", nargs="?", type=Path, help="a spandrel-loadable SR checkpoint"
    )
    parser.add_argument("--arch", help="with --random-weights: build this architecture instead")
    parser.add_argument(
        "--random-weights",
        action="store_true",
        help="random weights for every model (offline plumbing demo; numbers mean nothing)",
    )
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--items", type=int, default=6, help="training images (each with 4 GTs)")
    parser.add_argument("--size", type=int, default=32, help="GT side in pixels")
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--rank", type=int, default=None, help="default: the family's rank")
    parser.add_argument("--hlf-weight", type=float, default=0.1)
    parser.add_argument("--rqi-weight", type=float, default=0.05)
    parser.add_argument("--weight", type=float, default=0.05, help="lambda_Q of the reward")
    parser.add_argument("--q-scale", type=float, default=100.0, help="[0, 1] score -> 0-100")
    parser.add_argument("--temperature", type=float, default=0.1, help="GT sampling softmax")
    parser.add_argument("--out", type=Path, default=None, help="output folder")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    torch.manual_seed(args.seed)
    out = args.out or Path(tempfile.mkdtemp(prefix="percepfid-spandrel-"))
    out.mkdir(parents=True, exist_ok=True)
    random = args.random_weights
    if random:
        print(
            "RANDOM WEIGHTS: the SR network and the HLF, RQI and NR-IQA models are untrained; "
            "every number below is a plumbing check and means nothing about image quality."
        )
    if args.checkpoint is None:
        if not (random and args.arch):
            parser.error("give a checkpoint, or --arch NAME --random-weights for an offline demo")
        path = out / f"{args.arch}_random.safetensors"
        args.checkpoint = save_sr_model(small_architecture(args.arch), path)
        print(f"wrote a random-weight {args.arch} checkpoint to {args.checkpoint}")

    try:
        sr_net = load_sr_model(args.checkpoint)
        if random:
            hlf = HLFLoss("timm:vit_tiny_patch16_224.augreg_in21k", pretrained=False, image_size=32)
            rqi = RQILoss(pretrained=False, model_kwargs=SMALL_MODEL_KWARGS, weight=args.rqi_weight)
            iqa = create_nriqa("clipiqa:ViT-S-32", pretrained=False, image_size=32)
        else:
            hlf, rqi = HLFLoss("dinov2"), RQILoss(weight=args.rqi_weight)
            iqa = create_nriqa("clipiqa")
    except (WeightsError, MissingDependencyError) as error:
        print(f"cannot build the models: {error}", file=sys.stderr)
        print("run with --arch NAME --random-weights for an offline demo", file=sys.stderr)
        return 2

    with torch.no_grad():
        scale = upscale(sr_net.eval(), torch.rand(1, 3, 16, 16)).shape[-1] // 16
    family = lora_family(sr_net)
    l1 = nn.L1Loss()

    def fidelity(sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
        shown = sr.clamp(0, 1)  # HLF and RQI judge the image as it will be saved
        return l1(sr, hr) + args.hlf_weight * hlf(shown, hr) + rqi(shown, hr)

    crit = LoRANRIQALoss(
        sr_net,
        iqa=iqa,
        targets="auto",
        rank=args.rank,
        weight=args.weight,
        q_scale=args.q_scale,
        base_loss=fidelity,
    )
    trainable = sum(p.numel() for p in crit.trainable_parameters())
    total = sum(p.numel() for n, p in crit.model.named_parameters() if ".lora_" not in n)
    print(
        f"{type(sr_net).__name__} x{scale}: family {family!r}, LoRA trains {trainable} values "
        f"({100 * trainable / total:.1f}% of the network's {total})"
    )

    # ground truths: score every candidate once, then draw targets by softmax(score / T)
    generator = torch.Generator().manual_seed(args.seed)
    candidates = candidate_ground_truths(args.items, args.size, generator)
    with torch.no_grad():
        scores = iqa(candidates.flatten(0, 1)).view(args.items, -1)
    sampler = IQAWeightedSampler(scores, temperature=args.temperature, seed=args.seed)
    probe_hr = candidate_ground_truths(2, args.size, generator)[:, 0]
    probe_lr = downscale(probe_hr, scale)

    def report(tag: str, net: nn.Module) -> torch.Tensor:
        net.eval()
        with torch.no_grad():
            sr = upscale(net, probe_lr).clamp(0, 1)
            print(
                f"{tag}: L1 {l1(sr, probe_hr).item():.4f}  HLF fidelity "
                f"{hlf.fidelity(sr, probe_hr).mean().item():+.4f}  RQI(SR, GT) "
                f"{rqi.score(sr, probe_hr).mean().item():+.4f}  Q(SR) {crit.quality(sr).mean().item():.4f}"
            )
        return sr

    before = report("before", crit.model)
    optimiser = torch.optim.AdamW(crit.trainable_parameters(), lr=args.lr)
    step = 0
    for epoch in range(args.steps):
        sampler.set_epoch(epoch)
        pairs = list(sampler)
        hr = torch.stack([candidates[item, gt] for item, gt in pairs])
        crit.model.train()
        sr = upscale(crit.model, downscale(hr, scale))
        loss = crit(sr, hr)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        step += 1
        print(
            f"step {step}/{args.steps}: loss {loss.item():+.4f}  GT picks {[g for _, g in pairs]}"
        )
    # Evaluate the merged network: re-parameterised architectures (SPAN) rebuild their
    # inference convolutions from the base weights in eval(), so unmerged adapters would
    # only show in train() mode. Merging folds them into the weights every mode uses.
    merged = crit.merge().eval()
    after = report("after", merged)
    merged_path = save_sr_model(merged, out / "merged.safetensors")
    reloaded = load_sr_model(merged_path)
    with torch.no_grad():
        gap = (upscale(reloaded, probe_lr) - upscale(merged, probe_lr)).abs().max().item()
    print(
        f"merged checkpoint {merged_path}: spandrel reloads it as {type(reloaded).__name__}, "
        f"max |reloaded - merged| = {gap:.2e}"
    )
    print(f"adapters saved to {save_lora(crit.model, out / 'adapters.safetensors')}")

    from torchvision.utils import save_image

    bicubic = F.interpolate(probe_lr, size=probe_hr.shape[-2:], mode="bicubic").clamp(0, 1)
    grid = torch.cat([bicubic, before, after, probe_hr])  # rows: bicubic, before, after, GT
    save_image(grid, out / "before_after.png", nrow=len(probe_hr))
    print(
        f"before/after grid (bicubic, SR before, SR after, GT) saved to {out / 'before_after.png'}"
    )
    if random:
        print("random weights: the scores above mean nothing")
    return 0


if __name__ == "__main__":
    sys.exit(main())
