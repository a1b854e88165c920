"""Every example runs offline end to end with ``--random-weights`` and says its numbers mean
nothing (short settings keep CI quick)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"

CASES = {
    "quickstart.py": (["--steps", "2", "--size", "64"], "mean nothing"),
    "score_folder.py": ([], "mean nothing"),
    "fit_hlf_head.py": (
        ["--head", "mlp", "--unfreeze-blocks", "1", "--epochs", "1"],
        "predicted fidelity",
    ),
    "train_sr_rqi.py": (["--steps", "1"], "mean nothing"),
    "finetune_lora_nriqa.py": (["--steps", "2"], "means nothing"),
    "finetune_spandrel.py": (
        ["--arch", "SPAN", "--steps", "2", "--items", "2", "--out", "out"],
        "means nothing",
    ),
}


def test_every_example_is_covered() -> None:
    scripts = [p.name for p in EXAMPLES.glob("*.py") if not p.name.startswith("_")]
    assert sorted(CASES) == sorted(scripts)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(CASES))
def test_example_runs_with_random_weights(name: str, tmp_path: Path) -> None:
    args, expected = CASES[name]
    env = os.environ | {"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    completed = subprocess.run(
        [sys.executable, str(EXAMPLES / name), "--random-weights", *args],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=300,
        check=False,
    )
    output = completed.stdout + completed.stderr
    assert completed.returncode == 0, output[-3000:]
    assert expected in output
