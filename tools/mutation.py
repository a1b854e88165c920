"""Mutation score of percepfid's core math (mutmut 3), one module group at a time.

Not part of CI (it takes tens of minutes on two cores). Each group is mutated in its own
scratch copy of the repository with a narrow, fast test selection, so a mutant only runs
the tests that guard that module::

    pip install -e '.[test]'            # brings mutmut
    python tools/mutation.py            # every group
    python tools/mutation.py sampler eval --max-children 2

Mutants on ``raise`` statements, log calls and ``__all__`` only change messages; they are
not generated. Survivors judged equivalent (no observable change) are listed with their
reason in ``EQUIVALENT`` below and counted apart. The report goes to
``benchmarks/results/mutation.json`` and ``benchmarks/results/mutation.md``.
"""

from __future__ import annotations

import argparse
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

# mutant name -> why it cannot change behaviour (filled after reading each survivor).
EQUIVALENT: dict[str, str] = {}

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


def prepare(group: str, workdir: Path) -> Path:
    """A scratch copy of the repository configured to mutate ``group``."""
    files, selection = GROUPS[group]
    target = workdir / group
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
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


def run_group(group: str, workdir: Path, max_children: int) -> dict:
    target = prepare(group, workdir)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", HYPOTHESIS_PROFILE="dev")
    start = time.time()
    command = [sys.executable, "-m", "mutmut", "run", "--max-children", str(max_children)]
    log = (target / "mutmut.log").open("w")
    subprocess.run(command, cwd=target, env=env, stdout=log, stderr=subprocess.STDOUT, check=False)
    elapsed = time.time() - start
    return collect(group, target, elapsed)


def collect(group: str, target: Path, elapsed: float) -> dict:
    """Per-file counts and survivors from mutmut's ``.meta`` files."""
    per_file: dict[str, dict] = {}
    for meta in sorted((target / "mutants").rglob("*.py.meta")):
        data = json.loads(meta.read_text())
        source = str(meta.relative_to(target / "mutants")).removesuffix(".meta")
        counts = {"killed": 0, "survived": 0, "equivalent": 0, "other": 0}
        survivors, equivalent = [], {}
        for name, code in sorted(data.get("exit_code_by_key", {}).items()):
            status = STATUS.get(code, "suspicious")
            if status == "killed":
                counts["killed"] += 1
            elif status == "survived" and name in EQUIVALENT:
                counts["equivalent"] += 1
                equivalent[name] = EQUIVALENT[name]
            elif status == "survived":
                counts["survived"] += 1
                survivors.append(name)
            else:
                counts["other"] += 1
                survivors.append(f"{name} ({status})")
        if sum(counts.values()):
            per_file[source] = {**counts, "survivors": survivors, "equivalent_mutants": equivalent}
    return {"group": group, "seconds": round(elapsed), "files": per_file}


def diff(group: str, workdir: Path, mutant: str) -> str:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run(
        [sys.executable, "-m", "mutmut", "show", mutant],
        cwd=workdir / group,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    return result.stdout


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
        "Generated by `python tools/mutation.py` (mutmut 3; mutants on `raise` lines, log calls",
        "and `__all__` are not generated: they only change messages). Score = killed /",
        "(killed + survived); equivalent mutants (no observable change) are listed with why.",
        "",
        "| group | file | killed | survived | equivalent | other | score |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for group, report in merged.items():
        for source, c in report["files"].items():
            behaviour = c["killed"] + c["survived"]
            score = f"{100 * c['killed'] / behaviour:.1f}%" if behaviour else "n/a"
            lines.append(
                f"| {group} | `{source}` | {c['killed']} | {c['survived']} | "
                f"{c['equivalent']} | {c['other']} | {score} |"
            )
    lines += ["", "## Surviving and equivalent mutants", ""]
    for report in merged.values():
        for c in report["files"].values():
            for name in c["survivors"]:
                lines.append(f"- survived: `{name}`")
            for name, why in c["equivalent_mutants"].items():
                lines.append(f"- equivalent: `{name}`: {why}")
    (RESULTS / "mutation.md").write_text("\n".join(lines) + "\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("groups", nargs="*", default=list(GROUPS), choices=[*GROUPS, []])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/percepfid-mutation"))
    parser.add_argument("--max-children", type=int, default=2)
    parser.add_argument("--report-only", action="store_true", help="re-read finished runs")
    parser.add_argument("--show", action="store_true", help="print the diff of each survivor")
    args = parser.parse_args()
    reports = []
    for group in args.groups:
        if args.report_only:
            report = collect(group, args.workdir / group, 0)
        else:
            report = run_group(group, args.workdir, args.max_children)
        reports.append(report)
        for source, c in report["files"].items():
            print(
                f"{group} {source}: {c['killed']} killed, {c['survived']} survived, "
                f"{c['equivalent']} equivalent, {c['other']} other"
            )
            if args.show:
                for name in c["survivors"]:
                    print(diff(group, args.workdir, re.sub(r" \(.*\)$", "", name)))
    write_report(reports)
    return 0


if __name__ == "__main__":
    sys.exit(main())
