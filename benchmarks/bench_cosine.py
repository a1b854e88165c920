"""Benchmark the cosine kernel: forward+backward time and achieved memory bandwidth.

Measures a token-fidelity loss step, ``(1 - cosine_similarity(x, y, weight=w,
reduce='mean')).mean()`` and its backward for ``x`` (``y`` is the reference branch, no
grad), with three implementations:

* ``eager``: the torch reference (``backend='torch'``), op by op;
* ``compile``: ``torch.compile`` of the same function (inductor), the baseline to beat;
* ``triton``: the fused kernels (``backend='triton'``; CUDA only);
* ``torch_functional``: ``torch.nn.functional.cosine_similarity`` plus the weighted mean,
  eager (what a user would write without percepfid; not selected by default).

Bandwidth is computed from the *minimum* bytes each pass must move: the forward reads ``x``
and ``y`` (``2 * B*N*D * itemsize``), the backward reads ``x`` and ``y`` and writes ``dx``
(``3 * B*N*D * itemsize``), a step ``5 * B*N*D * itemsize`` (weights and per-token scalars
are negligible). The fraction of peak is given when the device's peak bandwidth is known
(``PEAK_GBS`` below, vendor figures keyed on a substring of the device name, or
``--peak-gbs``).

The forward and the backward are timed separately in every step: on CUDA with events
recorded before the forward, between the passes and after the backward (GPU time, so the
host's launch overhead shows only where the GPU waits for it); on the CPU with the wall
clock. ``*_ms`` are medians over ``--repeats`` steps and ``*_ms_min`` the fastest; on a
shared CPU the minimum is the more faithful figure (``load_average_1m`` is recorded).

Prints one JSON object per line (also appended to ``--out`` when given)::

    python benchmarks/bench_cosine.py --device cpu --out benchmarks/results/cosine_cpu.jsonl
    python benchmarks/bench_cosine.py --device cuda --shapes 64x1025x1024 8x4097x768 \
        --dtypes bfloat16 float16 float32 --out cosine_cuda.jsonl

``--backends triton`` runs on CPU tensors too when the process was started with
``TRITON_INTERPRET=1`` (slow: for checking the plumbing, not for timing).
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import json
import os
import platform
import re
import statistics
import time
from collections.abc import Callable

import torch

from percepfid.kernels import cosine_similarity

# Peak memory bandwidth in GB/s, vendor data-sheet figures, by a word of the device name
# as torch.cuda.get_device_name reports it ("NVIDIA H100 80GB HBM3" is the SXM5 part);
# the first key found wins, so the more specific names come first. Not listed (GH200, ...):
# pass --peak-gbs.
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
    return peak_gbs_for(torch.cuda.get_device_name(device))


def peak_gbs_for(name: str) -> float | None:
    """The table's peak bandwidth for a device name (whole words: 'GH200' is not 'H200')."""
    for key, value in PEAK_GBS.items():
        if re.search(rf"(?<!\w){re.escape(key)}(?!\w)", name):
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


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time_passes(
    fn: Callable[..., torch.Tensor],
    inputs: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    device: torch.device,
    warmup: int,
    repeats: int,
) -> tuple[list[float], list[float]]:
    """Forward and backward times in ms of ``repeats`` steps, after ``warmup`` steps."""
    x = inputs[0]

    def step() -> None:
        x.grad = None
        fn(*inputs).backward()

    for _ in range(warmup):
        step()
    _sync(device)
    forward, backward = [], []
    if device.type == "cuda":
        marks = []
        for _ in range(repeats):
            x.grad = None
            events = [torch.cuda.Event(enable_timing=True) for _ in range(3)]
            events[0].record()
            out = fn(*inputs)
            events[1].record()
            out.backward()
            events[2].record()
            marks.append(events)
        _sync(device)
        for start, middle, end in marks:
            forward.append(start.elapsed_time(middle))
            backward.append(middle.elapsed_time(end))
        return forward, backward
    for _ in range(repeats):
        x.grad = None
        start = time.perf_counter()
        out = fn(*inputs)
        middle = time.perf_counter()
        out.backward()
        end = time.perf_counter()
        forward.append((middle - start) * 1e3)
        backward.append((end - middle) * 1e3)
    return forward, backward


def _shape(text: str) -> tuple[int, int, int]:
    try:
        batch, tokens, features = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"a shape is BxNxD, e.g. 64x1025x1024; got {text!r}"
        ) from None
    return batch, tokens, features


def _interpreted() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0").strip().lower() in {"1", "true", "on", "yes"}


def _cases(args: argparse.Namespace, device: torch.device) -> list[tuple[int, int, int, str]]:
    if args.shapes:
        dtypes = args.dtypes or ["bfloat16", "float16", "float32"]
        return [(*shape, dtype) for shape in args.shapes for dtype in dtypes]
    grid = GRIDS[args.grid or ("cuda" if device.type == "cuda" else "cpu")]
    dtypes = args.dtypes or grid["dtype"]
    return list(itertools.product(grid["B"], grid["N"], grid["D"], dtypes))


def _gbs(nbytes: int, ms: float) -> float:
    return round(nbytes / (ms * 1e-3) / 1e9, 2) if ms > 0 else float("inf")


def run(args: argparse.Namespace) -> list[dict]:
    device = torch.device(args.device)
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
        "compile_backend": args.compile_backend,
        "triton_interpreted": device.type != "cuda" and _interpreted(),
    }
    rows = []
    for batch, tokens, features, dtype_name in _cases(args, device):
        dtype = getattr(torch, dtype_name)
        generator = torch.Generator(device="cpu").manual_seed(0)
        x = torch.randn(batch, tokens, features, generator=generator).to(device, dtype)
        y = torch.randn(batch, tokens, features, generator=generator).to(device, dtype)
        weight = torch.rand(tokens, generator=generator).to(device)
        x.requires_grad_(True)
        element = x.numel() * x.element_size()
        bytes_min = {"fwd": 2 * element, "bwd": 3 * element, "fwd_bwd": 5 * element}
        for backend in backends:
            if backend == "triton" and device.type != "cuda" and not _interpreted():
                continue
            fn = _loss({"eager": "torch", "compile": "torch"}.get(backend, backend))
            if backend == "compile":
                torch._dynamo.reset()
                fn = torch.compile(fn, fullgraph=True, dynamic=False, backend=args.compile_backend)
            compile_start = time.perf_counter()
            x.grad = None
            fn(x, y, weight).backward()  # first call compiles (torch.compile / triton JIT)
            _sync(device)
            first_call_s = time.perf_counter() - compile_start
            forward, backward = _time_passes(fn, (x, y, weight), device, args.warmup, args.repeats)
            both = [f + b for f, b in zip(forward, backward, strict=True)]
            times = {"fwd": forward, "bwd": backward, "fwd_bwd": both}
            row = {**common, "B": batch, "N": tokens, "D": features, "dtype": dtype_name}
            row["backend"] = backend
            for name, values in times.items():
                median = statistics.median(values)
                row[f"{name}_ms"] = round(median, 4)
                row[f"{name}_ms_min"] = round(min(values), 4)
                row[f"{name}_bytes_min"] = bytes_min[name]
                row[f"{name}_gbs"] = _gbs(bytes_min[name], median)
                row[f"{name}_fraction_of_peak"] = (
                    None if peak is None else round(row[f"{name}_gbs"] / peak, 4)
                )
            row.update(
                {
                    "repeats": args.repeats,
                    "first_call_s": round(first_call_s, 2),
                    # the fields of earlier versions of this file, for old readers
                    "bytes_min": bytes_min["fwd_bwd"],
                    "achieved_gbs": row["fwd_bwd_gbs"],
                    "peak_gbs": peak,
                    "fraction_of_peak": row["fwd_bwd_fraction_of_peak"],
                    "load_average_1m": round(os.getloadavg()[0], 2)
                    if hasattr(os, "getloadavg")
                    else None,
                }
            )
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
    parser.add_argument(
        "--shapes", nargs="+", type=_shape, default=None, help="BxNxD shapes instead of a grid"
    )
    parser.add_argument(
        "--dtypes",
        nargs="+",
        choices=["bfloat16", "float16", "float32"],
        default=None,
        help="default: the grid's, or all three with --shapes",
    )
    parser.add_argument("--compile-backend", default="inductor", help="torch.compile backend")
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
