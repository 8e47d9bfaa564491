#!/usr/bin/env bash
# The test command: a fresh virtual environment, the CPU build of torch, the package (its C++ extension
# is compiled here) with its test extras, then the linter, the whole test suite and the packaging check
# (sdist and wheel). Then the Triton tests once more in a second environment with the GPU machines' Triton
# (3.6; its interpreter needs numpy < 2.3). Used by the README and by .ci/run. WAE_FAST_SKIP_TRITON36=1 skips the
# second environment.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${WAE_FAST_VENV:-.venv}
python3 -m venv "$VENV"
. "$VENV/bin/activate"
python -m pip install -q --upgrade pip
python -m pip install -q torch==2.13.0            # the CPU build; a bare 'torch' pulls a CUDA build
python -m pip install -q -e ".[test]"
# A failed extension build or a missing triton must fail the run, not skip tests.
export WAE_FAST_REQUIRE_BACKENDS=${WAE_FAST_REQUIRE_BACKENDS:-cpu,triton}
ruff check .                                     # the lint rules of pyproject.toml ([tool.ruff])
python -m pytest -q tests "$@"
# The source distribution and the wheel installed into fresh environments.
PYTHON=python bash scripts/check_packaging.sh
deactivate

if [ "${WAE_FAST_SKIP_TRITON36:-0}" = 0 ]; then
  VENV36=${WAE_FAST_VENV36:-.venv-triton36}
  python3 -m venv "$VENV36"
  . "$VENV36/bin/activate"
  python -m pip install -q --upgrade pip
  python -m pip install -q torch==2.13.0 "triton==3.6.0" "numpy<2.3" "pytest>=7" "hypothesis>=6.80"
  # The package from this checkout without its C++ extension: only the Triton backend is required here.
  WAE_FAST_REQUIRE_BACKENDS=triton PYTHONPATH="$PWD" TRITON_DEFAULT_FP_FUSION=1 \
    python -m pytest -q -p no:cacheprovider -W "ignore::DeprecationWarning" tests/test_triton_backend.py \
    tests/test_backends.py tests/test_properties.py tests/test_stats_triton.py tests/test_stats.py \
    tests/test_extreme_inputs.py tests/test_triton_numerics.py tests/test_stats_agg_triton.py -k "triton"
  # The direct launch of compiled kernels against this Triton's launcher (the null GPU of benchmarks/).
  PYTHONPATH="$PWD" TRITON_DEFAULT_FP_FUSION=1 python -m pytest -q -p no:cacheprovider -W "ignore::DeprecationWarning" \
    tests/test_small_batch.py -k "launch or operators"
  deactivate
fi
