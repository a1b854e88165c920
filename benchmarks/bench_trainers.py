"""The trainers with and without their embedding caches, side by side.

Two runs of each trainer on the same generated data, back to back, each in a fresh
subprocess: ``cache_mb=0`` (the backbone runs on every input of every epoch, as before the
caches) and the default cache. Reported: wall time of the call, the ratio, and whether the
results agree (the cached run's statistics and head against the uncached one's).

- ``rqi``: ``train_rqi`` on 18 images (3 groups of 6, ``--size`` pixels), 10 epochs, batch 8,
  ``--crop`` crops: what ``percepfid train-rqi ratings.csv`` runs.
- ``hlf``: ``fit_hlf_head(head='mlp', unfreeze_blocks=2)`` on 32 pairs (8 groups of 4 SR
  variants), 5 epochs, batch 16: ``percepfid fit-hlf ratings.csv --head mlp
  --unfreeze-blocks 2``.

Backbones have random weights (``pretrained=False``: the same compute as the released
ones, no download). Prints JSON lines; ``--out FILE`` appends them there too.

    python benchmarks/bench_trainers.py --backbone dinov2-s --image-size 224 --size 256 --crop 224
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _write_images(folder: Path, size: int) -> None:
    """3 RQI groups of 6 images and 8 HLF groups of a GT and 4 noisy SR versions."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    ys, xs = np.mgrid[0:size, 0:size] / size

    def scene() -> np.ndarray:
        phase = rng.uniform(0, 6.28, (3, 2))
        return np.stack([0.5 + 0.4 * np.sin(7 * xs + p + 3 * ys * q) for p, q in phase], axis=-1)

    def save(array: np.ndarray, name: str) -> None:
        Image.fromarray((np.clip(array, 0, 1) * 255).astype(np.uint8)).save(folder / name)

    with (folder / "rqi.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image", "scene", "mos"])
        for s in range(3):
            clean = scene()
            for level in range(6):
                save(clean + rng.normal(scale=0.04 * level, size=clean.shape), f"r{s}_{level}.png")
                writer.writerow([f"r{s}_{level}.png", f"scene{s}", 6 - level])
    with (folder / "hlf.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["sr", "gt", "score", "group"])
        for g in range(8):
            clean = scene()
            save(clean, f"gt{g}.png")
            for v in range(4):
                noise = rng.uniform(0.0, 0.3)
                save(clean + rng.normal(scale=noise, size=clean.shape), f"sr{g}_{v}.png")
                writer.writerow([f"sr{g}_{v}.png", f"gt{g}.png", round(5 - 12 * noise, 3), f"g{g}"])


def run_one(
    which: str, folder: Path, backbone: str, image_size: int | None, crop: int, cache_mb: float
) -> dict:
    import torch

    from percepfid.train import fit_hlf_head, train_rqi

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    start = time.perf_counter()
    if which == "rqi":
        result = train_rqi(
            folder / "rqi.csv",
            folder / f"rqi-out-{cache_mb}",
            backbone=backbone,
            pretrained=False,
            image_size=image_size,
            crop_size=crop,
            epochs=10,
            batch_size=8,
            device="cpu",
            progress=False,
            cache_mb=cache_mb,
        )
        seconds = time.perf_counter() - start
        summary = {"history": result.history, "best_epoch": result.best_epoch}
        state = result.head.state_dict()
    else:
        result = fit_hlf_head(
            folder / "hlf.csv",
            backbone,
            pretrained=False,
            image_size=image_size,
            head="mlp",
            unfreeze_blocks=2,
            epochs=5,
            batch_size=16,
            device="cpu",
            cache_mb=cache_mb,
        )
        seconds = time.perf_counter() - start
        summary = {
            "train": result.train,
            "val": result.val,
            "history": result.history,
            "best_epoch": result.best_epoch,
        }
        state = result.head.state_dict()
    summary["head"] = {k: v.double().flatten().tolist() for k, v in state.items()}
    return {"seconds": seconds, "summary": summary}


def _difference(a: object, b: object, tolerance: float, path: str = "") -> str | None:
    """The first place where ``a`` and ``b`` differ by more than ``tolerance`` (absolute,
    or relative for values above 1; None and NaN are equal), or None when they agree."""
    if isinstance(a, dict) and isinstance(b, dict):
        if a.keys() != b.keys():
            return f"{path}: keys {sorted(a)} != {sorted(b)}"
        found = (_difference(a[k], b[k], tolerance, f"{path}.{k}") for k in a)
        return next((d for d in found if d is not None), None)
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return f"{path}: length {len(a)} != {len(b)}"
        found = (
            _difference(x, y, tolerance, f"{path}[{i}]")
            for i, (x, y) in enumerate(zip(a, b, strict=True))
        )
        return next((d for d in found if d is not None), None)
    missing = [v is None or (isinstance(v, float) and math.isnan(v)) for v in (a, b)]
    if any(missing):
        return None if all(missing) else f"{path}: {a} != {b}"
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        close = abs(a - b) <= tolerance * max(1.0, abs(a), abs(b))
        return None if close else f"{path}: {a} != {b}"
    return None if a == b else f"{path}: {a!r} != {b!r}"


def _child(args: argparse.Namespace, which: str, folder: Path, cache_mb: float) -> dict:
    command = [
        sys.executable,
        __file__,
        "--child",
        which,
        "--folder",
        str(folder),
        "--backbone",
        args.backbone,
        "--crop",
        str(args.crop),
        *(["--image-size", str(args.image_size)] if args.image_size else []),
        "--cache-mb",
        str(cache_mb),
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--which", nargs="+", default=["rqi", "hlf"], choices=("rqi", "hlf"))
    parser.add_argument("--backbone", default="dinov2", help="backbone (default: dinov2)")
    parser.add_argument("--size", type=int, default=256, help="image side (default: 256)")
    parser.add_argument(
        "--image-size", type=int, help="backbone input side (default: the backbone's own)"
    )
    parser.add_argument("--crop", type=int, default=224, help="RQI crop side (default: 224)")
    parser.add_argument("--repeats", type=int, default=1, help="uncached/cached pairs")
    parser.add_argument("--tolerance", type=float, default=1e-3, help="agreement tolerance")
    parser.add_argument("--out", type=Path, help="append the JSON lines to this file")
    parser.add_argument("--child", choices=("rqi", "hlf"), help=argparse.SUPPRESS)
    parser.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--cache-mb", type=float, default=1024.0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(
            json.dumps(
                run_one(
                    args.child,
                    args.folder,
                    args.backbone,
                    args.image_size,
                    args.crop,
                    args.cache_mb,
                )
            )
        )
        return 0

    import torch

    meta = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "threads": int(os.environ.get("OMP_NUM_THREADS", "1")),
        "load_average_at_start": os.getloadavg()[0],
        "backbone": args.backbone,
        "size": args.size,
        "image_size": args.image_size,
        "crop": args.crop,
    }
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        _write_images(folder, args.size)
        for repeat in range(args.repeats):
            for which in args.which:
                uncached = _child(args, which, folder, 0.0)
                cached = _child(args, which, folder, 1024.0)
                line = meta | {
                    "trainer": which,
                    "repeat": repeat,
                    "uncached_s": round(uncached["seconds"], 2),
                    "cached_s": round(cached["seconds"], 2),
                    "speedup": round(uncached["seconds"] / cached["seconds"], 2),
                    "first_difference": _difference(
                        cached["summary"], uncached["summary"], args.tolerance
                    ),
                    "load_average_at_end": os.getloadavg()[0],
                }
                print(json.dumps(line), flush=True)
                if args.out is not None:
                    with args.out.open("a") as handle:
                        handle.write(json.dumps(line) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
