"""Benchmark the cosine kernel: forward+backward time and achieved memory bandwidth.

Measures a token-fidelity loss step, ``(1 - cosine_similarity(x, y, weight=w,
reduce='mean')).mean()`` and its backward for ``x`` (``y`` is the reference branch, no
grad), with three implementations:

* ``eager``: the torch reference (``backend='torch'``), op by op;
* ``compile``: ``torch.compile`` of the same function (inductor), the baseline to beat;
* ``triton``: the fused kernels (``backend='triton'``; CUDA only);
* ``torch_functional``: ``torch.nn.functional.cosine_similarity`` plus the weighted mean,
  eager (what a user would write without percepfid; not selected by default).

Bandwidth is computed from the *minimum* bytes a step must move: read ``x`` and ``y`` in
the forward, read ``x`` and ``y`` and write ``dx`` in the backward, i.e. ``5 * B*N*D *
itemsize`` (weights and per-token scalars are negligible). The fraction of peak is given
when the device's peak bandwidth is known (table below, or ``--peak-gbs``).

``fwd_bwd_ms`` is the median over ``--repeats`` steps and ``fwd_bwd_ms_min`` the fastest;
on a shared CPU the minimum is the more faithful figure (``load_average_1m`` is recorded).

Prints one JSON object per line (also appended to ``--out`` when given)::

    python benchmarks/bench_cosine.py --device cpu --out benchmarks/results/cosine_cpu.jsonl
    python benchmarks/bench_cosine.py --device cuda --out benchmarks/results/cosine_h100.jsonl
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import json
import os
import platform
import statistics
import time
from collections.abc import Callable

import torch

from percepfid.kernels import cosine_similarity

# Peak memory bandwidth in GB/s (vendor figures) by a substring of the device name.
PEAK_GBS = {
    "H200": 4800.0,
    "H100 PCIe": 2000.0,
    "H100 NVL": 3900.0,
    "H100": 3350.0,  # SXM5 HBM3
    "A100-SXM4-80GB": 2039.0,
    "A100 80GB PCIe": 1935.0,
    "A100": 1555.0,
    "L40S": 864.0,
    "L4": 300.0,
    "RTX 4090": 1008.0,
}
GRIDS = {
    "cpu": {"B": [1, 4], "N": [257], "D": [384, 1024], "dtype": ["float32", "bfloat16"]},
    "cuda": {
        "B": [8, 32],
        "N": [257, 1025],
        "D": [384, 768, 1024, 1536],
        "dtype": ["bfloat16", "float32"],
    },
    "tiny": {"B": [1], "N": [17], "D": [64], "dtype": ["float32"]},
}


def _peak_gbs(device: torch.device, override: float | None) -> float | None:
    if override is not None:
        return override
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key, value in PEAK_GBS.items():
        if key in name:
            return value
    return None


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{model} ({os.cpu_count()} logical cpus)"


def _triton_version() -> str | None:
    try:
        import triton
    except ImportError:
        return None
    return triton.__version__


def _torch_functional_loss(x: torch.Tensor, y: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    cos = torch.nn.functional.cosine_similarity(x.float(), y.float(), dim=-1)
    return (1 - (cos * weight).sum(-1) / weight.sum()).mean()


def _loss(backend: str) -> Callable[..., torch.Tensor]:
    if backend == "torch_functional":
        return _torch_functional_loss

    def loss(x: torch.Tensor, y: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        fidelity = cosine_similarity(x, y, weight=weight, reduce="mean", backend=backend)
        return (1 - fidelity).mean()

    return loss


def _time_ms(step: Callable[[], None], device: torch.device, warmup: int, repeats: int):
    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for _ in range(warmup):
        step()
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        sync()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times), min(times)


def run(args: argparse.Namespace) -> list[dict]:
    device = torch.device(args.device)
    grid = GRIDS[args.grid or ("cuda" if device.type == "cuda" else "cpu")]
    backends = args.backends.split(",")
    peak = _peak_gbs(device, args.peak_gbs)
    common = {
        "device": _device_name(device),
        "device_type": device.type,
        "torch": torch.__version__,
        "triton": _triton_version(),
        "python": platform.python_version(),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "threads": torch.get_num_threads() if device.type == "cpu" else None,
    }
    rows = []
    for batch, tokens, features, dtype_name in itertools.product(
        grid["B"], grid["N"], grid["D"], grid["dtype"]
    ):
        dtype = getattr(torch, dtype_name)
        generator = torch.Generator(device="cpu").manual_seed(0)
        x = torch.randn(batch, tokens, features, generator=generator).to(device, dtype)
        y = torch.randn(batch, tokens, features, generator=generator).to(device, dtype)
        weight = torch.rand(tokens, generator=generator).to(device)
        x.requires_grad_(True)
        bytes_min = 5 * x.numel() * x.element_size()
        for backend in backends:
            if backend == "triton" and device.type != "cuda":
                continue
            fn = _loss({"eager": "torch", "compile": "torch"}.get(backend, backend))
            if backend == "compile":
                torch._dynamo.reset()
                fn = torch.compile(fn, fullgraph=True, dynamic=False)

            def step(fn=fn, x=x, y=y, weight=weight) -> None:
                x.grad = None
                fn(x, y, weight).backward()

            compile_start = time.perf_counter()
            step()  # first call compiles (torch.compile / triton JIT)
            first_call_s = time.perf_counter() - compile_start
            median_ms, min_ms = _time_ms(step, device, args.warmup, args.repeats)
            gbs = bytes_min / (median_ms * 1e-3) / 1e9
            row = {
                **common,
                "B": batch,
                "N": tokens,
                "D": features,
                "dtype": dtype_name,
                "backend": backend,
                "fwd_bwd_ms": round(median_ms, 4),
                "fwd_bwd_ms_min": round(min_ms, 4),
                "repeats": args.repeats,
                "first_call_s": round(first_call_s, 2),
                "bytes_min": bytes_min,
                "achieved_gbs": round(gbs, 2),
                "peak_gbs": peak,
                "fraction_of_peak": None if peak is None else round(gbs / peak, 4),
                "load_average_1m": round(os.getloadavg()[0], 2)
                if hasattr(os, "getloadavg")
                else None,
            }
            rows.append(row)
            line = json.dumps(row)
            print(line, flush=True)
            if args.out:
                with open(args.out, "a", encoding="utf-8") as handle:
                    handle.write(line + "\n")
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--grid", choices=sorted(GRIDS), default=None, help="default: by device")
    parser.add_argument("--backends", default="eager,compile,triton")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--peak-gbs", type=float, default=None, help="device peak bandwidth")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--out", default=None, help="append JSON lines to this file")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    run(args)


if __name__ == "__main__":
    main()
