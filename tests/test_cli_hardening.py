"""The command line as people use it (issue 11, items 2, 4, 5, 6, 15, 17): stdout holds data
only, bad paths and bad input exit 2 without a traceback before any work, a failed run
changes no output file, messages name flags and cells, the score cache refuses what is not
a cache and is keyed by the model, and ``percepfid weights`` covers the NR-IQA default."""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from test_cli import _write_csv as _csv

from percepfid import ArgumentError
from percepfid.cli import build_parser, main

TINY = "timm:vit_tiny_patch16_224.augreg_in21k"
HLF = ["--metric", f"hlf:{TINY}", "--image-size", "32", "--random-weights", "--no-progress"]
PRECIOUS = "precious,output\n1,2\n"


def _save(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


@pytest.fixture
def folders(tmp_path: Path) -> tuple[Path, Path]:
    rng = np.random.default_rng(0)
    for i in range(3):
        reference = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
        _save(tmp_path / "gt" / f"img{i}.png", reference)
        _save(tmp_path / "sr" / f"img{i}.png", 255 - reference)
    return tmp_path / "gt", tmp_path / "sr"


@pytest.fixture
def keep(tmp_path: Path) -> Path:
    """A pre-existing output file that no failed run may change."""
    path = tmp_path / "keep.csv"
    path.write_text(PRECIOUS)
    return path


def run(capsys: pytest.CaptureFixture[str], *argv: object) -> tuple[int, str, str]:
    """Run the CLI in this process; an exception escaping ``main`` fails the test."""
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert "Traceback" not in err, err
    return code, out, err


# --------------------------------------------------------------------------- item 2


def test_stdout_of_every_data_command_is_data_only(
    folders, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from percepfid.heads import CalibrationHead

    gt, sr = folders
    head = tmp_path / "head"
    CalibrationHead().save_pretrained(head)  # loading it prints through huggingface_hub
    code, out, _ = run(capsys, "score", *HLF, "--head", head, "--ref", gt, "--dist", sr)
    assert code == 0
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [Path(r["distorted"]).name for r in rows] == ["img0.png", "img1.png", "img2.png"]
    assert all(0.0 <= float(r["score"]) <= 1.0 for r in rows)

    code, out, _ = run(capsys, "score", *HLF, "--ref", gt, "--dist", sr, "--format", "json")
    assert code == 0 and len(json.loads(out)["rows"]) == 3

    scores = _csv(tmp_path / "s.csv", ["score", "mos"], [[1, 2], [2, 1], [3, 4], [4, 3]])
    for fmt in ("csv", "json"):
        code, out, _ = run(capsys, "correlate", scores, "--format", fmt)
        parsed = (
            json.loads(out)["rows"] if fmt == "json" else list(csv.DictReader(io.StringIO(out)))
        )
        assert code == 0 and float(parsed[0]["srcc"]) == pytest.approx(0.6)  # 1 - 6*4/60

    code, out, _ = run(capsys, "backbones", "*dinov2*", "--json")
    assert code == 0 and {"name", "weights"} <= set(json.loads(out)[0])

    root = tmp_path / "candidates"
    for i in range(2):
        _save(root / "item" / f"{i}.png", np.full((16, 16, 3), 60 * i, np.uint8))
    code, out, _ = run(
        capsys, "score-candidates", root, "--iqa", f"nr-head:{TINY}", "--random-weights",
        "--no-progress",
    )  # fmt: skip
    assert code == 0
    assert [r["candidate"] for r in csv.DictReader(io.StringIO(out))] == ["0", "1"]


# --------------------------------------------------------------------------- item 5


def test_bad_output_paths_are_refused_before_any_work(
    folders, tmp_path: Path, keep: Path, capsys: pytest.CaptureFixture[str], monkeypatch
) -> None:
    import percepfid.commands.score as score

    def no_work(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        raise AssertionError("the command started its work before checking its outputs")

    monkeypatch.setattr(score, "build_scorer", no_work)
    gt, sr = folders
    folder = tmp_path / "a_folder"
    folder.mkdir()
    under_file = keep / "out.csv"
    cases = [
        (["score", *HLF, "--ref", gt, "--dist", sr, "-o", folder], "--output"),
        (["score", *HLF, "--ref", gt, "--dist", sr, "-o", under_file], "--output"),
        (["correlate", keep, "-o", folder], "--output"),
        (["correlate", keep, "--plot", under_file], "--plot"),
        (["score-candidates", tmp_path, "-o", folder], "--output"),
        (["score-candidates", tmp_path, "--cache", folder], "--cache"),
        (["fit-hlf", keep, "--output-dir", keep], "--output-dir"),
        (["train-rqi", keep, "--output", keep / "sub"], "--output"),
    ]
    for argv, flag in cases:
        code, _, err = run(capsys, *argv)
        assert code == 2, (argv, err)
        assert flag in err and ("folder" in err or "file" in err), err
    assert keep.read_text() == PRECIOUS


def test_a_write_that_fails_midway_keeps_the_old_output(
    folders, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch
) -> None:
    gt, sr = folders
    out = tmp_path / "scores.json"
    out.write_text('{"rows": "a good earlier result"}')
    real_dump = json.dump

    def disk_full(obj, handle, **kwargs):  # noqa: ANN001, ANN003, ANN202
        handle.write('{"metadata": {"half')
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(json, "dump", disk_full)
    code, _, err = run(capsys, "score", *HLF, "--ref", gt, "--dist", sr, "-o", out)
    monkeypatch.setattr(json, "dump", real_dump)
    assert code == 2 and "No space left on device" in err
    assert out.read_text() == '{"rows": "a good earlier result"}'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gt", "scores.json", "sr"]


def test_a_new_output_file_gets_the_usual_permissions(tmp_path: Path) -> None:
    from percepfid._atomic import atomic_path

    umask = os.umask(0o022)
    try:
        with atomic_path(tmp_path / "new.csv") as partial:
            partial.write_text("x")
    finally:
        os.umask(umask)
    assert stat.S_IMODE((tmp_path / "new.csv").stat().st_mode) == 0o644  # not mkstemp's 0600


# --------------------------------------------------------------------------- item 15


def test_bad_input_exits_2_without_traceback_and_changes_no_output(
    folders, tmp_path: Path, keep: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    gt, sr = folders
    latin1 = tmp_path / "latin1.csv"
    latin1.write_bytes("sr,gt,score,mos\ncaf\xe9.png,x.png,1,2\n".encode("latin-1"))
    nul = tmp_path / "nul.csv"
    nul.write_bytes(b"sr,gt\nsr/img0.png,gt/img\x000.png\n")
    broken = tmp_path / "broken"
    _save(broken / "img0.png", np.zeros((16, 16, 3), np.uint8))
    (broken / "img1.png").write_bytes(b"\x89PNG\r\n\x1a\n but not an image")
    candidates = tmp_path / "candidates"
    (candidates / "item").mkdir(parents=True)
    (candidates / "item" / "0.png").write_bytes(b"not an image")
    no_scene = _csv(tmp_path / "no_scene.csv", ["image", "mos"], [["sr/img0.png", 1]])
    cases = [
        ["score", *HLF, "--ref", gt, "--dist", tmp_path / "missing"],
        ["score", *HLF, "--pairs", latin1],
        ["score", *HLF, "--pairs", nul],
        ["score", *HLF, "--ref", gt, "--dist", broken, "--skip-unmatched"],
        ["correlate", tmp_path / "missing.csv"],
        ["correlate", latin1],
        ["correlate", nul],
        ["score-candidates", tmp_path / "missing", "--random-weights"],
        ["score-candidates", candidates, "--iqa", f"nr-head:{TINY}", "--random-weights"],
        ["fit-hlf", latin1, "--backbone", TINY, "--image-size", "32", "--random-weights"],
        ["train-rqi", no_scene, "--output", tmp_path / "rqi", "--random-weights"],
    ]
    for argv in cases:
        if argv[0] in ("score", "correlate", "score-candidates"):
            argv = [*argv, "-o", keep]
        code, _, err = run(capsys, *argv)
        assert code == 2, (argv, err)
        assert f"percepfid {argv[0]}: error:" in err, err
        assert keep.read_text() == PRECIOUS
    assert "latin1.csv is not UTF-8" in run(capsys, "correlate", latin1)[2]


def test_rows_are_counted_the_same_in_every_command(
    folders, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    gt, sr = folders
    # the bad cell is on the third line of each file: the header is row 1
    pairs = _csv(tmp_path / "pairs.csv", ["sr", "gt"], [["sr/img0.png", "gt/img0.png"], ["", "gt/img1.png"]])  # fmt: skip
    scores = _csv(tmp_path / "scores.csv", ["score", "mos"], [[1, 2], ["high", 3], [3, 1]])
    ratings = _csv(tmp_path / "r.csv", ["image", "scene", "mos"], [["sr/img0.png", "a", 1], ["sr/img1.png", "a", "x"]])  # fmt: skip
    errors = [
        run(capsys, "score", *HLF, "--pairs", pairs)[2],
        run(capsys, "correlate", scores)[2],
        run(capsys, "train-rqi", ratings, "-o", tmp_path / "out", "--random-weights")[2],
    ]
    for err in errors:
        assert "row 3" in err and "row 2" not in err, err


def test_a_nan_cell_names_its_file_row_and_column(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    scores = _csv(tmp_path / "scores.csv", ["score", "mos"], [[1, 2], [2, 3], ["nan", 1], [4, 4]])
    code, _, err = run(capsys, "correlate", scores)
    assert code == 2
    assert str(scores) in err and "row 4" in err and "'score'" in err and "'nan'" in err
    empty = _csv(tmp_path / "empty.csv", ["score", "mos"], [[1, 2], [2, 3], [3, ""]])
    code, _, err = run(capsys, "correlate", empty)
    assert code == 2 and "row 4, column 'mos' is empty" in err


def test_messages_name_flags_not_python_keywords(
    folders, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    gt, sr = folders
    code, _, err = run(capsys, "score", "--metric", f"nr:nr-head:{TINY}", "--dist", sr)
    assert code == 2 and "--weights" in err and "--random-weights" in err
    assert "weights=" not in err and "pretrained=" not in err
    no_scene = _csv(tmp_path / "r.csv", ["image", "mos"], [["sr/img0.png", 1]])
    code, _, err = run(capsys, "train-rqi", no_scene, "-o", tmp_path / "o", "--random-weights")
    assert code == 2 and "--group-column" in err and "group_column" not in err
    no_sr = _csv(tmp_path / "h.csv", ["image", "gt", "score"], [["sr/img0.png", "gt/img0.png", 1]])
    argv = ["fit-hlf", no_sr, "--backbone", TINY, "--image-size", "32", "--random-weights"]
    code, _, err = run(capsys, *argv)
    assert code == 2 and "--sr-col" in err and "sr_col" not in err


def test_bad_arguments_are_refused_naming_their_flag(
    folders, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    gt, sr = folders
    code, _, err = run(capsys, "score", *HLF, "--ref", gt, "--dist", sr, "--seed", 2**70)
    assert code == 2 and "--seed" in err
    three = _csv(tmp_path / "s.csv", ["score", "mos"], [[1, 2], [2, 1], [3, 4]])
    code, _, err = run(capsys, "correlate", three, "--fit", "logistic4")
    assert code == 2 and "leave out --fit" in err and "None" not in err
    twice = _csv(tmp_path / "d.csv", ["score", "score", "mos"], [[1, 2, 3], [2, 3, 1]])
    code, _, err = run(capsys, "correlate", twice)
    assert code == 2 and "'score' appear more than once" in err
    ratings = _csv(tmp_path / "r.csv", ["image", "scene", "mos"], [["sr/img0.png", "a", 1]])
    argv = ["train-rqi", ratings, "-o", tmp_path / "o", "--random-weights", "--epochs", "0"]
    code, _, err = run(capsys, *argv)
    assert code == 2 and "--epochs must be" in err


def test_flag_translation_leaves_paths_and_quoted_names_alone() -> None:
    from percepfid.commands._common import as_flags

    parser = argparse.ArgumentParser()
    parser.add_argument("--batch-size")
    parser.add_argument("--image-column")
    parser.add_argument("--random-weights", action="store_true")
    message = (
        "batch_size must be >= 1; set image_column=<name> or pass pretrained=False; "
        "column 'image_column' of /data/batch_size/image_column.csv"
    )
    assert as_flags(message, parser) == (
        "--batch-size must be >= 1; set --image-column <name> or pass --random-weights; "
        "column 'image_column' of /data/batch_size/image_column.csv"
    )


def test_correlate_constant_input_is_a_clear_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    flat_human = _csv(tmp_path / "h.csv", ["score", "mos"], [[1, 3], [2, 3], [3, 3]])
    code, _, err = run(capsys, "correlate", flat_human)
    assert code == 2 and "human scores (--human-col mos) are all 3" in err
    assert "Warning" not in err and ".py:" not in err
    flat_metric = _csv(
        tmp_path / "m.csv", ["score", "other", "mos", "src"],
        [[1, 5, 1, "a"], [1, 4, 2, "a"], [1, 3, 3, "b"], [1, 2, 4, "b"]],
    )  # fmt: skip
    argv = ["correlate", flat_metric, "--score-col", "score", "--score-col", "other"]
    code, out, err = run(capsys, *argv, "--group-col", "src", "--format", "json")
    assert code == 0
    first, second = json.loads(out)["rows"]
    assert first["srcc"] is None and second["srcc"] == pytest.approx(-1.0)
    assert "column 'score' (--score-col) is 1 in every row" in err
    assert "ConstantInputWarning" not in err and "Warning:" not in err and ".py:" not in err


def test_plot_with_a_bad_suffix_is_refused_before_the_work(
    tmp_path: Path, keep: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    scores = _csv(tmp_path / "s.csv", ["score", "mos"], [[1, 2], [2, 1], [3, 4], [4, 3]])
    code, _, err = run(capsys, "correlate", scores, "-o", keep, "--plot", tmp_path / "p.xyz")
    assert code == 2 and "--plot" in err and ".png" in err
    assert keep.read_text() == PRECIOUS and not (tmp_path / "p.xyz").exists()


def test_plot_draws_the_fitted_curve(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch
) -> None:
    from matplotlib.figure import Figure
    from scipy import stats

    drawn: list[Figure] = []
    real_savefig = Figure.savefig

    def keep_figure(self, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        drawn.append(self)
        return real_savefig(self, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", keep_figure)
    rng = np.random.default_rng(1)
    x = np.sort(rng.uniform(0, 1, 30))
    human = 1 / (1 + np.exp(-(x - 0.5) * 12)) * 4 + 1 + rng.normal(0, 0.05, 30)
    scores = _csv(
        tmp_path / "s.csv", ["score", "mos"], [[a, b] for a, b in zip(x, human, strict=True)]
    )
    png = tmp_path / "plot.png"
    argv = ["correlate", scores, "--fit", "logistic4", "--plot", png, "--format", "json"]
    code, out, _ = run(capsys, *argv)
    assert code == 0 and png.read_bytes()[:4] == b"\x89PNG"
    ((axes,),) = [figure.axes for figure in drawn]
    (line,) = axes.get_lines()
    curve_x, curve_y = line.get_xydata().T
    assert curve_x.min() == pytest.approx(x.min()) and curve_x.max() == pytest.approx(x.max())
    assert np.all(np.diff(curve_y) > 0)  # a monotone logistic through the rising data
    fitted = np.interp(x, curve_x, curve_y)
    assert stats.pearsonr(fitted, human).statistic > stats.pearsonr(x, human).statistic
    rmse = float(np.sqrt(np.mean((fitted - human) ** 2)))
    assert rmse == pytest.approx(json.loads(out)["rows"][0]["rmse_logistic4"], rel=0.05)
    drawn.clear()
    assert run(capsys, "correlate", scores, "--plot", png)[0] == 0
    assert drawn[0].axes[0].get_lines() == []  # no --fit, no curve


# --------------------------------------------------------------------------- items 4 and 6


class _Scaled(torch.nn.Module):
    """Mean brightness times a weight: two instances share a name, not their weights."""

    def __init__(self, scale: float) -> None:
        super().__init__()
        self.scale = torch.nn.Parameter(torch.tensor(float(scale)))
        self.images = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.images += x.shape[0]
        return x.mean(dim=(1, 2, 3)) * self.scale


def _candidates(root: Path) -> list[float]:
    means = []
    for i in range(2):
        array = np.random.default_rng(i).integers(0, 256, (8, 8, 3), dtype=np.uint8)
        _save(root / "item" / f"{i}.png", array)
        means.append(float(array.astype(np.float64).mean() / 255))
    return means


def test_the_score_cache_refuses_a_file_that_is_not_a_cache(
    tmp_path: Path, keep: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from percepfid.data import score_candidates

    root = tmp_path / "root"
    _candidates(root)
    with pytest.raises(ArgumentError, match="not a percepfid score cache"):
        score_candidates(root, _Scaled(1.0), cache=keep, progress=False)
    assert keep.read_text() == PRECIOUS
    argv = ["score-candidates", root, "--iqa", f"nr-head:{TINY}", "--random-weights"]
    code, _, err = run(capsys, *argv, "--cache", keep)
    assert code == 2 and "--cache" in err and "not a percepfid score cache" in err
    assert keep.read_text() == PRECIOUS


def test_the_score_cache_is_keyed_by_the_model_weights_not_its_name(tmp_path: Path) -> None:
    from percepfid.data import score_candidates

    root = tmp_path / "root"
    means = _candidates(root)
    cache = tmp_path / "cache.json"
    one, two = _Scaled(1.0), _Scaled(2.0)
    first = score_candidates(root, one, cache=cache, progress=False)
    second = score_candidates(root, two, cache=cache, progress=False)
    np.testing.assert_allclose(first[0].numpy(), means, rtol=1e-5)
    np.testing.assert_allclose(second[0].numpy(), [2 * m for m in means], rtol=1e-5)
    again = _Scaled(2.0)
    score_candidates(root, again, cache=cache, progress=False)
    assert (one.images, two.images, again.images) == (2, 2, 0)  # same weights: from the cache


# --------------------------------------------------------------------------- item 17


def test_weights_download_fetches_the_default_nriqa_tower(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import inspect

    import open_clip

    from percepfid.iqa import CLIPIQA
    from percepfid.testing._fake_hub import FakeHub

    defaults = inspect.signature(CLIPIQA).parameters
    arch, tag = defaults["model"].default, defaults["pretrained"].default
    repo = open_clip.get_pretrained_cfg(arch, tag)["hf_hub"].rstrip("/")
    with FakeHub() as server, server.activate(tmp_path / "hf_home"):
        server.add_file(repo, "open_clip_model.safetensors", b"tower bytes")
        code, out, _ = run(capsys, "weights", "download", "clipiqa")
        assert code == 0 and f"ok      open_clip:{arch}/{tag} -> " in out
        assert Path(out.split(" -> ")[1].strip()).read_bytes() == b"tower bytes"
        code, out, _ = run(capsys, "weights", "list", "--kind", "iqa")
        assert code == 0 and f"open_clip:{arch}/{tag}" in out and "cached" in out


def test_weights_verify_with_nothing_cached_fails_like_a_named_entry(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from percepfid.testing._fake_hub import FakeHub

    entry = {
        "name": "test:absent", "kind": "head", "repo_id": "org/repo", "filename": "w.bin",
        "revision": None, "sha256": None, "size": None, "licence": "mit", "source": "test",
        "notes": "",
    }  # fmt: skip
    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps({"schema_version": 1, "entries": [entry]}))
    with FakeHub() as server, server.activate(tmp_path / "hf_home"):
        named = run(capsys, "weights", "verify", "test:absent", "--manifest", manifest)
        every = run(capsys, "weights", "verify", "--manifest", manifest)
    assert named[0] == every[0] == 1
    assert "nothing to verify" in every[1] and "test:absent" in every[1]


def test_weights_subcommands_have_descriptions() -> None:
    parser = build_parser()
    (commands,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    (actions,) = [
        a for a in commands.choices["weights"]._actions if isinstance(a, argparse._SubParsersAction)
    ]
    for name in ("list", "download", "verify"):
        description = actions.choices[name].description
        assert description and len(description) > 40, name


def test_every_help_answers_without_torch() -> None:
    code = (
        "import sys, contextlib, io\n"
        "from percepfid.cli import main\n"
        "names = ['score', 'correlate', 'fit-hlf', 'train-rqi', 'score-candidates', "
        "'backbones', 'weights']\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    codes = [main([n, '--help']) for n in names] + [main(['weights', 'verify', '--help'])]\n"
        "print(codes, 'torch' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip().splitlines()[-1] == f"{[0] * 8} False"
