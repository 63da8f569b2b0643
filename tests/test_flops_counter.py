"""FLOPs / MFU estimate: hand-computed counts on tiny configs, the peak-TFLOPS table, MFU."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from transformers import AutoModelForCausalLM, Qwen3Config

from verl.utils.flops_counter import (
    count_flops,
    estimate_flops,
    matmul_params_per_token,
    mfu,
    peak_tflops,
)


def tiny_config(**overrides) -> Qwen3Config:
    # head_dim 32 != hidden / heads (16) on purpose: the explicit head_dim must be the one used.
    kwargs = dict(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=32,
        vocab_size=100,
        tie_word_embeddings=True,
    )
    kwargs.update(overrides)
    return Qwen3Config(**kwargs)


# Per layer: q+o 2*64*(4*32) = 16384, k+v 2*64*(2*32) = 8192, MLP 3*64*128 = 24576 -> 49152;
# 2 layers -> 98304; LM head 100*64 = 6400 -> 104704 matmul weights per token.
TINY_PARAMS = 104_704


def test_matmul_params_hand_computed():
    assert matmul_params_per_token(tiny_config()) == TINY_PARAMS


def test_training_and_forward_flops_hand_computed():
    seqlens = [3, 5]  # 8 tokens, sum of squares 9 + 25 = 34
    # dense 6 * params * tokens; attention 12 * sum(s^2) * head_dim * heads * layers
    train = 6 * TINY_PARAMS * 8 + 12 * 34 * 32 * 4 * 2
    assert train == 5_130_240
    assert count_flops(tiny_config(), seqlens) == train
    forward = 2 * TINY_PARAMS * 8 + 4 * 34 * 32 * 4 * 2
    assert count_flops(tiny_config(), seqlens, backward=False) == forward == 1_710_080

    achieved, peak = estimate_flops(tiny_config(), seqlens, delta_time_s=2.0)
    assert achieved == pytest.approx(train / 2.0 / 1e12, rel=1e-12)
    assert peak == peak_tflops()


def test_head_dim_falls_back_to_hidden_over_heads():
    # A Llama-style config with no head_dim: head_dim = 64 / 4 = 16.
    cfg = SimpleNamespace(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=100,
        tie_word_embeddings=False,
    )
    # per layer 2*64*64 + 2*64*32 + 24576 = 36864; x2 + 6400 = 80128
    assert matmul_params_per_token(cfg) == 80_128
    assert count_flops(cfg, [4]) == 6 * 80_128 * 4 + 12 * 16 * 16 * 4 * 2
    cfg.head_dim = None  # some configs carry an explicit None
    assert matmul_params_per_token(cfg) == 80_128


def test_embedding_lookup_costs_nothing_tied_or_not():
    tied = count_flops(tiny_config(tie_word_embeddings=True), [7, 2])
    untied = count_flops(tiny_config(tie_word_embeddings=False), [7, 2])
    assert tied == untied


def test_matmul_params_match_the_real_qwen3_4b_architecture():
    # Qwen3-4B's shapes, built on the meta device (no memory): every nn.Linear weight is one matmul
    # weight per token, the LM head included; embeddings and norms are not.
    cfg = Qwen3Config(
        hidden_size=2560,
        intermediate_size=9728,
        num_hidden_layers=36,
        num_attention_heads=32,
        num_key_value_heads=8,
        head_dim=128,
        vocab_size=151936,
        tie_word_embeddings=True,
    )
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(cfg)
    linear = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))
    assert matmul_params_per_token(cfg) == linear == 4_022_272_000


def test_rejects_bad_inputs():
    with pytest.raises(ValueError, match="delta_time_s"):
        estimate_flops(tiny_config(), [3], delta_time_s=0.0)
    with pytest.raises(ValueError, match=">= 0"):
        count_flops(tiny_config(), [3, -1])


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("NVIDIA H100 80GB HBM3", 989.0),
        ("NVIDIA H100 PCIe", 756.0),
        ("NVIDIA H200", 989.0),
        ("NVIDIA H20", 148.0),
        ("NVIDIA A100-SXM4-80GB", 312.0),
        ("NVIDIA A100 80GB PCIe", 312.0),
        ("NVIDIA A800-SXM4-80GB", 312.0),
        ("NVIDIA L40S", 362.0),
        ("NVIDIA A10", 125.0),
        ("NVIDIA B200", 2250.0),
        ("NVIDIA GeForce RTX 4090", 165.0),
        ("nvidia h100 80gb hbm3", 989.0),  # case-insensitive
        ("NVIDIA A10G", None),  # a different part: not to be confused with A10 or A100
        ("Tesla T4", None),
        ("cpu", None),
    ],
)
def test_peak_table(name: str, expected: float | None):
    assert peak_tflops(name) == expected


def test_peak_dtype_handling():
    assert peak_tflops("NVIDIA H100 80GB HBM3", dtype=torch.bfloat16) == 989.0
    assert peak_tflops("NVIDIA H100 80GB HBM3", dtype="fp16") == 989.0
    assert peak_tflops("NVIDIA H100 80GB HBM3", dtype="fp32") is None  # fp32 peaks are not tabled
    with pytest.raises(ValueError, match="unknown dtype"):
        peak_tflops("NVIDIA H100 80GB HBM3", dtype="int3")


def test_peak_of_current_device():
    # On this CPU machine there is no CUDA device: no peak, so no MFU. On a GPU it is the table's.
    expected = peak_tflops(torch.cuda.get_device_name()) if torch.cuda.is_available() else None
    assert peak_tflops() == expected


def test_mfu():
    assert mfu(624.0, 4, 312.0) == pytest.approx(0.5)
    assert mfu(100.0, 1, None) is None
    with pytest.raises(ValueError, match="n_devices"):
        mfu(100.0, 0, 312.0)
