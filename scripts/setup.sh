#!/usr/bin/env bash
# Create .venv with the project's pinned stack and install the project (editable). Idempotent:
# a second run with unchanged requirement files returns at once.
#
#   bash scripts/setup.sh            # GPU stack if an NVIDIA GPU is visible, else the CPU stack
#   RZERO_STACK=cpu bash scripts/setup.sh
#   RZERO_FLASH_ATTN=build|skip bash scripts/setup.sh   # GPU stack: default builds flash-attn only
#                                                       # when an nvcc of torch's CUDA major exists
#
# CPU stack: requirements-cpu.txt is a complete pinned set installed with --no-deps, so nothing
# pulls CUDA wheels. torch==2.13.0+cpu comes from pip's configured sources; elsewhere set
# TORCH_CPU_INDEX to the PyTorch CPU wheel index URL.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
VENV="${VENV:-$ROOT/.venv}"
PYTHON="${PYTHON:-python3}"
UV_VERSION=0.13.9  # the installer bootstrapped for the CPU stack when no uv is on PATH

if [ -n "${RZERO_STACK:-}" ]; then
  STACK="$RZERO_STACK"
elif command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L 2>/dev/null | grep -q "GPU"; then
  STACK=gpu
else
  STACK=cpu
fi
case "$STACK" in
  cpu) REQ=requirements-cpu.txt ;;
  gpu) REQ=requirements.txt ;;
  *) echo "setup: RZERO_STACK must be cpu or gpu, got '$STACK'" >&2; exit 2 ;;
esac

# On GPU the flash-attn choice is part of the stamp: another RZERO_FLASH_ATTN reinstalls.
STAMP="$VENV/.rzero-setup-$STACK-$( (cat "$REQ" pyproject.toml; [ "$STACK" = cpu ] || echo "${RZERO_FLASH_ATTN:-auto}") | sha256sum | cut -c1-16)"
if [ -f "$STAMP" ]; then
  echo "setup: $VENV is up to date ($STACK stack)"
  exit 0
fi

echo "setup: installing the $STACK stack from $REQ into $VENV"
UV="$(command -v uv || true)"
if [ -z "$UV" ] && [ "$STACK" = cpu ] && [ "${RZERO_SETUP_PIP:-0}" != 1 ]; then
  # pip installs the ~200 pinned wheels one at a time (about 100 s on 2 cores); uv installs and
  # byte-compiles them in parallel (about 30 s). With no uv on PATH, a pinned one goes into the venv
  # first (from pip's sources, 1-2 s); if that fails, pip installs everything. RZERO_SETUP_PIP=1: pip.
  [ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
  if "$VENV/bin/python" -m pip install -q --disable-pip-version-check "uv==$UV_VERSION"; then
    UV="$VENV/bin/uv"
  else
    echo "setup: could not install uv==$UV_VERSION; installing with pip (slower)" >&2
  fi
fi
if [ -n "$UV" ]; then
  [ -x "$VENV/bin/python" ] || "$UV" venv --python "$PYTHON" "$VENV"
  # uv does not read pip.conf: hand it pip's configured sources explicitly.
  UV_SOURCES=(--index-strategy unsafe-best-match --compile-bytecode)
  for link in $(pip config get global.find-links 2>/dev/null || true); do UV_SOURCES+=(--find-links "$link"); done
  for index in $(pip config get global.extra-index-url 2>/dev/null || true); do UV_SOURCES+=(--extra-index-url "$index"); done
  for link in ${PIP_FIND_LINKS:-}; do UV_SOURCES+=(--find-links "$link"); done  # pip's environment too
  for index in ${PIP_EXTRA_INDEX_URL:-}; do UV_SOURCES+=(--extra-index-url "$index"); done
  [ -n "${TORCH_CPU_INDEX:-}" ] && UV_SOURCES+=(--extra-index-url "$TORCH_CPU_INDEX")
  PIP=("$UV" pip install --python "$VENV/bin/python" "${UV_SOURCES[@]}")
else
  [ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
  PIP=("$VENV/bin/python" -m pip install --disable-pip-version-check)
  [ -n "${TORCH_CPU_INDEX:-}" ] && PIP+=(--extra-index-url "$TORCH_CPU_INDEX")
fi

if [ "$STACK" = cpu ]; then
  "${PIP[@]}" --no-deps -r "$REQ"
else
  grep -v '^flash-attn' "$REQ" > "$VENV/requirements-no-flash.txt"
  "${PIP[@]}" -r "$VENV/requirements-no-flash.txt"
  # flash-attn has no wheel for this torch: look before compiling (nvcc of torch's CUDA major, the
  # visible GPUs' architecture, jobs that fit memory); RZERO_FLASH_ATTN=build|skip overrides.
  FLASH_ATTN_PLAN="$("$VENV/bin/python" scripts/flash_attn_plan.py)"
  eval "$FLASH_ATTN_PLAN"
  echo "setup: flash-attn: $FLASH_ATTN_DECISION ($FLASH_ATTN_REASON)"
  if [ "$FLASH_ATTN_DECISION" = build ]; then
    export MAX_JOBS
    [ -n "${FLASH_ATTN_CUDA_ARCHS:-}" ] && export FLASH_ATTN_CUDA_ARCHS
    "${PIP[@]}" --no-build-isolation "$(grep '^flash-attn' "$REQ")" \
      || echo "setup: WARNING flash-attn did not build; training falls back to padded attention (slower)" >&2
  else
    echo "setup: flash-attn skipped; training uses padded SDPA attention (slower, same results)" >&2
  fi
fi
"${PIP[@]}" --no-deps -e .

# Fail here, not in the first test, if the stack is broken.
"$VENV/bin/python" -c "import torch, vllm, ray, transformers, math_verify, verl; print('setup: torch', torch.__version__, '| vllm', vllm.__version__, '| ray', ray.__version__)"
rm -f "$VENV"/.rzero-setup-*
touch "$STAMP"
echo "setup: done ($STACK stack in $VENV)"
