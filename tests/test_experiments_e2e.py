"""The experiments on real stages, demo scale, tiny model taught the R-Zero formats (slow: ~3 min idle).

- no_rl_challenger: `scripts/main.sh BASE TAG --experiment no_rl_challenger` end to end (evaluation
  off, 32 questions): no Challenger folder, the questions come from the base model (the generation
  manifest's inputs), the Solver trains on them from the base model.
- no_filter: the plan's labelling step of iteration 1 (the real question_evaluate stage, launched by
  the driver) on the same generated questions: kept = labelled minus the label drops, whatever p̂.
- no_rep_penalty: the plan's Challenger step of iteration 1 (the real Challenger stage, 1 step,
  launched by the driver against a real Solver server): each step's mean reward equals its mean
  uncertainty term while the logged penalty is non-zero.
The model chains of all experiments (single_model's included) are checked in tests/test_experiments.py.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from infra.stage_kit import read_jsonl, read_manifest
from pipeline.config import load_pipeline_config
from pipeline.driver import DEMO_PRESET, Driver
from pipeline.experiments import get_experiment
from pipeline.planner import plan_devices
from question_evaluate.filtering import REASONS
from verl.utils.logger import read_metrics

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
SETS = ["evaluate=false", "num_questions=32"]
LABEL_DROPS = ("no_answer", "label_none")  # the paper profile's label drops


@pytest.fixture(scope="module")
def storage(tmp_path_factory: pytest.TempPathFactory, demo_model_dir: str) -> Path:
    root = tmp_path_factory.mktemp("experiments")
    # the demo's base model (writes parseable questions and boxed answers), built once per test run
    (root / "tiny-qwen3-rzero").symlink_to(demo_model_dir, target_is_directory=True)
    return root


@pytest.fixture(scope="module")
def base_challenger_run(storage: Path) -> Path:
    """One real run of the no_rl_challenger experiment through main.sh."""
    env = {**os.environ, "STORAGE_PATH": str(storage), "RZERO_SKIP_SETUP": "1"}
    cmd = ["bash", str(ROOT / "scripts" / "main.sh"), str(storage / "tiny-qwen3-rzero"), "nrc"]
    cmd += ["--experiment", "no_rl_challenger", "--preset", DEMO_PRESET, *(f"--set={s}" for s in SETS)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1500)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return storage / "nrc"


def _driver(storage: Path, tag: str, experiment: str, monkeypatch: pytest.MonkeyPatch, *sets: str) -> Driver:
    monkeypatch.setenv("STORAGE_PATH", str(storage))
    pipe = load_pipeline_config(DEMO_PRESET, [*SETS, f"experiment={experiment}", *sets])
    base = str(storage / "tiny-qwen3-rzero")
    return Driver(base, tag, pipe, plan_devices([], cpu_ranks=pipe.cpu_ranks), str(ROOT / DEMO_PRESET))


def _step(experiment: str, stage: str):
    (step,) = [s for s in get_experiment(experiment).iteration(1) if s.stage == stage]
    return step


def test_no_rl_challenger_end_to_end(base_challenger_run: Path, storage: Path) -> None:
    run, base = base_challenger_run, str(storage / "tiny-qwen3-rzero")
    record = json.loads((run / "run.json").read_text())
    assert record["experiment"] == "no_rl_challenger"
    assert not (run / "iter_1" / "challenger").exists()
    generated = read_manifest(run / "iter_1" / "question_generate")
    assert generated["inputs"]["model"] == base and generated["counts"]["valid"] > 0
    labelled = read_manifest(run / "iter_1" / "question_evaluate")
    assert labelled["inputs"]["solver"] == base
    solver = read_manifest(run / "iter_1" / "solver")
    assert solver["inputs"]["solver_init"] == base
    assert solver["inputs"]["dataset"] == labelled["outputs"]["dataset"]
    assert (Path(solver["outputs"]["model"]) / "config.json").is_file()
    summary = (run / "summary.md").read_text()
    assert "- **experiment**: no_rl_challenger" in summary and "| challenger | not run |" in summary


def test_no_filter_keeps_every_labelled_question(
    base_challenger_run: Path, storage: Path, monkeypatch
) -> None:
    driver = _driver(storage, "nf", "no_filter", monkeypatch)
    # the same generated questions as the run above (a copy of its finished generation folder)
    shutil.copytree(
        base_challenger_run / "iter_1" / "question_generate", driver.run_dir / "iter_1" / "question_generate"
    )
    driver.run_step(_step("no_filter", "question_evaluate"), 1)
    stage = driver.run_dir / "iter_1" / "question_evaluate"
    stats = json.loads((stage / "filter_stats.json").read_text())
    assert stats["band"] == [0.0, 1.0]
    rows = read_jsonl(stage / "labelled.jsonl")
    drops = {reason: sum(r["reason"] == reason for r in rows) for reason in REASONS}
    assert stats["valid"] == len(rows) > 0
    assert stats["kept"] == len(rows) - sum(drops[r] for r in LABEL_DROPS)
    assert drops["p_below_band"] == drops["p_above_band"] == 0
    # every question with a usable label is kept, p̂ outside the profile's band included
    assert all(r["kept"] == (r["reason"] is None) for r in rows)
    assert all(r["kept"] for r in rows if (r.get("label") or "").strip() not in ("", "None"))
    outside = [r for r in rows if r["kept"] and not 0.25 <= r["p_hat"] <= 0.75]
    assert outside  # seeded: 31 of the 32 questions lie outside the paper's band, all kept
    print(f"no_filter: {stats['kept']} of {len(rows)} kept, {len(outside)} with p_hat outside [0.25, 0.75]")


def test_no_rep_penalty_reward_is_the_uncertainty(storage: Path, monkeypatch) -> None:
    one_step = [
        "trainer.max_steps=1",
        "data.max_response_length=40",
        "worker.reward.reward_kwargs.solver_max_tokens=40",
    ]
    driver = _driver(
        storage, "nrp", "no_rep_penalty", monkeypatch, f"challenger_overrides=[{','.join(one_step)}]"
    )
    driver.run_step(_step("no_rep_penalty", "challenger"), 1)
    manifest = read_manifest(driver.run_dir / "iter_1" / "challenger")
    assert manifest["config"]["worker"]["reward"]["reward_kwargs"]["penalty_weight"] == 0.0
    metrics = read_metrics(manifest["outputs"]["metrics"])
    assert len(metrics) == 1
    for row in metrics:
        # paper profile: reward = max(0, uncertainty) = uncertainty (invalid: 0 both); the penalty
        # that would apply is logged and non-zero (every question is at least its own cluster, 1/B)
        assert row["reward/mean"] == pytest.approx(row["reward/uncertainty"], abs=1e-6)
        assert row["reward/penalty"] > 0
        assert row["reward/min"] >= 0.0
