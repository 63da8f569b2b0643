"""CUDA-only checks of the engine's GPU path (skipped on CPU machines; `bash scripts/gpu_check.sh`
runs them on a GPU node). Each spawns one local-worker rank (NCCL, world size 1): the batch comes
in on the CPU, the passes run in bf16 with the fused AdamW, and what the CPU tests can only check
by logic is checked here on the device."""

from __future__ import annotations

import pytest
import torch
from engine_batches import random_batch

from verl.trainer.config import CONFIG_DIR, load_config
from verl.utils.fsdp_utils import flash_attn_import_error

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def _config(model: str, *extra: str):
    return load_config(
        [
            f"config={CONFIG_DIR / 'toy.yaml'}",
            f"worker.actor.model.model_path={model}",
            "trainer.device=cuda",
            "trainer.n_devices_per_node=1",
            "data.rollout_batch_size=2",
            "worker.actor.prompts_per_update=2",
            "worker.rollout.n=4",
            "worker.actor.max_tokens_per_micro_batch_for_update=72",
            *extra,
        ]
    )


def _inspect(group) -> dict:
    """In the rank after the passes: where things live, and an HF export's dtype."""
    import tempfile

    from safetensors.torch import load_file
    from torch.distributed.tensor import DTensor

    worker = group.worker
    module = worker.actor_module
    state = [v for s in worker.optimizer.state.values() for v in s.values() if isinstance(v, torch.Tensor)]
    with tempfile.TemporaryDirectory() as tmp:
        group.export_hf(tmp)
        exported = {str(t.dtype) for t in load_file(f"{tmp}/model.safetensors").values()}
    return {
        "param_device": next(module.parameters()).to_local().device.type,
        "optimizer_devices": sorted({t.device.type for t in state}),
        "fused_adamw": bool(worker.optimizer.defaults.get("fused")),
        "root_sharded": isinstance(module.model.embed_tokens.weight, DTensor),
        "ref_dtype": str(next(worker.ref.module.parameters()).dtype),
        "export_dtypes": sorted(exported),
        "padding_free": worker.padding_free,
    }


def _run(tiny_model_dir: str, *extra: str) -> dict:
    from verl.workers.local import grpo_passes, run_local

    return run_local(
        grpo_passes, 1, _config(tiny_model_dir, *extra), random_batch(2048), "actor_ref", _inspect
    )[0]


def test_actor_passes_on_one_gpu(tiny_model_dir: str, capfd: pytest.CaptureFixture) -> None:
    """CPU batch in (moved to the GPU in one place), device-side token counts all-reduced over NCCL,
    fused AdamW, bf16 reference, root resharded after the no-grad pass, bf16 HF export."""
    out = _run(tiny_model_dir)
    for key in ("old_log_probs", "ref_log_probs", "new_log_probs"):
        assert out[key].device.type == "cpu" and torch.isfinite(out[key]).all(), key
    assert torch.isfinite(torch.tensor(out["metrics"]["actor/loss"]))
    assert (out["new_log_probs"] - out["old_log_probs"]).abs().max() > 0  # the update moved the policy
    assert out["fused_adamw"] and out["param_device"] == "cuda" and out["optimizer_devices"] == ["cuda"]
    assert out["root_sharded"] and out["ref_dtype"] == "torch.bfloat16"
    assert out["export_dtypes"] == ["torch.bfloat16"]
    if flash_attn_import_error() is not None:  # the fallback is announced, not silent
        assert "flash-attn is not importable" in capfd.readouterr().err and not out["padding_free"]


def test_param_and_optimizer_offload(tiny_model_dir: str) -> None:
    """fsdp.param_offload: shards in host memory from the start (FSDP's lazy init requires it) and
    gradient clipping over host-side DTensor gradients; optimizer_offload: Adam back in host memory
    after the update. Same loss as the resident run, up to bf16 noise."""
    resident = _run(tiny_model_dir)
    out = _run(
        tiny_model_dir,
        "worker.actor.fsdp.param_offload=true",
        "worker.ref.fsdp.param_offload=true",
    )
    assert out["param_device"] == "cpu" and not out["fused_adamw"]
    assert out["metrics"]["actor/grad_norm"] == pytest.approx(
        resident["metrics"]["actor/grad_norm"], rel=5e-2
    )
    offloaded = _run(tiny_model_dir, "worker.actor.fsdp.optimizer_offload=true")
    assert offloaded["optimizer_devices"] == ["cpu"] and offloaded["param_device"] == "cuda"
    torch.testing.assert_close(offloaded["new_log_probs"], resident["new_log_probs"], atol=2e-2, rtol=2e-2)


@pytest.mark.skipif(
    not torch.cuda.is_available() or flash_attn_import_error() is not None, reason="needs flash-attn"
)
def test_packed_flash_attn_log_probs_match_padded_sdpa(tiny_model_dir: str) -> None:
    from transformers import AutoModelForCausalLM

    from verl.workers.actor.forward import attach_response_log_probs, response_log_probs

    def model(attn: str):
        m = AutoModelForCausalLM.from_pretrained(
            tiny_model_dir, dtype=torch.bfloat16, attn_implementation=attn
        )
        return attach_response_log_probs(m.cuda())

    b = random_batch(2048).to("cuda").batch
    args = (b["input_ids"], b["attention_mask"], b["position_ids"], b["responses"], 1.0)
    with torch.no_grad():
        packed, _ = response_log_probs(model("flash_attention_2"), *args, padding_free=True)
        padded, _ = response_log_probs(model("sdpa"), *args, padding_free=False)
    valid = b["response_mask"].bool()
    torch.testing.assert_close(packed[valid], padded[valid], atol=5e-2, rtol=5e-2)  # bf16 kernels differ


def test_padded_sdpa_log_probs_on_left_padded_rows_match_unpadded(tiny_model_dir: str) -> None:
    """The fallback without flash-attn: bf16 SDPA on CUDA over left-padded rows (fully masked query
    rows in the padding) gives finite response log-probs equal to each row computed alone, unpadded.
    A NaN here would reach the loss (and stop the run: verl/trainer/finite.py)."""
    from transformers import AutoModelForCausalLM

    from verl.workers.actor.forward import attach_response_log_probs, response_log_probs

    module = AutoModelForCausalLM.from_pretrained(
        tiny_model_dir, dtype=torch.bfloat16, attn_implementation="sdpa"
    )
    module = attach_response_log_probs(module.cuda())
    b = random_batch(2048, bs=8, prompt=24, response=10, seed=3).to("cuda").batch
    assert (b["attention_mask"][:, 0] == 0).any()  # some rows are left-padded
    with torch.no_grad():
        padded, _ = response_log_probs(
            module,
            b["input_ids"],
            b["attention_mask"],
            b["position_ids"],
            b["responses"],
            1.0,
            padding_free=False,
        )
        valid = b["response_mask"].bool()
        assert torch.isfinite(padded[valid]).all()
        prompt_len = b["input_ids"].shape[1] - b["responses"].shape[1]
        for i in range(b["input_ids"].shape[0]):
            keep = b["attention_mask"][i].bool()
            ids = b["input_ids"][i][keep][None]
            n_resp = int(b["response_mask"][i].sum())
            alone, _ = response_log_probs(
                module,
                ids,
                torch.ones_like(ids),
                torch.arange(ids.shape[1], device="cuda")[None],
                ids[:, ids.shape[1] - n_resp :],
                1.0,
                padding_free=False,
            )
            assert int(keep[:prompt_len].sum()) + n_resp == ids.shape[1]
            torch.testing.assert_close(padded[i, :n_resp], alone[0], atol=5e-2, rtol=5e-2)  # bf16 batching


def _rollout_sequence(config, prompts: list[list[int]]) -> dict:
    from verl.utils.dataset import collate
    from verl.workers.fsdp_workers import FSDPWorker
    from verl.workers.local import LocalWorkerGroup

    group = LocalWorkerGroup(FSDPWorker(config, role="actor_rollout"))
    group.init_model()
    rollout = group.worker.rollout
    batch = collate([{"raw_prompt_ids": p} for p in prompts], pad_token_id=0)
    lengths = []
    for _ in range(2):
        group.sync_rollout_weights()
        assert rollout.asleep == {"kv_cache"}
        out = group.generate_sequences(batch)
        assert rollout.asleep == {"weights", "kv_cache"}
        lengths.append(int(out.batch["response_mask"].sum()))
    return {"lengths": lengths, "seed_mode": rollout.seed_mode}


def test_vllm_sleep_wake_sync_and_generate_on_gpu(tiny_model_dir: str) -> None:
    """The real engine's sleep mode: init -> sync -> generate -> sync -> generate returns (the old
    order hung in the first generate), with one sampling seed per engine."""
    pytest.importorskip("vllm")
    from verl.workers.local import run_local

    config = _config(
        tiny_model_dir, "worker.rollout.gpu_memory_utilization=0.3", "data.max_response_length=16"
    )
    out = run_local(_rollout_sequence, 1, config, [[5, 6, 7, 8], [9, 10, 11]], timeout_s=240)[0]
    assert all(n > 0 for n in out["lengths"]) and out["seed_mode"] == "per_engine"
