#!/usr/bin/env bash
# The whole GPU check of wae_fast as one command (about 4–5 minutes on one H100/H200):
#   1. versions and nvidia-smi;
#   2. the package installed without a network (pip --no-build-isolation --no-deps -e ., in the
#      background while step 3 runs), KeOps from carried wheels in .whl/ when they are there;
#   3. the Triton kernel's block sizes, warps and float32 dot precision timed at n = m = 65,536
#      (scripts/triton_tune.py; the best go to $OUT/triton_tune.json, which steps 4–5 then use);
#   4. the Triton and cross-backend tests, compiled on CUDA (xdist spreads the compiles over the cores);
#   5. benchmarks/mmd_small_batch.py: the batch sizes people train with (n = m from 64 to 16,384, d = 8 and
#      64): eager, CUDA-graph replay and host time per call, launches, ATen ops, beside the dense reference;
#      scripts/celeba_throughput.py: --preset paper-celeba steps on synthetic 64×64 images (throughput);
#      benchmarks/mmd_speed.py: reference, triton and keops at n = m ∈ {4096, 16384, 65536}, d ∈ {8, 64},
#      fwd and fwd+bwd, float32; bfloat16 at 65,536; triton alone at n = m = 10⁶, d = 8, fwd+bwd; the
#      permutation test (benchmarks/perm_test.py) at 4,096 and 20,000 per side;
#   6. the aggregated tests (wae_fast.stats.mmd_agg_test): their Triton tests compiled (tests-agg), then
#      benchmarks/agg_speed.py (bench-agg): fused MMD-FUSE and MMDAgg against ten single tests and the
#      dense form, 10 bandwidths, n = m = 4,096 (1,000 permutations) and 20,000 (500).
# Results (7 files: the log, the tuned configs, the benchmark rows, the small-batch rows, the training
# throughput, the permutation-test rows, the aggregated-test rows) go to $OUT,
# or ./gpu_results when OUT is unset. GPU_CHECK_BUDGET_S (default 480) bounds the whole check: a step gets what is left of it, and
# the steps after it are skipped, in this order of value.
#
#   bash scripts/gpu_check.sh              # on the GPU machine
#   bash scripts/gpu_check.sh --dry-run    # anywhere: the same steps on the CPU, Triton's interpreter,
#                                          # tiny sizes (CI runs this so the script cannot rot)
# Each step has its own time limit; a failing step is reported and the next one still runs; the exit
# status is non-zero if any step failed. GPU_CHECK_STEPS (comma-separated step names: tune, profile,
# tests, bench-small, bench-train, bench-float32, bench-bfloat16, bench-1e6, bench-perm, tests-agg, bench-agg,
# bench-keops; default all but profile)
# picks the steps; profile runs scripts/gpu_profile.sh on the table's and GPU_PROFILE_SPECS' configs.
set -uo pipefail
cd "$(dirname "$0")/.."

DRY_RUN=0
for arg in "$@"; do
  case "$arg" in
    --dry-run) DRY_RUN=1 ;;
    *) echo "usage: bash scripts/gpu_check.sh [--dry-run]" >&2; exit 2 ;;
  esac
done

OUT=${OUT:-./gpu_results}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1 TRITON_DEFAULT_FP_FUSION=1
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
LOG="$OUT/gpu_check.log"
: > "$LOG"
FAILED=()
SKIPPED=()
T0=$(date +%s)
BUDGET_S=${GPU_CHECK_BUDGET_S:-480}  # wall-clock seconds for the whole check; later steps are skipped

say() { echo "[gpu_check +$(( $(date +%s) - T0 ))s] $*" | tee -a "$LOG"; }
STEPS=",${GPU_CHECK_STEPS:-tune,tests,bench-small,bench-train,bench-float32,bench-bfloat16,bench-1e6,bench-perm,tests-agg,bench-agg,bench-keops},"
step() {  # step NAME LIMIT_S COMMAND...: run with a time limit (and within the budget), output to the log
  local name=$1 limit=$2; shift 2
  if [[ "$STEPS" != *",$name,"* ]]; then
    say "step $name not selected (GPU_CHECK_STEPS)"
    return
  fi
  local left=$(( BUDGET_S - ($(date +%s) - T0) ))
  if [ "$left" -lt 15 ]; then
    say "step $name SKIPPED: the budget of ${BUDGET_S}s is spent"
    SKIPPED+=("$name")
    return
  fi
  [ "$left" -lt "$limit" ] && limit=$left
  say "step $name (limit ${limit}s): $*"
  timeout --kill-after=10 "$limit" "$@" 2>&1 | tee -a "$LOG"
  local rc=${PIPESTATUS[0]}
  if [ "$rc" -ne 0 ]; then
    say "step $name FAILED (exit $rc)"
    FAILED+=("$name")
  else
    say "step $name ok"
  fi
}

if [ "$DRY_RUN" = 1 ]; then
  export TRITON_INTERPRET=1
  TUNE_ARGS=(--dry-run --dims 8 --dtypes float32)
  TEST_ARGS=(-q -x -p no:cacheprovider tests/test_triton_backend.py tests/test_backends.py
             -k "d256 or far_from_origin and 1e4 or infinite_prior or gradcheck and triton")
  BENCH_COMMON=(--device cpu --isolation group --allow-interpreter --kernels imq --scales 1 --threads 1
                --min-time 0)
  BENCH=("${BENCH_COMMON[@]}" --providers reference,triton --sizes 64 --dims 8 --modes fwd,fwd+bwd)
  BENCH_BF16=("${BENCH_COMMON[@]}" --providers triton --sizes 64 --dims 8 --modes fwd+bwd --dtype bfloat16)
  BENCH_BIG=()
  BENCH_KEOPS=()
  SMALL_ARGS=(--cpu --quick)
  TRAIN_ARGS=(--device cpu --dry-run --steps 2)
  TEST_AGG_ARGS=(-q -x -p no:cacheprovider tests/test_stats_agg_triton.py -k "7-1-1-3 and dtype3")
  BENCH_AGG=(--device cpu --backend triton --cases 64:20 --kernels 3 --providers fuse,mmdagg --repeats 1)
else
  TUNE_ARGS=(--n 65536 --dims 8,64 --dtypes float32,bfloat16)
  XDIST=()
  if $PY -c "import xdist" 2>/dev/null; then XDIST=(-n 12); fi
  TEST_ARGS=(-q -p no:cacheprovider "${XDIST[@]}" tests/test_triton_backend.py tests/test_triton_numerics.py
             tests/test_backends.py tests/test_stats_triton.py tests/test_distributed_backends.py
             tests/test_small_batch.py tests/test_extreme_inputs.py -k "not cpu")
  SMALL_ARGS=()
  TRAIN_ARGS=(--device cuda --steps 200)
  BENCH_COMMON=(--device cuda --kernels imq --scales 1 --timeout 45)
  BENCH=("${BENCH_COMMON[@]}" --providers reference,triton --sizes 4096,16384,65536 --dims 8,64
         --modes fwd,fwd+bwd --f64-budget 20 --provider-budget reference=25,triton=60)
  BENCH_BF16=("${BENCH_COMMON[@]}" --providers reference,triton --sizes 65536 --dims 8,64 --modes fwd,fwd+bwd
              --dtype bfloat16 --f64-budget 15 --provider-budget reference=10,triton=40)
  BENCH_BIG=(--device cuda --kernels imq --scales 1 --providers triton --sizes 1000000 --dims 8
             --modes fwd+bwd --warmup 0 --timeout 60 --provider-budget triton=60)
  BENCH_KEOPS=("${BENCH_COMMON[@]}" --providers keops --sizes 4096,16384,65536 --dims 8,64 --modes fwd,fwd+bwd
               --provider-budget keops=45)
  TEST_AGG_ARGS=(-q -p no:cacheprovider "${XDIST[@]}" tests/test_stats_agg_triton.py tests/test_stats_agg.py
                 -k "triton")
  BENCH_AGG=(--device cuda --cases 4096:1000,20000:500 --providers fuse,mmdagg,single-x10,dense --repeats 3
             --timeout-s 60)
fi

# 1. what we run on
say "versions"
{
  date -u
  $PY -c "import sys, platform, torch; print('python', platform.python_version(), '| torch', torch.__version__, '| cuda', torch.version.cuda, '| device', torch.cuda.get_device_name() if torch.cuda.is_available() else 'none')"
  $PY -c "import triton, numpy; print('triton', triton.__version__, '| numpy', numpy.__version__)"
  git log -1 --format='commit %H %s' 2>/dev/null || true
  if command -v nvidia-smi >/dev/null; then nvidia-smi; fi
} 2>&1 | tee -a "$LOG"

# 2. install without a network; the C++ build runs in the background
if [ "$DRY_RUN" = 0 ]; then
  if ls .whl/*.whl >/dev/null 2>&1; then
    say "installing carried wheels: $(ls .whl | tr '\n' ' ')"
    $PY -m pip install -q --no-index --no-deps --no-compile --target /tmp/wae_fast_site .whl/*.whl \
      >> "$LOG" 2>&1 && export PYTHONPATH="$PYTHONPATH:/tmp/wae_fast_site"
  fi
  say "pip install --no-build-isolation --no-deps -e . (background)"
  $PY -m pip install -q --no-build-isolation --no-deps -e . > "$OUT/install.log" 2>&1 &
  INSTALL_PID=$!
fi

# 3. block sizes, warps, precision
step tune 150 $PY scripts/triton_tune.py "${TUNE_ARGS[@]}" --out "$OUT/triton_tune.json" --rows "$OUT/triton_tune_rows.jsonl"
if [ -s "$OUT/triton_tune.json" ] && [ "$(cat "$OUT/triton_tune.json")" != "{}" ]; then
  export WAE_FAST_TRITON_CONFIGS="$OUT/triton_tune.json"
  say "using the tuned configs: $(tr -d '\n ' < "$OUT/triton_tune.json")"
fi

if [ "$DRY_RUN" = 0 ]; then
  wait "$INSTALL_PID"; rc=$?
  cat "$OUT/install.log" >> "$LOG"; rm -f "$OUT/install.log"
  if [ "$rc" -ne 0 ]; then say "install FAILED (exit $rc)"; FAILED+=(install); else say "install ok"; fi
fi

# 4. correctness, compiled
step tests 150 $PY -m pytest "${TEST_ARGS[@]}"

# 5. speed and memory: first the batch sizes people train with, then large n
step bench-small 120 $PY benchmarks/mmd_small_batch.py "${SMALL_ARGS[@]}" --out "$OUT/mmd_small_batch.jsonl"
# the paper-celeba training step on synthetic 64×64 images: WAE-MMD and WAE-GAN images/s against the VAE's
step bench-train 120 $PY scripts/celeba_throughput.py "${TRAIN_ARGS[@]}" --out "$OUT/celeba_throughput.json"
BENCH_OUT="$OUT/mmd_speed_gpu.jsonl"
[ "$DRY_RUN" = 1 ] && BENCH_OUT="$OUT/mmd_speed_dry_run.jsonl"
step bench-float32 150 $PY benchmarks/mmd_speed.py "${BENCH[@]}" --out "$BENCH_OUT"
step bench-bfloat16 60 $PY benchmarks/mmd_speed.py "${BENCH_BF16[@]}" --out "$BENCH_OUT"
if [ ${#BENCH_BIG[@]} -gt 0 ]; then
  step bench-1e6 60 $PY benchmarks/mmd_speed.py "${BENCH_BIG[@]}" --out "$BENCH_OUT"
fi
# Nsight Compute profiles of the tuned (or the table's) configs and of any given in GPU_PROFILE_SPECS
if [ "$DRY_RUN" = 0 ]; then
  # shellcheck disable=SC2086
  step profile 150 bash scripts/gpu_profile.sh "$OUT/ncu_profile.csv" ${GPU_PROFILE_SPECS:-8:table 64:table}
fi

if [ "$DRY_RUN" = 0 ]; then  # the permutation test (wae_fast.stats) on the GPU, fused against one MMD² and dense
  step bench-perm 60 $PY benchmarks/perm_test.py --device cuda --sizes 4096,20000 --permutations 1000 \
    --providers fused,mmd,dense-matmul --repeats 3 --out "$OUT/perm_test_gpu.jsonl"
fi
# the aggregated tests (wae_fast.stats.mmd_agg_test): compiled Triton tests, then the benchmark rows
AGG_OUT="$OUT/agg_speed_gpu.jsonl"
[ "$DRY_RUN" = 1 ] && AGG_OUT="$OUT/agg_speed_dry_run.jsonl"
step tests-agg 180 $PY -m pytest "${TEST_AGG_ARGS[@]}"
step bench-agg 150 $PY benchmarks/agg_speed.py "${BENCH_AGG[@]}" --out "$AGG_OUT"
if [ ${#BENCH_KEOPS[@]} -gt 0 ]; then
  step bench-keops 70 $PY benchmarks/mmd_speed.py "${BENCH_KEOPS[@]}" --out "$BENCH_OUT"
fi

# 6. issue 18: the Triton rows at n = m = 65,536 against their targets, the GPU peers side by side, KeOps'
#    check, accuracy against float64 on two distributions, and the table with the special-function limit:
#    bench-i18         triton, float32, IMQ, one scale: d = 8 fwd and fwd+bwd, d = 64 fwd+bwd
#    bench-i18-bf16    triton, bfloat16, d = 64 fwd+bwd
#    bench-i18-pairs0, -pairs1, -pairs2   triton, float32, d = 8 fwd+bwd, the seven official IMQ scales with
#                      0, 1 and 2 shared reciprocals (WAE_FAST_IMQ_PAIRS)
#    bench-i18-rbf7    the same with seven RBF scales
#    bench-peers       torch.compile of the dense formula, the dense formula in row blocks, the dense
#                      reference and triton at n = m = 16,384 and 65,536, d = 8 and 64, fwd+bwd
#    keops-check       scripts/keops_check.py (whatever makes pykeops run, or why not; keops_env.sh)
#    bench-keops-i18   KeOps at 16,384 and 65,536 under the environment keops-check found
#    accuracy          scripts/gpu_accuracy.py: value and ∂/∂x against float64, two distributions, n = 32,768
#    limits            scripts/gpu_limits.py: the table (pairs/s, of target, of the special-function limit,
#                      speed-up over each peer, accuracy)
# They are part of the default steps (after the others, in this order of value), and of GPU_CHECK_STEPS by name.
if [ -z "${GPU_CHECK_STEPS:-}" ]; then
  STEPS="${STEPS}bench-i18,bench-i18-bf16,bench-i18-pairs1,bench-i18-pairs0,accuracy,bench-peers,keops-check,"
  STEPS="${STEPS}bench-keops-i18,bench-i18-pairs2,bench-i18-rbf7,limits,"
fi
I18_OUT="$OUT/mmd_speed_i18.jsonl"
if [ "$DRY_RUN" = 1 ]; then
  I18_OUT="$OUT/mmd_speed_dry_run.jsonl"
  I18_COMMON=(--device cpu --isolation group --allow-interpreter --threads 1 --min-time 0 --sizes 64)
  I18=("${I18_COMMON[@]}" --providers triton --kernels imq --scales 1 --dims 8 --modes fwd,fwd+bwd)
  I18_BF16=("${I18_COMMON[@]}" --providers triton --kernels imq --scales 1 --dims 8 --modes fwd+bwd
            --dtype bfloat16)
  I18_SCALES=("${I18_COMMON[@]}" --providers triton --kernels imq --scales 7 --dims 8 --modes fwd+bwd)
  I18_PEERS=(--device cpu --isolation group --threads 1 --min-time 0 --sizes 48 --dims 8 --kernels imq
             --scales 1 --modes fwd+bwd --providers reference,compiled,chunked --chunk-elements 1000)
  I18_KEOPS=()
  ACCURACY=(--dry-run)
else
  I18_COMMON=(--device cuda --timeout 60 --f64-max-pairs 0)  # accuracy: its own step
  I18=("${I18_COMMON[@]}" --providers triton --kernels imq --scales 1 --sizes 65536 --dims 8,64
       --modes fwd,fwd+bwd --provider-budget triton=100)
  I18_BF16=("${I18_COMMON[@]}" --providers triton --kernels imq --scales 1 --sizes 65536 --dims 8,64
            --modes fwd+bwd --dtype bfloat16 --provider-budget triton=50)
  I18_SCALES=("${I18_COMMON[@]}" --providers triton --kernels imq --scales 7 --sizes 65536 --dims 8
              --modes fwd+bwd --provider-budget triton=40)
  I18_PEERS=(--device cuda --timeout 45 --f64-max-pairs 0 --sizes 16384,65536 --dims 8,64 --kernels imq --scales 1
             --modes fwd+bwd --providers reference,compiled,chunked,triton
             --provider-budget reference=20,compiled=60,chunked=60,triton=30)
  I18_KEOPS=(--device cuda --timeout 45 --f64-max-pairs 0 --sizes 16384,65536 --dims 8,64 --kernels imq --scales 1
             --modes fwd,fwd+bwd --providers keops --provider-budget keops=60)
  ACCURACY=(--n 32768)
fi
i18_pairs() {  # step bench-i18-pairsP: the seven official IMQ scales with P shared reciprocals
  step "bench-i18-pairs$1" 60 env WAE_FAST_IMQ_PAIRS="$1" $PY benchmarks/mmd_speed.py "${I18_SCALES[@]}" \
    --out "$I18_OUT"
}
step bench-i18 150 $PY benchmarks/mmd_speed.py "${I18[@]}" --out "$I18_OUT"
step bench-i18-bf16 70 $PY benchmarks/mmd_speed.py "${I18_BF16[@]}" --out "$I18_OUT"
i18_pairs 1
i18_pairs 0
step accuracy 120 $PY scripts/gpu_accuracy.py "${ACCURACY[@]}" --out "$OUT/gpu_accuracy.jsonl"
step bench-peers 200 $PY benchmarks/mmd_speed.py "${I18_PEERS[@]}" --out "$I18_OUT"
step keops-check 130 $PY scripts/keops_check.py --out "$OUT" --timeout 40
if [ ${#I18_KEOPS[@]} -gt 0 ]; then  # under the environment keops-check found, if it found one
  step bench-keops-i18 80 bash -c '[ -s "$1" ] && . "$1"; shift; exec "$@"' keops "$OUT/keops_env.sh" \
    $PY benchmarks/mmd_speed.py "${I18_KEOPS[@]}" --out "$I18_OUT"
fi
i18_pairs 2
step bench-i18-rbf7 60 $PY benchmarks/mmd_speed.py "${I18_SCALES[@]}" --kernels rbf --out "$I18_OUT"
step limits 30 $PY scripts/gpu_limits.py "$I18_OUT" "$OUT/gpu_accuracy.jsonl"

say "results in $OUT: $(ls "$OUT" | tr '\n' ' ')"
$PY benchmarks/mmd_speed.py --show "$BENCH_OUT" 2>&1 | tail -60
[ ${#SKIPPED[@]} -gt 0 ] && say "SKIPPED steps (budget): ${SKIPPED[*]}"
# The device machine sends back at most 8 files: past that, all but the log travel in one archive.
if [ "$(ls "$OUT" | wc -l)" -gt 8 ]; then
  (cd "$OUT" && ls | grep -vx "gpu_check.log" > .packed && tar -czf gpu_check_results.tar.gz -T .packed \
     && xargs rm -f < .packed && rm -f .packed) && say "packed the results into $OUT/gpu_check_results.tar.gz"
fi
if [ ${#FAILED[@]} -gt 0 ]; then
  say "FAILED steps: ${FAILED[*]}"
  exit 1
fi
say "all steps passed"
