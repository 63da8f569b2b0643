#!/usr/bin/env bash
# Difficulty and label-accuracy analysis of a finished run:
# scripts/analyze_run.sh RUN_DIR [--per-iteration K] [--oracle URL_OR_MODEL_DIR [--oracle-model NAME]] [--seed S] [--max-tokens T]
# (python -m analysis; writes RUN_DIR/analysis/ and a section of RUN_DIR/summary.md)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="$ROOT/.venv/bin/python"; [ -x "$PY" ] || PY=python
if [ $# -lt 1 ]; then sed -n '2,4p' "$0" >&2; exit 2; fi
# The analysis package may be newer than the editable install: import it from the checkout.
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
exec "$PY" -m analysis "$@"
