#!/usr/bin/env bash
# The project's test command: set up .venv if needed, check style, run the whole test suite.
#   bash scripts/test.sh                 # everything (what CI runs)
#   bash scripts/test.sh -m "not slow"   # without the long end-to-end runs (still starts engines); any pytest arguments pass through
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
"$PY" -m pytest --durations=25 "$@"  # the slowest tests, to keep the suite within its budget
