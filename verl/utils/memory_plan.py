"""GPU memory plan of a GRPO run: bytes per GPU in each phase, before anything is launched.

    plan = plan_memory(config, world_size=4, gpu_mem_gib=40)   # or gpu_mem_gib=None: nvidia-smi
    print(plan.format()); plan.fits

Phases (one training rank; vLLM colocated, asleep outside `generate`):
    generate    FSDP residents (actor shard, Adam unless offloaded, ref) + vLLM at
                gpu_memory_utilization x GPU (its weights, activations, CUDA graphs and KV cache).
    experience  FSDP residents + one log-prob micro-batch of the token budget (no grad).
    update      FSDP residents + gradients + one update micro-batch (gradient checkpointing).

Sizes, with N parameters, W training ranks (FSDP shards), T tokens per micro-batch:
    actor shard   4N/W (fp32 master weights; bf16 is only the compute copy)
    gradients     4N/W (fp32 shards, present during the update)
    Adam          8N/W (two fp32 moments)
    ref shard     2N/W (stored in the run's dtype, bf16 on GPU)
    unsharded     2 x (root group: embedding, head, final norm) + 2 x 2 decoder layers (one
                  computing, one prefetched) in bf16, during a pass
    activations   per token, fitted to what transformers' Qwen3 decoder allocates in bf16 (measured
                  with a live-tensor tracker on CPU, see tests/test_memory_plan.py):
                    update (checkpointed)  2H per layer (saved inputs) + 20H + 10Q + 10K + 12I
                    update (no checkpoint) L x (16H + 10Q + 10K + 8I) + 8H + 6I
                    experience (no grad)   7H + 6I
                  with H hidden, Q = heads x head_dim, K = kv_heads x head_dim, I = MLP width.
    LM head       fused with the log-softmax in chunks (verl/utils/torch_functional.py): one chunk
                  of 2^26 logits in fp32, plus in the backward a (V, H) fp32 accumulator and a bf16
                  product for the head's weight gradient.
    runtime       CUDA context, NCCL buffers, driver reserve: a fixed 1.5 GiB; the caching
                  allocator's fragmentation: 5% of the torch-allocated peak.
A phase fits when its total is within 97% of the GPU's memory.

The update adds all gradients to all saved layer inputs, which never peak together (the backward
frees inputs as it makes gradients): an overestimate of at most the smaller of the two, the safe
side for a fit check. What was measured against it is in scripts/gpu_check.py's table.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

GIB = 1024**3
RUNTIME_OVERHEAD_BYTES = int(1.5 * GIB)
FRAGMENTATION = 0.05
USABLE_FRACTION = 0.97
VLLM_ASLEEP_BYTES = int(0.25 * GIB)  # vLLM tensors outside its sleep-mode pool (input buffers, ...)
# vLLM's CUDA-graph pool (captured decode graphs and their buffers): vLLM 0.32 keeps it on the GPU
# while asleep unless `sleep_mode_offload_cudagraph` is on (worker.rollout.sleep_offload_cudagraph).
VLLM_CUDA_GRAPH_BYTES = int(0.5 * GIB)
HEAD_CHUNK_ELEMENTS = 1 << 26  # as verl.utils.torch_functional._CHUNK_ELEMENTS


@dataclass(frozen=True)
class ModelShape:
    """The dimensions of a dense decoder-only transformer (Qwen2/Qwen3/Llama)."""

    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    vocab_size: int
    tie_word_embeddings: bool

    @classmethod
    def from_config(cls, cfg: dict[str, Any]) -> ModelShape:
        heads = int(cfg["num_attention_heads"])
        return cls(
            hidden_size=int(cfg["hidden_size"]),
            num_layers=int(cfg["num_hidden_layers"]),
            num_heads=heads,
            num_kv_heads=int(cfg.get("num_key_value_heads") or heads),
            head_dim=int(cfg.get("head_dim") or cfg["hidden_size"] // heads),
            intermediate_size=int(cfg["intermediate_size"]),
            vocab_size=int(cfg["vocab_size"]),
            tie_word_embeddings=bool(cfg.get("tie_word_embeddings", False)),
        )

    @property
    def q_width(self) -> int:
        return self.num_heads * self.head_dim

    @property
    def kv_width(self) -> int:
        return self.num_kv_heads * self.head_dim

    @property
    def layer_params(self) -> int:
        """Attention (q, k, v, o and Qwen3's q/k norms), SwiGLU MLP and the two RMSNorms of one layer."""
        h = self.hidden_size
        attn = 2 * h * self.q_width + 2 * h * self.kv_width + 2 * self.head_dim
        return attn + 3 * h * self.intermediate_size + 2 * h

    @property
    def root_params(self) -> int:
        """What FSDP's root group holds: embedding, head (when untied) and the final norm."""
        embed = self.vocab_size * self.hidden_size
        return embed * (1 if self.tie_word_embeddings else 2) + self.hidden_size

    @property
    def num_params(self) -> int:
        return self.num_layers * self.layer_params + self.root_params

    def kv_bytes_per_token(self, tp: int = 1) -> int:
        return 2 * self.num_layers * self.kv_width * 2 // tp  # K and V, bf16, split over TP ranks


def _hub_cached_config(repo_id: str) -> Path | None:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    found = try_to_load_from_cache(repo_id, "config.json")
    return Path(found) if isinstance(found, str) else None


def load_model_shape(model_path: str) -> ModelShape:
    """The shape from `model_path`'s config.json: a local folder, or the hub cache (never the network)."""
    local = Path(model_path).expanduser() / "config.json"
    path = local if local.is_file() else _hub_cached_config(model_path)
    if path is None or not path.is_file():
        raise FileNotFoundError(
            f"no config.json for '{model_path}' in a local folder or the Hugging Face cache: download it "
            f"(huggingface-cli download {model_path} config.json) or point model_path at a folder"
        )
    return ModelShape.from_config(json.loads(path.read_text()))


def gpu_memory_gib() -> float | None:
    """Memory of the smallest visible GPU per nvidia-smi (GiB), or None without one."""
    if shutil.which("nvidia-smi") is None:
        return None
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=memory.total", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    sizes = [float(line) for line in out.split() if line.strip()]
    if visible:
        ids = [int(i) for i in visible.split(",") if i.strip().isdigit()]
        sizes = [sizes[i] for i in ids if i < len(sizes)] or sizes
    return min(sizes) / 1024 if sizes else None


@dataclass
class Phase:
    """One phase's bytes per GPU, by item (the torch-allocated peak plus runtime overhead)."""

    name: str
    items: dict[str, int]
    gpu_bytes: int
    advice: list[str] = field(default_factory=list)

    @property
    def allocated(self) -> int:
        """What torch's caching allocator holds at the peak (vLLM's budget included)."""
        return sum(v for k, v in self.items.items() if k not in ("fragmentation", "runtime"))

    @property
    def total(self) -> int:
        return sum(self.items.values())

    @property
    def fits(self) -> bool:
        return self.total <= USABLE_FRACTION * self.gpu_bytes


@dataclass
class MemoryPlan:
    model: str
    shape: ModelShape
    world_size: int
    gpu_mem_gib: float
    optimizer_offload: bool
    phases: dict[str, Phase]
    notes: list[str] = field(default_factory=list)

    @property
    def fits(self) -> bool:
        return all(p.fits for p in self.phases.values())

    def format(self) -> str:
        """A table: one column per phase, one row per item, GiB per GPU; then the advice."""
        names = list(self.phases)
        rows = sorted(
            {k for p in self.phases.values() for k, v in p.items.items() if v}, key=_ITEM_ORDER.index
        )
        width = max(len(r) for r in [*rows, "total / GPU"]) + 2
        lines = [
            f"memory plan: {self.model} ({self.shape.num_params / 1e9:.2f}B params), {self.world_size} training "
            f"GPU(s) of {self.gpu_mem_gib:g} GiB; GiB per GPU",
            " " * width + "".join(f"{n:>12}" for n in names),
        ]
        for row in rows:
            cells = [self.phases[n].items.get(row) for n in names]
            lines.append(
                f"{row:<{width}}"
                + "".join("-".rjust(12) if c is None else f"{c / GIB:>12.2f}" for c in cells)
            )
        lines.append(
            f"{'total / GPU':<{width}}" + "".join(f"{self.phases[n].total / GIB:>12.2f}" for n in names)
        )
        lines.append(
            f"{'fits':<{width}}" + "".join(f"{'yes' if self.phases[n].fits else 'NO':>12}" for n in names)
        )
        lines += [f"note: {n}" for n in self.notes]
        for phase in self.phases.values():
            lines += [f"{phase.name} does not fit: {a}" for a in phase.advice]
        return "\n".join(lines)


_ITEM_ORDER = [
    "actor params",
    "actor grads",
    "adam",
    "ref params",
    "unsharded params",
    "unsharded grads",
    "activations",
    "lm head",
    "vllm (weights)",
    "vllm (activations)",
    "vllm (kv cache)",
    "vllm asleep",
    "fragmentation",
    "runtime",
]


def activation_bytes_per_token(shape: ModelShape, kind: str, checkpointing: bool = True) -> int:
    """Bytes per token of the decoder body's activations (see the module docstring)."""
    h, q, k, i, L = (
        shape.hidden_size,
        shape.q_width,
        shape.kv_width,
        shape.intermediate_size,
        shape.num_layers,
    )
    small = 4 * shape.head_dim + 8 * shape.num_heads  # rotary tables, attention log-sum-exp
    if kind == "experience":
        return 7 * h + 6 * i + small
    if checkpointing:
        return 2 * h * L + 20 * h + 10 * q + 10 * k + 12 * i + small
    return L * (16 * h + 10 * q + 10 * k + 8 * i) + 8 * h + 6 * i + small


def _head_bytes(shape: ModelShape, tokens: int, backward: bool) -> int:
    """Fused head: the selected hidden states, one chunk of logits, and for the backward the
    weight-gradient accumulator (fp32) and a chunk product (bf16) plus the hidden-state gradient."""
    vh = shape.vocab_size * shape.hidden_size
    selected = 2 * shape.hidden_size * tokens
    chunk = min(tokens, max(1, HEAD_CHUNK_ELEMENTS // shape.vocab_size)) * shape.vocab_size
    if not backward:
        return selected + 6 * chunk  # bf16 matmul output + fp32 copy
    return 2 * selected + 10 * chunk + 6 * vh


def _attention_mask_bytes(rows: int, width: int, padded: bool) -> int:
    """Padded SDPA: transformers' bool mask and torch's bf16 additive copy, (rows, 1, S, S) each."""
    return 3 * rows * width * width if padded else 0


def _finish(name: str, items: dict[str, int], gpu_bytes: int) -> Phase:
    torch_part = sum(v for k, v in items.items() if not k.startswith("vllm"))
    items = {**items, "fragmentation": int(FRAGMENTATION * torch_part), "runtime": RUNTIME_OVERHEAD_BYTES}
    return Phase(name, {k: int(v) for k, v in items.items()}, gpu_bytes)


def _micro_batch(budget: int, rows: int, longest: int) -> tuple[int, int]:
    """(tokens, rows) of the largest micro-batch: the token budget, or fixed rows of the longest rows."""
    if budget > 0:
        return budget, max(1, budget // longest)
    return rows * longest, rows


def plan_memory(
    config: Any,
    world_size: int | None = None,
    gpu_mem_gib: float | None = None,
    shape: ModelShape | None = None,
    padding_free: bool | None = None,
    rollout: bool = True,
) -> MemoryPlan:
    """The memory plan of `config` (a PPOConfig) on `world_size` training GPUs of `gpu_mem_gib` GiB.

    world_size defaults to trainer.nnodes * trainer.n_devices_per_node; gpu_mem_gib to nvidia-smi's
    smallest GPU (ValueError without one); shape to the model's config.json; padding_free to
    "flash-attn importable here" (the dry run may run on a machine without it: see the notes).
    rollout=False plans the FSDP worker alone (the local worker mode): no generate phase.
    """
    actor, ref_cfg, rollout_cfg = config.worker.actor, config.worker.ref, config.worker.rollout
    world = world_size or config.trainer.nnodes * config.trainer.n_devices_per_node
    if gpu_mem_gib is None:
        gpu_mem_gib = gpu_memory_gib()
        if gpu_mem_gib is None:
            raise ValueError("no GPU visible (nvidia-smi): give the GPU memory, e.g. --gpu-mem 80")
    shape = shape or load_model_shape(actor.model.model_path)
    notes: list[str] = []
    if padding_free is None:
        from verl.utils.fsdp_utils import flash_attn_import_error

        padding_free = actor.padding_free and flash_attn_import_error() is None
        notes.append(
            "attention: "
            + (
                "packed sequences (flash-attn varlen)"
                if padding_free
                else "padded SDPA (flash-attn not importable here)"
            )
        )
    gpu = int(gpu_mem_gib * GIB)
    n, longest = shape.num_params, config.data.max_prompt_length + config.data.max_response_length
    statics = {
        "actor params": 0 if actor.fsdp.param_offload else 4 * n // world,
        "adam": 0 if actor.fsdp.param_offload else 8 * n // world,
        "ref params": 0
        if (not config.algorithm.use_kl_loss or ref_cfg.fsdp.param_offload)
        else 2 * n // world,
    }
    generate = _generate_phase(shape, rollout_cfg, statics, gpu, longest)
    offload = actor.fsdp.optimizer_offload
    if offload is None:  # auto: off the GPU between updates only when generate needs the room
        offload = rollout and not generate.fits and statics["adam"] > 0
        if offload:
            notes.append("optimizer_offload=null resolves to true: Adam does not fit beside vLLM")
    resident = {**statics, "adam": 0 if offload else statics["adam"]}
    generate = _generate_phase(shape, rollout_cfg, resident, gpu, longest)
    asleep = vllm_asleep_bytes(rollout_cfg) if rollout else 0
    experience = _experience_phase(shape, config, resident, gpu, longest, padding_free, asleep)
    update = _update_phase(shape, config, statics, world, gpu, longest, padding_free, asleep)
    phases = {"generate": generate, "experience": experience, "update": update}
    if not rollout:
        del phases["generate"]
    _advise(phases, shape, config, resident, offload)
    return MemoryPlan(actor.model.model_path, shape, world, gpu_mem_gib, bool(offload), phases, notes)


def cuda_graph_bytes(rollout: Any) -> int:
    """vLLM's CUDA-graph pool: none in eager mode."""
    return 0 if rollout.enforce_eager else VLLM_CUDA_GRAPH_BYTES


def vllm_asleep_bytes(rollout: Any) -> int:
    """What a sleeping vLLM engine still holds on the GPU: buffers outside its sleep pool, and the
    CUDA-graph pool unless it is backed up to host memory while asleep."""
    graphs = 0 if rollout.sleep_offload_cudagraph else cuda_graph_bytes(rollout)
    return VLLM_ASLEEP_BYTES + graphs


def _generate_phase(
    shape: ModelShape, rollout: Any, resident: dict[str, int], gpu: int, longest: int
) -> Phase:
    tp = rollout.tensor_parallel_size
    budget = int(rollout.gpu_memory_utilization * gpu)
    weights = 2 * shape.num_params // tp
    batched = max(rollout.max_num_batched_tokens, longest)
    activations = batched * activation_bytes_per_token(shape, "experience") // tp
    # the sampler's fp32 logits (and a copy) of max_num_seqs sequences at once, and the graph pool
    activations += rollout.max_num_seqs * shape.vocab_size * 8 + cuda_graph_bytes(rollout)
    kv = budget - weights - activations
    phase = _finish(
        "generate",
        {
            **resident,
            "vllm (weights)": weights,
            "vllm (activations)": activations,
            "vllm (kv cache)": max(kv, 0),
        },
        gpu,
    )
    per_seq = shape.kv_bytes_per_token(tp) * longest
    if kv < per_seq:
        phase.advice.append(
            f"vLLM's KV cache at gpu_memory_utilization={rollout.gpu_memory_utilization} is "
            f"{max(kv, 0) / GIB:.2f} GiB, less than one {longest}-token sequence ({per_seq / GIB:.2f} GiB): raise "
            "worker.rollout.gpu_memory_utilization or worker.rollout.tensor_parallel_size"
        )
    return phase


def _experience_phase(
    shape: ModelShape,
    config: Any,
    resident: dict[str, int],
    gpu: int,
    longest: int,
    padding_free: bool,
    asleep: int,
) -> Phase:
    actor, ref = config.worker.actor, config.worker.ref
    tokens, rows = _micro_batch(
        max(actor.max_tokens_per_micro_batch_for_experience, ref.max_tokens_per_micro_batch_for_experience),
        max(actor.micro_batch_size_per_device_for_experience, ref.micro_batch_size_per_device_for_experience),
        longest,
    )
    body = tokens * activation_bytes_per_token(shape, "experience")
    body += _attention_mask_bytes(rows, longest, not padding_free)
    # The head runs after the body, beside its (T, H) output only: it adds to the peak what it
    # needs beyond the body's own transient peak.
    head = 2 * shape.hidden_size * tokens + _head_bytes(shape, tokens, backward=False)
    return _finish(
        "experience",
        {
            **resident,
            "unsharded params": 2 * shape.root_params + 2 * 2 * shape.layer_params,
            "activations": body,
            "lm head": max(0, head - body),
            "vllm asleep": asleep,
        },
        gpu,
    )


def _update_phase(
    shape: ModelShape,
    config: Any,
    statics: dict[str, int],
    world: int,
    gpu: int,
    longest: int,
    padding_free: bool,
    asleep: int,
) -> Phase:
    actor = config.worker.actor
    budget = (
        0 if actor.loss_agg_mode == "microbatch-token-mean" else actor.max_tokens_per_micro_batch_for_update
    )
    tokens, rows = _micro_batch(budget, actor.micro_batch_size_per_device_for_update, longest)
    ckpt = actor.model.enable_gradient_checkpointing
    per_token = activation_bytes_per_token(shape, "update", ckpt)
    if not padding_free:  # SDPA with a mask repeats K/V over the query heads (no GQA kernel)
        per_token += 4 * (shape.q_width - shape.kv_width) * (shape.num_layers if not ckpt else 1)
    layer, root = shape.layer_params, shape.root_params
    # Backward: one layer's bf16 gradient, its fp32 reduce-scatter input and output; the root's
    # bf16 gradient from the head onwards.
    unsharded_grads = 2 * layer + 4 * layer + 4 * layer // world + 2 * root
    saved_inputs = tokens * 2 * shape.hidden_size * shape.num_layers if ckpt else 0
    working = tokens * per_token - saved_inputs + _attention_mask_bytes(rows, longest, not padding_free)
    # The head's backward (first in the backward pass) and a layer's recompute + backward never
    # overlap; both sit on top of the saved layer inputs.
    head = _head_bytes(shape, tokens, backward=True)
    return _finish(
        "update",
        {
            **statics,
            "actor grads": statics["actor params"],
            "unsharded params": 2 * root + 2 * 2 * layer,
            "unsharded grads": unsharded_grads,
            "activations": saved_inputs + working,
            "lm head": max(0, head - working),
            "vllm asleep": asleep,
        },
        gpu,
    )


def _tokens_that_fit(phase: Phase, per_token: float, current: int) -> int:
    """The token budget that would bring `phase` within the usable memory (0 if none would)."""
    excess = phase.total - USABLE_FRACTION * phase.gpu_bytes
    return max(0, int(current - math.ceil(excess / max(per_token, 1))))


def _advise(
    phases: dict[str, Phase], shape: ModelShape, config: Any, resident: dict[str, int], offload: bool
) -> None:
    actor, rollout = config.worker.actor, config.worker.rollout
    gen = phases.get("generate")
    if gen is not None and not gen.fits:
        if not offload and resident["adam"]:
            gen.advice.append(
                f"set worker.actor.fsdp.optimizer_offload=true (moves {resident['adam'] / GIB:.2f} GiB of Adam "
                "state to host memory between updates)"
            )
        room = USABLE_FRACTION * gen.gpu_bytes - (
            gen.total
            - gen.items["vllm (weights)"]
            - gen.items["vllm (activations)"]
            - gen.items["vllm (kv cache)"]
        )
        gen.advice.append(
            f"lower worker.rollout.gpu_memory_utilization to {math.floor(room / gen.gpu_bytes * 100) / 100:.2f} "
            f"or less (now {rollout.gpu_memory_utilization}), or train on more GPUs (trainer.n_devices_per_node)"
        )
    exp = phases["experience"]
    if not exp.fits:
        per = activation_bytes_per_token(shape, "experience") + 4 * shape.hidden_size
        cur = max(
            actor.max_tokens_per_micro_batch_for_experience,
            config.worker.ref.max_tokens_per_micro_batch_for_experience,
        )
        exp.advice.append(
            f"lower worker.actor/ref.max_tokens_per_micro_batch_for_experience to {_tokens_that_fit(exp, per, cur)} "
            "or less (at least data.max_prompt_length + data.max_response_length), or set "
            "worker.actor.fsdp.optimizer_offload=true"
        )
    upd = phases["update"]
    if not upd.fits:
        per = activation_bytes_per_token(shape, "update", actor.model.enable_gradient_checkpointing)
        if not actor.model.enable_gradient_checkpointing:
            upd.advice.append("set worker.actor.model.enable_gradient_checkpointing=true")
        upd.advice.append(
            f"lower worker.actor.max_tokens_per_micro_batch_for_update to "
            f"{_tokens_that_fit(upd, per, actor.max_tokens_per_micro_batch_for_update)} or less, or set "
            "worker.actor.fsdp.param_offload=true (parameters, gradients and Adam in host memory; slow)"
        )
