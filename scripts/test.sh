#!/usr/bin/env bash
# The test command: a fresh virtual environment, the CPU build of torch, the package (its C++ extension
# is compiled here) with its test extras, then the whole test suite. Used by the README and by .ci/run.
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
python -m pytest -q tests "$@"
