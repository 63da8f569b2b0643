"""The paper's experiments as plans (pipeline/experiments.py), driven by the real driver.

The model chain of each experiment is checked from what the driver launches: `pipeline.launch`'s
real `run_stage` writes each stage's stage_config.json and runs `python -m <stage>`; here that
process is replaced by a recorder that writes the stage's manifest (a real stage adds nothing to
which model a stage starts from, and takes minutes). The reward and filter semantics of the
experiments are checked on real stage outputs in tests/test_experiments_e2e.py.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

import pipeline.launch
from infra.stage_kit import read_manifest, read_stage_config, write_manifest
from pipeline.config import load_pipeline_config
from pipeline.driver import Driver, main
from pipeline.experiments import EXPERIMENTS, get_experiment
from pipeline.planner import plan_devices
from pipeline.preflight import check_rerun, run_record
from rewards.challenger_reward import challenger_scores, uncertainty
from verl.trainer.config import ConfigError

ROOT = Path(__file__).resolve().parents[1]
BASE = "/models/base"
MODULE_STAGE = {"evaluation": "evaluate"}  # the other stages are named by their module or config


@pytest.fixture
def launches(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, dict]]:
    """Every stage process the driver starts, as (stage, stage_config.json); each 'finishes' at once."""
    recorded: list[tuple[str, dict]] = []

    def record(cmd: list[str]) -> int:
        module, config_path = cmd[2], Path(cmd[4])
        config = read_stage_config(config_path)
        stage = config.get("stage") or MODULE_STAGE.get(module, module)
        stage_dir = config_path.parent
        recorded.append((stage, config))
        outputs = {"model": str(stage_dir / "model")}
        outputs.update(questions=str(stage_dir / "questions.jsonl"), dataset=str(stage_dir / "train.parquet"))
        write_manifest(stage_dir, stage, outputs=outputs)
        return 0

    monkeypatch.setattr(pipeline.launch, "run_process", record)
    return recorded


def _run(tmp_path: Path, experiment: str, iterations: int, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("STORAGE_PATH", str(tmp_path))
    pipe = load_pipeline_config(None, [f"experiment={experiment}", f"iterations={iterations}"])
    driver = Driver(BASE, experiment, pipe, plan_devices([], cpu_ranks=2), None)
    driver.run()
    return driver.run_dir


def _out(run: Path, i: int, stage: str) -> str:
    return str(run / f"iter_{i}" / stage / "model")


def _by_folder(launches: list[tuple[str, dict]]) -> dict[str, dict]:
    """stage_config by 'iter_<i>/<stage>' (evaluation configs by their out folder)."""
    found = {}
    for _, config in launches:
        folder = Path(config.get("out_dir") or config.get("out"))
        found[f"{folder.parent.name}/{folder.name}"] = config
    return found


def test_rzero_chains_challenger_and_solver_separately(tmp_path, monkeypatch, launches) -> None:
    run = _run(tmp_path, "rzero", 2, monkeypatch)
    cfg = _by_folder(launches)
    assert [s for s, _ in launches] == [
        "evaluate",
        *["challenger", "question_generate", "question_evaluate", "solver", "evaluate"] * 2,
    ]
    assert (cfg["iter_1/challenger"]["model"], cfg["iter_1/challenger"]["solver_model"]) == (BASE, BASE)
    c2 = cfg["iter_2/challenger"]
    assert (c2["model"], c2["solver_model"]) == (_out(run, 1, "challenger"), _out(run, 1, "solver"))
    assert cfg["iter_2/question_generate"]["model"] == _out(run, 2, "challenger")
    assert cfg["iter_2/question_evaluate"]["solver"] == _out(run, 1, "solver")
    assert cfg["iter_2/question_evaluate"]["band"] is None  # the profile's
    assert cfg["iter_2/solver"]["model"] == _out(run, 1, "solver")
    assert cfg["iter_2/evaluate"]["model"] == _out(run, 2, "solver")
    assert not any("penalty_weight" in a for a in c2["engine_args"])
    record = json.loads((run / "run.json").read_text())
    assert record["experiment"] == "rzero" and record["pipeline"]["experiment"] == "rzero"
    summary = (run / "summary.md").read_text()
    assert "- **experiment**: rzero" in summary
    assert "- **experiment plan**: the R-Zero loop" in summary


def test_no_rl_challenger_generates_from_the_base_model(tmp_path, monkeypatch, launches) -> None:
    run = _run(tmp_path, "no_rl_challenger", 2, monkeypatch)
    cfg = _by_folder(launches)
    assert "challenger" not in [s for s, _ in launches]
    assert not (run / "iter_1" / "challenger").exists() and not (run / "iter_2" / "challenger").exists()
    for i in (1, 2):
        assert cfg[f"iter_{i}/question_generate"]["model"] == BASE
        assert read_manifest(run / f"iter_{i}" / "question_generate") is not None
    assert cfg["iter_2/question_evaluate"]["solver"] == _out(run, 1, "solver")
    assert cfg["iter_2/solver"]["model"] == _out(run, 1, "solver")
    # the paper's "Base Challenger" row is iteration 1's Solver, and the tables say so
    assert cfg["iter_1/evaluate"]["label"] == "iter_1 (Base Challenger)"
    assert cfg["iter_2/evaluate"]["label"] == "iter_2"


def test_single_model_chain(tmp_path, monkeypatch, launches) -> None:
    run = _run(tmp_path, "single_model", 3, monkeypatch)
    cfg = _by_folder(launches)
    model = BASE  # M_0
    for i in (1, 2, 3):
        challenger = cfg[f"iter_{i}/challenger"]
        assert (challenger["model"], challenger["solver_model"]) == (model, model)  # M_{i-1} both
        assert cfg[f"iter_{i}/question_generate"]["model"] == _out(run, i, "challenger")
        assert cfg[f"iter_{i}/question_evaluate"]["solver"] == model
        assert cfg[f"iter_{i}/solver"]["model"] == _out(run, i, "challenger")
        model = _out(run, i, "solver")  # M_i
        assert cfg[f"iter_{i}/evaluate"]["model"] == model


def test_ablations_pass_their_options_to_the_stage(tmp_path, monkeypatch, launches) -> None:
    _run(tmp_path / "a", "no_rep_penalty", 1, monkeypatch)
    _run(tmp_path / "b", "no_filter", 1, monkeypatch)
    by_stage: dict[str, list[dict]] = {}
    for stage, config in launches:
        by_stage.setdefault(stage, []).append(config)
    no_penalty, plain = by_stage["challenger"][0], None
    assert "worker.reward.reward_kwargs.penalty_weight=0.0" in no_penalty["engine_args"]
    assert len(by_stage["challenger"]) == 2
    plain = by_stage["challenger"][1]
    assert not any("penalty_weight" in a for a in plain["engine_args"])
    bands = [c["band"] for c in by_stage["question_evaluate"]]
    assert bands == [None, [0.0, 1.0]]


def test_ten_iterations_resume_and_summary_order(tmp_path, monkeypatch, launches) -> None:
    run = _run(tmp_path, "rzero", 10, monkeypatch)
    assert len(launches) == 1 + 10 * 5
    assert _by_folder(launches)["iter_10/challenger"]["model"] == _out(run, 9, "challenger")
    for i in range(1, 11):  # results.json of each evaluation, as the evaluation stage writes them
        (run / f"iter_{i}" / "evaluate" / "results.json").write_text(
            json.dumps({"label": f"iter_{i}", "benchmarks": {"gsm8k": {"accuracy": float(i)}}})
        )
    (run / "eval_base" / "results.json").write_text(
        json.dumps({"label": "base", "benchmarks": {"gsm8k": {"accuracy": 0.5}}})
    )
    launches.clear()
    _run(tmp_path, "rzero", 10, monkeypatch)  # rerun: every stage is done, nothing is launched
    assert launches == []
    summary = (run / "summary.md").read_text()
    assert "- **iterations found**: 1, 2, 3, 4, 5, 6, 7, 8, 9, 10" in summary
    rows = [line.split("|")[1].strip() for line in summary.splitlines() if line.startswith("| iter_")]
    assert rows[:10] == [f"iter_{i}" for i in range(1, 11)]
    assert summary.index("## Iteration 2\n") < summary.index("## Iteration 10\n")
    assert (run / "plots" / "evaluation.png").stat().st_size > 0


def test_unknown_experiment_and_rerun_with_another_one(tmp_path) -> None:
    with pytest.raises(ConfigError, match="experiment='nope' is unknown: use one of rzero, no_rl_challenger"):
        load_pipeline_config(None, ["experiment=nope"])
    with pytest.raises(ValueError, match="unknown"):
        get_experiment("nope")
    plan = plan_devices([], cpu_ranks=2)
    first = run_record(BASE, "t", load_pipeline_config(None, []), plan, None)
    (tmp_path / "run.json").write_text(json.dumps(first))
    other = run_record(BASE, "t", load_pipeline_config(None, ["experiment=no_filter"]), plan, None)
    problems, _ = check_rerun(tmp_path, other, accept=False)
    assert len(problems) == 1 and "experiment: 'rzero' -> 'no_filter'" in problems[0].what
    # a run.json written before experiments existed ran the default one: not a change
    legacy = {k: v for k, v in first.items() if k != "experiment"}
    legacy["pipeline"] = {k: v for k, v in first["pipeline"].items() if k != "experiment"}
    (tmp_path / "run.json").write_text(json.dumps(legacy))
    assert check_rerun(tmp_path, first, accept=False)[0] == []


@pytest.mark.parametrize("profile", ["paper", "rzero_code"])
def test_reward_without_penalty_is_the_uncertainty_term(profile: str) -> None:
    valid, p_hat = [True, True, True, False], [0.5, 0.3, 1.0, 0.0]
    penalty = np.array([0.5, 0.25, 0.25, 0.25])
    scores = challenger_scores(valid, p_hat, penalty, profile, penalty_weight=0.0)
    invalid = 0.0 if profile == "paper" else -1.0
    assert scores == [
        uncertainty(0.5, profile),
        uncertainty(0.3, profile),
        uncertainty(1.0, profile),
        invalid,
    ]
    with_penalty = challenger_scores(valid, p_hat, penalty, profile)
    assert with_penalty[1] == pytest.approx(uncertainty(0.3, profile) - 0.25)


def test_dry_run_prints_each_experiments_plan_on_8_gpus(tmp_path, monkeypatch, capsys) -> None:
    gpus = ",".join(str(i) for i in range(8))
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": gpus, "STORAGE_PATH": str(tmp_path), "RZERO_SKIP_SETUP": "1"}
    # main.sh itself, once; then the driver's entry point in this process for the other experiments
    proc = subprocess.run(
        [
            "bash",
            str(ROOT / "scripts" / "main.sh"),
            "Qwen/Qwen3-4B-Base",
            "t",
            "--experiment",
            "no_rl_challenger",
            "--dry-run",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    outputs = {"no_rl_challenger": proc.stdout}
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", gpus)
    monkeypatch.setenv("STORAGE_PATH", str(tmp_path))
    for name in EXPERIMENTS:
        if name != "no_rl_challenger":
            assert main(["Qwen/Qwen3-4B-Base", "t", "--experiment", name, "--dry-run"]) == 0
            outputs[name] = capsys.readouterr().out
    assert not list(tmp_path.iterdir())  # a dry run creates nothing
    for name, out in outputs.items():
        assert f"3 iteration(s), experiment {name}" in out and f"experiment {name}: " in out
        assert "stage plan" in out and "  iteration 3:\n" in out
        assert "Solver GRPO: 3 x 15 steps on 8 rank(s)" in out
    base = outputs["no_rl_challenger"]
    assert "question_generate -> iter_2/question_generate from base" in base
    assert "challenger        -> " not in base and "effective engine config, challenger stage" not in base
    assert "label=iter_1 (Base Challenger)" in base
    assert "Challenger GRPO: 3 x 5 steps, trainer on ['0', '1', '2', '3']" in outputs["rzero"]
    assert "reward_kwargs={'penalty_weight': 0.0}" in outputs["no_rep_penalty"]
    assert "penalty_weight: 0.0" in outputs["no_rep_penalty"].split("effective engine config, challenger")[1]
    assert "keep p_hat in [0.0, 1.0] (no filtering" in outputs["no_filter"]
    single = outputs["single_model"]
    assert (
        "challenger        -> iter_2/challenger        from iter_1/solver, frozen Solver iter_1/solver"
        in single
    )
    assert "solver            -> iter_2/solver            from iter_2/challenger" in single


def _reusing(tmp_path: Path, tag: str, experiment: str, source: Path, monkeypatch, *sets: str) -> Path:
    monkeypatch.setenv("STORAGE_PATH", str(tmp_path))
    sets = (f"experiment={experiment}", "iterations=1", f"reuse_from={source}", *sets)
    pipe = load_pipeline_config(None, list(sets))
    driver = Driver(BASE, tag, pipe, plan_devices([], cpu_ranks=2), None)
    driver.run()
    return driver.run_dir


def test_ablations_reuse_the_main_runs_identical_stages(tmp_path, monkeypatch, launches) -> None:
    """`reuse_from`: a stage is linked, not run, exactly when the other run launched it with the same
    settings; everything downstream of a stage that differs runs here."""
    main_run = _run(tmp_path, "rzero", 1, monkeypatch)
    launches.clear()
    nf = _reusing(tmp_path, "nf", "no_filter", main_run, monkeypatch)
    # no_filter: the same Challenger and questions; its own labelling (open band), Solver, evaluation
    assert [s for s, _ in launches] == ["question_evaluate", "solver", "evaluate"]
    for stage in ("challenger", "question_generate"):
        assert (nf / "iter_1" / stage).is_symlink()
        assert (nf / "iter_1" / stage).resolve() == (main_run / "iter_1" / stage).resolve()
    assert (nf / "eval_base").resolve() == (main_run / "eval_base").resolve()  # the same base evaluation
    labelling = launches[0][1]
    assert labelling["band"] == [0.0, 1.0]
    assert labelling["questions"] == str(main_run / "iter_1" / "question_generate" / "questions.jsonl")
    assert "(reused: " in (nf / "summary.md").read_text()

    launches.clear()
    sm = _reusing(tmp_path, "sm", "single_model", main_run, monkeypatch)
    # single_model, iteration 1: Challenger, questions and labels are rzero's; the Solver starts from
    # the Challenger stage's output (M_1 = GRPO of Challenger_1), not from the base model
    assert [s for s, _ in launches] == ["solver", "evaluate"]
    assert all(
        (sm / "iter_1" / s).is_symlink() for s in ("challenger", "question_generate", "question_evaluate")
    )
    assert launches[0][1]["model"] == _out(main_run, 1, "challenger")

    launches.clear()
    other = _reusing(tmp_path, "rc", "rzero", main_run, monkeypatch, "profile=rzero_code")
    # another profile: every stage of the iteration runs; only the base model's evaluation, whose
    # settings the profile does not touch, is the other run's
    assert [s for s, _ in launches] == [
        "challenger",
        "question_generate",
        "question_evaluate",
        "solver",
        "evaluate",
    ]
    assert [p.name for p in other.rglob("*") if p.is_symlink()] == ["eval_base"]


def test_reuse_from_is_checked_before_anything_starts(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("STORAGE_PATH", str(tmp_path))
    (tmp_path / "other").mkdir()
    code = main(["/models/base", "t", "--reuse-from", str(tmp_path / "other"), "--dry-run"])
    assert code == 2
    (tmp_path / "other" / "run.json").write_text(json.dumps({"base_model": "/models/another"}))
    with pytest.raises(ConfigError, match="ran on base model /models/another, this run on /models/base"):
        Driver(
            BASE,
            "t",
            load_pipeline_config(None, [f"reuse_from={tmp_path / 'other'}"]),
            plan_devices([]),
            None,
        )
    with pytest.raises(ConfigError, match="this run's own folder"):
        (tmp_path / "t").mkdir()
        (tmp_path / "t" / "run.json").write_text(json.dumps({"base_model": BASE}))
        Driver(
            BASE, "t", load_pipeline_config(None, [f"reuse_from={tmp_path / 't'}"]), plan_devices([]), None
        )
