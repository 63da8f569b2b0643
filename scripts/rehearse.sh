#!/usr/bin/env bash
# The 8-GPU run rehearsed on CPU (issue 18 item 1): one iteration of the `paper` profile on the
# embedded tiny model with the 8-GPU plan's shapes (512 prompts x 4 per Challenger step against 4
# Solver servers, N = 8,000 questions, m = 10 over 8 shards, 512 x 5 per Solver step on 8 ranks,
# evaluation on 8 engines; one step per stage, tiny token lengths), then the report: per stage and
# phase the time spent outside the model, and each process's peak memory.
#   bash scripts/rehearse.sh [--scale full|quarter] [OUT_DIR]     # default: full, storage/rehearsal
# The run goes to OUT_DIR/rehearsal_<scale>/ (rehearsal.md and rehearsal.json in it); rerun the same
# command to resume it. quarter: every count / 4 (what CI runs, tests/test_rehearsal.py).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SCALE=full
OUT=""
while [ $# -gt 0 ]; do
  case "$1" in
    --scale) SCALE="${2:?--scale needs full or quarter}"; shift 2 ;;
    --scale=*) SCALE="${1#--scale=}"; shift ;;
    -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
    -*) echo "rehearse.sh: unknown option $1 (usage: rehearse.sh [--scale full|quarter] [OUT_DIR])" >&2; exit 2 ;;
    *) OUT="$1"; shift ;;
  esac
done
case "$SCALE" in full|quarter) ;; *) echo "rehearse.sh: --scale must be full or quarter, not '$SCALE'" >&2; exit 2 ;; esac
if [ ! -x "$ROOT/.venv/bin/python" ] || [ -z "${RZERO_SKIP_SETUP:-}" ]; then
  bash "$ROOT/scripts/setup.sh"
fi
export TOKENIZERS_PARALLELISM=false
exec "$ROOT/.venv/bin/python" -m pipeline.rehearsal run --scale "$SCALE" --out "${OUT:-$PWD/storage/rehearsal}"
