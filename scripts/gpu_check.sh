#!/usr/bin/env bash
# The device check of the engine's GPU path (issue 9), for a machine with one GPU and only torch +
# transformers (+ pytest, numpy): no vLLM, Ray or flash-attn needed (used when importable).
#   bash scripts/gpu_check.sh                  # the table (scripts/gpu_check.py), then pytest tests/test_gpu.py
#   bash scripts/gpu_check.sh --models 4b      # arguments go to scripts/gpu_check.py
# Results: the table on stdout, and $OUT/gpu_check.json (OUT defaults to outputs/gpu_check).
# omegaconf (the engine's config) is imported from the wheels in .whl/ when missing; fill .whl/ on a
# machine with internet first:  pip download --no-deps -d .whl omegaconf==2.4.0 antlr4-python3-runtime==4.13.2
# Budget: under 10 minutes (one device call) at worst: the table is cut at 4.5 min (its JSON holds the
# models finished by then), the tests at 5 min 10 s (the vLLM test allows 4 min for compilation and
# CUDA-graph capture).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PY="${PYTHON:-python3}"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false

if ! "$PY" -c "import omegaconf" 2>/dev/null; then
    if compgen -G "$ROOT/.whl/omegaconf-*.whl" >/dev/null; then
        # Pure-Python wheels import straight from the zip: no pip, nothing installed.
        for wheel in "$ROOT"/.whl/omegaconf-*.whl "$ROOT"/.whl/antlr4_python3_runtime-*.whl; do
            export PYTHONPATH="$PYTHONPATH:$wheel"
        done
        "$PY" -c "import omegaconf" || { echo "omegaconf from .whl/ does not import (PyYAML missing?)" >&2; exit 2; }
    else
        echo "omegaconf is missing and .whl/ has no wheel for it: on a machine with internet run" >&2
        echo "  pip download --no-deps -d .whl omegaconf==2.4.0 antlr4-python3-runtime==4.13.2" >&2
        echo "and bring .whl/ along (it is git-ignored: carry it explicitly)." >&2
        exit 2
    fi
fi
"$PY" -c "import torch; assert torch.cuda.is_available(), 'no CUDA device visible'; print(torch.__version__, torch.cuda.get_device_name())"
"$PY" -c "import transformers; print('transformers', transformers.__version__)"

OUT_DIR="${OUT:-$ROOT/outputs/gpu_check}"
mkdir -p "$OUT_DIR"
status=0
rm -f "$OUT_DIR/gpu_check.json"
timeout 270 "$PY" scripts/gpu_check.py --out "$OUT_DIR/gpu_check.json" "$@" || status=$?
if [ ! -f "$OUT_DIR/gpu_check.json" ]; then  # it died before its first write: still leave the file
    printf '{"device": null, "done": false, "rows": [], "error": "scripts/gpu_check.py exited with status %s before writing"}\n' \
        "$status" > "$OUT_DIR/gpu_check.json"
fi
# The CUDA-only tests; -p no:cacheprovider: nothing written into the checkout.
timeout 310 "$PY" -m pytest tests/test_gpu.py -q -p no:cacheprovider -o addopts="" \
    --junitxml="$OUT_DIR/test_gpu.xml" || status=$?
exit "$status"
