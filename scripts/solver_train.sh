#!/usr/bin/env bash
# Solver stage alone: scripts/solver_train.sh SOLVER_INIT DATASET OUT_DIR [--preset P] [--profile P] [key=value ...]
# (GRPO on a pseudo-labelled train.parquet; see pipeline/launch.py)
# Unless OUT_DIR holds the finished stage, a preflight checks the models, inputs, GPUs and disk first
# (every problem with its fix, exit 2).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="$ROOT/.venv/bin/python"; [ -x "$PY" ] || PY=python
if [ $# -lt 3 ]; then sed -n '2,3p' "$0" >&2; exit 2; fi
exec "$PY" -m pipeline.launch solver "$@"
