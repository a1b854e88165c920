"""The ``percepfid`` command line: skeleton, exit codes, ``correlate``."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from percepfid import __version__
from percepfid._imports import is_available
from percepfid.cli import build_parser, main


def _write_csv(path: Path, header: list[str], rows: list[list[object]]) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


@pytest.fixture
def scored(tmp_path: Path) -> tuple[Path, Path, np.ndarray, np.ndarray, list[str]]:
    rng = np.random.default_rng(0)
    n = 24
    human = np.round(rng.uniform(1, 5, n), 1)
    score = np.round(np.tanh(human - 3) + rng.normal(scale=0.3, size=n), 3)
    names = [f"img{i:02d}.png" for i in range(n)]
    sources = [f"src{i // 4}" for i in range(n)]
    scores_csv = _write_csv(
        tmp_path / "scores.csv",
        ["reference", "distorted", "score"],
        [[f"gt/{sources[i]}.png", f"sr/{names[i]}", score[i]] for i in range(n)],
    )
    # the human file lists the rows in another order and has one extra row
    order = rng.permutation(n)
    human_csv = _write_csv(
        tmp_path / "human.csv",
        ["dist", "mos", "source"],
        [[names[i], human[i], sources[i]] for i in order] + [["extra.png", 3.0, "srcX"]],
    )
    return scores_csv, human_csv, score, human, sources


def _json(capsys: pytest.CaptureFixture[str]) -> dict:
    return json.loads(capsys.readouterr().out)


def test_help_version_and_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    assert "correlate" in capsys.readouterr().out
    assert main(["--version"]) == 0
    assert __version__ in capsys.readouterr().out
    assert main([]) == 2
    assert main(["no-such-command"]) == 2
    assert "invalid choice" in capsys.readouterr().err


def test_missing_command_module_is_skipped(monkeypatch: pytest.MonkeyPatch) -> None:
    import percepfid.cli as cli

    monkeypatch.setattr(cli, "COMMANDS", ("correlate", "definitely_not_a_module"))
    parser = cli.build_parser()
    assert "correlate" in parser.format_help()


def test_correlate_joins_human_csv_and_matches_scipy(
    scored, capsys: pytest.CaptureFixture[str]
) -> None:
    scores_csv, human_csv, score, human, _ = scored
    code = main(
        [
            "correlate", str(scores_csv), "--human", str(human_csv),
            "--human-key", "dist", "--match", "name", "--format", "json",
        ]
    )  # fmt: skip
    assert code == 0
    (row,) = _json(capsys)["rows"]
    assert row["n"] == len(score)
    assert row["srcc"] == pytest.approx(stats.spearmanr(score, human).statistic)
    assert row["plcc"] == pytest.approx(stats.pearsonr(score, human).statistic)
    assert row["krcc"] == pytest.approx(stats.kendalltau(score, human).statistic)


def test_correlate_single_file_fit_groups_and_table(
    tmp_path: Path, scored, capsys: pytest.CaptureFixture[str]
) -> None:
    _, _, score, human, sources = scored
    both = _write_csv(
        tmp_path / "both.csv",
        ["distorted", "score", "other", "mos", "source"],
        [[f"{i}.png", score[i], -score[i], human[i], sources[i]] for i in range(len(score))],
    )
    code = main(
        [
            "correlate", str(both), "--score-col", "score", "--score-col", "other",
            "--group-col", "source", "--fit", "logistic4", "--format", "json",
        ]
    )  # fmt: skip
    assert code == 0
    first, second = _json(capsys)["rows"]
    assert first["metric"] == "score" and second["metric"] == "other"
    assert second["srcc"] == pytest.approx(-first["srcc"])
    assert first["plcc_logistic4"] >= first["plcc"] - 1e-9
    expected = np.mean(
        [
            stats.spearmanr(score[i : i + 4], human[i : i + 4]).statistic
            for i in range(0, len(score), 4)
        ]
    )
    assert first["grouped_srcc"] == pytest.approx(expected)
    assert main(["correlate", str(both)]) == 0
    table = capsys.readouterr().out
    assert "srcc" in table.splitlines()[0] and "score" in table


def test_correlate_plot(tmp_path: Path, scored, capsys: pytest.CaptureFixture[str]) -> None:
    scores_csv, human_csv, *_ = scored
    png = tmp_path / "plots" / "scatter.png"
    argv = [
        "correlate", str(scores_csv), "--human", str(human_csv), "--human-key", "dist",
        "--match", "name", "--plot", str(png),
    ]  # fmt: skip
    if is_available("matplotlib"):
        assert main(argv) == 0
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    else:
        assert main(argv) == 3
        assert "percepfid[plot]" in capsys.readouterr().err


def test_correlate_bad_input_messages(
    tmp_path: Path, scored, capsys: pytest.CaptureFixture[str]
) -> None:
    scores_csv, human_csv, *_ = scored
    assert main(["correlate", str(tmp_path / "missing.csv")]) == 2
    assert "scores CSV not found" in capsys.readouterr().err

    assert main(["correlate", str(scores_csv), "--human", str(human_csv)]) == 2
    err = capsys.readouterr().err
    assert "no column 'distorted'" in err and "--human-key" in err

    argv = ["correlate", str(scores_csv), "--human", str(human_csv), "--human-key", "dist"]
    assert main(argv) == 2  # exact keys 'sr/img00.png' vs 'img00.png' never match
    assert "try --match name" in capsys.readouterr().err

    assert main(["correlate", str(scores_csv), "--score-col", "nope"]) == 2
    assert "no column 'nope'" in capsys.readouterr().err

    bad = _write_csv(tmp_path / "bad.csv", ["score", "mos"], [[1, 2], ["x", 3], [3, 1]])
    assert main(["correlate", str(bad)]) == 2
    assert (
        "row 3, column 'score': expected a number; got 'x'" in capsys.readouterr().err
    )  # header = row 1

    partial = _write_csv(
        tmp_path / "partial.csv",
        ["distorted", "score"],
        [["img00.png", 1], ["img01.png", 2], ["img02.png", 3], ["zzz.png", 4]],
    )
    argv = ["correlate", str(partial), "--human", str(human_csv), "--human-key", "dist"]
    assert main(argv) == 0
    assert "1 score row(s) have no human score" in capsys.readouterr().err


def test_console_entry_point_subprocess(tmp_path: Path, scored) -> None:
    scores_csv, human_csv, *_ = scored
    pyproject = Path(__file__).resolve().parents[1] / "pyproject.toml"
    assert 'percepfid = "percepfid.cli:main"' in pyproject.read_text()
    result = subprocess.run(
        [
            sys.executable, "-m", "percepfid.cli", "correlate", str(scores_csv),
            "--human", str(human_csv), "--human-key", "dist", "--match", "stem",
        ],
        capture_output=True,
        text=True,
        check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0].split()[:3] == ["metric", "n", "srcc"]
    failed = subprocess.run(
        [sys.executable, "-m", "percepfid.cli", "correlate", str(tmp_path / "none.csv")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert failed.returncode == 2
    assert failed.stderr.startswith("percepfid correlate: error:")


def test_parser_lists_every_present_command() -> None:
    text = build_parser().format_help()
    for name in ("score", "correlate", "backbones", "weights", "fit-hlf"):
        module = name.replace("-", "_")
        if is_available(f"percepfid.commands.{module}"):
            assert name in text


@pytest.mark.parametrize(
    ("command", "positional"),
    [("score", ["--metric", "rqi"]), ("fit-hlf", ["r.csv"]), ("train-rqi", ["r.csv", "-o", "out"]),
     ("score-candidates", ["root"])],
)  # fmt: skip
def test_model_commands_share_the_runtime_options(
    command: str, positional: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    from percepfid.cli import build_parser

    parser = build_parser()
    args = parser.parse_args([command, *positional])
    assert (args.device, args.random_weights, args.no_progress) == ("auto", False, False)
    args = parser.parse_args([command, *positional, "--batch-size", "3", "--device", "cpu"])
    assert (args.batch_size, args.device) == (3, "cpu")
    with pytest.raises(SystemExit) as exit_info:
        parser.parse_args([command, *positional, "--batch-size", "0"])
    assert exit_info.value.code == 2
    assert "expected an integer >= 1; got 0" in capsys.readouterr().err


def test_help_and_argument_errors_do_not_import_torch():
    # `percepfid --help` and usage errors must answer at once: no torch, no models.
    code = (
        "import sys\n"
        "from percepfid.cli import main\n"
        "codes = [main(['--help']), main(['score', '--help']), main(['score', '--batch-size', '0'])]\n"
        "print(codes, 'torch' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[0, 0, 2] False"
