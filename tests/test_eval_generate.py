"""Generation settings and prompts, without starting an engine: sampling protocol, seeds, data-parallel
sharding, chat template vs plain prompt, per-benchmark k / temperature in a run config."""

from __future__ import annotations

import pytest

from evaluation.generate import EngineConfig, SamplingConfig
from evaluation.loaders import Item
from evaluation.prompts import build_messages, render_prompt, stop_settings
from evaluation.runner import RunConfig
from rzero.prompts import SOLVER_SYSTEM_PROMPT


def test_sampling_labels_and_seeds() -> None:
    greedy = SamplingConfig()
    assert greedy.greedy and greedy.label == "greedy" and greedy.request_seed(5) is None
    mean = SamplingConfig(k=32, temperature=0.6, top_p=0.95, seed=7)
    assert mean.label == "mean@32 T=0.6 top_p=0.95"
    # Children of request i get seeds seed+i*k .. seed+i*k+k-1: no two samples of a run share one.
    child_seeds = [mean.request_seed(i) + j for i in range(3) for j in range(mean.k)]
    assert len(set(child_seeds)) == 3 * 32 and mean.request_seed(0) == 7
    assert SamplingConfig(temperature=1.0).label == "sampled T=1"
    with pytest.raises(ValueError, match="needs sampling"):
        SamplingConfig(k=4, temperature=0.0)


def test_run_config_applies_k_to_the_papers_mean_at_k_benchmarks() -> None:
    config = RunConfig(
        EngineConfig("m"), "out", [], k=32, sample_temperature=0.6, temperature=0.0, max_tokens=100
    )
    assert config.sampling_for("aime24") == SamplingConfig(32, 0.6, 0.95, -1, 100, 0)
    assert config.sampling_for("amc23").k == 32 and config.sampling_for("aime2025").k == 32
    assert config.sampling_for("gsm8k") == SamplingConfig(1, 0.0, 1.0, -1, 100, 0)
    config.k_for = {"gsm8k": 4, "aime2024": 1}
    assert config.sampling_for("gsm8k").k == 4 and config.sampling_for("aime2024").greedy
    config.k_for = {"all": 2}
    assert {config.sampling_for(n).k for n in ("gsm8k", "mmlu_pro", "amc23")} == {2}


def test_prompts_use_the_chat_template_or_a_plain_fallback(tiny_model_dir: str) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    math_item = Item("g-0", 0, "What is 2+3?", "5")
    ids, text, used = render_prompt(tokenizer, build_messages(math_item, "gsm8k"))
    assert used
    assert (
        text
        == f"<|im_start|>system\n{SOLVER_SYSTEM_PROMPT}<|im_end|>\n<|im_start|>user\nWhat is 2+3?<|im_end|>\n<|im_start|>assistant\n"
    )
    assert ids == tokenizer(text, add_special_tokens=False)["input_ids"]
    assert tokenizer.convert_ids_to_tokens(ids[0]) == "<|im_start|>"  # special tokens, not their spelling

    mc_item = Item("mc-0", 0, "Pick one.", "B", ("x", "y"))
    messages = build_messages(mc_item, "mmlu_pro")
    assert (
        "Options are:\n(A): x\n(B): y\n" in messages[-1]["content"]
        and "\\boxed{A}" in messages[-1]["content"]
    )
    tokenizer.chat_template = None
    ids, text, used = render_prompt(tokenizer, messages)
    assert not used and text == "user: " + messages[-1]["content"]  # the "role: content" fallback
    assert ids == tokenizer(text)["input_ids"]
    with pytest.raises(ValueError, match="needs options"):
        build_messages(Item("mc-1", 1, "q", "A"), "supergpqa")


def test_responses_stop_at_the_end_of_the_assistant_turn(tiny_model_dir: str) -> None:
    from transformers import AutoTokenizer

    from verl.utils.stop_tokens import load_generation_config, stop_token_ids

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    generation_config = load_generation_config(tiny_model_dir)  # EOS <|endoftext|>, as a Base model's
    ids, strings = stop_settings(tokenizer, generation_config)
    # the chat template's end of turn is a stop id although neither EOS names it
    assert set(ids) == set(tokenizer.convert_tokens_to_ids(["<|im_end|>", "<|endoftext|>"])) and strings == []
    tokenizer.chat_template = None  # a model without a template stops where every engine stops
    assert stop_settings(tokenizer, generation_config) == (stop_token_ids(tokenizer, generation_config), [])
