#!/usr/bin/env bash
# R-Zero: the iteration driver.
#   bash scripts/main.sh                                  # demo: embedded tiny model, 1 iteration, CPU, minutes
#   bash scripts/main.sh Qwen/Qwen3-4B-Base qwen3-4b      # the paper's run on the visible GPUs
#   bash scripts/main.sh BASE TAG --dry-run               # print the stage plan, devices and every setting
#   bash scripts/main.sh BASE TAG --experiment no_filter  # an ablation of the paper (pipeline/experiments.py)
# Options: --experiment rzero|no_rl_challenger|no_rep_penalty|no_filter|single_model, --iterations I, --profile paper|rzero_code, --preset FILE, --solver-gpus K, --set key=value,
# --accept-changed-settings (rerun a tag with settings that differ from its run.json).
# First a preflight (seconds): model, evaluation data, GPUs, disk, a rerun's settings; every problem
# is listed with its fix and the script exits 2 before anything starts.
# Outputs go to $STORAGE_PATH/<TAG>/ (STORAGE_PATH defaults to ./storage). Rerun the same command
# after a crash or Ctrl-C: finished stages are skipped and the interrupted one resumes.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ ! -x "$ROOT/.venv/bin/python" ] || [ -z "${RZERO_SKIP_SETUP:-}" ]; then
  bash "$ROOT/scripts/setup.sh"
fi
export STORAGE_PATH="${STORAGE_PATH:-$PWD/storage}"
export TOKENIZERS_PARALLELISM=false
exec "$ROOT/.venv/bin/python" -m pipeline.driver "$@"
