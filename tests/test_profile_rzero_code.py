"""The profiles (rzero/profiles.py) against RZERO_SPEC.md section 2 ("GRPO settings"): what `rzero_code`
changes in the engine config of each training stage (prompts per update, loss aggregation,
micro-batch sizes) and the iteration count the driver reads, per profile."""

from __future__ import annotations

import pytest

from pipeline.config import load_pipeline_config
from training.common import TrainStageConfig, build_engine_config
from verl.trainer.config import CONFIG_DIR, validate_config


def _engine(role: str, profile: str, args: list[str] | None = None):
    stage = TrainStageConfig(stage=role, model="Qwen/Qwen3-4B-Base", out_dir="/tmp/o", profile=profile)
    stage.engine_args = list(args or [])
    return build_engine_config(stage)


# role -> (prompts_per_update, loss_agg_mode, update micro-batch, experience micro-batch) per device
EXPECTED = {
    "rzero_code": {
        "challenger": (16, "microbatch-token-mean", 2, 8),
        "solver": (128, "microbatch-token-mean", 1, 1),
    },
    # paper: the dataclass defaults (4 and 16) stand; only the update size and the loss differ.
    "paper": {
        "challenger": (128, "token-mean", 4, 16),
        "solver": (128, "token-mean", 4, 16),
    },
}


@pytest.mark.parametrize("profile", ["paper", "rzero_code"])
@pytest.mark.parametrize("role", ["challenger", "solver"])
def test_batch_shapes_per_profile(profile: str, role: str) -> None:
    cfg = _engine(role, profile)
    actor = cfg.worker.actor
    prompts, loss, update_mb, experience_mb = EXPECTED[profile][role]
    assert (actor.prompts_per_update, actor.loss_agg_mode) == (prompts, loss)
    assert actor.micro_batch_size_per_device_for_update == update_mb
    assert actor.micro_batch_size_per_device_for_experience == experience_mb
    assert cfg.worker.ref.micro_batch_size_per_device_for_experience == experience_mb
    assert cfg.worker.reward.reward_kwargs["profile"] == profile
    # rzero_code reorders each rollout batch by length over the ranks (EasyR1's balance batch).
    assert cfg.trainer.balance_batch == (profile == "rzero_code")
    # The shapes validate on the authors' 8-GPU node, e.g. the Challenger's 16 x 4 = 64 responses
    # per update give 8 per device, which micro-batches of 2 divide.
    cfg.trainer.n_devices_per_node = 8
    validate_config(cfg, world_size=8, check_paths=False)


def test_a_preset_still_overrides_the_profile() -> None:
    cfg = _engine("solver", "rzero_code", [f"config={CONFIG_DIR / 'tiny_cpu.yaml'}"])
    assert cfg.worker.actor.micro_batch_size_per_device_for_update == 2  # tiny_cpu.yaml's value
    assert cfg.worker.actor.loss_agg_mode == "microbatch-token-mean"  # the profile's, untouched


@pytest.mark.parametrize(("profile", "iterations"), [("paper", 3), ("rzero_code", 5)])
def test_the_driver_runs_the_profiles_iterations(profile: str, iterations: int) -> None:
    assert load_pipeline_config(None, [f"profile={profile}"]).iterations == iterations
    # an explicit count wins
    assert load_pipeline_config(None, [f"profile={profile}", "iterations=2"]).iterations == 2
