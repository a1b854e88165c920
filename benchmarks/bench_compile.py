"""Eager vs ``torch.compile`` training steps of HLFLoss (cls, patch, tiles) and RQILoss.

One step = a small SR network's forward + the loss + backward (the SR network's gradient),
the same function in both modes; ``compile`` is ``torch.compile(step, fullgraph=True)``
(inductor unless ``--backend``), so a graph break fails the case instead of being timed.
RQILoss uses random crops in the pattern the README documents: positions drawn in eager
code by :class:`percepfid.rqi.CropSampler` and passed in, the crops cut inside the graph.

Cases (each in a fresh subprocess, so compile caches are its own; within it the eager and
compiled steps alternate, so that a change of load on a shared machine hits both alike):

- ``hlf-cls``, ``hlf-patch``, ``hlf-tiles``: ``HLFLoss(--backbone, pretrained=False,
  image_size=--image-size)`` with ``embedding='cls'`` / ``'patch'`` / ``crop='tiles'``;
- ``rqi-random``: ``RQILoss(pretrained=False, crop='random')`` on the MANIQA-RQI
  architecture, by default a reduced configuration (``--rqi-config reduced``: 128 px crops,
  ViT-Ti/8 width, 10 blocks) because the released one takes about 30 s a step on 2 CPU
  cores; ``--rqi-config released`` times the real size (``small``: dry runs only).

Every line records the device, versions, the 1-minute load average before and after, the
first call (compile) time, and the median and minimum step over ``--repeats`` timed steps
after ``--warmup`` untimed ones, and for the compiled mode the median over the interleaved
pairs of eager / compiled time. The load average says how shared the machine was.

    python benchmarks/bench_compile.py --out benchmarks/results/compile_cpu.jsonl
    python benchmarks/bench_compile.py --device cuda --size 512 --image-size 224 --batch 8
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn

from percepfid.rqi import SMALL_MODEL_KWARGS

CASES = ("hlf-cls", "hlf-patch", "hlf-tiles", "rqi-random")
MODES = ("eager", "compile")
TINY_VIT = "timm:vit_tiny_patch16_224.augreg_in21k"
RQI_CONFIGS = {
    "reduced": dict(
        img_size=128,
        vit_kwargs=dict(embed_dim=192, depth=10, num_heads=3),
        feature_indices=(6, 7, 8, 9),
        embed_dim=192,
        num_heads=(3, 3),
        window_size=4,
        dim_mlp=192,
    ),
    "released": {},
    "small": SMALL_MODEL_KWARGS,  # the test suite's small model: dry runs of the plumbing
}


class TinySR(nn.Module):
    """x2 SR: a bilinear skip plus two convolutions and a pixel shuffle."""

    def __init__(self, channels: int = 32) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, channels, 3, padding=1),
            nn.GELU(),
            nn.Conv2d(channels, 3 * 4, 3, padding=1),
            nn.PixelShuffle(2),
        )

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        up = F.interpolate(lr, scale_factor=2, mode="bilinear", align_corners=False)
        return (up + 0.1 * self.body(lr)).clamp(0, 1)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()} ({os.cpu_count()} logical cpus)"


def _load() -> float | None:
    return round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None


def _build(case: str, args: argparse.Namespace, device: torch.device):
    """The loss and a ``loss_fn(sr, hr, offsets)`` calling it as a training step would."""
    from percepfid import HLFLoss, RQILoss

    if case.startswith("hlf-"):
        kind = case.removeprefix("hlf-")
        loss = HLFLoss(
            args.backbone,
            pretrained=False,
            image_size=args.image_size,
            embedding="patch" if kind == "patch" else "cls",
            crop="tiles" if kind == "tiles" else None,
        ).to(device)
        return loss, None
    loss = RQILoss(pretrained=False, crop="random", model_kwargs=RQI_CONFIGS[args.rqi_config])
    from percepfid.rqi import CropSampler

    return loss.to(device), CropSampler(loss.crop_size, seed=0, device=device)


def run_case(case: str, modes: list[str], args: argparse.Namespace) -> list[dict]:
    """Time the modes of one case in one process, interleaved step by step.

    Eager and compiled steps alternate (which goes first alternates too), so a change in
    the machine's load during the run hits both alike; ``ratio_median_of_pairs`` is the
    median over the pairs of eager time / compiled time.
    """
    device = torch.device(args.device)
    torch.manual_seed(0)
    net = TinySR().to(device)
    loss, sampler = _build(case, args, device)
    generator = torch.Generator().manual_seed(0)
    lr = torch.rand(args.batch, 3, args.size // 2, args.size // 2, generator=generator).to(device)
    hr = torch.rand(args.batch, 3, args.size, args.size, generator=generator).to(device)

    def step(lr: torch.Tensor, hr: torch.Tensor, offsets: torch.Tensor | None) -> torch.Tensor:
        sr = net(lr)
        return loss(sr, hr) if offsets is None else loss(sr, hr, offsets=offsets)

    functions = {"eager": step}
    if "compile" in modes:
        torch._dynamo.reset()
        functions["compile"] = torch.compile(step, fullgraph=True, backend=args.backend)
    functions = {mode: functions[mode] for mode in modes}

    def train_step(fn) -> float:
        start = time.perf_counter()
        net.zero_grad(set_to_none=True)
        offsets = None if sampler is None else sampler(hr)  # eager, outside the graph
        fn(lr, hr, offsets).backward()
        _sync(device)
        return (time.perf_counter() - start) * 1e3

    load_before = _load()
    first_call_s = {mode: train_step(fn) / 1e3 for mode, fn in functions.items()}  # compiles
    for _ in range(args.warmup):
        for fn in functions.values():
            train_step(fn)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times: dict[str, list[float]] = {mode: [] for mode in functions}
    order = list(functions)
    for index in range(args.repeats):
        for mode in order if index % 2 == 0 else order[::-1]:
            times[mode].append(train_step(functions[mode]))
    load_after = _load()
    rows = []
    for mode in functions:
        record = {
            "bench": "compile_train_step",
            "case": case,
            "mode": mode,
            "backend": args.backend if mode == "compile" else None,
            "fullgraph": mode == "compile",
            "batch": args.batch,
            "size": args.size,
            "loss_input": args.image_size if case.startswith("hlf-") else loss.crop_size,
            "backbone": args.backbone
            if case.startswith("hlf-")
            else f"maniqa-rqi:{args.rqi_config}",
            "first_call_s": round(first_call_s[mode], 2),
            "step_ms_median": round(statistics.median(times[mode]), 2),
            "step_ms_min": round(min(times[mode]), 2),
            "repeats": args.repeats,
            "warmup": args.warmup,
            "interleaved_with": [m for m in functions if m != mode],
            "load_average_1m_before": load_before,
            "load_average_1m_after": load_after,
        }
        if mode == "compile" and "eager" in times:
            pairs = [e / c for e, c in zip(times["eager"], times["compile"], strict=True)]
            record["ratio_median_of_pairs"] = round(statistics.median(pairs), 3)
        if device.type == "cuda":
            record["peak_mem_mib_both_modes"] = round(
                torch.cuda.max_memory_allocated(device) / 2**20, 1
            )
        rows.append(record)
    return rows


def _meta(device: torch.device) -> dict:
    import timm

    return {
        "device": _device_name(device),
        "device_type": device.type,
        "torch": torch.__version__,
        "timm": timm.__version__,
        "python": platform.python_version(),
        "threads": torch.get_num_threads() if device.type == "cpu" else None,
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=CASES)
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--backend", default="inductor", help="torch.compile backend")
    parser.add_argument("--backbone", default=TINY_VIT, help="HLFLoss backbone (random weights)")
    parser.add_argument("--image-size", type=int, default=112, help="HLF backbone input side")
    parser.add_argument("--rqi-config", choices=sorted(RQI_CONFIGS), default="reduced")
    parser.add_argument("--size", type=int, default=128, help="HR side (LR is half)")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--out", default=None, help="append the JSON lines to this file")
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.one:
        meta = _meta(torch.device(args.device))
        for row in run_case(args.one, args.modes, args):
            print(json.dumps({**meta, **row}), flush=True)
        return 0
    passthrough = _strip(list(sys.argv[1:] if argv is None else argv), ("--cases", "--out"))
    failures = 0
    for case in args.cases:
        command = [sys.executable, __file__, *passthrough, "--one", case]
        done = subprocess.run(command, capture_output=True, text=True)
        lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
        if done.returncode != 0 or len(lines) != len(args.modes):
            failures += 1
            lines.append(
                json.dumps(
                    {
                        "bench": "compile_train_step",
                        "case": case,
                        "modes": args.modes,
                        "error": (done.stderr or done.stdout).strip()[-2000:],
                        "returncode": done.returncode,
                    }  # fmt: skip
                )
            )
        for line in lines:
            print(line, flush=True)
            if args.out:
                with open(args.out, "a", encoding="utf-8") as handle:
                    handle.write(line + "\n")
    return 1 if failures else 0


def _strip(argv: list[str], options: tuple[str, ...]) -> list[str]:
    """``argv`` without the given options and their values (the parent's own)."""
    kept, skipping = [], False
    for item in argv:
        if item.startswith("--"):
            skipping = item.split("=", 1)[0] in options
            if skipping:
                continue
        elif skipping:
            continue
        kept.append(item)
    return kept


if __name__ == "__main__":
    sys.exit(main())
