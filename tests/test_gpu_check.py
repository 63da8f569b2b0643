"""The device check's script runs end to end on CPU (`--cpu-smoke`: a tiny Qwen3 shape, gloo, fp32):
the same local-worker passes, table and JSON as on a GPU, without Ray, vLLM or flash-attn."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_check_cpu_smoke_runs_the_local_worker_passes(tmp_path: Path) -> None:
    out = tmp_path / "gpu_check.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gpu_check.py"), "--cpu-smoke", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,  # the script finds the project from its own path
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "model pass" in proc.stdout and "imported: ray=no, vllm=no" in proc.stdout
    report = json.loads(out.read_text())
    assert [(r["model"], r["pass"]) for r in report["rows"]] == [("tiny", "experience"), ("tiny", "update")]
    for row in report["rows"]:
        assert row["tokens"] > 0 and row["tokens_per_s"] > 0 and row["plan_gib"] > 0
        assert row["peak_gib"] is None and row["mfu"] is None  # no GPU: no memory or MFU figures
        assert math.isfinite(row["loss"])
    assert report["imported"] == {"ray": False, "vllm": False, "flash_attn": False}
