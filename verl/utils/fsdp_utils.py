"""FSDP2 helpers: rank-0 weight loading, sharding per decoder layer, full-weight streaming, HF export."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import torch
import torch.distributed as dist
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    set_model_state_dict,
)
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.fsdp import CPUOffloadPolicy, MixedPrecisionPolicy, fully_shard
from torch.distributed.tensor import DTensor


def flash_attn_import_error() -> str | None:
    """None when flash-attn imports, else why not (the ImportError's text)."""
    try:
        import flash_attn  # noqa: F401
    except ImportError as e:  # a failed build shows up here as a missing symbol or module
        return str(e) or type(e).__name__
    return None


def load_model_rank0(
    model_path: str,
    trust_remote_code: bool = False,
    attn_implementation: str | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.nn.Module:
    """Rank 0 reads the weights from disk; the other ranks build the same module on the meta device.

    After `shard_model`, `broadcast_full_weights` copies rank 0's weights into every rank's shards,
    so the checkpoint is read once per node group instead of once per rank. `dtype` is the dtype the
    shards are stored in: fp32 master weights for the trained actor, the run's dtype for the frozen
    reference (bf16 on GPU: half the memory, and what the mixed-precision forward computes in anyway).
    """
    from transformers import AutoConfig, AutoModelForCausalLM

    kwargs = {"dtype": dtype, "trust_remote_code": trust_remote_code}
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    if dist.get_rank() == 0:
        return AutoModelForCausalLM.from_pretrained(model_path, **kwargs)
    config = AutoConfig.from_pretrained(model_path, trust_remote_code=trust_remote_code)
    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config, **kwargs)


def shard_model(
    model: torch.nn.Module,
    mesh: DeviceMesh,
    param_dtype: torch.dtype,
    device: str,
    offload_params: bool = False,
) -> torch.nn.Module:
    """fully_shard every decoder layer, then the root (embeddings, norm, tied head) as one group."""
    mp = MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=torch.float32, cast_forward_inputs=True)
    # CPU offload needs an accelerator to offload from; on CPU the parameters already live there.
    offload = CPUOffloadPolicy() if offload_params and device == "cuda" else None
    kwargs = {"mesh": mesh, "mp_policy": mp, **({"offload_policy": offload} if offload else {})}
    layers = getattr(getattr(model, "model", model), "layers", None)
    if layers is None:
        raise ValueError(
            f"{type(model).__name__} has no .model.layers; only decoder-only HF models are supported"
        )
    for layer in layers:
        fully_shard(layer, **kwargs)
    fully_shard(model, **kwargs)
    return model


def broadcast_full_weights(
    model: torch.nn.Module, device: str, full_state: dict | None, offload_params: bool = False
) -> None:
    """Fill every rank's shards from rank 0's full state dict (and its non-persistent buffers).

    The broadcast runs on the compute device (NCCL cannot send CPU tensors). With `offload_params`
    (FSDP2's CPUOffloadPolicy, GPU only) the shards then move to host memory, where FSDP's lazy init
    requires them, while the buffers (rotary inv_freq) stay on the GPU next to the activations.
    """
    target = torch.device("cuda", torch.cuda.current_device()) if device == "cuda" else torch.device("cpu")
    if dist.get_rank() == 0:
        model.to(target)
    else:
        model.to_empty(device=target)
    options = StateDictOptions(full_state_dict=True, broadcast_from_rank0=True)
    set_model_state_dict(model, full_state or {}, options=options)
    # Buffers such as the rotary inv_freq are not in the state dict: send rank 0's.
    for _, buf in model.named_buffers():
        dist.broadcast(buf.data, src=0)
    if offload_params and device == "cuda":
        model.to("cpu")
        for buf in model.buffers():
            buf.data = buf.data.to(target)


def reshard_root(model: torch.nn.Module) -> None:
    """Reshard the FSDP2 root's parameters (embedding, final norm, head) after a no-grad pass.

    The root keeps them unsharded after its forward (it expects the backward to need them at
    once); without a backward nothing frees them, so the full embedding would stay on every rank.
    """
    from torch.distributed.fsdp import FSDPModule

    if isinstance(model, FSDPModule):
        model.reshard()


def clip_grad_norm(parameters, max_norm: float) -> float:
    """Clip the global L2 norm of the gradients to `max_norm`; returns the norm before clipping.

    Written out instead of `torch.nn.utils.clip_grad_norm_` because FSDP2 gradients can be DTensors
    whose shards live in host memory (param offload) while the group is NCCL: the sum of squares of
    the local shards is reduced on the compute device, then every shard is scaled where it lives.
    A non-finite norm is returned as is (the caller skips that update).
    """
    grads = [p.grad for p in parameters if p.grad is not None]
    sharded = any(isinstance(g, DTensor) for g in grads)
    by_device: dict[torch.device, list[torch.Tensor]] = {}
    for g in grads:
        local = g.to_local() if isinstance(g, DTensor) else g
        by_device.setdefault(local.device, []).append(local.detach())
    device = _compute_device()
    total_sq = torch.zeros((), dtype=torch.float32, device=device)
    for tensors in by_device.values():
        norms = torch.stack(torch._foreach_norm(tensors, 2.0)).float()
        total_sq += norms.square().sum().to(device)
    if sharded and dist.is_initialized():
        dist.all_reduce(total_sq)  # shards are disjoint: the squares add up to the full norm's
    total = total_sq.sqrt()
    if torch.isfinite(total):
        coef = (max_norm / (total + 1e-6)).clamp(max=1.0)
        for dev_, tensors in by_device.items():
            torch._foreach_mul_(tensors, coef.to(dev_))
    return float(total)


def _compute_device() -> torch.device:
    if torch.cuda.is_available() and dist.is_initialized() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def iter_full_weights(
    model: torch.nn.Module, dtype: torch.dtype | None = None
) -> Iterator[tuple[str, torch.Tensor]]:
    """Yield (name, full tensor) one parameter at a time: each DTensor is all-gathered when reached.

    A collective per parameter: every rank must consume the iterator to the end, in step. Tied
    weights appear under both names (vLLM's packed head needs `lm_head.weight` explicitly).
    """
    # keep_vars: parameters as themselves, so tied ones (embedding and head) are one object.
    state = model.state_dict(keep_vars=True)
    aliases: dict[int, list[str]] = {}
    for name, tensor in state.items():
        aliases.setdefault(id(tensor), []).append(name)
    lm_head, embed = "lm_head.weight", "model.embed_tokens.weight"
    if lm_head not in state and embed in state and getattr(model.config, "tie_word_embeddings", False):
        aliases[id(state[embed])].append(lm_head)  # vLLM's packed head needs it by name
    sent: set[int] = set()
    for name, tensor in state.items():
        if "rotary_emb" in name or id(tensor) in sent:  # rotary tables are recomputed by vLLM
            continue
        sent.add(id(tensor))
        full = _full_tensor(tensor.detach())
        full = full.to(dtype) if dtype is not None else full
        for alias in aliases[id(tensor)]:  # one all-gather for every name of a tied parameter
            yield alias, full
        del full  # one full parameter alive at a time


def _full_tensor(tensor: torch.Tensor) -> torch.Tensor:
    """All-gather a DTensor on its mesh's device (offloaded shards are on the CPU); plain tensors as is."""
    if not isinstance(tensor, DTensor):
        return tensor
    if tensor.device.type != tensor.device_mesh.device_type:
        tensor = tensor.to(tensor.device_mesh.device_type)
    return tensor.full_tensor()


def full_state_dict_cpu(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The full state dict on rank 0's CPU (other ranks get an empty dict); a collective."""
    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    return get_model_state_dict(model, options=options)


def export_hf(
    model: torch.nn.Module, tokenizer, out_dir: str | os.PathLike, dtype: torch.dtype | None = None
) -> Path | None:
    """Write a plain HF folder (config, generation config, tokenizer, safetensors) from rank 0.

    A collective: all ranks must call it. The folder is written under a temporary name and renamed,
    so a crash never leaves a half-written model. An existing `out_dir` is replaced only if the
    project wrote it (or it is empty): see `verl.utils.fs.check_replaceable`. Returns the folder on
    rank 0, None elsewhere.
    """
    from verl.utils.fs import atomic_dir, check_replaceable

    # Every rank checks before the collective: a refusal on rank 0 alone would leave the others
    # waiting in it.
    check_replaceable(out_dir)
    state = full_state_dict_cpu(model)
    if dist.get_rank() != 0:
        return None
    from transformers import AutoModelForCausalLM

    out = Path(out_dir)
    with atomic_dir(out) as tmp:
        config = model.config
        save_dtype = dtype or getattr(config, "dtype", None) or torch.float32
        if isinstance(save_dtype, str):
            save_dtype = getattr(torch, save_dtype)
        with torch.device("meta"):
            plain = AutoModelForCausalLM.from_config(config, dtype=save_dtype)
        plain.load_state_dict({k: v.to(save_dtype) for k, v in state.items()}, assign=True, strict=False)
        if getattr(config, "tie_word_embeddings", False):
            plain.tie_weights()
        if getattr(model, "generation_config", None) is not None:
            plain.generation_config = model.generation_config
        plain.save_pretrained(str(tmp), safe_serialization=True)
        tokenizer.save_pretrained(str(tmp))
    return out
