"""The layering holds: the engine imports nothing of R-Zero, and the contracts in pyproject.toml pass."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RZERO_PACKAGES = {
    "infra", "rzero", "solver_service", "model_zoo", "rewards",
    "question_generate", "question_evaluate", "evaluation", "training", "pipeline", "analysis",
}  # fmt: skip


def test_importing_the_engine_loads_no_rzero_package() -> None:
    code = (
        "import json, sys; import verl, verl.trainer.main, verl.trainer.ray_trainer, verl.workers.fsdp_workers; "
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert not set(json.loads(out.stdout)) & RZERO_PACKAGES


def test_import_contracts_are_kept() -> None:
    lint = Path(sys.executable).with_name("lint-imports")
    proc = subprocess.run([str(lint)], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 broken" in proc.stdout
