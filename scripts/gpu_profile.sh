#!/usr/bin/env bash
# Nsight Compute profiles of the Triton MMD kernel, one per (d, launch config), into one CSV file.
#
#   bash scripts/gpu_profile.sh OUT_FILE [D:CONFIG_JSON ...]
#
# Each D:CONFIG_JSON profiles one fused value + ∂/∂x step at n = m = 65,536 (scripts/gpu_profile.py)
# with the float32 launch config CONFIG_JSON (a GpuConfig list, e.g.
# '[128,64,8,2,"bf16x3","bf16x3","rcp.approx"]'; "table" for the library's own). Both launches of the
# step are profiled (the x rows with ∂/∂x, the y rows' triangle), sections: speed of light, compute and
# memory workload, instruction mix, scheduler and warp-state (stall) statistics, occupancy, launch.
# Clocks are left free (--clock-control none), so the durations are the ones the benchmark sees.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT_FILE=${1:?usage: bash scripts/gpu_profile.sh OUT_FILE [D:CONFIG_JSON ...]}
shift
PY=${PYTHON:-python3}
NCU=${NCU:-ncu}
if ! command -v "$NCU" >/dev/null; then echo "gpu_profile: no ncu on PATH" >&2; exit 1; fi
[ $# -eq 0 ] && set -- "8:table" "64:table"
TMP=$(mktemp -d)
: > "$OUT_FILE"
status=0
for spec in "$@"; do
  d=${spec%%:*}
  config=${spec#*:}
  env_args=()
  if [ "$config" != "table" ]; then
    echo "{\"float32\": {\"$(( d <= 16 ? 16 : d ))\": $config}}" > "$TMP/config.json"
    env_args=(WAE_FAST_TRITON_CONFIGS="$TMP/config.json")
  fi
  echo "### d=$d config=$config" | tee -a "$OUT_FILE"
  # 2 warm-up steps of 2 launches each, then the profiled step's 2 launches.
  env "${env_args[@]}" "$NCU" --target-processes all --clock-control none -k regex:_run_task_kernel \
      --launch-skip 4 --launch-count 2 \
      --section SpeedOfLight --section ComputeWorkloadAnalysis --section MemoryWorkloadAnalysis \
      --section InstructionStats --section SchedulerStats --section WarpStateStats --section Occupancy \
      --section LaunchStats --csv --page details \
      "$PY" scripts/gpu_profile.py --n 65536 --d "$d" --dtype float32 --warmup 2 \
      > "$TMP/profile.csv" 2> "$TMP/profile.err"
  rc=$?
  cat "$TMP/profile.csv" >> "$OUT_FILE"
  tail -5 "$TMP/profile.err" >> "$OUT_FILE"
  if [ "$rc" -ne 0 ]; then echo "### ncu exit $rc" | tee -a "$OUT_FILE"; status=1; fi
  grep -E '"(Duration|Registers Per Thread|Achieved Occupancy|Issue Slots Busy|Compute \(SM\) Throughput|No Eligible)"' \
      "$TMP/profile.csv" | cut -d, -f5,13-16 | head -20
done
rm -rf "$TMP"
exit $status
