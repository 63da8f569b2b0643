#!/usr/bin/env bash
# Opt-in learning benchmark (not in CI): Solver GRPO of SmolLM2-135M-Instruct on generated arithmetic
# word problems, on CPU. Held-out greedy accuracy before/after, reward curve PNG, seconds per step.
#
#   bash scripts/bench_real_learning.sh [OUT_DIR] [--steps 20] [--lr 2e-5] [--model DIR] [...]
#
# OUT_DIR defaults to $STORAGE_PATH/bench_real_learning (STORAGE_PATH defaults to ./storage). Options
# go to `python scripts/bench_real_learning.py run` (see its --help). About 1-3 minutes per step on
# 2 cores with the defaults (8 prompts x 4 responses, 128 response tokens), plus ~2 minutes of
# model build and evaluation. Rerunning skips the phases that have their outputs.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# PYTHON: the interpreter to use (e.g. the main checkout's .venv when running from a snapshot copy).
PY="${PYTHON:-$ROOT/.venv/bin/python}"; [ -x "$PY" ] || PY=python
OUT="${STORAGE_PATH:-$ROOT/storage}/bench_real_learning"
if [[ $# -gt 0 && "$1" != --* ]]; then OUT="$1"; shift; fi
# Offline, loopback only, one in-process vLLM engine per process (see CPU_STACK_NOTES).
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export VLLM_ENABLE_V1_MULTIPROCESSING=0 VLLM_CPU_KVCACHE_SPACE="${VLLM_CPU_KVCACHE_SPACE:-1}"
export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 WANDB_MODE="${WANDB_MODE:-disabled}"
# This checkout's packages first, also in the Ray workers (they inherit the environment).
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
exec "$PY" "$ROOT/scripts/bench_real_learning.py" run --out "$OUT" "$@"
