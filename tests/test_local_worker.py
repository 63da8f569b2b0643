"""Local worker mode (verl/workers/local.py): the FSDP actor/ref worker without Ray and without vLLM,
on 1 and 2 spawned ranks (gloo, a free port), computes what the Ray worker group computes; and the
FSDP2 details the GPU path depends on, checked on 2 real ranks."""

from __future__ import annotations

import pytest
import torch
from engine_batches import random_batch

from verl.protocol import DataProto
from verl.trainer.config import CONFIG_DIR, load_config

pytestmark = pytest.mark.slow


def _config(model: str):
    return load_config(
        [
            f"config={CONFIG_DIR / 'toy.yaml'}",
            f"worker.actor.model.model_path={model}",
            "trainer.device=cpu",
            "data.rollout_batch_size=2",
            "worker.actor.prompts_per_update=2",
            "worker.rollout.n=4",
            "worker.actor.micro_batch_size_per_device_for_update=2",
            # Budgets that split the rows into several micro-batches of different sizes per rank.
            "worker.actor.max_tokens_per_micro_batch_for_update=72",
            "worker.actor.max_tokens_per_micro_batch_for_experience=72",
            "worker.ref.max_tokens_per_micro_batch_for_experience=72",
        ]
    )


def _fsdp_details(group) -> dict:
    """Run on every rank after the passes: what the GPU path relies on, seen on real FSDP2 shards."""
    from torch.distributed.tensor import DTensor

    from verl.utils import fsdp_utils

    worker = group.worker
    module = worker.actor_module
    root_sharded = isinstance(module.model.embed_tokens.weight, DTensor)  # after the last no-grad pass
    weights = list(fsdp_utils.iter_full_weights(module))
    names = [name for name, _ in weights]
    by_name = dict(weights)
    # Gradients of one backward, clipped by the engine and by torch's reference implementation.
    module.train()
    micro = group.worker.actor.micro_batches(random_batch(module.config.vocab_size).to("cpu"), 0, 8)[0][0]
    log_probs, _ = group.worker.actor._log_probs(micro, 1.0)
    (log_probs * 50).sum().backward()
    grads = [p.grad.full_tensor().clone() for p in module.parameters()]
    norm = fsdp_utils.clip_grad_norm(module.parameters(), 1.0)
    clipped = [p.grad.full_tensor() for p in module.parameters()]
    ref_norm = torch.nn.utils.get_total_norm(grads)  # torch's reference on the full gradients
    grads = [g * min(1.0, 1.0 / (float(ref_norm) + 1e-6)) for g in grads]
    worker.optimizer.zero_grad(set_to_none=True)
    return {
        "root_sharded": root_sharded,
        "tied_once": by_name["lm_head.weight"] is by_name["model.embed_tokens.weight"],
        "weight_names": names,
        "ref_dtype": str(next(worker.ref.module.parameters()).dtype),
        "clip": (norm, float(ref_norm), max(float((a - b).abs().max()) for a, b in zip(clipped, grads))),
    }


def _ray_passes(config, batch: DataProto) -> dict:
    import ray

    from verl.single_controller.resource_pool import ResourcePool
    from verl.single_controller.worker_group import RayWorkerGroup
    from verl.trainer.ray_trainer import init_ray
    from verl.workers.fsdp_workers import FSDPWorker

    init_ray(config, 2)
    group = RayWorkerGroup(ResourcePool(1, 2, use_gpu=False), FSDPWorker, (config, "actor_ref", 1))
    try:
        group.init_model()
        batch = batch.select()
        batch.union(group.compute_log_prob(batch))
        batch.union(group.compute_ref_log_prob(batch))
        metrics = group.update_actor(batch).meta_info["metrics"]
        after = group.compute_log_prob(
            batch.select(["input_ids", "attention_mask", "position_ids", "responses"])
        )
    finally:
        group.shutdown()
        ray.shutdown()
    return {
        "old_log_probs": batch.batch["old_log_probs"],
        "new_log_probs": after.batch["old_log_probs"],
        "metrics": metrics,
    }


@pytest.fixture(scope="module")
def runs(tiny_model_dir: str) -> dict:
    from verl.workers.local import grpo_passes, run_local

    config = _config(tiny_model_dir)
    batch = random_batch(2048)
    return {
        "local1": run_local(grpo_passes, 1, config, batch)[0],
        "local2": run_local(grpo_passes, 2, config, batch, "actor_ref", _fsdp_details),
        "ray2": _ray_passes(config, batch),
    }


def test_local_worker_on_1_and_2_ranks_matches_the_ray_path(runs: dict) -> None:
    ray2, local1, (local2, local2_rank1) = runs["ray2"], runs["local1"], runs["local2"]
    for run in (local1, local2, local2_rank1):
        torch.testing.assert_close(run["old_log_probs"], ray2["old_log_probs"], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(run["new_log_probs"], ray2["new_log_probs"], atol=1e-5, rtol=1e-5)
        for key in ("actor/loss", "actor/grad_norm"):
            assert run["metrics"][key] == pytest.approx(ray2["metrics"][key], rel=1e-4), key
    # The update really moved the policy, and the loss is not trivially zero.
    assert (ray2["new_log_probs"] - ray2["old_log_probs"]).abs().max() > 1e-3
    assert abs(ray2["metrics"]["actor/loss"]) > 1e-4


def test_fsdp_details_of_the_gpu_path_on_two_ranks(runs: dict) -> None:
    for rank in runs["local2"]:
        # FSDP2 leaves the root (embedding, head) unsharded after a forward; the actor reshards it
        # after its no-grad passes.
        assert rank["root_sharded"]
        # The tied embedding is gathered once per sync and sent under both names.
        assert rank["tied_once"] and rank["weight_names"].count("lm_head.weight") == 1
        assert rank["ref_dtype"] == "torch.float32"  # the run's dtype: fp32 on CPU, bf16 on GPU
        norm, ref_norm, max_diff = rank["clip"]
        assert norm == pytest.approx(ref_norm, rel=1e-4) and norm > 1.0  # the clip was active
        assert max_diff < 1e-6
