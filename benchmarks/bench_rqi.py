"""Benchmark RQILoss: a training step vs LPIPS-VGG at 224, and the evaluation protocols.

Cases (each in a fresh subprocess, so its peak memory is its own):

- ``rqi-step``: forward + backward of ``RQILoss`` on the released MANIQA-RQI architecture
  (``pretrained=False``: random weights, same cost) for a batch of 224 x 224 SR/GT pairs;
- ``lpips-step``: the same with ``lpips.LPIPS(net='vgg', pretrained=False, pnet_rand=True)``
  (LPIPS-VGG architecture, no download);
- ``eval-official`` / ``eval-paper``: :func:`percepfid.rqi.evaluate` on one 1024 x 768 pair
  (official: 30 crops of 224 at 2 scales; paper: 60 at 3), throughput in pairs and crops per s.

Prints one JSON line per case (device, versions, date) and appends it to ``--output``.

    python benchmarks/bench_rqi.py --output benchmarks/results/rqi_cpu.jsonl
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

import torch


def _status_mib(field: str) -> float | None:
    """``VmRSS`` / ``VmHWM`` of this process in MiB (Linux), else None."""
    try:
        with open("/proc/self/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark (Linux ``clear_refs`` 5) so the steps' own peak shows."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _meta(device: str) -> dict:
    import lpips
    import timm

    if device.startswith("cuda"):
        name = torch.cuda.get_device_name(device)
    else:
        name = f"{platform.processor() or platform.machine()} ({os.cpu_count()} logical cpus)"
    return {
        "device": name,
        "device_type": device.split(":")[0],
        "torch": torch.__version__,
        "timm": timm.__version__,
        "lpips": getattr(lpips, "__version__", "0.1.4"),
        "python": platform.python_version(),
        "threads": torch.get_num_threads(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "load_average_1m": round(os.getloadavg()[0], 2),
    }


def _train_step_case(case: str, batch: int, steps: int, device: str, model_kwargs: dict) -> dict:
    if case == "rqi-step":
        from percepfid.losses.rqi import RQILoss

        criterion = RQILoss(pretrained=False, model_kwargs=model_kwargs).to(device)

        def loss_fn(sr, gt):
            return criterion(sr, gt)

    else:
        import lpips

        net = (
            lpips.LPIPS(net="vgg", pretrained=False, pnet_rand=True, verbose=False)
            .to(device)
            .eval()
        )
        net.requires_grad_(False)

        def loss_fn(sr, gt):
            return net(sr, gt, normalize=True).mean()  # inputs in [0, 1]

    generator = torch.Generator().manual_seed(0)
    sr = torch.rand(batch, 3, 224, 224, generator=generator).to(device).requires_grad_(True)
    gt = torch.rand(batch, 3, 224, 224, generator=generator).to(device)
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats(device)
    resident = _status_mib("VmRSS")
    exact = resident is not None and _reset_peak_rss()
    before = resident if exact else _rss_mib()
    times = []
    for index in range(steps + 1):  # the first is a warm-up
        start = time.perf_counter()
        loss_fn(sr, gt).backward()
        _sync(device)
        if index:
            times.append(time.perf_counter() - start)
        sr.grad = None
    peak = (
        torch.cuda.max_memory_allocated(device) / 2**20
        if device.startswith("cuda")
        else _rss_mib() - before
    )
    return {
        "case": case,
        "batch": batch,
        "size": [224, 224],
        "step_s_median": round(statistics.median(times), 4),
        "step_s_min": round(min(times), 4),
        "steps": steps,
        "peak_mem_mib": round(peak, 1),
        "peak_mem_kind": "cuda max_memory_allocated"
        if device.startswith("cuda")
        else "peak RSS during the steps minus RSS before them (model and inputs excluded)",
    }


def _eval_case(case: str, device: str, repeats: int, model_kwargs: dict) -> dict:
    from percepfid.losses.rqi import RQILoss
    from percepfid.rqi import PROTOCOLS, evaluate

    protocol = case.removeprefix("eval-")
    criterion = RQILoss(pretrained=False, model_kwargs=model_kwargs).to(device)
    generator = torch.Generator().manual_seed(0)
    sr = torch.rand(1, 3, 768, 1024, generator=generator).to(device)
    gt = torch.rand(1, 3, 768, 1024, generator=generator).to(device)
    # crops actually scored on 1024 x 768 (a level stops once a side would be < 224)
    crops = {"official": 20 + 10, "paper": 20 + 20 + 20}[protocol]
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        evaluate(criterion, sr, gt, protocol, torch.Generator().manual_seed(0), batch_size=10)
        _sync(device)
        times.append(time.perf_counter() - start)
    seconds = statistics.median(times)
    return {
        "case": case,
        "image": [768, 1024],
        "scales": list(PROTOCOLS[protocol].scales),
        "crops_scored": crops,
        "antisymmetric": True,
        "pair_s_median": round(seconds, 3),
        "pairs_per_s": round(1 / seconds, 5),
        "crops_per_s": round(crops / seconds, 4),
        "repeats": repeats,
    }


def run_case(
    case: str, batch: int, steps: int, repeats: int, device: str, model_kwargs: dict
) -> dict:
    torch.manual_seed(0)
    with torch.inference_mode(False):
        record = (
            _eval_case(case, device, repeats, model_kwargs)
            if case.startswith("eval-")
            else _train_step_case(case, batch, steps, device, model_kwargs)
        )
    extra = {"model_kwargs": model_kwargs} if model_kwargs else {}
    return {**_meta(device), **extra, **record}


CASES = ("rqi-step", "lpips-step", "eval-official", "eval-paper")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=CASES)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument(
        "--steps", type=int, default=3, help="timed training steps (after 1 warm-up)"
    )
    parser.add_argument("--repeats", type=int, default=1, help="timed evaluations per protocol")
    parser.add_argument("--output", default=None, help="append the JSON lines to this file")
    parser.add_argument(
        "--model-kwargs",
        type=json.loads,
        default={},
        help="JSON architecture overrides of the MANIQA-RQI (a small model for dry runs)",
    )
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)  # subprocess worker
    args = parser.parse_args()

    if args.one:
        record = run_case(
            args.one, args.batch, args.steps, args.repeats, args.device, args.model_kwargs
        )
        print(json.dumps(record))
        return
    for case in args.cases:
        command = [
            sys.executable, __file__, "--one", case, "--device", args.device,
            "--batch", str(args.batch), "--steps", str(args.steps), "--repeats", str(args.repeats),
            "--model-kwargs", json.dumps(args.model_kwargs),
        ]  # fmt: skip
        out = subprocess.run(command, capture_output=True, text=True, check=True)
        line = out.stdout.strip().splitlines()[-1]
        print(line, flush=True)
        if args.output:
            with open(args.output, "a", encoding="utf-8") as handle:
                handle.write(line + "\n")


if __name__ == "__main__":
    main()
