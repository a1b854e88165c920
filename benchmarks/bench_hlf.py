"""Training-step cost of HLFLoss against its floor and against LPIPS-VGG.

One step = SR forward through a small SR network + loss + backward. Three variants:

- ``hlf``: ``HLFLoss(backbone, pretrained=False)`` (checks, preprocessing, cosine, reduction);
- ``floor``: the same backbone run by hand: SR embedding with grad, GT embedding under
  ``torch.inference_mode()``, ``1 - cos``, backward: what any HLF implementation must pay;
- ``lpips``: LPIPS-VGG (``lpips`` package, random weights) on the full-resolution images.

Each (variant, resolution) runs in a fresh subprocess so the peak-memory figure is its own:
on CUDA ``torch.cuda.max_memory_allocated`` over the allocation after set-up; on CPU the
growth of the peak RSS during the steps (warm-up included) over the RSS after set-up
(weights and inputs excluded). Prints JSON lines.

    python benchmarks/bench_hlf.py --sizes 224 512 --batch 8 --backbone dinov2
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import resource
import statistics
import subprocess
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn


class TinySR(nn.Module):
    def __init__(self, channels: int = 32) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, channels, 3, padding=1), nn.GELU(),
                                  nn.Conv2d(channels, 3 * 4, 3, padding=1), nn.PixelShuffle(2))

    def forward(self, lr):
        return (F.interpolate(lr, scale_factor=2, mode="bilinear", align_corners=False) + self.body(lr)).clamp(0, 1)


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_one(variant: str, size: int, batch: int, backbone_name: str, steps: int, device: str) -> dict:
    from percepfid import HLFLoss

    torch.manual_seed(0)
    model = TinySR().to(device)
    lr = torch.rand(batch, 3, size // 2, size // 2, device=device)
    hr = torch.rand(batch, 3, size, size, device=device)
    if variant == "lpips":
        import lpips

        metric = lpips.LPIPS(net="vgg", pretrained=False, pnet_rand=True, verbose=False).to(device).eval()
        metric.requires_grad_(False)

        def loss_fn(sr):
            return metric(sr, hr, normalize=True).mean()
    else:
        hlf = HLFLoss(backbone_name, pretrained=False).to(device)
        if variant == "hlf":
            def loss_fn(sr):
                return hlf(sr, hr)
        else:
            backbone = hlf.backbone

            def loss_fn(sr):
                with torch.inference_mode():
                    reference = backbone(hr).clone()
                return (1 - F.cosine_similarity(backbone(sr), reference, dim=-1)).mean()

    def step():
        model.zero_grad(set_to_none=True)
        loss_fn(model(lr)).backward()

    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    rss_before = _rss_mib()  # after set-up (weights, inputs), before any step
    step()  # warm-up (counted in the peak, not in the times)
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append((time.perf_counter() - start) * 1e3)
    if device == "cuda":
        peak = (torch.cuda.max_memory_allocated() - base) / 2**20
        memory_kind = "cuda_max_allocated_over_setup_mib"
    else:
        peak = _rss_mib() - rss_before
        memory_kind = "cpu_peak_rss_growth_mib"
    return {
        "bench": "hlf_train_step", "variant": variant, "size": size, "batch": batch,
        "backbone": backbone_name if variant != "lpips" else "lpips-vgg", "steps": steps,
        "ms_median": round(statistics.median(times), 2), "ms_min": round(min(times), 2),
        memory_kind: round(peak, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[224, 512])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--backbone", default="dinov2")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--variants", nargs="+", default=["floor", "hlf", "lpips"])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(args.variants[0], args.sizes[0], args.batch, args.backbone, args.steps, args.device)))
        return
    meta = {
        "date": datetime.date.today().isoformat(), "device": args.device,
        "cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
        "torch": torch.__version__, "python": platform.python_version(),
    }
    if args.device == "cuda":
        meta["gpu"] = torch.cuda.get_device_name()
    for size in args.sizes:
        for variant in args.variants:
            cmd = [sys.executable, __file__, "--one", "--variants", variant, "--sizes", str(size),
                   "--batch", str(args.batch), "--backbone", args.backbone, "--steps", str(args.steps),
                   "--device", args.device]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True)
            row = json.loads(out.stdout.strip().splitlines()[-1])
            print(json.dumps({**meta, **row}), flush=True)


if __name__ == "__main__":
    main()
