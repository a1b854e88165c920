"""``percepfid score`` under ``torchrun --nproc_per_node 2`` (gloo, CPU) equals one process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from percepfid.cli import main

REPO = Path(__file__).resolve().parents[1]
TINY = "timm:vit_tiny_patch16_224.augreg_in21k"
SIZES = [(20, 24), (16, 16), (20, 24), (24, 16), (16, 16), (20, 24), (24, 16)]


@pytest.fixture
def folders(tmp_path: Path) -> tuple[Path, Path]:
    rng = np.random.default_rng(0)
    for folder in ("gt", "sr"):
        (tmp_path / folder).mkdir()
    for i, (h, w) in enumerate(SIZES):
        gt = (rng.random((h, w, 3)) * 255).astype(np.uint8)
        sr = np.clip(gt + rng.normal(scale=10.0 * i, size=gt.shape), 0, 255).astype(np.uint8)
        Image.fromarray(gt).save(tmp_path / "gt" / f"im{i}.png")
        Image.fromarray(sr).save(tmp_path / "sr" / f"im{i}.png")
    return tmp_path / "gt", tmp_path / "sr"


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    env["OMP_NUM_THREADS"] = "1"  # torchrun's default for its workers; same math both ways
    return env


def _torchrun(gt: Path, sr: Path, out: Path) -> subprocess.CompletedProcess[str]:
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
        "-m", "percepfid.cli", "score", "--metric", f"hlf:{TINY}", "--image-size", "32",
        "--random-weights", "--no-progress", "--batch-size", "1",
        "--ref", str(gt), "--dist", str(sr), "-o", str(out),
    ]  # fmt: skip
    return subprocess.run(command, env=_env(), capture_output=True, text=True, timeout=300)


def test_torchrun_two_processes_write_the_single_process_file(folders, tmp_path: Path) -> None:
    gt, sr = folders
    single, sharded = tmp_path / "single.csv", tmp_path / "sharded.csv"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as torchrun's workers run: then the bits agree too
    try:
        argv = [
            "score", "--metric", f"hlf:{TINY}", "--image-size", "32", "--random-weights",
            "--no-progress", "--batch-size", "1", "--ref", str(gt), "--dist", str(sr),
            "-o", str(single),
        ]  # fmt: skip
        assert main(argv) == 0
    finally:
        torch.set_num_threads(threads)
    two = _torchrun(gt, sr, sharded)
    assert two.returncode == 0, two.stderr
    # one warning (rank 0 only), one file with every row in folder order
    assert two.stderr.count("scores mean nothing") == 1
    lines = sharded.read_text().splitlines()
    assert len(lines) == 1 + len(SIZES)
    assert [Path(line.split(",")[0]).name for line in lines[1:]] == [f"im{i}.png" for i in range(7)]
    assert sharded.read_bytes() == single.read_bytes()


def test_torchrun_failure_on_one_rank_stops_every_rank(folders, tmp_path: Path) -> None:
    gt, sr = folders
    # a PNG whose header reads but whose pixels do not: it fails while scoring, on one rank
    data = (sr / "im3.png").read_bytes()
    (sr / "im3.png").write_bytes(data[: len(data) // 2])
    result = _torchrun(gt, sr, tmp_path / "out.csv")
    assert result.returncode != 0
    assert "cannot read image" in result.stderr and "im3.png" in result.stderr
    assert "failed" in result.stderr  # the peer reports the failing rank instead of hanging
    assert not (tmp_path / "out.csv").exists()


def test_cuda_ranks_pick_nccl_and_their_local_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CUDA path's choices, checked with the process-group calls mocked (this test
    cannot run nccl itself): each rank uses cuda:LOCAL_RANK, sets it current, and asks
    for nccl; CPU ranks ask for gloo."""
    from unittest import mock

    import torch.distributed as dist

    from percepfid.commands import score
    from percepfid.commands._common import resolve_device

    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("LOCAL_RANK", "1")
    world = score._world_from_env()
    assert (world.rank, world.size, world.local_rank) == (3, 4, 1)
    with (
        mock.patch.object(torch.cuda, "is_available", return_value=True),
        mock.patch.object(torch.cuda, "set_device") as set_device,
        mock.patch.object(dist, "is_initialized", return_value=False),
        mock.patch.object(dist, "init_process_group") as init,
    ):
        device = resolve_device("auto", world.local_rank)
        assert device == torch.device("cuda", 1)
        assert resolve_device("cuda:0", world.local_rank) == torch.device("cuda", 0)
        score._init_distributed(world, device)
        set_device.assert_called_once_with(torch.device("cuda", 1))
        assert init.call_args.kwargs["backend"] == "nccl" and world.created
        score._init_distributed(score._world_from_env(), torch.device("cpu"))
        assert init.call_args.kwargs["backend"] == "gloo"
    with mock.patch.object(torch.cuda, "is_available", return_value=False):
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda", 1)
