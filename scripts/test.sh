#!/usr/bin/env bash
# The project's test command: set up .venv if needed, check style, run the whole test suite.
#   bash scripts/test.sh                 # everything (what CI runs)
#   bash scripts/test.sh -m "not slow"   # without the long end-to-end runs (still starts engines); any pytest arguments pass through
#   RZERO_TEST_WORKERS=0 bash scripts/test.sh tests/test_x.py   # in one process (default: two)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash scripts/setup.sh
PY="$ROOT/.venv/bin/python"

# Everything offline and on loopback (see tests/conftest.py for the rest of the test environment).
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 WANDB_MODE=disabled
export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 VLLM_CPU_KVCACHE_SPACE=1 TOKENIZERS_PARALLELISM=false

echo "== ruff"
"$PY" -m ruff check .
"$PY" -m ruff format --check .
echo "== lint-imports (layering contracts in pyproject.toml)"
"$ROOT/.venv/bin/lint-imports"
echo "== pytest"
# Two processes, whole test files each, the longest files first (tests/conftest.py): most stages of the
# end-to-end tests keep one core busy, so two share a 2-core machine well. RZERO_TEST_WORKERS=0: one
# process (or pass -n 0). --durations: the slowest tests, to keep the suite within its budget.
WORKERS="${RZERO_TEST_WORKERS:-2}"
XDIST=(-n "$WORKERS" --dist loadfile --no-loadscope-reorder)
[ "$WORKERS" = 0 ] && XDIST=(-p no:xdist)
# Each test process's torch (and what it starts) gets its share of the cores, not all of them: with
# two processes each running 2-thread parallel regions on 2 cores, every region waits for a thread
# the other process has descheduled (the real-model tests ran 2-5x slower than alone).
if [[ "$WORKERS" =~ ^[1-9][0-9]*$ ]] && [ -z "${OMP_NUM_THREADS:-}" ]; then
  OMP_NUM_THREADS=$(( $(nproc) / WORKERS )); [ "$OMP_NUM_THREADS" -ge 1 ] || OMP_NUM_THREADS=1
  export OMP_NUM_THREADS
fi
"$PY" -m pytest "${XDIST[@]}" --durations=25 "$@"
