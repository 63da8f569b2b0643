"""The device check's script runs end to end on CPU (`--cpu-smoke`: a tiny Qwen3 shape, gloo, fp32):
the same local-worker passes, table and JSON as on a GPU, without Ray, vLLM or flash-attn; and it
survives a model that runs out of memory, still writing its JSON."""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import gpu_check  # noqa: E402

# The first model of the run fails as a CUDA allocation does; the second runs for real.
OOM_ON_FIRST = """
import sys
import torch
sys.path.insert(0, sys.argv[1])
import gpu_check
real = gpu_check.check_model
calls = []
def check_model(name, *args):
    calls.append(name)
    if len(calls) == 1:
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
    return real(name, *args)
gpu_check.check_model = check_model
sys.exit(gpu_check.main(sys.argv[2:]))
"""


@pytest.mark.slow
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
    assert report["done"] is True
    assert [(r["model"], r["pass"]) for r in report["rows"]] == [("tiny", "experience"), ("tiny", "update")]
    for row in report["rows"]:
        assert row["tokens"] > 0 and row["tokens_per_s"] > 0 and row["plan_gib"] > 0
        assert row["peak_gib"] is None and row["mfu"] is None  # no GPU: no memory or MFU figures
        assert math.isfinite(row["loss"])
    assert report["imported"] == {"ray": False, "vllm": False, "flash_attn": False}


@pytest.mark.slow
def test_an_out_of_memory_model_is_reported_and_the_next_one_runs(tmp_path: Path) -> None:
    out = tmp_path / "gpu_check.json"
    proc = subprocess.run(
        [sys.executable, "-c", OOM_ON_FIRST, str(ROOT / "scripts"), "--cpu-smoke", "--models", "tiny,tiny",
         "--out", str(out)],
        capture_output=True, text=True, timeout=600, cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-3000:]  # a failed model fails the check
    assert "tiny: FAILED (out of memory): CUDA out of memory" in proc.stderr
    assert "tiny  FAILED: out of memory" in proc.stdout  # in the table too
    report = json.loads(out.read_text())
    assert report["done"] is True
    assert report["rows"][0] == {"model": "tiny", "pass": None, "error": report["rows"][0]["error"]}
    assert report["rows"][0]["error"].startswith("out of memory: CUDA out of memory")
    assert [(r["model"], r["pass"]) for r in report["rows"][1:]] == [
        ("tiny", "experience"),
        ("tiny", "update"),
    ]


def test_rows_follow_the_memory_plan_and_the_shipped_lengths(tmp_path: Path) -> None:
    """Rows of 2048 + 4096 tokens (the shipped lengths): the 4B fits one H200 (139 GiB) with 16 rows
    (micro-batches of at most 3 rows); on an 80 GiB GPU not even one row of the 4B fits (fp32 master
    weights, gradients and Adam are 16 bytes a parameter on one rank), so it is skipped, not run
    into an out-of-memory error."""
    from verl.trainer.config import DataConfig

    args = argparse.Namespace(prompt_len=DataConfig().max_prompt_length, response_len=4096, rows=16)
    assert args.prompt_len == 2048
    model = gpu_check.write_model(tmp_path / "4b", gpu_check.SHAPES["4b"])
    assert gpu_check.rows_that_fit(model, "cuda", 139.0, args) == (16, "")
    with pytest.raises(gpu_check.DoesNotFit, match="not even 1 row in 80 GiB"):
        gpu_check.rows_that_fit(model, "cuda", 80.0, args)
    small = argparse.Namespace(prompt_len=16, response_len=32, rows=6)
    tiny = gpu_check.write_model(tmp_path / "tiny", gpu_check.SHAPES["tiny"])
    assert gpu_check.rows_that_fit(tiny, "cpu", 80.0, small) == (6, "")
