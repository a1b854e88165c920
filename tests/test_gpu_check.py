"""benchmarks/gpu_check.sh cannot rot: a CPU dry run of every step, a run whose every step
fails (none may stop it), and the goal verdicts of its summary on hand-made rows."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.sh"
STEPS = ["env", "tests_triton", "tests_cuda", "bench_cosine", "bench_hlf", "bench_rqi",
         "bench_compile", "summary"]  # fmt: skip


def _module(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(out: Path, python: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHON=python, OMP_NUM_THREADS="1")
    env.pop("PERCEPFID_TEST_DEVICE", None)
    env.pop("TRITON_INTERPRET", None)
    return subprocess.run(
        ["bash", str(SCRIPT), "--dry-run", str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=1500,
    )


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory) -> tuple[subprocess.CompletedProcess, Path]:
    out = tmp_path_factory.mktemp("gpu_check")
    return _run(out, sys.executable), out


def test_dry_run_runs_every_step(dry_run):
    done, out = dry_run
    steps = _jsonl(out / "steps.jsonl")
    assert [s["step"] for s in steps] == STEPS, done.stdout[-3000:]
    failed = {
        s["step"]: (out / "logs" / f"{s['step']}.log").read_text()[-2000:]
        for s in steps
        if s["rc"] != 0
    }
    assert not failed, failed
    assert done.returncode == 0, done.stdout[-3000:]


def test_dry_run_writes_every_result_file(dry_run):
    _, out = dry_run
    env = json.loads((out / "env.json").read_text())
    assert env["dry_run"] is True and env["torch"]
    cosine = _jsonl(out / "cosine.jsonl")
    assert [row["backend"] for row in cosine] == ["eager", "compile", "triton"]
    for row in cosine:  # 2 x 17 x 64 bfloat16: 2176 elements of 2 bytes
        assert (row["B"], row["N"], row["D"], row["dtype"]) == (2, 17, 64, "bfloat16")
        assert row["fwd_bytes_min"] == 2 * 2176 * 2 and row["bwd_bytes_min"] == 3 * 2176 * 2
        assert row["fwd_ms"] > 0 and row["bwd_ms"] > 0
        assert row["fwd_bwd_ms"] >= max(row["fwd_ms"], row["bwd_ms"])
    assert cosine[2]["triton_interpreted"] is True
    (hlf,) = _jsonl(out / "hlf.jsonl")
    assert hlf["variant"] == "hlf" and hlf["ms_median"] > 0
    (rqi,) = _jsonl(out / "rqi.jsonl")
    assert rqi["case"] == "rqi-step" and rqi["model_kwargs"]["img_size"] == 32
    (compiled,) = _jsonl(out / "compile.jsonl")
    assert "error" not in compiled, compiled.get("error")
    assert compiled["case"] == "rqi-random" and compiled["fullgraph"] is True
    summary = json.loads((out / "summary.json").read_text())
    assert summary["failed_steps"] == [] and summary["problems"] == []
    assert {g["status"] for g in summary["goals"]} == {"not measured"}  # no CUDA rows
    assert len(summary["goals"]) == 6  # 3 goals x (fwd, bwd)
    markdown = (out / "summary.md").read_text()
    assert "## Goals of the fused cosine kernel" in markdown and "| rqi-random |" in markdown


def test_failing_steps_never_stop_the_run(tmp_path):
    done = _run(tmp_path, "false")  # every step's command exits 1
    steps = _jsonl(tmp_path / "steps.jsonl")
    assert [s["step"] for s in steps] == STEPS
    assert all(s["rc"] == 1 and s["timed_out"] is False for s in steps)
    assert all((tmp_path / "logs" / f"{name}.log").exists() for name in STEPS)
    assert done.returncode == 1


def _row(shape, dtype, backend, fwd_ms, bwd_ms, *, peak=4800.0, device_type="cuda"):
    batch, tokens, features = shape
    element = batch * tokens * features * {"bfloat16": 2, "float32": 4}[dtype]
    return {
        "device_type": device_type, "B": batch, "N": tokens, "D": features, "dtype": dtype,
        "backend": backend, "fwd_ms": fwd_ms, "bwd_ms": bwd_ms, "peak_gbs": peak,
        "fwd_gbs": 2 * element / (fwd_ms * 1e-3) / 1e9,
        "bwd_gbs": 3 * element / (bwd_ms * 1e-3) / 1e9,
    }  # fmt: skip


def test_goal_verdicts_on_hand_made_rows():
    summary = _module("gpu_summary")
    large = (64, 1025, 1024)  # 67,174,400 elements: 134.3 MB per bf16 tensor
    rows = [
        # fused: fwd 268.7 MB in 0.064 ms = 4198 GB/s = 0.875 of 4800; bwd 403.0 MB in
        # 0.1 ms = 4030 GB/s = 0.840 of 4800
        _row(large, "bfloat16", "triton", 0.064, 0.1),
        _row(large, "bfloat16", "compile", 0.070, 0.099),  # 1.094x (pass), 0.99x (fail)
        _row(large, "bfloat16", "eager", 0.2, 0.31),  # 3.125x (pass), 3.1x (pass)
        # ignored: too small for an HBM figure, not bfloat16, not CUDA
        _row((8, 17, 64), "bfloat16", "triton", 1.0, 1.0),
        _row(large, "float32", "triton", 1.0, 1.0),
        _row((8, 4097, 768), "bfloat16", "triton", 1.0, 1.0, device_type="cpu"),
        # a large shape with no compile row and a device of unknown peak: not measured
        _row((8, 4097, 768), "bfloat16", "triton", 0.05, 0.08, peak=None),
        _row((8, 4097, 768), "bfloat16", "eager", 0.5, 0.08),
    ]
    verdicts = {
        (v["goal"], v["pass"], tuple(v["shape"])): (v["status"], v["value"])
        for v in summary.evaluate_goals(rows)
    }
    other = (8, 4097, 768)
    assert verdicts == {
        ("bandwidth", "fwd", large): ("pass", pytest.approx(0.8747, abs=1e-4)),
        ("bandwidth", "bwd", large): ("fail", pytest.approx(0.8397, abs=1e-4)),
        ("vs_compile", "fwd", large): ("pass", pytest.approx(1.0938, abs=1e-4)),
        ("vs_compile", "bwd", large): ("fail", 0.99),
        ("vs_eager", "fwd", large): ("pass", 3.125),
        ("vs_eager", "bwd", large): ("pass", 3.1),
        ("bandwidth", "fwd", other): ("not measured", None),
        ("bandwidth", "bwd", other): ("not measured", None),
        ("vs_compile", "fwd", other): ("not measured", None),
        ("vs_compile", "bwd", other): ("not measured", None),
        ("vs_eager", "fwd", other): ("pass", 10.0),
        ("vs_eager", "bwd", other): ("fail", 1.0),
    }


@pytest.mark.parametrize(
    ("name", "peak"),
    [
        ("NVIDIA H100 80GB HBM3", 3350.0),  # SXM5
        ("NVIDIA H100 PCIe", 2000.0),
        ("NVIDIA H100 NVL", 3900.0),
        ("NVIDIA H200", 4800.0),
        ("NVIDIA GH200 480GB", None),  # not an H200: no figure rather than a wrong one
        ("NVIDIA A100-SXM4-40GB", 1555.0),
    ],
)
def test_peak_bandwidth_table(name, peak):
    assert _module("bench_cosine").peak_gbs_for(name) == peak
