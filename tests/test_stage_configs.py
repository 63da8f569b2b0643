"""The engine config of both training stages, built in one place (training/common.py): profile
overlay < stage yaml < the run's files < overrides; the Solver prompt; what the driver launches."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.config import load_pipeline_config
from pipeline.launch import challenger_config, solver_config
from pipeline.planner import plan_devices
from rzero.prompts import SOLVER_SYSTEM_PROMPT
from training.common import TrainStageConfig, build_engine_config
from verl.trainer.config import CONFIG_DIR, ConfigError


def _stage(stage: str, profile: str = "paper", args: list[str] | None = None) -> TrainStageConfig:
    return TrainStageConfig(stage=stage, model="m", out_dir="/tmp/x", profile=profile, engine_args=args or [])


def test_profiles_differ_where_the_spec_says() -> None:
    paper = build_engine_config(_stage("challenger"))
    code = build_engine_config(_stage("challenger", "rzero_code"))
    assert (paper.worker.actor.prompts_per_update, code.worker.actor.prompts_per_update) == (128, 16)
    assert paper.worker.actor.loss_agg_mode == "token-mean"
    assert code.worker.actor.loss_agg_mode == "microbatch-token-mean"
    assert code.worker.reward.reward_kwargs["profile"] == "rzero_code"
    assert code.worker.reward.reward_kwargs["solver_votes"] == 10  # the stage file's kwargs survive the merge
    solver = build_engine_config(_stage("solver", "rzero_code"))
    assert solver.worker.actor.prompts_per_update == 128 and solver.worker.rollout.n == 5


def test_run_files_and_overrides_beat_the_profile(tmp_path: Path) -> None:
    extra = tmp_path / "extra.yaml"
    extra.write_text("worker:\n  actor:\n    prompts_per_update: 32\n")
    cfg = build_engine_config(_stage("challenger", "rzero_code", [f"config={extra}"]))
    assert cfg.worker.actor.prompts_per_update == 32
    cfg = build_engine_config(
        _stage("challenger", "rzero_code", [f"config={extra}", "worker.actor.prompts_per_update=64"])
    )
    assert cfg.worker.actor.prompts_per_update == 64


def test_solver_stage_prompt_is_the_prompt_labels_were_voted_with() -> None:
    assert build_engine_config(_stage("solver")).data.system_prompt == SOLVER_SYSTEM_PROMPT
    assert build_engine_config(_stage("challenger")).data.system_prompt == ""


def test_unknown_profile_is_refused() -> None:
    with pytest.raises(ValueError, match="paper, rzero_code"):
        build_engine_config(_stage("solver", "nope"))
    with pytest.raises(ConfigError, match="profile='nope'"):
        load_pipeline_config(None, ["profile=nope"])


def test_the_driver_launches_the_demo_stages_with_the_tiny_preset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    pipe = load_pipeline_config("configs/pipeline/demo.yaml")
    plan = plan_devices(None, None, pipe.cpu_ranks)
    challenger = build_engine_config(challenger_config(pipe, plan, "s", "c", Path("/tmp/o"), pipe.seed))
    assert challenger.trainer.max_steps == 2 and challenger.data.max_response_length == 40
    assert challenger.worker.actor.prompts_per_update == 4  # tiny_cpu.yaml beats the profile's 128
    assert challenger.trainer.n_devices_per_node == plan.trainer_world == 2
    solver = build_engine_config(solver_config(pipe, plan, "s", "d.parquet", Path("/tmp/o"), pipe.seed))
    assert solver.worker.actor.model.model_path == "s" and solver.trainer.max_steps == 2
    assert str(CONFIG_DIR / "tiny_cpu.yaml") in " ".join(
        challenger_config(pipe, plan, "s", "c", Path("/o"), 0).engine_args
    )
