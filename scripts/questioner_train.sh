#!/usr/bin/env bash
# Challenger stage alone: scripts/questioner_train.sh SOLVER_MODEL CHALLENGER_INIT OUT_DIR [--preset P] [--profile P] [key=value ...]
# (the frozen Solver is served by vLLM while the Challenger trains; see pipeline/launch.py)
# Unless OUT_DIR holds the finished stage, a preflight checks the models, inputs, GPUs and disk first
# (every problem with its fix, exit 2).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="$ROOT/.venv/bin/python"; [ -x "$PY" ] || PY=python
if [ $# -lt 3 ]; then sed -n '2,3p' "$0" >&2; exit 2; fi
exec "$PY" -m pipeline.launch challenger "$@"
