#!/usr/bin/env bash
# One prepared check of the CUDA paths on a machine with one NVIDIA GPU, in at most 8 minutes (issue 19).
#
#   bash scripts/gpu_check.sh [TARBALL]        TARBALL: the CIFAR-10 image tree, default .gpu-data/cifar10-jpg.tar.gz
#
# Stages, each under its own `timeout` and none stopping the rest (a global deadline caps the last ones):
#   setup     python -m resnets --help from the checkout (PYTHONPATH=src), the tarball unpacked to /tmp
#   data      the JPEGs decoded once and cached, so that the training stages time training
#   gpu       nvidia-smi, torch's view of the GPU, and its peak FLOP/s (fp32, bf16) from resnets.compute
#   tests     pytest -m gpu tests/gpu: AMP bf16/fp16 with the grad scaler, channels_last, compile, checkpointing,
#             the fast inference path, resnets bench on CUDA
#   speedrun  one seed of resnets train --recipe cifar10-speedrun on the GPU: its final line and wall time
#   resnet20-2k, plain20-2k
#             the paper-budget smoke: He et al.'s he2015-cifar recipe (step schedule at 32k/48k of 64k
#             iterations), stopped after 2k iterations, for resnet20 and its plain twin
#   bench     resnets bench --device cuda --quick --no-compile: every case runs on the GPU (eager, tiny batches)
#   bench-speedrun
#             resnets bench --device cuda --cases train/speedrun infer/speedrun: full batches, with torch.compile,
#             the speedrun net's share of the GPU's peak
# Then a summary of every stage's status and headline figure. Exit status 0 when every stage passed, else 1.
#
# Environment: OUT (default /tmp/gpu_check): every log, the runs' JSON and CSV files, bench.json/md, summary.txt.
#   PYTHON (default python3): a Python with torch; the package itself comes from src/ (no install, no network).
#   GPU_CHECK_BUDGET_S (default 470): the deadline of the whole script, in seconds, summary excluded.
#   GPU_CHECK_DRY_RUN=1: check the plumbing on a CPU: --device cpu, 1,000 of the images, 2 steps a run, bench on
#   a few cases; a few seconds a stage. Its figures mean nothing.
set -u -o pipefail

# A stage runs as `bash gpu_check.sh __stage COMMAND...` under `timeout`, which can run no shell function itself.
if [[ ${1:-} == __stage ]]; then
  STAGE_MODE=1
  shift
else
  STAGE_MODE=0
  GPU_CHECK_TARBALL=$(realpath -m "${1:-.gpu-data/cifar10-jpg.tar.gz}") # before the cd: relative to the caller
  export GPU_CHECK_TARBALL
fi
SELF=$(realpath "${BASH_SOURCE[0]}")
cd "$(dirname "$SELF")/.."
REPO=$PWD
TARBALL=$GPU_CHECK_TARBALL
OUT=$(realpath -m "${OUT:-/tmp/gpu_check}")
export OUT
PYTHON=${PYTHON:-python3}
DRY=${GPU_CHECK_DRY_RUN:-0}
BUDGET=${GPU_CHECK_BUDGET_S:-470}
KILL_AFTER=10 # seconds between a stage's TERM and KILL; reserved before the deadline
export PYTHONPATH="$REPO/src${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
export RESNETS_CACHE_DIR=${RESNETS_CACHE_DIR:-/tmp/gpu_check_data/cache} # decoded images, shared by the runs

if [[ $DRY == 1 ]]; then
  DEVICE=cpu
  DATA=/tmp/gpu_check_data/cifar10-dry
  SUBSET=('train/*/00[0-4]?.jpg' 'test/*/00[0-1]?.jpg') # 50 training and 20 test images a class
  SHORT=(--max-steps 2 --batch-size 32)                  # every training run: 2 steps
  BENCH_QUICK=(--cases train/resnet20 infer/speedrun --threads 1)
  BENCH_SPEEDRUN=(--quick --no-compile --cases train/speedrun --threads 1)
  RUNS=/tmp/gpu_check_runs-dry
else
  DEVICE=cuda
  DATA=/tmp/gpu_check_data/cifar10
  SUBSET=()
  SHORT=()
  BENCH_QUICK=()
  BENCH_SPEEDRUN=(--cases train/speedrun infer/speedrun --rounds 3)
  RUNS=/tmp/gpu_check_runs
fi

# run_stage NAME CAP_S COMMAND...: COMMAND under `timeout`, at most CAP_S seconds and never past the deadline;
# its output goes to $OUT/NAME.log (its last lines are shown); one line per stage in $OUT/stages.tsv.
run_stage() {
  local name=$1 cap=$2
  shift 2
  local left=$((DEADLINE - $(date +%s) - KILL_AFTER))
  local limit=$((cap < left ? cap : left))
  local log="$OUT/$name.log"
  if ((limit < 5)); then
    echo "== $name: skipped, out of time (the whole check has ${BUDGET} s)"
    echo "skipped: out of time" >"$log"
    printf '%s\t%s\t%s\t%s\n' "$name" skipped - 0 >>"$OUT/stages.tsv"
    return
  fi
  echo "== $name (at most ${limit} s): $*"
  local t0 t1 rc status
  t0=$(date +%s.%N)
  timeout --kill-after="$KILL_AFTER" "$limit" bash "$SELF" __stage "$@" >"$log" 2>&1
  rc=$?
  t1=$(date +%s.%N)
  case $rc in
    0) status=ok ;;
    124 | 137) status=timeout ;;
    *) status=failed ;;
  esac
  local wall
  wall=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')
  tail -n 4 "$log" | sed 's/^/   | /'
  echo "== $name: $status (exit $rc) in $wall s"
  printf '%s\t%s\t%s\t%s\n' "$name" "$status" "$rc" "$wall" >>"$OUT/stages.tsv"
}

# keep_run NAME: the run's small files (summary, config, metrics) beside the logs; checkpoints stay behind.
keep_run() {
  local dir="$RUNS/$1"
  [[ -d $dir ]] || return 0
  mkdir -p "$OUT/runs/$1"
  find "$dir" -maxdepth 1 -type f \( -name '*.json' -o -name '*.csv' \) -exec cp {} "$OUT/runs/$1/" \;
}

unpack() {
  if [[ ! -f $TARBALL ]]; then
    echo "no tarball at $TARBALL: copy /work/shared/data/cifar10-jpg.tar.gz there (see README, GPU)" >&2
    return 3
  fi
  if [[ -d $DATA/train && -d $DATA/test ]]; then
    echo "already unpacked in $DATA"
  else
    rm -rf "$DATA.part" && mkdir -p "$DATA.part"
    tar -xzf "$TARBALL" -C "$DATA.part" --wildcards ${SUBSET[@]+"${SUBSET[@]}"} && mv "$DATA.part" "$DATA" || return 1
  fi
  echo "$(find "$DATA/train" -name '*.jpg' | wc -l) training and $(find "$DATA/test" -name '*.jpg' | wc -l) test images in $DATA"
}

setup() {
  local usage
  usage=$("$PYTHON" -m resnets --help) || return 1
  echo "$PYTHON -m resnets --help (PYTHONPATH=src) works: ${usage%%$'\n'*}"
  unpack
}

data() {
  exec "$PYTHON" - "$DATA" <<'EOF'
import sys, time
from resnets.data import load_data

start = time.perf_counter()
bundle = load_data(sys.argv[1], progress=False)
seconds = time.perf_counter() - start
print(f"{len(bundle.train)} training and {len(bundle.test)} test images decoded (or read from the cache) in {seconds:.1f} s")
EOF
}

gpu() {
  if command -v nvidia-smi >/dev/null; then
    nvidia-smi
  else
    echo "nvidia-smi: not found"
  fi
  exec "$PYTHON" - "$DEVICE" "$OUT/gpu.json" <<'EOF'
import json, sys, time
import torch
from resnets.compute import PEAK_SIZE, measure_peak

device, path = torch.device(sys.argv[1]), sys.argv[2]
info = {"torch": torch.__version__, "cuda": torch.version.cuda, "cuda_available": torch.cuda.is_available()}
if device.type == "cuda":
    props = torch.cuda.get_device_properties(0)
    info |= {
        "name": props.name,
        "memory_gib": round(props.total_memory / 2**30, 1),
        "capability": f"{props.major}.{props.minor}",
        "bf16": torch.cuda.is_bf16_supported(),
        "cudnn": torch.backends.cudnn.version(),
        "devices": torch.cuda.device_count(),
    }
    half = torch.bfloat16 if info["bf16"] else torch.float16
else:
    info["name"] = "CPU (dry run)"
    half = torch.bfloat16
size = PEAK_SIZE[device.type] // (8 if device.type == "cpu" else 1)  # the dry run: a small matmul
info["peak_flops"] = {str(d).removeprefix("torch."): measure_peak(d, size=size, device=device) for d in (torch.float32, half)}
for key, value in info.items():
    print(f"{key}: {value}")
json.dump(info, open(path, "w"), indent=2)
EOF
}

train_run() { # NAME ARGS...: one resnets train run in $RUNS/NAME (the process `timeout` watches)
  local name=$1
  shift
  exec "$PYTHON" -m resnets train --data "$DATA" --device "$DEVICE" --out "$RUNS/$name" "$@" ${SHORT[@]+"${SHORT[@]}"}
}

if ((STAGE_MODE)); then # a function of this file, or a command run in this process's place
  if declare -F "$1" >/dev/null; then
    "$@"
    exit
  fi
  exec "$@"
fi

mkdir -p "$OUT"
exec > >(tee "$OUT/gpu_check.log") 2>&1
TEE_PID=$!
START=$(date +%s)
DEADLINE=$((START + BUDGET))
: >"$OUT/stages.tsv"
rm -rf "$RUNS"
mkdir -p "$RUNS"
echo "gpu_check: device $DEVICE, data $TARBALL, output $OUT, at most $BUDGET s$([[ $DRY == 1 ]] && echo ', DRY RUN')"

run_stage setup 60 setup
run_stage data 120 data
run_stage gpu 45 gpu
run_stage tests 150 "$PYTHON" -m pytest -q -p no:cacheprovider -m gpu tests/gpu -rs
run_stage speedrun 120 train_run speedrun --recipe cifar10-speedrun --seed 0
keep_run speedrun
# he2015-cifar's step schedule is fixed in iterations (lr 0.1 until 32k): --max-steps 2000 stops on that curve.
run_stage resnet20-2k 60 train_run resnet20-2k --recipe he2015-cifar --model resnet20 --max-steps 2000
keep_run resnet20-2k
run_stage plain20-2k 60 train_run plain20-2k --recipe he2015-cifar --model plain20 --max-steps 2000
keep_run plain20-2k
run_stage bench 75 "$PYTHON" -m resnets bench --device "$DEVICE" --quick --no-compile --out "$OUT/bench" \
  ${BENCH_QUICK[@]+"${BENCH_QUICK[@]}"}
run_stage bench-speedrun 150 "$PYTHON" -m resnets bench --device "$DEVICE" --out "$OUT/bench-speedrun" \
  "${BENCH_SPEEDRUN[@]}"

echo
"$PYTHON" - "$OUT" "$DRY" "$(($(date +%s) - START))" <<'EOF' | tee "$OUT/summary.txt"
"""The summary block: every stage's status and headline figure, read from the files the stages wrote."""
import json, re, sys
from pathlib import Path

out, dry, total = Path(sys.argv[1]), sys.argv[2] == "1", sys.argv[3]


def load(path):
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def last_line(name, pattern):
    try:
        lines = (out / f"{name}.log").read_text(errors="replace").splitlines()
    except OSError:
        return None
    found = [line for line in lines if re.search(pattern, line)]
    return found[-1].strip() if found else None


gpu = load(out / "gpu.json") or {}
half = "bfloat16" if gpu.get("bf16", True) else "float16"
gpu_peak = (gpu.get("peak_flops") or {}).get(half)


def run_figures(name):
    summary = load(out / "runs" / name / "summary.json")
    if not summary:
        return last_line(name, r"error|Error") or "no summary.json"
    text = f"test accuracy {summary['test_accuracy']:.2f}% after {summary['steps']} steps, run {summary['wall_time_s']:.1f} s"
    compute = summary.get("compute")
    if compute:
        text += f", {compute['pflop']:.3g} PFLOP, {100 * compute['peak_share']:.0f}% of the peak the run measured"
        if gpu_peak and summary["wall_time_s"] > 0:  # against the GPU's own peak from the gpu stage
            share = compute["pflop"] * 1e15 / summary["wall_time_s"] / gpu_peak
            text += f" ({compute['peak_flops'] / 1e12:.3g} TFLOP/s); {100 * share:.1f}% of the {half} peak of stage gpu"
    return text


def bench_figures(name):
    data = load(out / name / "bench.json")
    if not data:
        return last_line(name, r"error|Error") or "no bench.json"
    parts = []
    for row in data["rows"]:
        if row["ours"] is None:
            continue
        share = f", {100 * row['peak_fraction']:.1f}% of peak" if row["peak_fraction"] is not None else ""
        ratio = f" {row['ratio']:.2f}x the baseline" if row["ratio"] is not None else ""
        parts.append(f"{row['case']} [{row['variant']}]{ratio}{share}")
    skipped = sum(row["ours"] is None for row in data["rows"])
    return f"{len(parts)} measured, {skipped} skipped: " + "; ".join(parts)


def headline(name):
    if name in ("setup", "data"):
        return last_line(name, r"images in|images decoded|no tarball|Error") or ""
    if name == "gpu":
        peaks = ", ".join(f"{k} {v / 1e12:.3g} TFLOP/s" for k, v in (gpu.get("peak_flops") or {}).items())
        return f"{gpu.get('name', '?')}, torch {gpu.get('torch', '?')}, CUDA {gpu.get('cuda')}; peak {peaks}"
    if name == "tests":
        return last_line(name, r"passed|failed|error|skipped") or ""
    if name in ("speedrun", "resnet20-2k", "plain20-2k"):
        return run_figures(name)
    if name.startswith("bench"):
        return bench_figures(name)
    return ""


print("=" * 100)
print(f"gpu_check summary{' (DRY RUN on the CPU: the figures mean nothing)' if dry else ''}: {total} s in all")
for line in (out / "stages.tsv").read_text().splitlines():
    name, status, rc, wall = line.split("\t")
    print(f"{name:<15} {status:<8} {wall:>6} s  {headline(name)}")
final = last_line("speedrun", r"^test accuracy:")
if final:
    print(f"speedrun final line: {final}")
print("=" * 100)
EOF
NOT_OK=$(awk -F'\t' '$2 != "ok"' "$OUT/stages.tsv" | wc -l)
exec >&- 2>&-
wait "$TEE_PID" 2>/dev/null || sleep 1 # let tee finish gpu_check.log before the machine is handed back
exit $((NOT_OK > 0))                   # 1 where a stage failed, timed out or was skipped
