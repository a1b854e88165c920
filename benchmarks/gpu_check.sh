#!/usr/bin/env bash
# Every GPU figure percepfid needs, in one call: benchmarks/gpu_check.sh [--dry-run] OUTDIR
#
# Run from anywhere on a machine with one CUDA GPU (H100/H200: under 8 minutes). Steps, in
# order, each with its own time limit and all under one overall budget:
#
#   env            device, driver, versions (env.json, nvidia-smi)
#   tests_triton   tests/test_kernels.py on the device (PERCEPFID_TEST_DEVICE=cuda)
#   tests_cuda     every test marked `cuda` (pytest -m cuda tests/)
#   bench_cosine   fused kernel vs eager and torch.compile of the reference, forward and
#                  backward, bf16/fp16/fp32, (64,1025,1024) and (8,4097,768) -> cosine.jsonl
#   bench_hlf      HLFLoss training step vs the hand-written floor and LPIPS-VGG -> hlf.jsonl
#   bench_rqi      RQILoss training step vs LPIPS-VGG -> rqi.jsonl
#   bench_compile  torch.compile(fullgraph=True, inductor) training steps of HLFLoss
#                  (cls, patch, tiles) and RQILoss (random crops) vs eager -> compile.jsonl
#   summary        summary.md / summary.json: goals pass/fail, tables (gpu_summary.py)
#
# A failing or timed-out step never stops the run: each step's exit status, time and limit
# go to OUTDIR/steps.jsonl and its output to OUTDIR/logs/STEP.log. The exit status is 0 when
# every step exited 0 (goals that fail are reported in the summary, not in the status).
#
# --dry-run (or PERCEPFID_GPU_CHECK_DRY_RUN=1): the same steps on the CPU with tiny sizes,
# the Triton kernels under TRITON_INTERPRET=1; tests/test_gpu_check.py runs it so that this
# script cannot rot. Its numbers mean nothing.
#
# Environment: PYTHON (default: python), GPU_CHECK_BUDGET_S (overall budget in seconds,
# default 450, 1200 for a dry run; the summary always gets the last 20), PEAK_GBS (override
# the peak bandwidth table of bench_cosine.py, e.g. for a device it does not list: H100
# SXM 3350, H100 PCIe 2000, H100 NVL 3900, H200 4800 GB/s, vendor figures).

set -u

dry_run=${PERCEPFID_GPU_CHECK_DRY_RUN:-0}
if [[ "${1:-}" == "--dry-run" ]]; then
    dry_run=1
    shift
fi
if [[ $# -ne 1 ]]; then
    echo "usage: $0 [--dry-run] OUTDIR" >&2
    exit 2
fi

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
mkdir -p "$1/logs" || exit 2
OUT=$(cd "$1" && pwd)
PY=${PYTHON:-python}
if [[ $dry_run == 1 ]]; then BUDGET=${GPU_CHECK_BUDGET_S:-1200}; else BUDGET=${GPU_CHECK_BUDGET_S:-450}; fi
START=$(date +%s)
DEADLINE=$((START + BUDGET - 20))
cd "$ROOT" || exit 2
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
: > "$OUT/steps.jsonl"
for name in cosine hlf rqi compile; do : > "$OUT/$name.jsonl"; done
status=0

# step NAME LIMIT_S COMMAND...: run it under `timeout` (the whole process group), log it,
# record {"step", "rc", "seconds", "limit_s", "timed_out"}; never exits the script.
step() {
    local name=$1 limit=$2 now remaining rc begin end seconds timed_out=false
    shift 2
    now=$(date +%s)
    remaining=$((DEADLINE - now))
    if [[ $name == summary ]]; then remaining=$((START + BUDGET - now)); fi
    if ((remaining < 5)); then
        printf '{"step": "%s", "rc": null, "seconds": 0, "limit_s": 0, "timed_out": false, "skipped": "budget spent"}\n' \
            "$name" >> "$OUT/steps.jsonl"
        status=1
        return
    fi
    ((limit > remaining)) && limit=$remaining
    local shown="$*"
    echo "== $name (limit ${limit}s): ${shown:0:400}" | tee "$OUT/logs/$name.log"
    begin=$(date +%s.%N)
    timeout --kill-after=10 "$limit" "$@" >> "$OUT/logs/$name.log" 2>&1
    rc=$?
    end=$(date +%s.%N)
    seconds=$(awk -v a="$begin" -v b="$end" 'BEGIN { printf "%.1f", b - a }')
    if ((rc == 124 || rc == 137)); then timed_out=true; fi
    printf '{"step": "%s", "rc": %d, "seconds": %s, "limit_s": %d, "timed_out": %s}\n' \
        "$name" "$rc" "$seconds" "$limit" "$timed_out" >> "$OUT/steps.jsonl"
    echo "== $name: exit $rc after ${seconds}s"
    ((rc != 0)) && status=1
}

ENV_PY=$(cat <<'EOF'
import json, platform, subprocess, sys
import torch
info = {"dry_run": sys.argv[2] == "1", "python": platform.python_version(),
        "torch": torch.__version__, "cuda": torch.version.cuda,
        "cuda_available": torch.cuda.is_available()}
try:
    import triton
    info["triton"] = triton.__version__
except ImportError:
    info["triton"] = None
if torch.cuda.is_available():
    info["device"] = torch.cuda.get_device_name()
    props = torch.cuda.get_device_properties(0)
    info["memory_gib"] = round(props.total_memory / 2**30, 1)
    info["capability"] = f"{props.major}.{props.minor}"
    try:
        info["nvidia_smi"] = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,driver_version,memory.total,clocks.max.memory,power.limit",
             "--format=csv,noheader"], capture_output=True, text=True, timeout=20).stdout.strip()
    except (OSError, subprocess.SubprocessError) as error:
        info["nvidia_smi"] = f"unavailable: {error}"
else:
    info["device"] = f"cpu ({platform.machine()})"
json.dump(info, open(sys.argv[1], "w"), indent=2)
print(json.dumps(info))
EOF
)

PYTEST=("$PY" -m pytest -q -p no:cacheprovider)
PEAK=()
if [[ -n "${PEAK_GBS:-}" ]]; then PEAK=(--peak-gbs "$PEAK_GBS"); fi
TINY_VIT="timm:vit_tiny_patch16_224.augreg_in21k"
SMALL_RQI=$("$PY" -c 'import json; from percepfid.rqi import SMALL_MODEL_KWARGS as k; print(json.dumps(k))')

step env 60 "$PY" -c "$ENV_PY" "$OUT/env.json" "$dry_run"

if [[ $dry_run == 1 ]]; then
    # CPU, tiny sizes: only the plumbing is checked.
    export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
    step tests_triton 300 env TRITON_INTERPRET=1 PERCEPFID_TRITON_INTERPRETER_CHILD=1 \
        "${PYTEST[@]}" tests/test_kernels.py -k "bf16_self_similarity and triton" \
        --junitxml "$OUT/junit_triton.xml"
    step tests_cuda 300 "${PYTEST[@]}" -m cuda tests/test_kernels.py --junitxml "$OUT/junit_cuda.xml"
    step bench_cosine 300 env TRITON_INTERPRET=1 "$PY" benchmarks/bench_cosine.py --device cpu \
        --shapes 2x17x64 --dtypes bfloat16 --backends eager,compile,triton \
        --compile-backend eager --warmup 1 --repeats 2 "${PEAK[@]}" --out "$OUT/cosine.jsonl"
    step bench_hlf 300 sh -c '"$0" benchmarks/bench_hlf.py --device cpu --sizes 32 --batch 1 \
        --steps 1 --backbone "$1" --variants hlf > "$2"' "$PY" "$TINY_VIT" "$OUT/hlf.jsonl"
    step bench_rqi 300 "$PY" benchmarks/bench_rqi.py --device cpu --cases rqi-step --batch 1 \
        --steps 1 --model-kwargs "$SMALL_RQI" --output "$OUT/rqi.jsonl"
    step bench_compile 300 "$PY" benchmarks/bench_compile.py --device cpu --backend eager \
        --cases rqi-random --modes compile --rqi-config small --size 48 --batch 1 \
        --warmup 0 --repeats 1 --out "$OUT/compile.jsonl"
else
    step tests_triton 90 env PERCEPFID_TEST_DEVICE=cuda "${PYTEST[@]}" tests/test_kernels.py \
        --junitxml "$OUT/junit_triton.xml"
    step tests_cuda 75 env PERCEPFID_TEST_DEVICE=cuda "${PYTEST[@]}" -m cuda tests/ \
        --junitxml "$OUT/junit_cuda.xml"
    step bench_cosine 150 "$PY" benchmarks/bench_cosine.py --device cuda \
        --shapes 64x1025x1024 8x4097x768 --dtypes bfloat16 float16 float32 \
        --backends eager,compile,triton --warmup 5 --repeats 50 "${PEAK[@]}" --out "$OUT/cosine.jsonl"
    step bench_hlf 75 sh -c '"$0" benchmarks/bench_hlf.py --device cuda --sizes 224 512 \
        --batch 8 --steps 10 --backbone dinov2 > "$1"' "$PY" "$OUT/hlf.jsonl"
    step bench_rqi 60 "$PY" benchmarks/bench_rqi.py --device cuda --cases rqi-step lpips-step \
        --batch 8 --steps 10 --output "$OUT/rqi.jsonl"
    step bench_compile 150 "$PY" benchmarks/bench_compile.py --device cuda \
        --cases hlf-cls rqi-random hlf-patch hlf-tiles --size 256 --image-size 224 --batch 8 \
        --warmup 3 --repeats 20 --out "$OUT/compile.jsonl"
fi

step summary 20 "$PY" benchmarks/gpu_summary.py "$OUT"
echo "results in $OUT (summary.md); exit $status"
exit $status
