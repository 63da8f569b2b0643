#!/usr/bin/env bash
# Pseudo-label generated questions with the Solver and write its training set (RZERO_SPEC.md
# section 3): m answers per valid question, majority label by math equivalence, share p̂, filter.
#
#   scripts/question_evaluate.sh SOLVER QUESTIONS OUT_DIR [--option value ...]
#   scripts/question_evaluate.sh SOLVER DIR [--option value ...]
#
# Three-argument form: QUESTIONS is a questions.jsonl, or a finished question_generate stage folder
# (its manifest names the file); the outputs go to OUT_DIR. Two-argument form: the questions are
# DIR/questions.jsonl and the outputs go to DIR too (DIR must not be the generation stage folder
# itself: both stages write DIR/manifest.json). Options go to `python -m question_evaluate`
# unchanged (see its --help), e.g. --band 0,1 (no filtering) --isolate --push-to-hub --hub-repo NAME.
#
# Environment (all optional; an explicit --option wins):
#   RZERO_PROFILE        paper (default: m=10, band [0.25,0.75]) | rzero_code (m=9, band [0.3,0.8])
#   RZERO_VOTES          answers per question (default: the profile's m)
#   RZERO_DEVICES        GPU ids "0,1,2,3" (default: every visible GPU); "cpu" for CPU
#   RZERO_TP             GPUs per engine (tensor parallel, default 1)
#   RZERO_MAX_TOKENS     max new tokens per answer (default 4096)
#   RZERO_MAX_MODEL_LEN  engine context length (default: the model's)
#   RZERO_SEED           sampling seed (default 0)
#   RZERO_GRADER_WORKERS math-verify processes (default: cores - 2, at least 2)
#   RZERO_PUSH_TO_HUB    1 = also push train.parquet to the HF Hub (needs HUGGINGFACENAME and
#                        HF_TOKEN, or tokens.json); never needed by the pipeline
#
# Outputs in OUT_DIR: train.parquet (question, answer, p_hat, id), labelled.jsonl, p_hat_hist.png,
# filter_stats.json, shards/, manifest.json (last). A folder whose manifest says done is skipped.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [[ -x "$ROOT/.venv/bin/python" ]]; then PY="$ROOT/.venv/bin/python"; else PY="python3"; fi
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"

if [[ $# -lt 2 || "$1" == "-h" || "$1" == "--help" ]]; then
  sed -n '2,/^set -euo/{/^set -euo/!p;}' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
  exit $(( $# < 2 ? 2 : 0 ))
fi

POSITIONAL=()
while [[ $# -gt 0 && "$1" != --* && ${#POSITIONAL[@]} -lt 3 ]]; do
  POSITIONAL+=("$1")
  shift
done
if [[ $# -gt 0 && "$1" == "--" ]]; then shift; fi

ARGS=()
if [[ -n "${RZERO_PROFILE:-}" ]]; then ARGS+=(--profile "$RZERO_PROFILE"); fi
if [[ -n "${RZERO_VOTES:-}" ]]; then ARGS+=(--votes "$RZERO_VOTES"); fi
if [[ -n "${RZERO_DEVICES:-}" ]]; then ARGS+=(--devices "$RZERO_DEVICES"); fi
if [[ -n "${RZERO_TP:-}" ]]; then ARGS+=(--tensor-parallel-size "$RZERO_TP"); fi
if [[ -n "${RZERO_MAX_TOKENS:-}" ]]; then ARGS+=(--max-tokens "$RZERO_MAX_TOKENS"); fi
if [[ -n "${RZERO_MAX_MODEL_LEN:-}" ]]; then ARGS+=(--max-model-len "$RZERO_MAX_MODEL_LEN"); fi
if [[ -n "${RZERO_SEED:-}" ]]; then ARGS+=(--seed "$RZERO_SEED"); fi
if [[ -n "${RZERO_GRADER_WORKERS:-}" ]]; then ARGS+=(--grader-workers "$RZERO_GRADER_WORKERS"); fi
if [[ "${RZERO_PUSH_TO_HUB:-0}" == "1" ]]; then ARGS+=(--push-to-hub); fi

# Preflight (seconds): the Solver is reachable and the questions exist; every problem with its fix,
# exit 2. A finished output folder needs nothing.
if [[ ${#POSITIONAL[@]} -ge 3 ]]; then OUT="${POSITIONAL[2]}"; else OUT="${POSITIONAL[1]}"; fi
"$PY" -m infra.preflight --model "${POSITIONAL[0]}" --file "${POSITIONAL[1]}" --unless-done "$OUT"
exec "$PY" -m question_evaluate "${POSITIONAL[@]}" ${ARGS[@]+"${ARGS[@]}"} "$@"
