"""Run summary: a hand-built run folder (one finished iteration, one interrupted) -> summary.md + PNGs."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from matplotlib.image import imread

from infra.stage_kit import write_manifest
from pipeline.summary import main, write_run_summary
from verl.utils.logger import Tracker

REPO = Path(__file__).resolve().parents[1]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# The engine's config as a training stage records it (nested, as PPOConfig.to_dict() gives it).
CHALLENGER_CONFIG = {
    "profile": "rzero_code",
    "data": {"rollout_batch_size": 32, "max_response_length": 256},
    "algorithm": {"kl_coef": 0.01},
    "worker": {
        "actor": {"optim": {"lr": 1e-6}, "prompts_per_update": 16, "loss_agg_mode": "microbatch-token-mean"},
        "rollout": {"n": 4, "temperature": 1.0},
        "reward": {"reward_kwargs": {"profile": "rzero_code"}},
    },
    "trainer": {"max_steps": 5},
}
CHALLENGER_ROWS = [
    {"reward/mean": 0.10, "reward/uncertainty": 0.30, "reward/penalty": 0.20, "reward/valid": 0.50},
    {"reward/mean": 0.15, "reward/uncertainty": 0.35, "reward/penalty": 0.20, "reward/valid": 0.60},
    {"reward/mean": 0.22, "reward/uncertainty": 0.40, "reward/penalty": 0.18, "reward/valid": 0.70},
    {"reward/mean": 0.30, "reward/uncertainty": 0.45, "reward/penalty": 0.15, "reward/valid": 0.80},
    {"reward/mean": 0.3125, "reward/uncertainty": 0.4375, "reward/penalty": 0.125, "reward/valid": 0.875},
]


def _metrics(stage_dir: Path, rows: list[dict]) -> None:
    """metrics.jsonl written by the engine's own logger, steps 1..len(rows)."""
    with Tracker(["jsonl"], stage_dir / "train", "rzero", "test") as tracker:
        for step, row in enumerate(rows, start=1):
            tracker.log({**row, "response_length/mean": 100.0 + step, "timing_s/step": 2.5}, step)


def _build_run(root: Path) -> Path:
    run = root / "tiny-run"
    run.mkdir()
    (run / "run.json").write_text(
        json.dumps({"base_model": "tiny-qwen3", "tag": "tiny-run", "profile": "rzero_code", "iterations": 2})
    )
    it1 = run / "iter_1"
    write_manifest(
        it1 / "challenger",
        "challenger",
        {"model": "x"},
        config=CHALLENGER_CONFIG,
        counts={"steps": 5},
        timings_s={"total": 125.0, "train": 120.0},
    )
    _metrics(it1 / "challenger", CHALLENGER_ROWS)
    write_manifest(
        it1 / "question_generate",
        "question_generate",
        {"questions": "q.jsonl"},
        config={"n_questions": 40, "temperature": 1.0},
        counts={"generated": 40, "valid": 32, "invalid": 8},
        timings_s={"generate": 30.5, "load": 4.5},  # no "total": the sum (35 s) is shown
    )
    write_manifest(
        it1 / "question_evaluate",
        "question_evaluate",
        {"dataset": "train.parquet"},
        config={"m": 9, "band": [0.3, 0.8]},
        counts={"valid": 32, "kept": 12, "dropped": {"band": 15, "empty_label": 3, "proof": 2}},
        timings_s={"total": 61.0},
    )
    write_manifest(
        it1 / "solver",
        "solver",
        {"model": "y"},
        config={"worker": {"actor": {"optim": {"lr": 1e-6}}, "rollout": {"n": 5}}},
        counts={"steps": 3},
        timings_s={"total": 3725.0},
        notes=["dataset smaller than one batch: rollout batch lowered to 12"],
    )
    _metrics(it1 / "solver", [{"reward/mean": m, "reward/accuracy": m} for m in (0.25, 0.5, 0.75)])
    (it1 / "evaluate").mkdir()
    results = {
        "label": "solver iter 1",
        "benchmarks": {"gsm8k": {"accuracy": 50.0}, "math500": {"accuracy": 25.0}},
    }
    (it1 / "evaluate" / "results.json").write_text(json.dumps(results))
    write_manifest(it1 / "evaluate", "evaluate", {"results": "results.json"}, timings_s={"total": 10.0})

    # Iteration 2 was killed during question generation: its folder exists, its manifest does not.
    it2 = run / "iter_2"
    write_manifest(
        it2 / "challenger", "challenger", {"model": "z"}, counts={"steps": 5}, timings_s={"total": 90.0}
    )
    _metrics(it2 / "challenger", CHALLENGER_ROWS[:2])
    (it2 / "question_generate").mkdir(parents=True)
    return run


def _section(markdown: str, iteration: int) -> str:
    return markdown.split(f"## Iteration {iteration}\n", 1)[1].split("\n## Iteration", 1)[0]


def _table(text: str, heading: str) -> dict[str, list[str]]:
    """The table under `### heading`: first cell -> the other cells (header and rule skipped)."""
    rows = []
    for line in text.split(f"### {heading}\n", 1)[1].strip().splitlines():
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in line.strip("|").split("|")])
    return {row[0]: row[1:] for row in rows[2:]}


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    run_dir = _build_run(tmp_path_factory.mktemp("runs"))
    path = write_run_summary(run_dir)
    assert path == run_dir / "summary.md"
    return run_dir, path.read_text()


def test_header_and_iteration_order(run: tuple[Path, str]) -> None:
    run_dir, md = run
    assert "- **base_model**: tiny-qwen3" in md and "- **profile**: rzero_code" in md
    assert "- **iterations found**: 1, 2" in md
    assert md.index("## Iteration 1") < md.index("## Iteration 2")
    # Re-written after every iteration: the same run gives the same file (a resumed run can be compared).
    assert write_run_summary(run_dir).read_text() == md


def test_stage_table_counts_timings_and_missing_stages(run: tuple[Path, str]) -> None:
    _, md = run
    stages = _table(_section(md, 1), "Stages")
    assert stages["challenger"] == ["done", "2m 05s", "steps 5"]
    assert stages["question_generate"] == ["done", "35.0 s", "generated 40, valid 32, invalid 8"]
    # Missing grader_timeouts is shown as a dash; dropped is the sum of the reasons (15 + 3 + 2).
    assert stages["question_evaluate"] == [
        "done",
        "1m 01s",
        "valid 32, kept 12, dropped 20, grader_timeouts —",
    ]
    assert stages["solver"] == ["done", "1h 02m 05s", "steps 3"]
    assert stages["**total**"][1] == "1h 05m 56s"  # 125 + 35 + 61 + 3725 + 10 = 3956 s
    partial = _table(_section(md, 2), "Stages")
    assert partial["challenger"][0] == "done"
    assert partial["question_generate"] == ["unfinished", "—", "—"]
    for stage in ("question_evaluate", "solver", "evaluate"):
        assert partial[stage] == ["not run", "—", "—"]


def test_questions_table_has_drop_reasons(run: tuple[Path, str]) -> None:
    _, md = run
    questions = _table(_section(md, 1), "Questions")
    assert questions["generated"] == ["40"] and questions["valid (parsed)"] == ["32"]
    assert questions["kept"] == ["12"]
    assert questions["dropped: band"] == ["15"]
    assert questions["dropped: empty_label"] == ["3"]
    assert questions["dropped: proof"] == ["2"]
    assert questions["grader timeouts"] == ["—"]
    assert _table(_section(md, 2), "Questions")["generated"] == ["—"]


def test_reward_plots_are_linked_and_valid_pngs(run: tuple[Path, str]) -> None:
    run_dir, md = run
    links = re.findall(r"!\[[^\]]*\]\((plots/[^)]+\.png)\)", md)
    assert links == [
        "plots/iter_1_challenger_reward.png",
        "plots/iter_1_solver_reward.png",
        "plots/iter_2_challenger_reward.png",
    ]
    for link in links:
        data = (run_dir / link).read_bytes()
        assert data.startswith(PNG_SIGNATURE)
        assert len(data) > 10_000  # axes, 4 curves, legend: far above an empty image
        height, width, _ = imread(run_dir / link).shape
        assert (width, height) == (640, 360)


def test_last_step_metrics_notes_config_and_evaluation(run: tuple[Path, str]) -> None:
    _, md = run
    it1 = _section(md, 1)
    last = _table(it1, "Last training step")
    assert last["reward/mean"] == ["0.3125", "0.75"]
    assert last["reward/penalty"] == ["0.125", "—"]  # the Solver does not log it
    assert last["response_length/mean"] == ["105", "103"]
    assert "- **solver**: dataset smaller than one batch: rollout batch lowered to 12" in it1
    assert (
        "- **challenger**: profile=rzero_code, lr=1e-06, rollout_batch_size=32, prompts_per_update=16, n=4, "
        'max_steps=5, loss_agg_mode=microbatch-token-mean, kl_coef=0.01, reward_kwargs={"profile":"rzero_code"}'
    ) in it1
    assert "- **question_evaluate**: band=[0.3,0.8], m=9" in it1
    evaluation = _table(it1, "Evaluation")
    assert evaluation["solver iter 1"] == ["37.50", "37.50", "50.00", "25.00"]  # MATH AVG = (50 + 25) / 2
    assert "### Evaluation" not in _section(md, 2)


def test_iteration_limit_and_unreadable_files(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    write_manifest(run_dir / "iter_2" / "challenger", "challenger", {"model": "a"})
    (run_dir / "iter_10" / "solver" / "train").mkdir(parents=True)
    (run_dir / "iter_10" / "solver" / "manifest.json").write_text("{not json")
    (run_dir / "iter_10" / "solver" / "train" / "metrics.jsonl").write_text('{"step": 1\n{"step": 2}\n')
    md = write_run_summary(run_dir).read_text()
    assert md.index("## Iteration 2") < md.index("## Iteration 10")  # numeric, not string order
    section = _section(md, 10)
    assert _table(section, "Stages")["solver"][0] == "unreadable"
    assert "- **solver**: manifest.json:" in section and "- **solver**: train/metrics.jsonl:" in section
    # Up to iteration 3: iteration 10 is left out, iteration 3 (not started) is listed as not run.
    md = write_run_summary(run_dir, iteration=3).read_text()
    assert "## Iteration 10" not in md
    assert _table(_section(md, 3), "Stages")["challenger"][0] == "not run"


def test_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run_dir = tmp_path / "run"
    write_manifest(run_dir / "iter_1" / "challenger", "challenger", {"model": "a"}, counts={"steps": 5})
    assert main([str(run_dir)]) == 0
    assert capsys.readouterr().out.strip() == str(run_dir / "summary.md")
    with pytest.raises(SystemExit) as exit_info:
        main([str(tmp_path / "absent")])
    assert exit_info.value.code == 2
    (run_dir / "summary.md").unlink()
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline.summary", str(run_dir)], cwd=REPO, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    assert "| challenger | done | — | steps 5 |" in (run_dir / "summary.md").read_text()
