"""The FSDP worker: one process per rank holding the actor, the reference model and the vLLM engine.

Roles are combined in one process so that the actor's weights reach vLLM without leaving the GPU
(or the CPU process): `role` is "actor_rollout_ref" (the usual GRPO setup), "actor_rollout"
(no KL loss), "actor_ref" (no vLLM: the local worker mode of verl/workers/local.py) or "ref".

Where data changes device: the DP methods receive CPU batches (from Ray, or the local group) and
`_on_device` moves them to this rank's device on entry and their results back to the CPU on return.
"""

from __future__ import annotations

import functools
import os
import sys
from datetime import timedelta
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from verl.protocol import DataProto
from verl.single_controller.decorator import Dispatch, register
from verl.single_controller.worker import Worker, init_process_group
from verl.trainer.config import PPOConfig
from verl.utils import device as dev
from verl.utils import fsdp_utils
from verl.utils.checkpoint_safe import (
    SafeLoadPlanner,
    load_extra_state,
    restore_rng_state,
    rng_state_to_tensors,
    safe_reader,
)


def move_optimizer_state(optimizer: torch.optim.Optimizer, device: torch.device) -> None:
    """Move every optimizer state tensor (Adam moments, step counters) to `device`."""
    for state in optimizer.state.values():
        for key, value in state.items():
            if isinstance(value, torch.Tensor):
                # Into host memory synchronously (the GPU copy is freed right after); back asynchronously.
                state[key] = value.to(device, non_blocking=device.type != "cpu")


def _lr_lambda(warmup: int, total: int, kind: str):
    def fn(step: int) -> float:
        if warmup > 0 and step < warmup:
            return (step + 1) / warmup
        if kind == "cosine" and total > warmup:
            progress = min(1.0, (step - warmup) / max(1, total - warmup))
            return 0.5 * (1.0 + np.cos(np.pi * progress))
        return 1.0

    return fn


def _on_device(method):
    """The batch goes to this rank's device on entry, the returned DataProto back to the CPU."""

    @functools.wraps(method)
    def wrapper(self: FSDPWorker, data: DataProto, *args, **kwargs):
        out = method(self, data.select().to(self.compute_device), *args, **kwargs)
        return out.to("cpu") if isinstance(out, DataProto) else out

    return wrapper


def log(message: str) -> None:
    print(f"[worker] {message}", file=sys.stderr, flush=True)


class FSDPWorker(Worker):
    def __init__(self, config: PPOConfig, role: str = "actor_rollout_ref", total_updates: int = 1) -> None:
        super().__init__()
        self.config = config
        self.role = role
        self.total_updates = total_updates
        self.has_actor = "actor" in role
        self.has_rollout = "rollout" in role
        self.has_ref = "ref" in role and config.algorithm.use_kl_loss
        self.device = dev.resolve_device(config.trainer.device)
        self.offload_optimizer = False
        if self.device == "cpu":
            dev.set_cpu_env_defaults()

    # ---- set-up ---------------------------------------------------------------------------------

    @register(Dispatch.ONE_TO_ALL)
    def init_model(self) -> dict:
        """Process group, tokenizer, actor (+optimizer), reference model and vLLM engine."""
        from transformers import AutoTokenizer

        cfg = self.config
        self._init_distributed()
        model_cfg = cfg.worker.actor.model
        self.tokenizer = AutoTokenizer.from_pretrained(
            model_cfg.tokenizer_path or model_cfg.model_path, trust_remote_code=model_cfg.trust_remote_code
        )
        self.param_dtype = dev.training_dtype(self.device, cfg.worker.actor.fsdp.dtype)
        self.padding_free, self.attn_implementation = self._choose_attention()
        if self.has_actor:
            self._build_actor()
        if self.has_ref:
            self._build_ref()
        if self.has_rollout:
            self._build_rollout()
        return {
            "rank": self.rank,
            "device": self.device,
            "padding_free": self.padding_free,
            "attention": self.attn_implementation,
            "param_dtype": str(self.param_dtype),
            "optimizer_offload": self.offload_optimizer,
            "device_name": torch.cuda.get_device_name() if self.device == "cuda" else "cpu",
        }

    def _init_distributed(self) -> None:
        from torch.distributed.device_mesh import init_device_mesh

        if self.device == "cuda":
            torch.cuda.set_device(self.local_rank)
        else:
            # Ray sets OMP_NUM_THREADS from num_cpus; torch must follow it or ranks oversubscribe cores.
            torch.set_num_threads(max(1, int(os.environ.get("OMP_NUM_THREADS", "1"))))
        if not dist.is_initialized():
            # Loopback-only on a single node (the store and gloo would listen on every interface).
            init_process_group(dev.dist_backend(self.device), timeout=timedelta(minutes=30))
        self.compute_device = dev.local_device(self.device)
        self.mesh = init_device_mesh(self.device, (self.world_size,))
        torch.manual_seed(self.config.trainer.seed + self.rank)

    def _choose_attention(self) -> tuple[bool, str]:
        """(padding_free, attn_implementation). Packed sequences need flash-attn (varlen) on GPU; on
        CPU transformers' SDPA takes packed sequences through a block-diagonal mask built from the
        position ids, so CPU runs exercise the same packing code as a GPU run."""
        wanted = self.config.worker.actor.padding_free
        if self.device != "cuda":
            return wanted, "sdpa"
        error = fsdp_utils.flash_attn_import_error()
        if error is None:
            return wanted, "flash_attention_2" if wanted else "sdpa"
        if wanted and self.rank == 0:
            log(
                "=" * 100 + f"\nWARNING: flash-attn is not importable ({error}).\nTraining falls back to "
                "PADDED attention (torch SDPA with a padding mask; micro-batches trimmed to their longest "
                "row): slower than padding-free packing. Install a flash-attn wheel built for this torch "
                "and CUDA to restore it.\n" + "=" * 100
            )
        return False, "sdpa"

    def _load_module(self, path: str, dtype: torch.dtype) -> torch.nn.Module:
        """Rank 0's full module from disk, the others' on the meta device (a hook for random-weight checks)."""
        trust = self.config.worker.actor.model.trust_remote_code
        return fsdp_utils.load_model_rank0(path, trust, self.attn_implementation, dtype)

    def _build_module(self, train: bool) -> torch.nn.Module:
        model_cfg = self.config.worker.actor.model
        # The actor keeps fp32 master weights; the frozen reference is stored in the run's dtype.
        module = self._load_module(model_cfg.model_path, torch.float32 if train else self.param_dtype)
        full_state = module.state_dict() if self.rank == 0 else None
        if train and model_cfg.enable_gradient_checkpointing:
            module.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        fsdp_cfg = self.config.worker.actor.fsdp if train else self.config.worker.ref.fsdp
        offload = fsdp_cfg.param_offload and self.device == "cuda"
        fsdp_utils.shard_model(module, self.mesh, self.param_dtype, self.device, offload_params=offload)
        fsdp_utils.broadcast_full_weights(module, self.device, full_state, offload_params=offload)
        if not train:
            module.requires_grad_(False)
            module.eval()
        return module

    def _build_actor(self) -> None:
        from verl.workers.actor.dp_actor import DataParallelPPOActor

        cfg = self.config
        self.actor_module = self._build_module(train=True)
        optim_cfg = cfg.worker.actor.optim
        on_gpu = self.device == "cuda" and not cfg.worker.actor.fsdp.param_offload
        self.optimizer = torch.optim.AdamW(
            self.actor_module.parameters(),
            lr=optim_cfg.lr,
            betas=tuple(optim_cfg.betas),
            weight_decay=optim_cfg.weight_decay,
            fused=True if on_gpu else None,  # one kernel for all parameters on CUDA; CPU keeps foreach
        )
        self.lr_scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, _lr_lambda(optim_cfg.lr_warmup_steps, self.total_updates, optim_cfg.lr_scheduler)
        )
        self.actor = DataParallelPPOActor(
            cfg.worker.actor,
            cfg.algorithm,
            self.actor_module,
            cfg.worker.rollout.n,
            self.optimizer,
            self.lr_scheduler,
            padding_free=self.padding_free,
        )
        self.offload_optimizer = on_gpu and self._plan_optimizer_offload()

    def _plan_optimizer_offload(self) -> bool:
        """worker.actor.fsdp.optimizer_offload, or (null) what the memory plan decides for this GPU."""
        setting = self.config.worker.actor.fsdp.optimizer_offload
        if setting is not None or not self.has_rollout:
            return bool(setting)  # without vLLM beside it nothing competes with Adam for the GPU
        from verl.utils.memory_plan import GIB, plan_memory

        total_gib = torch.cuda.get_device_properties(self.compute_device).total_memory / GIB
        try:
            plan = plan_memory(self.config, self.world_size, total_gib, padding_free=self.padding_free)
        except (FileNotFoundError, KeyError, ValueError) as e:  # no readable config.json: keep Adam resident
            log(f"memory plan unavailable ({e}); Adam state stays on the GPU")
            return False
        if self.rank == 0:
            log(
                f"optimizer state {'offloaded to host memory' if plan.optimizer_offload else 'on the GPU'} "
                "between updates (memory plan)"
            )
        return plan.optimizer_offload

    def _build_ref(self) -> None:
        from verl.workers.actor.dp_actor import DataParallelPPOActor

        cfg = self.config
        self.ref = DataParallelPPOActor(
            cfg.worker.actor,
            cfg.algorithm,
            self._build_module(train=False),
            cfg.worker.rollout.n,
            padding_free=self.padding_free,
        )

    def _build_rollout(self) -> None:
        from verl.utils.stop_tokens import model_stop_token_ids
        from verl.workers.rollout.vllm_rollout import VLLMRollout

        cfg = self.config
        model_cfg = cfg.worker.actor.model
        self.rollout = VLLMRollout(
            model_cfg.model_path,
            cfg.worker.rollout,
            cfg.data.max_prompt_length,
            cfg.data.max_response_length,
            self.device,
            self.tokenizer.pad_token_id,
            model_cfg.trust_remote_code,
            stop_token_ids=model_stop_token_ids(model_cfg.model_path, self.tokenizer),
            dp_rank=self.rank // cfg.worker.rollout.tensor_parallel_size,
            **self._rollout_overrides(),
        )
        if self.rank == 0:
            log(f"rollout stops at token ids {self.rollout.stop_token_ids}; {self.rollout.describe_seeds()}")

    def _rollout_overrides(self) -> dict:
        """Extra VLLMRollout arguments (an engine stand-in in tests); none in a real run."""
        return {}

    # ---- experience -----------------------------------------------------------------------------

    @register(Dispatch.ROLLOUT_DP_PROTO)
    def generate_sequences(self, prompts: DataProto) -> DataProto:
        return self.rollout.generate_sequences(prompts)

    @register(Dispatch.DP_COMPUTE_PROTO)
    @_on_device
    def compute_log_prob(self, data: DataProto) -> DataProto:
        actor_cfg = self.config.worker.actor
        log_probs = self.actor.compute_log_prob(
            data,
            self.config.worker.rollout.temperature,
            actor_cfg.micro_batch_size_per_device_for_experience,
            actor_cfg.max_tokens_per_micro_batch_for_experience,
        )
        return DataProto.from_dict({"old_log_probs": log_probs})

    @register(Dispatch.DP_COMPUTE_PROTO)
    @_on_device
    def compute_ref_log_prob(self, data: DataProto) -> DataProto:
        ref_cfg = self.config.worker.ref
        log_probs = self.ref.compute_log_prob(
            data,
            self.config.worker.rollout.temperature,
            ref_cfg.micro_batch_size_per_device_for_experience,
            ref_cfg.max_tokens_per_micro_batch_for_experience,
        )
        return DataProto.from_dict({"ref_log_probs": log_probs})

    # ---- training -------------------------------------------------------------------------------

    @register(Dispatch.DP_COMPUTE_PROTO)
    @_on_device
    def update_actor(self, data: DataProto) -> DataProto:
        if self.offload_optimizer:
            move_optimizer_state(self.optimizer, self.compute_device)
        metrics = self.actor.update_policy(data, self.config.worker.rollout.temperature)
        if self.offload_optimizer:  # Adam's two moments are 2x the parameters: host memory between updates
            move_optimizer_state(self.optimizer, torch.device("cpu"))
            torch.cuda.empty_cache()
        return DataProto(meta_info={"metrics": metrics})

    @register(Dispatch.ONE_TO_ALL)
    def sync_rollout_weights(self) -> None:
        """Push the actor's full weights into this rank's vLLM engine (a collective over all ranks).

        vLLM's weights wake for the reload; its KV cache stays asleep until the next generation.
        """
        dtype = None if self.device == "cpu" else torch.bfloat16
        self.rollout.update_weights(fsdp_utils.iter_full_weights(self.actor_module, dtype))

    # ---- checks ---------------------------------------------------------------------------------

    @register(Dispatch.ONE_TO_ALL)
    def score_with_rollout(self, sequences: list[list[int]], prompt_lengths: list[int]) -> list[list[float]]:
        return self.rollout.score_sequences(sequences, prompt_lengths)

    # ---- checkpoints ----------------------------------------------------------------------------

    @register(Dispatch.ONE_TO_ALL)
    def save_checkpoint(self, path: str, hf_dir: str | None = None) -> None:
        """Sharded model + optimizer (torch.distributed.checkpoint), scheduler + RNG per rank, and
        optionally an HF folder. All ranks write into `path` (a shared filesystem on multi-node)."""
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import get_state_dict

        model_sd, optim_sd = get_state_dict(self.actor_module, self.optimizer)
        dcp.save({"model": model_sd, "optim": optim_sd}, checkpoint_id=os.path.join(path, "actor"))
        # Tensors and plain values only: resume loads it with weights_only=True (no code unpickled).
        extra = {
            "lr_scheduler": self.lr_scheduler.state_dict(),
            "rng": rng_state_to_tensors(cuda=self.device == "cuda"),
        }
        torch.save(extra, os.path.join(path, "actor", f"extra_state_rank{self.rank}.pt"))
        if hf_dir:
            fsdp_utils.export_hf(self.actor_module, self.tokenizer, hf_dir, dtype=self.param_dtype)
        dist.barrier()

    @register(Dispatch.ONE_TO_ALL)
    def load_checkpoint(self, path: str) -> None:
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

        model_sd, optim_sd = get_state_dict(self.actor_module, self.optimizer)
        state = {"model": model_sd, "optim": optim_sd}
        # The metadata and non-tensor items are unpickled with an allow-list / weights_only.
        actor_dir = os.path.join(path, "actor")
        dcp.load(state, storage_reader=safe_reader(actor_dir), planner=SafeLoadPlanner())
        set_state_dict(
            self.actor_module,
            self.optimizer,
            model_state_dict=state["model"],
            optim_state_dict=state["optim"],
        )
        if self.offload_optimizer:  # loading created the state on the GPU
            move_optimizer_state(self.optimizer, torch.device("cpu"))
            torch.cuda.empty_cache()
        extra_path = Path(path) / "actor" / f"extra_state_rank{self.rank}.pt"
        if not extra_path.is_file():
            raise FileNotFoundError(
                f"{extra_path} is missing: the checkpoint was written with a different world size"
            )
        extra = load_extra_state(extra_path)
        self.lr_scheduler.load_state_dict(extra["lr_scheduler"])
        restore_rng_state(extra["rng"], cuda=self.device == "cuda")
        dist.barrier()

    @register(Dispatch.ONE_TO_ALL)
    def export_hf(self, hf_dir: str) -> None:
        fsdp_utils.export_hf(self.actor_module, self.tokenizer, hf_dir, dtype=self.param_dtype)
        dist.barrier()

    @register(Dispatch.RANK_ZERO)
    def full_logits(self, input_ids: list[list[int]]) -> torch.Tensor:
        """Logits of the actor on unpadded sequences of equal length (for export checks): (bs, T, V)."""
        self.actor_module.eval()
        with torch.no_grad():
            ids = torch.tensor(input_ids, device=self.compute_device)
            logits = self.actor_module(input_ids=ids, use_cache=False).logits.float().cpu()
        fsdp_utils.reshard_root(self.actor_module)
        return logits
