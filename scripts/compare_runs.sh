#!/usr/bin/env bash
# The ablation table of finished runs (pipeline/compare.py): one row per run and iteration, named by
# experiment, the paper's MATH AVG / General AVG / Overall AVG; Markdown and CSV on stdout and beside
# the runs (<common parent>/compare.md, compare.csv).
#   bash scripts/compare_runs.sh storage/qwen3-4b storage/qwen3-4b-no-filter [--out DIR] [--name NAME]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
exec "$ROOT/.venv/bin/python" -m pipeline.compare "$@"
