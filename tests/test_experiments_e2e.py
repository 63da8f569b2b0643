"""The experiments that share no stage with the demo run, end to end on real stages through main.sh,
demo scale (the demo's preset: 32 questions, evaluation off, one training rank), the tiny model
taught the R-Zero formats.

- no_rl_challenger: no Challenger folder, the questions come from the base model (the generation
  manifest's inputs), the Solver trains on them from the base model.
- no_rep_penalty: one Challenger step; from the rollouts the stage recorded (what the Challenger
  wrote, the Solver's answers, the reward): each reward equals its uncertainty term, recomputed here
  from p̂ (and p̂ from the answers where they are plain integers), while the penalty that would have
  applied is logged and non-zero; the rest of the iteration runs on its questions.
single_model runs in tests/test_main_demo.py on top of the demo run (it reuses its stages), no_filter
as the quarter rehearsal (tests/test_rehearsal.py); the model chains of all experiments over several
iterations are in tests/test_experiments.py.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections import Counter
from pathlib import Path

import pytest

from infra.stage_kit import read_jsonl, read_manifest
from pipeline.driver import DEMO_PRESET
from verl.utils.logger import read_metrics

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
# One training rank per stage: what makes each experiment does not depend on the ranks (the demo
# run, tests/test_main_demo.py, trains on two).
SETS = ["evaluate=false", "num_questions=32", "cpu_ranks=1"]
INTEGER = re.compile(r"-?[1-9]\d*|0")


@pytest.fixture(scope="module")
def storage(tmp_path_factory: pytest.TempPathFactory, demo_model_dir: str) -> Path:
    root = tmp_path_factory.mktemp("experiments")
    # the demo's base model (writes parseable questions and boxed answers), built once per test run
    (root / "tiny-qwen3-rzero").symlink_to(demo_model_dir, target_is_directory=True)
    return root


def _main(storage: Path, tag: str, experiment: str, *sets: str) -> Path:
    """`main.sh BASE TAG --experiment NAME --preset demo --set ...` to the end; the run folder."""
    env = {**os.environ, "STORAGE_PATH": str(storage), "RZERO_SKIP_SETUP": "1"}
    cmd = ["bash", str(ROOT / "scripts" / "main.sh"), str(storage / "tiny-qwen3-rzero"), tag]
    cmd += ["--experiment", experiment, "--preset", DEMO_PRESET, *(f"--set={s}" for s in [*SETS, *sets])]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1500)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    run = storage / tag
    assert json.loads((run / "run.json").read_text())["experiment"] == experiment
    return run


def test_no_rl_challenger_end_to_end(storage: Path) -> None:
    run, base = _main(storage, "nrc", "no_rl_challenger"), str(storage / "tiny-qwen3-rzero")
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


def test_no_rep_penalty_end_to_end(storage: Path) -> None:
    one_step = [
        "trainer.max_steps=1",
        "data.max_response_length=40",
        "worker.reward.reward_kwargs.solver_max_tokens=40",
    ]
    run = _main(storage, "nrp", "no_rep_penalty", f"challenger_overrides=[{','.join(one_step)}]")
    challenger = read_manifest(run / "iter_1" / "challenger")
    reward_kwargs = challenger["config"]["worker"]["reward"]["reward_kwargs"]
    assert reward_kwargs["penalty_weight"] == 0.0
    (metrics,) = read_metrics(challenger["outputs"]["metrics"])
    assert metrics["reward/penalty"] > 0  # the penalty that would have applied, logged
    rollouts = read_jsonl(run / "iter_1" / "challenger" / "train" / "rollouts" / "step_1.jsonl")
    assert len(rollouts) == 8 * 4  # the demo's 8 prompts x 4 rollouts, each recorded with its reward
    checked = 0
    for row in rollouts:
        if not row["valid"]:
            assert row["overall"] == 0.0  # paper profile: an invalid question earns 0
            continue
        # paper profile without the penalty: reward = max(0, 1 - 2|p̂ - 0.5|), the uncertainty itself
        expected = 1.0 - 2.0 * abs(row["p_hat"] - 0.5)
        assert row["overall"] == pytest.approx(row["uncertainty"]) == pytest.approx(max(0.0, expected))
        assert row["penalty"] >= 1 / len(rollouts)  # each question is at least its own cluster
        answers = row["solver_answers"]
        assert len(answers) == reward_kwargs["solver_votes"] and row["question"]
        if answers and all(a is not None and INTEGER.fullmatch(a) for a in answers):
            # plain integers are equal exactly when equal as strings: p̂ = largest group / m
            assert row["p_hat"] == pytest.approx(max(Counter(answers).values()) / len(answers))
            checked += 1
    assert sum(r["valid"] for r in rollouts) > 0 and checked > 0
    # the rest of the iteration ran on this Challenger's questions
    generated = read_manifest(run / "iter_1" / "question_generate")
    assert generated["inputs"]["model"] == challenger["outputs"]["model"]
    assert read_manifest(run / "iter_1" / "solver") is not None
    print(
        f"no_rep_penalty: {sum(r['valid'] for r in rollouts)} valid of {len(rollouts)}, {checked} p̂ recomputed"
    )
