#!/usr/bin/env bash
# Sample N questions from a Challenger model with vLLM (RZERO_SPEC.md section 3).
#
#   scripts/question_generate.sh MODEL OUT_DIR [N] [--option value ...]
#
# MODEL is an HF model folder or hub id; N defaults to 8000 (one sample per Challenger prompt).
# Data parallel over the visible GPUs (one engine per GPU, or per group of RZERO_TP GPUs); on a
# machine without GPUs one engine runs on CPU. Options after N go to `python -m question_generate`
# unchanged (see its --help), e.g. --variant persona --temperature 1.0 --top-p 0.95 --isolate.
#
# Environment (all optional; an explicit --option wins):
#   RZERO_DEVICES        GPU ids "0,1,2,3" (default: every visible GPU); "cpu" for CPU
#   RZERO_TP             GPUs per engine (tensor parallel, default 1)
#   RZERO_MAX_TOKENS     max new tokens per question (default 4096)
#   RZERO_MAX_MODEL_LEN  engine context length (default: the model's)
#   RZERO_SEED           sampling seed (default 0)
#   RZERO_VARIANT        Challenger prompt: default | persona | general
#
# Outputs: OUT_DIR/questions.jsonl (one row per sample: id, raw, question, answer, valid, shard),
# OUT_DIR/shards/ (per-shard files, reused when a run is resumed), OUT_DIR/manifest.json (last).
# A folder whose manifest says done is skipped.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [[ -x "$ROOT/.venv/bin/python" ]]; then PY="$ROOT/.venv/bin/python"; else PY="python3"; fi
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"

if [[ $# -lt 2 || "$1" == "-h" || "$1" == "--help" ]]; then
  sed -n '2,/^set -euo/{/^set -euo/!p;}' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
  exit $(( $# < 2 ? 2 : 0 ))
fi

MODEL="$1"
OUT_DIR="$2"
shift 2
N=8000
if [[ $# -gt 0 && "$1" =~ ^[0-9]+$ ]]; then
  N="$1"
  shift
fi

ARGS=()
if [[ -n "${RZERO_DEVICES:-}" ]]; then ARGS+=(--devices "$RZERO_DEVICES"); fi
if [[ -n "${RZERO_TP:-}" ]]; then ARGS+=(--tensor-parallel-size "$RZERO_TP"); fi
if [[ -n "${RZERO_MAX_TOKENS:-}" ]]; then ARGS+=(--max-tokens "$RZERO_MAX_TOKENS"); fi
if [[ -n "${RZERO_MAX_MODEL_LEN:-}" ]]; then ARGS+=(--max-model-len "$RZERO_MAX_MODEL_LEN"); fi
if [[ -n "${RZERO_SEED:-}" ]]; then ARGS+=(--seed "$RZERO_SEED"); fi
if [[ -n "${RZERO_VARIANT:-}" ]]; then ARGS+=(--variant "$RZERO_VARIANT"); fi

# Preflight (seconds): the model is reachable; every problem with its fix, exit 2. A finished folder
# needs nothing.
"$PY" -m infra.preflight --model "$MODEL" --unless-done "$OUT_DIR"
exec "$PY" -m question_generate "$MODEL" "$OUT_DIR" "$N" ${ARGS[@]+"${ARGS[@]}"} "$@"
