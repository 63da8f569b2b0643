"""A stage that fails stops the run with its reason, and the driver writes the summary so far.

Reproduces the end of the real SmolLM2 iteration (issue 13): no Challenger output parsed, labelling
kept nothing, and the Solver stage had nothing to train on. The driver runs for real (`python -m
pipeline.driver`), the first three stages are already finished, the Solver stage runs as its own
process and fails before loading any model.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from infra.stage_kit import write_manifest
from question_evaluate.outputs import write_dataset
from verl.utils.fs import atomic_write_json

ROOT = Path(__file__).resolve().parents[1]


def test_a_failed_stage_leaves_the_summary_and_its_reason(tmp_path: Path, tiny_model_dir: str) -> None:
    it = tmp_path / "storage" / "t" / "iter_1"
    write_manifest(it / "challenger", "challenger", {"model": tiny_model_dir}, counts={"steps": 2})
    questions = it / "question_generate" / "questions.jsonl"
    questions.parent.mkdir(parents=True)
    questions.write_text("")
    counts = {"generated": 48, "valid": 0, "invalid": 48, "invalid_no_question": 46, "invalid_no_answer": 2}
    write_manifest(
        it / "question_generate", "question_generate", {"questions": str(questions)}, counts=counts
    )
    labelled = it / "question_evaluate"
    labelled.mkdir(parents=True)
    atomic_write_json(
        labelled / "filter_stats.json", {"questions": 48, "valid": 0, "kept": 0, "dropped_by_reason": {}}
    )
    dataset = write_dataset(labelled / "train.parquet", [])
    write_manifest(labelled, "question_evaluate", {"dataset": str(dataset)}, counts={"valid": 0, "kept": 0})

    env = {**os.environ, "STORAGE_PATH": str(tmp_path / "storage")}
    cmd = [sys.executable, "-m", "pipeline.driver", tiny_model_dir, "t", "--iterations", "1"]
    cmd += ["--preset", str(ROOT / "configs" / "pipeline" / "demo.yaml"), "--set", "evaluate=false"]
    run = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)

    assert run.returncode == 1, run.stdout[-3000:] + run.stderr[-3000:]
    assert "challenger: " in run.stderr and "is already done" in run.stderr
    assert "No Challenger output parsed" in run.stderr  # the Solver stage's own reason
    assert "stage solver failed with exit code 1" in run.stderr
    summary = (tmp_path / "storage" / "t" / "summary.md").read_text()
    assert f"summary so far: {tmp_path / 'storage' / 't' / 'summary.md'}" in run.stderr
    assert "| challenger | done |" in summary and "| solver | unfinished |" in summary
    assert "invalid_no_question 46" in summary  # the counts that explain the failure
