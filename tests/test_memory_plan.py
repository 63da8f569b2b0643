"""The memory plan (verl/utils/memory_plan.py) against hand-computed figures for Qwen3-4B, its
activation model against what transformers' Qwen3 actually allocates, its advice, and the dry run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from model_shapes import QWEN3_4B

from verl.trainer.config import CONFIG_DIR, load_config
from verl.utils.memory_plan import GIB, ModelShape, activation_bytes_per_token, plan_memory

# By hand: per layer q/o 2*2560*4096 + k/v 2*2560*1024 + q/k norms 2*128 + MLP 3*2560*9728 + 2 norms
# 2*2560 = 100,930,816; 36 layers = 3,633,509,376; embedding (tied) 151936*2560 + final norm 2560
# = 388,958,720. Total 4,022,468,096 (Qwen3-4B's published 4.0B).
N_4B = 4_022_468_096
LAYER_4B = 100_930_816
ROOT_4B = 388_958_720
GIB_INT = 1 << 30
RUNTIME = 3 * GIB_INT // 2  # CUDA context, NCCL buffers, driver reserve: 1.5 GiB
ASLEEP = GIB_INT // 4 + GIB_INT // 2  # vLLM asleep: 0.25 GiB of buffers + the 0.5 GiB CUDA-graph pool
# bf16 FSDP unsharded during a pass: the root group (embedding, norm) and two decoder layers.
UNSHARDED_PARAMS_4B = 2 * ROOT_4B + 2 * 2 * LAYER_4B  # 1,181,640,704
# vLLM's activations, the same on both plans: max(max_num_batched_tokens 8192, 6144) tokens x 77,056
# bytes (7*2560 + 6*9728 + 4*128 rotary + 8*32 log-sum-exp) + the sampler's fp32 logits and a copy
# for 256 sequences (256 x 151,936 x 8) + the 0.5 GiB CUDA-graph pool.
VLLM_ACTIVATIONS_4B = 8192 * 77_056 + 256 * 151_936 * 8 + GIB_INT // 2  # 1,479,278,592
EXPERIENCE_ACTIVATIONS_4B = 32768 * 77_056  # 32768-token log-prob micro-batch, no grad
UPDATE_ACTIVATIONS_4B = 16384 * 404_224  # 16384-token update micro-batch, checkpointed


def _with_overheads(items: dict[str, int]) -> dict[str, int]:
    """The two rows every phase adds: 5% fragmentation of what torch allocates (vLLM's budget aside)
    and the fixed runtime."""
    torch_part = sum(v for k, v in items.items() if not k.startswith("vllm"))
    return {**items, "fragmentation": torch_part * 5 // 100, "runtime": RUNTIME}


@pytest.fixture(scope="module")
def qwen3_4b(tmp_path_factory: pytest.TempPathFactory) -> str:
    folder = tmp_path_factory.mktemp("qwen3-4b")
    (folder / "config.json").write_text(json.dumps(QWEN3_4B))
    return str(folder)


def _config(model: str, *extra: str, stage: str = "challenger.yaml"):
    return load_config([f"config={CONFIG_DIR / stage}", f"worker.actor.model.model_path={model}", *extra])


def test_qwen3_4b_on_4_x_40gb_by_hand(qwen3_4b: str) -> None:
    plan = plan_memory(_config(qwen3_4b), world_size=4, gpu_mem_gib=40, padding_free=True)
    assert plan.shape.num_params == N_4B
    gen, exp, upd = plan.phases["generate"], plan.phases["experience"], plan.phases["update"]
    # FSDP shards over 4 GPUs: fp32 master weights 4N/4, fp32 grads 4N/4, Adam 8N/4, bf16 ref 2N/4.
    assert upd.items["actor params"] == upd.items["actor grads"] == N_4B
    assert upd.items["adam"] == 2 * N_4B and upd.items["ref params"] == N_4B // 2
    # Adam (7.49 GiB) beside vLLM at 0.6 x 40 GiB would leave 0.7 GiB: the plan offloads it.
    assert plan.optimizer_offload and gen.items["adam"] == 0 and exp.items["adam"] == 0
    assert gen.items["vllm (weights)"] == 2 * N_4B  # bf16, TP 1
    budget = int(0.6 * 40 * GIB)
    assert sum(v for k, v in gen.items.items() if k.startswith("vllm")) == budget
    # generate = 3.75 (actor) + 1.87 (ref) + 5% fragmentation of both + 1.5 runtime + 24 (vLLM) GiB.
    assert gen.total / GIB == pytest.approx(1.05 * 1.5 * N_4B / GIB + 1.5 + 24, abs=0.01)
    assert gen.total / GIB == pytest.approx(31.40, abs=0.01)
    # Update activations: 16384 tokens x (2*2560*36 saved layer inputs + 20*2560 + 10*4096 + 10*1024
    # + 12*9728 + 4*128 + 8*32) = 16384 x 404,224 bytes = 6.17 GiB.
    assert upd.items["activations"] == 16384 * 404_224
    # Experience: 32768 tokens x (7*2560 + 6*9728 + 768) = 32768 x 77,056 bytes = 2.35 GiB.
    assert exp.items["activations"] == 32768 * 77_056
    # Asleep, vLLM keeps 0.25 GiB of buffers and (its default, no backup to host) the 0.5 GiB
    # CUDA-graph pool on the GPU through the experience and update phases.
    assert exp.items["vllm asleep"] == upd.items["vllm asleep"] == int(0.75 * GIB)
    # Every row of every phase, by hand (4 ranks; Adam offloaded outside the update).
    resident = {"actor params": N_4B, "adam": 0, "ref params": N_4B // 2}
    kv = int(0.6 * 40 * GIB) - 2 * N_4B - VLLM_ACTIVATIONS_4B  # vLLM's budget less its weights, activations
    assert kv == 16_245_588_992
    assert gen.items == _with_overheads(
        {
            **resident,
            "vllm (weights)": 2 * N_4B,
            "vllm (activations)": VLLM_ACTIVATIONS_4B,
            "vllm (kv cache)": kv,
        }
    )
    # The fused head beside the experience body: 2 x (2*2560*32768) selected/output + 6 x one chunk of
    # 441 rows x 151,936 = 737,566,976 bytes, below the body's 2.35 GiB: adds nothing to the peak.
    assert exp.items == _with_overheads(
        {
            **resident,
            "unsharded params": UNSHARDED_PARAMS_4B,
            "activations": EXPERIENCE_ACTIVATIONS_4B,
            "lm head": 0,
            "vllm asleep": ASLEEP,
        }
    )
    # Update: Adam back (8N/4), fp32 grads 4N/4; one layer's bf16 grad + its fp32 reduce-scatter input
    # and output shard (2 + 4 + 4/4 bytes per layer parameter) + the root's bf16 grad; the head's
    # backward (3.17 GB) stays under the working set beyond the saved inputs (3.60 GB): adds nothing.
    assert upd.items == _with_overheads(
        {
            "actor params": N_4B,
            "adam": 2 * N_4B,
            "ref params": N_4B // 2,
            "actor grads": N_4B,
            "unsharded params": UNSHARDED_PARAMS_4B,
            "unsharded grads": 7 * LAYER_4B + 2 * ROOT_4B,
            "activations": UPDATE_ACTIVATIONS_4B,
            "lm head": 0,
            "vllm asleep": ASLEEP,
        }
    )
    assert [round(p.total / GIB, 2) for p in (gen, exp, upd)] == [31.40, 11.77, 29.03]
    assert plan.fits


def test_qwen3_4b_on_8_x_80gb_keeps_adam_on_the_gpu(qwen3_4b: str) -> None:
    plan = plan_memory(
        _config(qwen3_4b, stage="solver.yaml"), world_size=8, gpu_mem_gib=80, padding_free=True
    )
    gen = plan.phases["generate"]
    assert not plan.optimizer_offload and gen.items["adam"] == N_4B  # 8N/8
    assert gen.items["actor params"] == N_4B // 2 and gen.items["ref params"] == N_4B // 4
    # KV cache: 0.6 x 80 GiB - weights - activations; 147,456 bytes per token (2 x 36 layers x 8 kv
    # heads x 128 x bf16): about 41 full 6144-token sequences at once.
    assert ModelShape.from_config(QWEN3_4B).kv_bytes_per_token() == 147_456
    assert gen.items["vllm (kv cache)"] / (147_456 * 6144) == pytest.approx(46.4, abs=0.1)
    # Every row by hand (8 ranks; Adam stays: 8N/8).
    resident = {"actor params": N_4B // 2, "adam": N_4B, "ref params": N_4B // 4}
    kv = int(0.6 * 80 * GIB) - 2 * N_4B - VLLM_ACTIVATIONS_4B
    assert kv == 42_015_392_768
    assert gen.items == _with_overheads(
        {
            **resident,
            "vllm (weights)": 2 * N_4B,
            "vllm (activations)": VLLM_ACTIVATIONS_4B,
            "vllm (kv cache)": kv,
        }
    )
    assert plan.phases["experience"].items == _with_overheads(
        {
            **resident,
            "unsharded params": UNSHARDED_PARAMS_4B,
            "activations": EXPERIENCE_ACTIVATIONS_4B,
            "lm head": 0,
            "vllm asleep": ASLEEP,
        }
    )
    # One layer's grads: bf16 2 + fp32 4 + its fp32 shard 4/8 bytes per parameter.
    assert plan.phases["update"].items == _with_overheads(
        {
            **resident,
            "actor grads": N_4B // 2,
            "unsharded params": UNSHARDED_PARAMS_4B,
            "unsharded grads": 6 * LAYER_4B + LAYER_4B // 2 + 2 * ROOT_4B,
            "activations": UPDATE_ACTIVATIONS_4B,
            "lm head": 0,
            "vllm asleep": ASLEEP,
        }
    )
    assert [round(p.total / GIB, 2) for p in plan.phases.values()] == [56.38, 12.76, 20.13]
    assert plan.fits


def test_vllm_settings_the_plan_depends_on(qwen3_4b: str) -> None:
    """The CUDA-graph pool leaves the training phases when vLLM backs it up while asleep (or there
    are no graphs: eager mode); the sampler's logits scale with max_num_seqs, set explicitly."""
    base = plan_memory(_config(qwen3_4b), world_size=4, gpu_mem_gib=40, padding_free=True)
    for extra in ("worker.rollout.sleep_offload_cudagraph=true", "worker.rollout.enforce_eager=true"):
        plan = plan_memory(_config(qwen3_4b, extra), world_size=4, gpu_mem_gib=40, padding_free=True)
        for phase in ("experience", "update"):
            assert plan.phases[phase].items["vllm asleep"] == int(0.25 * GIB)
            assert base.phases[phase].total - plan.phases[phase].total >= int(0.5 * GIB)
    wide = plan_memory(
        _config(qwen3_4b, "worker.rollout.max_num_seqs=1024"), world_size=4, gpu_mem_gib=40, padding_free=True
    )
    # 768 more sequences x 151,936 vocabulary x 8 bytes (fp32 logits and a copy) = 0.87 GiB
    grown = (
        wide.phases["generate"].items["vllm (activations)"]
        - base.phases["generate"].items["vllm (activations)"]
    )
    assert grown == 768 * 151_936 * 8


@pytest.mark.parametrize("stage", ["challenger.yaml", "solver.yaml"])
@pytest.mark.parametrize("world, gib", [(4, 40), (8, 40), (8, 80)])
@pytest.mark.parametrize("padding_free", [True, False])
def test_shipped_defaults_fit(qwen3_4b: str, stage: str, world: int, gib: int, padding_free: bool) -> None:
    """Engine defaults + the stage file fit, with flash-attn or padded, and with the authors'
    fixed micro-batches (microbatch-token-mean, 2 rows for the Challenger's update)."""
    for extra in ([], ["worker.actor.loss_agg_mode=microbatch-token-mean"]):
        plan = plan_memory(_config(qwen3_4b, *extra, stage=stage), world, gib, padding_free=padding_free)
        assert plan.fits, plan.format()


def test_advice_names_the_setting_and_its_value_fits(qwen3_4b: str) -> None:
    plan = plan_memory(
        _config(qwen3_4b, "worker.actor.max_tokens_per_micro_batch_for_update=131072"),
        4,
        40,
        padding_free=True,
    )
    assert not plan.phases["update"].fits and plan.phases["generate"].fits
    text = plan.format()
    line = next(a for a in plan.phases["update"].advice if "max_tokens_per_micro_batch_for_update" in a)
    assert f"update does not fit: {line}" in text and "NO" in text
    value = int(line.split("max_tokens_per_micro_batch_for_update to ")[1].split()[0])
    fixed = plan_memory(
        _config(qwen3_4b, f"worker.actor.max_tokens_per_micro_batch_for_update={value}"),
        4,
        40,
        padding_free=True,
    )
    assert fixed.phases["update"].fits and 16384 < value < 131072

    crowded = plan_memory(
        _config(qwen3_4b, "worker.rollout.gpu_memory_utilization=0.9"), 4, 40, padding_free=True
    )
    assert not crowded.phases["generate"].fits
    advice = " ".join(crowded.phases["generate"].advice)
    assert "gpu_memory_utilization to 0.7" in advice  # (0.97 x 40 - 5.9 FSDP - 1.5 runtime) / 40 = 0.78
    tiny_gpu = plan_memory(_config(qwen3_4b), 1, 16, padding_free=True)
    assert "less than one 6144-token sequence" in " ".join(tiny_gpu.phases["generate"].advice)


# ---- the activation model against transformers' Qwen3 --------------------------------------------


class _LiveBytes(torch.utils._python_dispatch.TorchDispatchMode):
    """Peak bytes of the tensors created under it and still alive (storage weak references)."""

    def __init__(self) -> None:
        super().__init__()
        self.current, self.peak, self.refs = 0, 0, {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        from torch.utils._pytree import tree_flatten
        from torch.utils.weak import WeakIdRef

        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor) and t.untyped_storage().nbytes():
                storage = t.untyped_storage()
                ptr, size = storage.data_ptr(), storage.nbytes()
                if ptr not in self.refs:
                    self.refs[ptr] = WeakIdRef(storage, lambda _r, p=ptr, n=size: self._free(p, n))
                    self.current += size
                    self.peak = max(self.peak, self.current)
        return out

    def _free(self, ptr: int, size: int) -> None:
        self.current -= size
        self.refs.pop(ptr, None)


def _measured_bytes_per_token(shape: dict, kind: str) -> float:
    """Slope of the peak over 256 -> 512 tokens of a bf16 Qwen3 body (SDPA, one packed sequence);
    parameter gradients are dropped as soon as they are made, as FSDP's reduce-scatter does."""
    from transformers import AutoModelForCausalLM, Qwen3Config

    config = Qwen3Config(**shape, vocab_size=512, tie_word_embeddings=True)
    config._attn_implementation = "sdpa"
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    if kind == "update":
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.train(kind == "update")
    for p in model.parameters():
        p.register_post_accumulate_grad_hook(lambda p: setattr(p, "grad", None))
    peaks = []
    for tokens in (256, 512):
        ids, pos = torch.randint(0, 512, (1, tokens)), torch.arange(tokens).unsqueeze(0)
        mode = _LiveBytes()
        with mode, torch.set_grad_enabled(kind == "update"):
            hidden = model.model(input_ids=ids, position_ids=pos, use_cache=False).last_hidden_state
            if kind == "update":
                hidden.sum().backward()
        del hidden
        peaks.append(mode.peak)
    return (peaks[1] - peaks[0]) / 256


@pytest.mark.parametrize("kind", ["update", "experience"])
def test_activation_model_matches_what_qwen3_allocates(kind: str) -> None:
    shape = dict(
        hidden_size=256,
        num_hidden_layers=2,
        num_attention_heads=6,
        num_key_value_heads=2,
        head_dim=32,
        intermediate_size=768,
    )
    model = ModelShape.from_config({**shape, "vocab_size": 512, "tie_word_embeddings": True})
    predicted = activation_bytes_per_token(model, kind)
    assert _measured_bytes_per_token(shape, kind) == pytest.approx(predicted, rel=0.1)


def test_dry_run_prints_the_plan(qwen3_4b: str, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from verl.trainer.main import main
    from verl.utils.toy_task import make_toy_dataset

    data = make_toy_dataset(str(tmp_path / "train.parquet"), n=8, seed=0)
    args = [
        f"config={CONFIG_DIR / 'toy.yaml'}",
        f"worker.actor.model.model_path={qwen3_4b}",
        f"data.train_files={data}",
        "data.max_prompt_length=2048",
        "data.max_response_length=4096",
        "trainer.n_devices_per_node=4",
    ]
    assert main([*args, "--dry-run", "--gpu-mem", "40"]) == 0
    out = capsys.readouterr().out
    assert "# memory plan: " in out and "4 training GPU(s) of 40 GiB" in out and "# fits" in out
    assert out.rstrip().endswith("# --dry-run: configuration is valid; nothing was started")
    assert main([*args, "--dry-run", "--gpu-mem", "lots"]) == 2
    assert "--gpu-mem needs a number" in capsys.readouterr().err
