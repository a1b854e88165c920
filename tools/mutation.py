"""Mutation score of percepfid's core math (mutmut 3), one module group at a time.

Not part of CI (it takes tens of minutes on two cores). Each group is mutated in its own
scratch copy of the repository with a narrow, fast test selection, so a mutant only runs
the tests that guard that module::

    pip install -e '.[test]'            # brings mutmut
    python tools/mutation.py            # every group
    python tools/mutation.py sampler eval --max-children 2

Mutants on ``raise`` statements, log calls and ``__all__`` only change messages; they are
not generated. Survivors judged equivalent (no observable change) are listed with their
reason by ``EQUIVALENT_RULES`` below and counted apart. The report goes to
``benchmarks/results/mutation.json`` and ``benchmarks/results/mutation.md``.
"""

from __future__ import annotations

import argparse
import ast
import difflib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"

# group -> (files to mutate, pytest arguments selecting the tests that guard them)
GROUPS: dict[str, tuple[list[str], list[str]]] = {
    "functional": (
        ["percepfid/functional/*"],
        ["tests/test_core_math.py"],
    ),
    "kernels_reference": (
        ["percepfid/kernels/_reference.py"],
        [
            "tests/test_core_math.py",
            "tests/test_kernels.py",
            "-k",
            "not import and not compile and not opcheck and not cuda",
        ],
    ),
    "eval": (
        ["percepfid/eval/*"],
        ["tests/test_eval.py", "tests/test_eval_values.py", "-k", "not import_does_not"],
    ),
    "sampler": (
        ["percepfid/data/sampler.py"],
        ["tests/test_sampler.py", "tests/test_core_math.py"],
    ),
    "rqi_crops": (
        ["percepfid/rqi/crops.py"],
        ["tests/test_core_math.py", "tests/test_values_rqi.py"],
    ),
    "lora_targets": (
        ["percepfid/lora/_targets.py"],
        ["tests/test_lora.py", "tests/test_core_math.py", "-k", "target or preset or rank"],
    ),
}

# Lines whose mutants only change a message, not behaviour.
DO_NOT_MUTATE_PATTERNS = [r"^\s*raise\b", r"\blogger\.", r"^\s*__all__"]

# Survivors that cannot change documented behaviour: (file, function-name fragment, regex on
# the mutated line, why). Checked against each survivor's diff; everything else is reported
# as a survivor. Reviewed by hand, one rule per kind of mutant.
EQUIVALENT_RULES: list[tuple[str, str, str, str]] = [
    (
        "kernels/_reference.py",
        "backward",
        r"zero = torch\.zeros\(\(\), (dtype=None, )?(device=(cos\.device|None))?\)|zeros\(\(\), dtype=cos\.dtype, (device=None)?\)",
        "the 0-d zero in torch.where takes the other branch's dtype; device None is the CPU default",
    ),
    (
        "kernels/_reference.py",
        "backward",
        r"[xy]f = [xy]\.to\(None\)",
        "xf / yf only meet the float32/float64 factors a and b, so promotion converts them exactly",
    ),
    (
        "kernels/_reference.py",
        "",
        r"unsqueeze\(\+1\)|sum\(\+1\)",
        "the operands are (L, N) / (L,): axis 1 is the last axis",
    ),
    (
        "data/sampler.py",
        "",
        r'self\.mode == "(XXargmaxXX|ARGMAX)"|best\] = 2\.0',
        "argmax rows are one-hot (renormalised): multinomial draws the same index",
    ),
    (
        "data/sampler.py",
        "",
        r"manual_seed\(self\.seed - epoch\)",
        "still a pure function of (seed, epoch), distinct per epoch: the documented contract",
    ),
    (
        "data/sampler.py",
        "",
        r"math\.ceil\(self\.num_samples \* self\.num_items\)",
        "more repetitions of 0..n-1, then cut to num_samples: the same sequence",
    ),
    (
        "data/sampler.py",
        "",
        r"strict=(None|False)\)|chosen\[mine\]\.tolist\(\), \)",
        "items and chosen have equal lengths by construction",
    ),
    (
        "data/sampler.py",
        "",
        r"slice\(self\.rank, None, self\.num_replicas\)",
        "None and len(items) both mean the end",
    ),
    (
        "rqi/crops.py",
        "",
        r"shape\[\+2:\]",
        "inputs are (B, C, H, W): [+2:] and [-2:] are the same axes",
    ),
    (
        "rqi/crops.py",
        "",
        r"align_corners=None|antialias=None|mode=\"bilinear\", antialias=|align_corners=False, \)"
        r"|antialias: bool = True",
        "None is the default False; fit_to_crop only upsamples, where antialias has no effect",
    ),
    (
        "rqi/crops.py",
        "",
        r"torch\.randint\((height|width) - size \+ 1, \(count,\)",
        "randint(high, size) draws from [0, high)",
    ),
    (
        "rqi/crops.py",
        "",
        r"shape\[-3:\]\) == \(size, size\)",
        "skips the identity fast path: an image of exactly the crop size gives the same values",
    ),
    (
        "lora/_targets.py",
        "",
        r"zip\(widths, widths\[1:\], (strict=None)?\)",
        "zip's strict defaults to False",
    ),
    (
        "eval/correlation.py",
        "fit_logistic",
        r"^\(.*\),$|^sign = |^lo, hi = ",
        "changes only a starting point of the least-squares fit (several starts, the best "
        "kept): the tests check that the fit reaches the exact curve from increasing and "
        "decreasing data; another start reaching the same optimum is not observable",
    ),
    (
        "eval/correlation.py",
        "fit_logistic",
        r"residual <= best\[0\]",
        "equal residuals: either parameter set is the optimum",
    ),
    (
        "eval/preference.py",
        "thurstone",
        r"solution \+ solution\.mean\(\)|rhs = np\.concatenate\(\[z, \[1\.0\]\]\)",
        "the constraint row makes the solution's mean a constant that the final centring removes",
    ),
    (
        "eval/preference.py",
        "thurstone",
        r"for j in range\(k\):|shape\[1\] < 2|k = counts\.shape\[1\]|lstsq\(design, rhs, \)"
        r"|np\.asarray\(wins, (dtype=None)?\)",
        "the same least-squares system: (j, i) repeats (i, j) negated, the diagonal row is zero; "
        "counts are square; rcond=None is numpy's default; integer counts divide to the same "
        "floats",
    ),
    (
        "eval/correlation.py",
        "",
        r"np\.argsort\(x, (kind=None|kind=\"STABLE\")?\)",
        "tied values share the average of their positions, whatever their order",
    ),
    (
        "eval/correlation.py",
        "scipy_optimize",
        r"require\(\"scipy\", None\)",
        "only the text of the MissingDependencyError raised when scipy is absent",
    ),
    (
        "eval/_inputs.py",
        "to_vector",
        r"if array\.ndim >= 1:",
        "a 1-D array has one non-singleton side at most: the inner check never fires for it",
    ),
    (
        "eval/correlation.py",
        "_logistic",
        r"np\.clip\(.*, (-501\.0, 500\.0|-500\.0, 501\.0|None, 500\.0|-500\.0, None)\)",
        "the clip only keeps exp() from overflowing: beyond |z| = 500 the logistic is 0 or 1 "
        "to double precision either way",
    ),
    (
        "eval/correlation.py",
        "",
        r"np\.sum\(counts \* \(counts - 1\) / 2\)|^while width <= n:",
        "n (n - 1) is even, so / 2 and // 2 agree; one more merge pass over a sorted run "
        "finds no inversion",
    ),
    (
        "eval/correlation.py",
        "count_inversions",
        r"np\.searchsorted\(left_keys, \(right_pair \+ 1\) \* span, \)",
        "side='left' is searchsorted's default",
    ),
    ("eval/", "", r'float\("NAN"\)', "float() parses NaN case-insensitively"),
    (
        "eval/",
        "",
        r"-:stacklevel=",
        "the warning's stack level: mutmut's trampolines add a frame, so it is checked outside "
        "mutmut (tests/test_eval_values.py::test_warnings_point_at_the_caller)",
    ),
    ("eval/", "", r"reshape\(-2\)", "numpy reads any negative size as the unknown one"),
    (
        "eval/",
        "",
        r"\.to\(None, torch\.float64\)|\.to\(torch\.float64\)",
        "device None keeps the tensor's device; the result is moved by .numpy() on CPU tensors",
    ),
    ("eval/", "", r'dtype\.kind in "XXiufXX"', "a substring test: one-letter kinds still match"),
    ("eval/", "", r"p\[decided\] >= 0\.5", "p == 0.5 is excluded by `decided`"),
    (
        "eval/",
        "",
        r"\(\(margin >= 0\) == human_second\)",
        "margin == 0 is handled by the outer where",
    ),
    ("eval/", "", r"astype\(None\)", "astype(None) is float64"),
    (
        "eval/",
        "",
        r"range\(int\(inverse\.max\(\)\) \+ 2\)",
        "the extra index selects no member and is skipped",
    ),
    (
        "eval/",
        "",
        r"codes = np\.empty\(len\(array\), (dtype=None)?\)",
        "float codes -1.0/0.0/1.0 compare equal to the integer codes",
    ),
]

STATUS = {
    0: "survived",
    1: "killed",
    3: "killed",
    5: "no tests",
    33: "no tests",
    34: "skipped",
    36: "timeout",
    37: "caught by type check",
    None: "not checked",
}


def _toml_list(values: list[str]) -> str:
    return "[" + ", ".join(json.dumps(v) for v in values) + "]"


def prepare(group: str, workdir: Path, incremental: bool = False) -> Path:
    """A scratch copy of the repository configured to mutate ``group``.

    ``incremental`` keeps an earlier run's copy (and mutmut's results) and refreshes only the
    tests and the configuration: mutmut then runs the new tests against the mutants they
    cover. The source must not have changed since that run.
    """
    files, selection = GROUPS[group]
    target = workdir / group
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    if incremental and (target / "mutants").exists():
        shutil.rmtree(target / "tests")
    else:
        if target.exists():
            shutil.rmtree(target)
        target.mkdir(parents=True)
        shutil.copytree(ROOT / "percepfid", target / "percepfid", ignore=ignore)
    shutil.copytree(ROOT / "tests", target / "tests", ignore=ignore)
    pyproject = (ROOT / "pyproject.toml").read_text()
    pyproject += "\n[tool.mutmut]\n" + "\n".join(
        [
            'source_paths = ["percepfid"]',
            f"only_mutate = {_toml_list(files)}",
            f"do_not_mutate_patterns = {_toml_list(DO_NOT_MUTATE_PATTERNS)}",
            f"pytest_add_cli_args_test_selection = {_toml_list(selection)}",
            'pytest_add_cli_args = ["-p", "no:cacheprovider", "-x", "-q", "-p", "no:randomly"]',
            "timeout_multiplier = 5.0",
        ]
    )
    (target / "pyproject.toml").write_text(pyproject + "\n")
    return target


def survivors(target: Path) -> list[str]:
    """Names of the mutants that survived the earlier run in ``target``."""
    names = []
    for meta in (target / "mutants").rglob("*.py.meta"):
        codes = json.loads(meta.read_text()).get("exit_code_by_key", {})
        names += [name for name, code in codes.items() if code == 0]
    return sorted(names)


def run_group(group: str, workdir: Path, max_children: int, incremental: bool = False) -> dict:
    target = prepare(group, workdir, incremental)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", HYPOTHESIS_PROFILE="dev")
    start = time.time()
    command = [sys.executable, "-m", "mutmut", "run", "--max-children", str(max_children)]
    if incremental:  # new tests can only kill more: rerun the earlier survivors alone
        command += survivors(target)
    log = (target / "mutmut.log").open("a")
    subprocess.run(command, cwd=target, env=env, stdout=log, stderr=subprocess.STDOUT, check=False)
    elapsed = time.time() - start
    return collect(group, target, elapsed)


def _function_sources(path: Path) -> dict[str, str]:
    source = path.read_text()
    lines = source.splitlines()
    return {
        node.name: "\n".join(lines[node.lineno - 1 : node.end_lineno])
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.FunctionDef)
    }


def mutant_diff(functions: dict[str, str], name: str) -> list[str]:
    """The changed lines of a mutant against the original function (mutmut's trampolines
    keep both as ``<name>__mutmut_orig`` and ``<name>__mutmut_<n>``)."""
    short = name.split(".")[-1]
    original = functions.get(short.split("__mutmut_")[0] + "__mutmut_orig")
    mutated = functions.get(short)
    if original is None or mutated is None:
        return []
    base = short.split("__mutmut_")[0]
    original = original.replace(base + "__mutmut_orig", base, 1)
    mutated = mutated.replace(short, base, 1)
    lines = difflib.unified_diff(original.splitlines(), mutated.splitlines(), lineterm="", n=0)
    return [
        f"{line[0]} {line[1:].strip()}"
        for line in lines
        if line[:1] in "+-" and not line.startswith(("+++", "---"))
    ]


def equivalent_reason(source: str, name: str, changed: list[str]) -> str | None:
    """The reason of the first rule that matches (a pattern starting with ``-:`` is
    searched in the removed lines, any other in the added ones)."""
    added = [line[2:] for line in changed if line.startswith("+")]
    removed = [line[2:] for line in changed if line.startswith("-")]
    for path, function, pattern, why in EQUIVALENT_RULES:
        if path in source and function in name.split(".")[-1]:
            lines, regex = (removed, pattern[2:]) if pattern.startswith("-:") else (added, pattern)
            if any(re.search(regex, line) for line in lines):
                return why
    return None


def collect(group: str, target: Path, elapsed: float) -> dict:
    """Per-file counts, survivors (with their diffs) and equivalents from mutmut's files."""
    per_file: dict[str, dict] = {}
    for meta in sorted((target / "mutants").rglob("*.py.meta")):
        data = json.loads(meta.read_text())
        source = str(meta.relative_to(target / "mutants")).removesuffix(".meta")
        functions = _function_sources(target / "mutants" / source)
        counts = {"killed": 0, "timeout": 0, "survived": 0, "equivalent": 0, "other": 0}
        survivors, equivalent = {}, {}
        for name, code in sorted(data.get("exit_code_by_key", {}).items()):
            status = STATUS.get(code, "suspicious")
            if code in (-24, 24, 152, 255):
                status = "timeout"
            if status == "killed":
                counts["killed"] += 1
            elif status == "timeout":  # the tests hang or crash: detected
                counts["timeout"] += 1
            elif status == "survived":
                changed = mutant_diff(functions, name)
                why = equivalent_reason(source, name, changed)
                if why:
                    counts["equivalent"] += 1
                    equivalent[name] = why
                else:
                    counts["survived"] += 1
                    survivors[name] = changed
            else:
                counts["other"] += 1
                survivors[f"{name} ({status})"] = []
        if sum(counts.values()):
            per_file[source] = {**counts, "survivors": survivors, "equivalent_mutants": equivalent}
    return {"group": group, "seconds": round(elapsed), "files": per_file}


def write_report(reports: list[dict]) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / "mutation.json"
    previous = json.loads(path.read_text()) if path.exists() else {}
    merged = {**previous.get("groups", {}), **{r["group"]: r for r in reports}}
    document = {"tool": "mutmut 3", "groups": merged}
    path.write_text(json.dumps(document, indent=2) + "\n")
    lines = [
        "# Mutation score of the core math",
        "",
        "Generated by `python tools/mutation.py` (mutmut 3, one narrow test selection per",
        "group, see `GROUPS`). Mutants of `raise` lines, log calls and `__all__` are not",
        "generated (they only change messages). Detected = killed + timeout. Equivalent",
        "survivors (no observable change, reasons below) are left out of the score:",
        "score = detected / (detected + survived). Each group had one full run; after tests",
        "were added, `--incremental` reran that run's survivors only (tests are only added,",
        "so a killed mutant stays killed). Snapshot of 2026-12-02; `rqi/crops.py` and",
        "`lora/_targets.py` were being changed in parallel.",
        "",
        "| group | file | killed | timeout | survived | equivalent | other | score |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for group, report in merged.items():
        for source, c in report["files"].items():
            detected = c["killed"] + c.get("timeout", 0)
            behaviour = detected + c["survived"]
            score = f"{100 * detected / behaviour:.1f}%" if behaviour else "n/a"
            lines.append(
                f"| {group} | `{source}` | {c['killed']} | {c.get('timeout', 0)} | "
                f"{c['survived']} | {c['equivalent']} | {c['other']} | {score} |"
            )
    lines += ["", "## Survivors", ""]
    for report in merged.values():
        for c in report["files"].values():
            for name, changed in c["survivors"].items():
                lines.append(f"- `{name}`: " + "; ".join(f"`{line}`" for line in changed))
    lines += ["", "## Equivalent mutants", ""]
    reasons: dict[str, list[str]] = {}
    for report in merged.values():
        for c in report["files"].values():
            for name, why in c["equivalent_mutants"].items():
                reasons.setdefault(why, []).append(name.split(".")[-1])
    for why, names in reasons.items():
        lines.append(f"- {why}: " + ", ".join(f"`{n}`" for n in names))
    (RESULTS / "mutation.md").write_text("\n".join(lines) + "\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("groups", nargs="*", default=list(GROUPS), choices=[*GROUPS, []])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/percepfid-mutation"))
    parser.add_argument("--max-children", type=int, default=2)
    parser.add_argument("--report-only", action="store_true", help="re-read finished runs")
    parser.add_argument(
        "--incremental",
        action="store_true",
        help="reuse an earlier run, refresh the tests and rerun its survivors only",
    )
    parser.add_argument("--show", action="store_true", help="print each survivor's change")
    args = parser.parse_args()
    reports = []
    for group in args.groups:
        if args.report_only:
            report = collect(group, args.workdir / group, 0)
        else:
            report = run_group(group, args.workdir, args.max_children, args.incremental)
        reports.append(report)
        for source, c in report["files"].items():
            print(
                f"{group} {source}: {c['killed']} killed, {c['timeout']} timeout, "
                f"{c['survived']} survived, {c['equivalent']} equivalent, {c['other']} other"
            )
            if args.show:
                for name, changed in c["survivors"].items():
                    print(f"  {name}")
                    for line in changed:
                        print(f"      {line}")
    write_report(reports)
    return 0


if __name__ == "__main__":
    sys.exit(main())
