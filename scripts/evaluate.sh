#!/usr/bin/env bash
# Evaluate one model on the R-Zero benchmarks (RZERO_SPEC.md section 5) with the project's harness.
#
#   scripts/evaluate.sh MODEL [BENCHMARK...] [--option value ...]
#
# MODEL is an HF model folder or hub id. BENCHMARKs default to the paper's 10 (7 math + SuperGPQA,
# MMLU-Pro, BBEH); see `python -m evaluation list`. Everything from the first "--option" on (or
# after a bare "--") goes to `python -m evaluation` unchanged, e.g.
#   scripts/evaluate.sh Qwen/Qwen3-4B-Base amc23 aime2024 --k 32 --sample-temperature 0.6
#   scripts/evaluate.sh ckpt/ gsm8k --data gsm8k=/data/gsm8k.jsonl --max-tokens 2048
#
# Environment (all optional):
#   OUT_DIR        output folder (default: $STORAGE_PATH/eval/<model name>)
#   STORAGE_PATH   root of the project's outputs (default: <repo>/storage)
#   EVAL_DATA      local benchmark files, "NAME=PATH NAME=PATH" (offline nodes)
#   EVAL_DATA_DIR  folder of <benchmark>.{jsonl,json,parquet,csv} files (aliases such as aime24 work)
#   EVAL_FIELDS    field mappings, "NAME:question=COL,answer=COL;NAME2:..." (";" between benchmarks)
#   EVAL_OFFLINE   1 = never fall back to the hub
#   EVAL_LABEL     row label in the tables (default: the model folder name)
#   EVAL_ARGS      more options for python -m evaluation (word-split)
#   EVAL_COMPARE   0 = skip the comparison table over sibling results (default 1)
#
# Outputs: <out>/<benchmark>/{responses,items,metrics}.{jsonl,json}, <out>/summary.{md,csv},
# <out>/results.json (written last). Before any engine starts, the model and each benchmark's data
# are checked (every problem with its fix, exit 2). A rerun into the same <out> keeps the benchmarks
# finished with the same settings and runs only the others. On CPU the engine picks a KV cache size
# that fits the machine (VLLM_CPU_KVCACHE_SPACE, when set, wins). When the parent of <out> holds
# several results (base model, iterations), it also writes <parent>/comparison.{md,csv,png}.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [[ -x "$ROOT/.venv/bin/python" ]]; then PY="$ROOT/.venv/bin/python"; else PY="python"; fi

if [[ $# -lt 1 || "$1" == "-h" || "$1" == "--help" ]]; then
  sed -n '2,/^set -euo/{/^set -euo/!p;}' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
  exit $(( $# < 1 ? 2 : 0 ))
fi

MODEL="$1"
shift
BENCHMARKS=()
PASS=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --) shift; PASS+=("$@"); break ;;
    --*) PASS+=("$@"); break ;;
    *) BENCHMARKS+=("$1"); shift ;;
  esac
done

# Same default folder name as `python -m evaluation` (evaluation/cli.py: default_out_dir).
if [[ -d "$MODEL" ]]; then MODEL_NAME="$(basename "${MODEL%/}")"; else MODEL_NAME="${MODEL//\//_}"; fi
STORAGE_PATH="${STORAGE_PATH:-$ROOT/storage}"
OUT_DIR="${OUT_DIR:-$STORAGE_PATH/eval/$MODEL_NAME}"

ARGS=(--model "$MODEL" --out "$OUT_DIR")
if [[ ${#BENCHMARKS[@]} -gt 0 ]]; then
  ARGS+=(--benchmarks "$(IFS=,; echo "${BENCHMARKS[*]}")")
fi
for entry in ${EVAL_DATA:-}; do ARGS+=(--data "$entry"); done
if [[ -n "${EVAL_DATA_DIR:-}" ]]; then ARGS+=(--data-dir "$EVAL_DATA_DIR"); fi
if [[ -n "${EVAL_FIELDS:-}" ]]; then
  IFS=';' read -ra FIELD_ENTRIES <<< "$EVAL_FIELDS"
  for entry in "${FIELD_ENTRIES[@]}"; do
    entry="${entry//[[:space:]]/}"
    if [[ -n "$entry" ]]; then ARGS+=(--fields "$entry"); fi
  done
fi
if [[ "${EVAL_OFFLINE:-0}" == "1" ]]; then ARGS+=(--offline); fi
if [[ -n "${EVAL_LABEL:-}" ]]; then ARGS+=(--label "$EVAL_LABEL"); fi
# shellcheck disable=SC2206  # EVAL_ARGS is meant to be word-split
EXTRA_ARGS=(${EVAL_ARGS:-})

echo "==> evaluating $MODEL -> $OUT_DIR"
"$PY" -m evaluation "${ARGS[@]}" "${EXTRA_ARGS[@]}" "${PASS[@]}"

# A comparison across the sibling result folders (e.g. base model and each Solver iteration).
if [[ "${EVAL_COMPARE:-1}" == "1" ]]; then
  PARENT="$(dirname "$OUT_DIR")"
  shopt -s nullglob
  SIBLINGS=("$PARENT"/*/results.json)
  shopt -u nullglob
  if [[ ${#SIBLINGS[@]} -ge 2 ]]; then
    "$PY" -m evaluation report "${SIBLINGS[@]}" --out "$PARENT" --stem comparison --title "R-Zero evaluation"
  fi
fi
