"""Supervised follow-up (scripts/supervised_grpo.sh): a labelled file converted to the Solver stage's
parquet (columns found or named, answers extracted, missing columns said plainly), INIT from a run
folder, and one real GRPO step of the tiny model through the script's path."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from evaluation.synthetic import make_problems
from infra.stage_kit import write_manifest
from pipeline.supervised import DatasetError, convert_dataset, resolve_init
from verl.utils.fs import atomic_write_json, atomic_write_jsonl

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = str(ROOT / "scripts/supervised_grpo.sh")


def _table(path: Path) -> list[dict]:
    return pq.read_table(path).to_pylist()


def test_a_labelled_file_becomes_the_solver_stage_dataset(tmp_path: Path) -> None:
    src = atomic_write_jsonl(
        tmp_path / "data.jsonl",
        [
            {"question": " What is 2+3? ", "answer": 5, "id": "a"},
            {"question": "What is 4*4?", "answer": "16"},
            {"question": "", "answer": "1"},  # empty question: left out, counted
        ],
    )
    record = convert_dataset(str(src), tmp_path / "out" / "train.parquet")
    assert _table(tmp_path / "out" / "train.parquet") == [
        {"question": "What is 2+3?", "answer": "5", "id": "a"},
        {"question": "What is 4*4?", "answer": "16", "id": "1"},
    ]
    assert (record["rows"], record["kept"], record["empty_left_out"]) == (3, 2, 1)

    # Other column names, named by the user; answers inside a worked solution's last box.
    csv = tmp_path / "data.csv"
    csv.write_text('problem,solution\n"1+1?","so \\boxed{2}"\n')
    convert_dataset(str(csv), tmp_path / "c.parquet", answer_key="solution", answer_format="last_boxed")
    assert _table(tmp_path / "c.parquet") == [{"question": "1+1?", "answer": "2", "id": "0"}]


def test_missing_columns_are_said_plainly(tmp_path: Path) -> None:
    src = atomic_write_jsonl(tmp_path / "d.jsonl", [{"question": "q", "response": "r"}])
    with pytest.raises(DatasetError, match=r"no answer column.*'question', 'response'.*--answer-key"):
        convert_dataset(str(src), tmp_path / "x.parquet")
    with pytest.raises(DatasetError, match="no column 'gold'"):
        convert_dataset(str(src), tmp_path / "x.parquet", answer_key="gold")
    # Through the script: exit 2 with the message, before any model is looked at.
    proc = subprocess.run(
        ["bash", SCRIPT, "no/such-model", str(src), str(tmp_path / "out")], capture_output=True, text=True
    )
    assert proc.returncode == 2 and "no answer column" in proc.stderr
    assert not (tmp_path / "out" / "solver").exists()


def test_init_from_a_run_folder_is_its_final_solver(tmp_path: Path) -> None:
    run = tmp_path / "run"
    atomic_write_json(run / "run.json", {"base_model": "base"})
    for i in (1, 2, 10):
        write_manifest(run / f"iter_{i}" / "solver", "solver", outputs={"model": f"/m/solver_{i}"})
    (run / "iter_11" / "solver").mkdir(parents=True)  # unfinished: no manifest
    assert resolve_init(str(run)) == "/m/solver_10"
    assert resolve_init("Qwen/Qwen3-4B-Base") == "Qwen/Qwen3-4B-Base"


@pytest.mark.slow
def test_one_grpo_step_on_a_labelled_file(tiny_model_dir: str, tmp_path: Path) -> None:
    problems = make_problems(4, seed=1)
    src = atomic_write_jsonl(
        tmp_path / "labelled.jsonl", [{"question": p["question"], "answer": p["answer"]} for p in problems]
    )
    out = tmp_path / "follow"
    cmd = ["bash", SCRIPT, tiny_model_dir, str(src), str(out), "--steps", "1"]
    cmd += ["--preset", "configs/pipeline/demo.yaml"]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=dict(os.environ))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    dataset = out / "data" / "train.parquet"
    assert [r["answer"] for r in _table(dataset)] == [p["answer"] for p in problems]
    # The Solver stage was launched on the converted file, from INIT, for 1 step, with the Solver reward.
    stage = json.loads((out / "solver" / "stage_config.json").read_text())
    assert stage["stage"] == "solver" and stage["dataset"] == str(dataset.resolve())
    assert stage["model"] == tiny_model_dir and "trainer.max_steps=1" in stage["engine_args"]
    manifest = json.loads((out / "solver" / "manifest.json").read_text())
    assert manifest["counts"]["steps"] == 1 and manifest["inputs"]["dataset"] == str(dataset.resolve())
    assert manifest["config"]["worker"]["reward"]["reward_function"].endswith("compute_solver_reward")
    metrics = [json.loads(line) for line in Path(manifest["outputs"]["metrics"]).read_text().splitlines()]
    assert len(metrics) == 1 and "reward/accuracy" in metrics[0]
    record = json.loads((out / "supervised.json").read_text())
    assert (
        record["model"] == manifest["outputs"]["model"] and (Path(record["model"]) / "config.json").is_file()
    )
    assert record["data"]["kept"] == 4
