#!/usr/bin/env bash
# Supervised follow-up: GRPO with the Solver reward against a labelled dataset's answers:
# scripts/supervised_grpo.sh INIT DATASET OUT [--steps N] [--question-key Q] [--answer-key A] [--preset P] [--profile P] [key=value ...]
# INIT: model folder, hub id or a run folder (its final Solver); DATASET: jsonl/json/parquet/csv file or hub id (pipeline/supervised.py)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="$ROOT/.venv/bin/python"; [ -x "$PY" ] || PY=python
if [ $# -lt 3 ]; then sed -n '2,4p' "$0" >&2; exit 2; fi
exec "$PY" -m pipeline.supervised "$@"
