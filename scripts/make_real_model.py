"""Build the real pretrained model of the CPU tier (SmolLM2-135M-Instruct) as a plain HF folder.

A thin wrapper of `python -m model_zoo.smollm2` (see model_zoo/smollm2.py):
    python scripts/make_real_model.py --out storage/smollm2-135m-instruct [--check]
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as a file, the script's own folder is first on sys.path; the repository root makes
# `model_zoo` importable whether or not the project is installed.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from model_zoo.smollm2 import main

if __name__ == "__main__":
    sys.exit(main())
