"""Summarise a ``benchmarks/gpu_check.sh`` run: goals pass/fail, tables, step statuses.

Reads the JSON lines ``gpu_check.sh`` leaves in its output folder (``steps.jsonl``,
``cosine.jsonl``, ``hlf.jsonl``, ``rqi.jsonl``, ``compile.jsonl``, ``env.json``) and writes
``summary.json`` and ``summary.md`` next to them. Missing or partial files are reported,
never fatal: a summary is written whatever the run left.

Goals of the fused cosine kernel (issue 15), each checked separately for the forward and
the backward on every *large* bfloat16 shape measured on CUDA:

- ``bandwidth``: achieved bandwidth (minimum traffic / median time) >= 85% of the device's
  peak HBM bandwidth (``peak_gbs`` of the rows: ``bench_cosine.PEAK_GBS``);
- ``vs_compile``: time of ``torch.compile`` of the torch reference / fused time >= 1.0;
- ``vs_eager``: time of the eager reference / fused time >= 3.0.

*Large* means at least ``LARGE_ELEMENTS`` elements per input (2**24: ``x`` and ``y``
together then take 64 MiB in bfloat16, more than an H100/H200's 50-60 MB L2, so the
figures are HBM figures). A goal with no qualifying rows is ``not measured``.

    python benchmarks/gpu_summary.py OUTDIR
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

LARGE_ELEMENTS = 2**24
GOALS = {"bandwidth": 0.85, "vs_compile": 1.0, "vs_eager": 3.0}
PASSES = ("fwd", "bwd")


def read_jsonl(path: Path) -> tuple[list[dict], list[str]]:
    """The rows of a JSON-lines file and the problems met (missing file, bad lines)."""
    if not path.exists():
        return [], [f"{path.name}: missing"]
    rows, problems = [], []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            problems.append(f"{path.name}:{number}: not JSON")
    return rows, problems


def _key(row: dict) -> tuple:
    return (row["B"], row["N"], row["D"], row["dtype"])


def evaluate_goals(rows: list[dict]) -> list[dict]:
    """One verdict per (goal, pass, large bf16 CUDA shape), plus ``not measured`` goals."""
    by_shape: dict[tuple, dict[str, dict]] = {}
    for row in rows:
        if row.get("device_type") != "cuda" or "error" in row:
            continue
        by_shape.setdefault(_key(row), {})[row["backend"]] = row
    verdicts = []
    for (batch, tokens, features, dtype), backends in sorted(by_shape.items()):
        if dtype != "bfloat16" or batch * tokens * features < LARGE_ELEMENTS:
            continue
        fused = backends.get("triton")
        for name in PASSES:
            shape = [batch, tokens, features]
            base = {"pass": name, "shape": shape, "dtype": dtype}
            fused_ms = None if fused is None else fused.get(f"{name}_ms")
            peak = None if fused is None else fused.get("peak_gbs")
            gbs = None if fused is None else fused.get(f"{name}_gbs")
            fraction = None if gbs is None or not peak else gbs / peak
            verdicts.append(_verdict("bandwidth", fraction, base, gbs=gbs, peak_gbs=peak))
            for goal, reference in (("vs_compile", "compile"), ("vs_eager", "eager")):
                other = backends.get(reference, {}).get(f"{name}_ms")
                ratio = None if fused_ms is None or other is None else other / fused_ms
                verdicts.append(_verdict(goal, ratio, base, fused_ms=fused_ms, other_ms=other))
    for goal in GOALS:
        for name in PASSES:
            if not any(v["goal"] == goal and v["pass"] == name for v in verdicts):
                verdicts.append(
                    {
                        "goal": goal,
                        "pass": name,
                        "status": "not measured",
                        "target": GOALS[goal],
                        "value": None,
                        "why": "no large bfloat16 CUDA rows",
                    }  # fmt: skip
                )
    return verdicts


def _verdict(goal: str, value: float | None, base: dict, **detail: Any) -> dict:
    target = GOALS[goal]
    if value is None:
        status, why = "not measured", "a backend or the device's peak bandwidth is missing"
    else:
        status, why = ("pass" if value >= target else "fail"), None
    verdict = {"goal": goal, **base, "status": status, "target": target}
    verdict["value"] = None if value is None else round(value, 4)
    verdict.update(detail)
    if why:
        verdict["why"] = why
    return verdict


def _cosine_table(rows: list[dict]) -> list[str]:
    by_shape: dict[tuple, dict[str, dict]] = {}
    for row in rows:
        if "error" not in row:
            by_shape.setdefault(_key(row), {})[row["backend"]] = row
    lines = [
        "| B x N x D | dtype | pass | eager ms | compile ms | fused ms | fused GB/s "
        "| % peak | vs compile | vs eager |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for key, backends in sorted(by_shape.items()):
        for name in PASSES:
            cells = {b: backends.get(b, {}).get(f"{name}_ms") for b in ("eager", "compile")}
            fused = backends.get("triton", {})
            fused_ms = fused.get(f"{name}_ms")
            fraction = fused.get(f"{name}_fraction_of_peak")

            def ratio(other: float | None, fused_ms: float | None = fused_ms) -> str:
                return "-" if other is None or not fused_ms else f"{other / fused_ms:.2f}x"

            lines.append(
                f"| {key[0]}x{key[1]}x{key[2]} | {key[3]} | {name} | {_fmt(cells['eager'])} "
                f"| {_fmt(cells['compile'])} | {_fmt(fused_ms)} | {_fmt(fused.get(f'{name}_gbs'))} "
                f"| {'-' if fraction is None else f'{100 * fraction:.1f}'} "
                f"| {ratio(cells['compile'])} | {ratio(cells['eager'])} |"
            )
    return lines


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _pairs_table(rows: list[dict], title: str, what: str, against: str) -> list[str]:
    """Step time and memory of each variant next to the LPIPS-VGG row of the same size."""
    if not rows:
        return []
    lines = [f"### {title}", "", "| row | step ms (median) | peak MiB | time vs LPIPS-VGG |",
             "|---|---|---|---|"]  # fmt: skip
    for row in rows:
        if "error" in row:
            lines.append(f"| {row.get(what)} | error | | |")
            continue
        ms, mem = _step_ms(row), _memory(row)
        reference = next(
            (r for r in rows if r.get(what) == against and r.get("size") == row.get("size")), None
        )
        ratio = (
            "-"
            if reference is None or not _step_ms(reference)
            else f"{ms / _step_ms(reference):.2f}x"
        )
        label = f"{row.get(what)} @ {row.get('size')}"
        lines.append(f"| {label} | {_fmt(ms)} | {_fmt(mem)} | {ratio} |")
    return [*lines, ""]


def _step_ms(row: dict) -> float | None:
    if "ms_median" in row:
        return float(row["ms_median"])
    if "step_s_median" in row:
        return 1e3 * float(row["step_s_median"])
    return None


def _memory(row: dict) -> float | None:
    for key in ("cuda_max_allocated_over_setup_mib", "peak_mem_mib", "cpu_peak_rss_growth_mib"):
        if key in row:
            return row[key]
    return None


def _compile_table(rows: list[dict]) -> list[str]:
    if not rows:
        return []
    lines = ["### Training steps, eager vs torch.compile(fullgraph=True)", "",
             "| case | eager ms | compiled ms | eager / compiled | compile s | error |",
             "|---|---|---|---|---|---|"]  # fmt: skip
    cases: dict[str, dict[str, dict]] = {}
    for row in rows:
        cases.setdefault(row.get("case", "?"), {})[row.get("mode", "error")] = row
    for case, modes in cases.items():
        eager, compiled = modes.get("eager", {}), modes.get("compile", {})
        e_ms, c_ms = eager.get("step_ms_median"), compiled.get("step_ms_median")
        ratio = compiled.get("ratio_median_of_pairs")
        if ratio is None and e_ms and c_ms:
            ratio = e_ms / c_ms
        error = "yes" if "error" in modes else ""
        lines.append(
            f"| {case} | {_fmt(e_ms)} | {_fmt(c_ms)} | {'-' if ratio is None else f'{ratio:.2f}x'} "
            f"| {_fmt(compiled.get('first_call_s'))} | {error} |"
        )
    return [*lines, ""]


def summarise(outdir: Path) -> dict:
    outdir = Path(outdir)
    problems: list[str] = []
    data = {}
    for name in ("steps", "cosine", "hlf", "rqi", "compile"):
        data[name], found = read_jsonl(outdir / f"{name}.jsonl")
        problems += found
    env_path = outdir / "env.json"
    env = json.loads(env_path.read_text(encoding="utf-8")) if env_path.exists() else {}
    goals = evaluate_goals(data["cosine"])
    failed_steps = [s["step"] for s in data["steps"] if s.get("rc") != 0]
    summary = {
        "env": env,
        "steps": data["steps"],
        "failed_steps": failed_steps,
        "goals": goals,
        "goals_passed": sum(g["status"] == "pass" for g in goals),
        "goals_failed": sum(g["status"] == "fail" for g in goals),
        "goals_not_measured": sum(g["status"] == "not measured" for g in goals),
        "problems": problems,
    }
    (outdir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    (outdir / "summary.md").write_text("\n".join(_markdown(summary, data)) + "\n", encoding="utf-8")
    return summary


def _markdown(summary: dict, data: dict) -> list[str]:
    env = summary["env"]
    lines = ["# gpu_check summary", ""]
    lines += [f"- {key}: {value}" for key, value in env.items()]
    lines += ["", "## Steps", "", "| step | exit | seconds | limit s |", "|---|---|---|---|"]
    for step in summary["steps"]:
        lines.append(
            f"| {step.get('step')} | {step.get('rc')}{' (timed out)' if step.get('timed_out') else ''} "
            f"| {step.get('seconds')} | {step.get('limit_s')} |"
        )
    lines += ["", "## Goals of the fused cosine kernel (large bfloat16, CUDA)", "",
              "| goal | pass | shape | value | target | status |", "|---|---|---|---|---|---|"]  # fmt: skip
    for goal in summary["goals"]:
        shape = "x".join(map(str, goal.get("shape", []))) or "-"
        lines.append(
            f"| {goal['goal']} | {goal['pass']} | {shape} | {_fmt(goal['value'])} "
            f"| {goal['target']} | {goal['status']} |"
        )
    lines += [
        "",
        f"{summary['goals_passed']} passed, {summary['goals_failed']} failed, "
        f"{summary['goals_not_measured']} not measured. bandwidth = fraction of peak HBM "
        "bandwidth at the minimum traffic; vs_* = reference time / fused time.",
        "",
        "## Cosine kernel",
        "",
        *_cosine_table(data["cosine"]),
        "",
        "## Losses",
        "",
        *_pairs_table(data["hlf"], "HLFLoss (bench_hlf)", "variant", "lpips"),
        *_pairs_table(data["rqi"], "RQILoss (bench_rqi)", "case", "lpips-step"),
        *_compile_table(data["compile"]),
    ]
    if summary["problems"]:
        lines += ["## Problems", "", *[f"- {p}" for p in summary["problems"]]]
    return lines


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python benchmarks/gpu_summary.py OUTDIR", file=sys.stderr)
        return 2
    summarise(Path(argv[0]))
    print((Path(argv[0]) / "summary.md").read_text(encoding="utf-8"))
    return 0  # goals and step failures are in the summary; gpu_check.sh's status has steps


if __name__ == "__main__":
    sys.exit(main())
