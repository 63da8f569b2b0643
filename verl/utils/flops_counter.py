"""Model-FLOPs-utilisation (MFU) estimate for dense decoder-only models (Qwen2/Qwen3/Llama).

FLOPs are counted analytically from the model config, the way verl's FlopsCounter does: every
matmul weight costs 2 FLOPs per token forward and 4 more backward (6 for a training step), and
attention scores/values cost `12 * seqlen^2 * head_dim * num_heads` per layer and sequence for a
training step (forward QK^T and PV are 2 * 2 * s^2 * d each head; backward is twice that). The
attention term assumes full (not causal-skipping) attention, as verl does, so MFU is comparable with
verl's reports.

One deliberate difference from verl: the embedding lookup is a gather (no FLOPs), so only the LM
head's `vocab_size * hidden_size` matmul is counted, tied embeddings or not; verl counts the vocab
matrix twice, which overstates MFU by ~10% on Qwen3-4B.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

# Dense (non-sparse) bf16/fp16 tensor-core TFLOPS per device, from the vendors' data sheets.
# Order matters: the first pattern that matches the device name wins, so variants come first.
_PEAK_BF16_TFLOPS: list[tuple[str, float]] = [
    (r"GH200", 989.0),
    (r"H100.*PCIE", 756.0),
    (r"H100.*NVL", 835.0),
    (r"H100", 989.0),  # SXM (torch reports e.g. "NVIDIA H100 80GB HBM3")
    (r"H200.*NVL", 835.0),
    (r"H200", 989.0),
    (r"H20", 148.0),  # after H200: the word boundary below keeps "H20" from matching "H200"
    (r"A100", 312.0),
    (r"A800", 312.0),
    (r"L40S", 362.0),
    (r"A10", 125.0),  # not "A100" (boundary) nor "A10G" (a different, slower part)
    (r"B200", 2250.0),
    (r"RTX 4090", 165.0),
]
_HALF_DTYPES = {"bf16", "bfloat16", "fp16", "float16", "half"}
_FULL_DTYPES = {"fp32", "float32", "float", "tf32"}


def _head_dim(config: Any) -> int:
    head_dim = getattr(config, "head_dim", None)
    # Some configs carry head_dim=None; Llama-style configs derive it from hidden / heads.
    return int(head_dim) if head_dim else config.hidden_size // config.num_attention_heads


def matmul_params_per_token(config: Any) -> int:
    """Weights that take part in a matmul for every token (decoder layers + LM head).

    Per layer: q/o projections `hidden * heads * head_dim` each, k/v projections
    `hidden * kv_heads * head_dim` each, SwiGLU MLP `3 * hidden * intermediate`. Norms and biases
    are negligible and left out. The embedding lookup is free; the LM head is `vocab * hidden`.
    """
    hidden, head_dim = config.hidden_size, _head_dim(config)
    q_and_o = 2 * hidden * config.num_attention_heads * head_dim
    k_and_v = 2 * hidden * config.num_key_value_heads * head_dim
    mlp = 3 * hidden * config.intermediate_size
    return (q_and_o + k_and_v + mlp) * config.num_hidden_layers + config.vocab_size * hidden


def count_flops(config: Any, batch_seqlens: Sequence[int], *, backward: bool = True) -> float:
    """FLOPs to run the model over sequences of the given lengths (forward, or forward + backward).

    `batch_seqlens`: the unpadded length (prompt + response tokens) of every sequence processed.
    Training (backward=True) is 3x the forward cost for both the dense and the attention part.
    """
    if any(s < 0 for s in batch_seqlens):
        raise ValueError(f"sequence lengths must be >= 0, got {list(batch_seqlens)}")
    factor = 3 if backward else 1
    tokens = sum(batch_seqlens)
    dense = 2 * matmul_params_per_token(config) * tokens
    attn_per_token_pair = 4 * _head_dim(config) * config.num_attention_heads * config.num_hidden_layers
    attention = attn_per_token_pair * sum(s * s for s in batch_seqlens)
    return float(factor * (dense + attention))


def estimate_flops(
    config: Any, batch_seqlens: Sequence[int], delta_time_s: float
) -> tuple[float, float | None]:
    """Achieved training TFLOPS of one update over `batch_seqlens`, taking `delta_time_s` seconds.

    Returns `(achieved_tflops, peak_tflops_per_device)`; the peak is that of the current CUDA
    device (None on CPU or an unknown GPU, in which case MFU is not reported). Pass the lengths of
    the whole batch (all data-parallel ranks) and use `mfu(achieved, n_devices, peak)`.
    """
    return _rate(count_flops(config, batch_seqlens, backward=True), delta_time_s), peak_tflops()


def _rate(flops: float, delta_time_s: float) -> float:
    if not delta_time_s > 0:
        raise ValueError(f"delta_time_s must be > 0, got {delta_time_s}")
    return flops / delta_time_s / 1e12


def _current_device_name() -> str | None:
    import torch  # lazy: keeps this module importable without paying for torch

    return torch.cuda.get_device_name() if torch.cuda.is_available() else None


def peak_tflops(device_name: str | None = None, dtype: Any = "bf16") -> float | None:
    """Dense peak TFLOPS of one device for `dtype`, or None when unknown (CPU, unlisted GPU, fp32).

    `device_name` defaults to the current CUDA device (`torch.cuda.get_device_name()`); matching is
    case-insensitive on whole model names, so "NVIDIA H100 80GB HBM3" -> 989 and "NVIDIA H20" -> 148.
    `dtype` may be a string ("bf16", "float16", ...) or a torch dtype. Only bf16/fp16 peaks are
    tabled: MFU of fp32 runs (the CPU path) is not reported.
    """
    name = str(dtype).removeprefix("torch.").lower()
    if name in _FULL_DTYPES:
        return None
    if name not in _HALF_DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}: use one of {sorted(_HALF_DTYPES | _FULL_DTYPES)}")
    if device_name is None:
        device_name = _current_device_name()
        if device_name is None:
            return None
    upper = device_name.upper()
    for pattern, tflops in _PEAK_BF16_TFLOPS:
        # Boundaries on both sides: "H20" must not match "H200", "A10" must not match "A100"/"A10G".
        if re.search(rf"(?<![A-Z0-9]){pattern}(?![A-Z0-9])", upper):
            return tflops
    return None


def mfu(achieved_tflops: float, n_devices: int, peak: float | None) -> float | None:
    """Model FLOPs utilisation in [0, 1]: achieved / (n_devices * per-device peak); None without a peak.

    `achieved_tflops` is the rate of the whole job (all devices), as `estimate_flops` returns it when
    given every rank's sequence lengths.
    """
    if n_devices < 1:
        raise ValueError(f"n_devices must be >= 1, got {n_devices}")
    if peak is None or peak <= 0:
        return None
    return achieved_tflops / (n_devices * peak)
