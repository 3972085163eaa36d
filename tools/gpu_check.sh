#!/usr/bin/env bash
# Everything a GPU machine must show, within ~8 minutes, results under OUTDIR (8 files, no folders):
#
#   tools/gpu_check.sh OUTDIR [--dry-run]
#
# On this workplace's device machine (one call, ~8 min of its 10): bash tools/gpu_check.sh "$OUT"
# (python3 there is the image's, with torch; nothing is installed; the extension is built in place).
#
#   gpu_check.log      the whole log (every stage's output)
#   probe.json         GPU, driver, torch, nvcc, compute-sanitizer, varlen_attn, backend
#   sanitizer.txt      compute-sanitizer memcheck + racecheck of a tiny fwd+bwd of every op (our kernels only)
#   pytest_cuda.txt    the CUDA test suite (pytest -m cuda)
#   bench_kernels.json tools/bench_kernels.py --quick rows (no torch.compile on CUDA in --quick)
#   train_sample.json  gpu-preset training jets/s for both attention paths (varlen, kernel); sampling jets/s
#                      (default sampler and steps) with and without CUDA graphs
#   results.json       all of it merged, with per-stage rc and seconds
#   table.md           the short table, also printed last
#
# Stages, in this order: probe, build (+ build_check), ops (tiny fwd+bwd of each op vs float64), pytest_cuda,
# bench, train_sample, memcheck, racecheck (slowest and least needed for the numbers: last), then the table.
# Stages are time-boxed (`timeout`) and a failed stage does not stop the next; the whole run keeps to
# $GPU_CHECK_BUDGET_S (default 470 s): a stage gets at most what is left. Stage scratch goes to
# $GPU_CHECK_WORK (default a temporary directory). The build is for the visible GPU's architecture only
# (TORCH_CUDA_ARCH_LIST from torch.cuda.get_device_capability), in place, with the machine's python3.
# --dry-run: the same stages on a CPU machine with tiny shapes (probe, the checkout's build, the op driver
# on CPU, CUDA tests collected and skipped, the benchmark harness in CPU mode, a few CPU training steps,
# the table), so CI tests the script itself (tests/tools/test_gpu_check.py).
set -u
if [ $# -lt 1 ]; then
  echo "usage: tools/gpu_check.sh OUTDIR [--dry-run]" >&2
  exit 2
fi
OUT=$1
DRY=0
[ "${2:-}" = "--dry-run" ] && DRY=1
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT" || exit 2
mkdir -p "$OUT" || exit 2
OUT=$(cd "$OUT" && pwd)
WORK=${GPU_CHECK_WORK:-$(mktemp -d /tmp/gpu_check.XXXXXX)}
mkdir -p "$WORK"
PY=${PYTHON:-}
if [ -z "$PY" ]; then
  if [ -x "$ROOT/.venv/bin/python" ] && [ $DRY = 1 ]; then PY="$ROOT/.venv/bin/python"; else PY=python3; fi
fi
# E2ECOND_JIT=0: a missing or broken prebuilt extension shows as an error instead of a minutes-long
# first-use compile inside some stage; the build stage below is the one place that compiles
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 E2ECOND_JIT=0
BUDGET=${GPU_CHECK_BUDGET_S:-470}
T0=$(date +%s)
LOG="$OUT/gpu_check.log"
: >"$LOG"
: >"$WORK/stages.tsv"

log() { echo "[gpu_check $(($(date +%s) - T0))s] $*" | tee -a "$LOG"; }

# stage NAME TIMEOUT_S CMD... : run CMD (output to the log) with at most TIMEOUT_S or what the budget has left
stage() {
  local name=$1 limit=$2
  shift 2
  local left=$((BUDGET - ($(date +%s) - T0)))
  if [ "$left" -lt 10 ]; then
    log "SKIP $name (budget of ${BUDGET}s spent)"
    printf '%s\tskipped\t0\t%s\n' "$name" "$limit" >>"$WORK/stages.tsv"
    return 0
  fi
  [ "$limit" -gt "$left" ] && limit=$left
  log "START $name (timeout ${limit}s)"
  local s=$(date +%s)
  timeout -k 5 "$limit" "$@" >>"$LOG" 2>&1
  local rc=$?
  log "END $name rc=$rc ($(($(date +%s) - s))s)"
  printf '%s\t%s\t%s\t%s\n' "$name" "$rc" "$(($(date +%s) - s))" "$limit" >>"$WORK/stages.tsv"
  return 0
}

if [ $DRY = 1 ]; then DEV=cpu; else DEV=cuda; fi
log "root=$ROOT out=$OUT work=$WORK python=$PY device=$DEV dry_run=$DRY"

# 1. probe
stage probe 60 "$PY" tools/gpu_check.py probe "$OUT/probe.json"

# 2. build for the visible architecture only (dry run: the checkout's existing build is used)
if [ $DRY = 1 ]; then
  stage build 60 "$PY" -c "import e2econd.ops as o; b = o.backend(); print(b); assert b['extension_loaded'] or True"
else
  ARCH=$("$PY" -c "import torch; c = torch.cuda.get_device_capability(); print(f'{c[0]}.{c[1]}')" 2>>"$LOG")
  log "TORCH_CUDA_ARCH_LIST=$ARCH"
  stage build 300 env E2ECOND_CUDA=1 TORCH_CUDA_ARCH_LIST="$ARCH" MAX_JOBS="${MAX_JOBS:-16}" \
    "$PY" setup.py build_ext --inplace
  stage build_check 60 "$PY" -c "import e2econd.ops as o; b = o.backend(); print(b); \
assert b['cuda_kernels'], 'no CUDA kernels loaded'"
fi

# 3. tiny forward+backward of every op against the float64 reference (also the sanitizer's driver)
if [ $DRY = 1 ]; then
  stage ops 120 "$PY" tools/gpu_check.py ops --device cpu "$WORK/ops.json"
else
  stage ops 90 "$PY" tools/gpu_check.py ops --device cuda "$WORK/ops.json"
fi

# 4. the CUDA test suite (on a CPU machine: collected, all skipped)
stage pytest_cuda 180 bash -c "$PY -m pytest -q -m cuda -p no:cacheprovider --durations=10 tests/ops tests/sample \
  >'$OUT/pytest_cuda.txt' 2>&1"

# 5. kernel benchmarks (quick)
if [ $DRY = 1 ]; then
  stage bench 240 "$PY" tools/bench_kernels.py --device cpu --quick --no-compile --stream-mib 16 \
    --json "$OUT/bench_kernels.json"
else
  stage bench 150 "$PY" tools/bench_kernels.py --device cuda --quick --json "$OUT/bench_kernels.json"
fi

# 6. gpu-preset training (both attention paths) and sampling (default sampler, graphs on / off)
if [ $DRY = 1 ]; then
  stage train_sample 240 "$PY" tools/gpu_check.py train --device cpu --tiny --steps 4 --jets 64 --sample 4 \
    "$WORK/train" "$OUT/train_sample.json"
else
  stage train_sample 200 "$PY" tools/gpu_check.py train --device cuda --steps "${GPU_CHECK_STEPS:-60}" \
    --jets 2048 --sample 2048 "$WORK/train" "$OUT/train_sample.json"
fi

# 7. compute-sanitizer memcheck / racecheck on the op driver (last: slow, and the numbers above matter more);
# only e2econd's kernels are checked (names attn_*_kernel, diffusion_step_kernel): torch's own are not ours
: >"$OUT/sanitizer.txt"
cat >"$WORK/san.sh" <<SAN
#!/usr/bin/env bash
echo "== compute-sanitizer --tool \$1" >>"$OUT/sanitizer.txt"
# no caching allocator: every tensor its own allocation, so an out-of-bounds access is one memcheck sees
PYTORCH_NO_CUDA_MEMORY_CACHING=1 compute-sanitizer --tool "\$1" --error-exitcode 1 --kernel-regex 'kns=attn_|diffusion_step' \\
  "$PY" tools/gpu_check.py ops --device cuda --small "$WORK/ops_\$1.json" >>"$OUT/sanitizer.txt" 2>&1
SAN
if [ $DRY = 1 ]; then
  echo "dry run: compute-sanitizer not run (CPU); its wrapper script:" >>"$OUT/sanitizer.txt"
  cat "$WORK/san.sh" >>"$OUT/sanitizer.txt"
  stage sanitizer_syntax 10 bash -n "$WORK/san.sh"
else
  stage memcheck 100 bash "$WORK/san.sh" memcheck
  stage racecheck 100 bash "$WORK/san.sh" racecheck
fi

# 8. the table (printed last)
"$PY" tools/gpu_check.py report "$OUT" --work "$WORK" >>"$LOG" 2>&1
log "done in $(($(date +%s) - T0))s"
cat "$OUT/table.md" 2>/dev/null || echo "no table (report failed: see $LOG)"
[ -z "${GPU_CHECK_WORK:-}" ] && rm -rf "$WORK"
exit 0
