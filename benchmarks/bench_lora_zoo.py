"""Benchmark the cost of training through unmerged LoRA adapters on three SR families.

For SwinIR (transformer MLPs, rank 48), ESRGAN (RRDB dense convs, rank 24) and SPAN (body
convs, rank 16), each at its released configuration (``sr_zoo.py``, random weights: same
cost as trained ones), on a 64 x 64 LR input, batch 1:

- ``base_step_s``: a full fine-tuning step of the plain network (forward, L1 loss,
  backward, Adam over every parameter);
- ``lora_step_s``: the same step with ``targets='auto'`` adapters unmerged (Adam over the
  adapters only);
- ``overhead``: ``lora_step_s / base_step_s``; plus the adapter and network parameter
  counts.

The two steps alternate (one warm-up each, then ``--steps`` pairs; medians reported), so
that changes in machine load affect both alike.

Each architecture runs in a fresh subprocess; prints one JSON line per architecture
(device, versions, date) and appends it to ``--output``.

    python benchmarks/bench_lora_zoo.py --output benchmarks/results/lora_zoo_cpu.jsonl
"""

from __future__ import annotations

import argparse
import copy
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
ARCHITECTURES = ("SwinIR", "ESRGAN", "SPAN")


class _Trainer:
    """One network, its optimiser and a fixed target: ``step()`` times one training step."""

    def __init__(self, net: torch.nn.Module, params: list, x: torch.Tensor) -> None:
        self.net, self.x = net, x
        self.optimiser = torch.optim.Adam(params, lr=1e-5)
        with torch.no_grad():
            self.target = torch.rand_like(net(x.clone()))

    def step(self) -> float:
        start = time.perf_counter()
        loss = (self.net(self.x.clone()) - self.target).abs().mean()
        self.optimiser.zero_grad(set_to_none=True)
        loss.backward()
        self.optimiser.step()
        return time.perf_counter() - start


def run_case(name: str, size: int, steps: int) -> dict:
    sys.path.insert(0, str(HERE))
    from sr_zoo import zoo

    from percepfid.lora import inject_lora, lora_family, lora_parameters

    entry = zoo()[name]
    torch.manual_seed(0)
    plain = entry.reference().train()
    adapted = copy.deepcopy(plain)
    family = lora_family(adapted)
    inject_lora(adapted, "auto")
    x = torch.rand(1, 3, size, size)
    total = sum(p.numel() for p in plain.parameters())
    adapters = lora_parameters(adapted)
    base = _Trainer(plain, list(plain.parameters()), x)
    lora = _Trainer(adapted, adapters, x)
    base.step(), lora.step()  # warm-up: allocations, Adam state
    # interleaved, so that a change in machine load hits both alike
    times = [(base.step(), lora.step()) for _ in range(steps)]
    base_s = statistics.median(t for t, _ in times)
    lora_s = statistics.median(t for _, t in times)
    return {
        "case": name,
        "family": family,
        "rank": adapted._percepfid_lora["rank"],
        "lr_size": [size, size],
        "batch": 1,
        "network_params": total,
        "adapter_params": sum(p.numel() for p in adapters),
        "adapter_share": round(sum(p.numel() for p in adapters) / total, 4),
        "base_step_s": round(base_s, 4),
        "lora_step_s": round(lora_s, 4),
        "overhead": round(lora_s / base_s, 3),
        "steps": steps,
        "step_pairs_s": [[round(a, 3), round(b, 3)] for a, b in times],
    }


def _meta() -> dict:
    import peft
    import spandrel

    return {
        "device": f"{platform.machine()} ({os.cpu_count()} logical cpus)",
        "device_type": "cpu",
        "torch": torch.__version__,
        "peft": peft.__version__,
        "spandrel": spandrel.__version__,
        "python": platform.python_version(),
        "threads": torch.get_num_threads(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "load_average_1m": round(os.getloadavg()[0], 2),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=64, help="LR side")
    parser.add_argument("--steps", type=int, default=3, help="timed steps (after one warm-up)")
    parser.add_argument("--only", choices=ARCHITECTURES, help="one architecture, in-process")
    parser.add_argument("--output", type=Path, default=None, help="append JSON lines here")
    args = parser.parse_args()
    if args.only:
        print(json.dumps(_meta() | run_case(args.only, args.size, args.steps)))
        return 0
    for name in ARCHITECTURES:
        done = subprocess.run(
            [
                sys.executable,
                __file__,
                "--only",
                name,
                "--size",
                str(args.size),
                "--steps",
                str(args.steps),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        line = done.stdout.strip().splitlines()[-1] if done.returncode == 0 else ""
        if not line:
            print(f"{name} failed:\n{done.stderr[-2000:]}", file=sys.stderr)
            continue
        print(line, flush=True)
        if args.output:
            with args.output.open("a", encoding="utf-8") as handle:
                handle.write(line + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
