"""The one rule for where a generation stops (every engine of the project uses it).

Every engine of the project (GRPO rollouts, the Solver service, question generation,
pseudo-labelling, evaluation) stops at:
- the model's EOS ids: the tokenizer's `eos_token_id` and every id of `generation_config.eos_token_id`;
- the chat template's end-of-turn token (`<|im_end|>` for ChatML models), when the tokenizer has a
  chat template that uses one.

Why both: Qwen3 Base names `<|im_end|>` in the tokenizer but `<|endoftext|>` in generation_config;
Qwen2.5 Base names `<|endoftext|>` in both, so without the end-of-turn stop it writes the next turn
itself and the last `\\boxed{}` comes from a turn it invented.
"""

from __future__ import annotations

import os
from typing import Any

# End-of-turn markers of common chat templates. One is a stop id only when the model's chat template
# uses it (a base model's tokenizer may list ChatML tokens it never emits as turn ends).
END_OF_TURN_TOKENS = ("<|im_end|>", "<|eot_id|>", "<end_of_turn>", "<|end|>")


def _as_ids(value: Any) -> set[int]:
    if value is None:
        return set()
    if isinstance(value, int):
        return {value}
    return {int(v) for v in value if v is not None}


def end_of_turn_token_ids(tokenizer: Any) -> set[int]:
    """Ids of the end-of-turn tokens that the tokenizer's chat template writes (empty without one)."""
    template = getattr(tokenizer, "chat_template", None) or ""
    if isinstance(template, dict):  # several named templates
        template = "\n".join(str(t) for t in template.values())
    vocab = tokenizer.get_vocab()
    return {vocab[token] for token in END_OF_TURN_TOKENS if token in template and token in vocab}


def stop_token_ids(tokenizer: Any, generation_config: Any = None) -> list[int]:
    """Sorted stop ids: tokenizer EOS, generation_config EOS ids, the chat template's end of turn.

    `generation_config` is a `transformers.GenerationConfig` (or anything with `eos_token_id`), or
    None when the model folder has none.
    """
    ids = _as_ids(getattr(tokenizer, "eos_token_id", None))
    ids |= _as_ids(getattr(generation_config, "eos_token_id", None))
    ids |= end_of_turn_token_ids(tokenizer)
    return sorted(ids)


def load_generation_config(model_path: str | os.PathLike) -> Any:
    """The model's generation_config.json as a GenerationConfig, or None when it has none."""
    from transformers import GenerationConfig  # heavy import, only when a model is loaded

    try:
        return GenerationConfig.from_pretrained(str(model_path))
    except OSError:  # no generation_config.json in the folder / repo: the tokenizer's EOS decides
        return None


def model_stop_token_ids(model_path: str | os.PathLike, tokenizer: Any) -> list[int]:
    """`stop_token_ids` for the model at `model_path` (reads its generation_config.json)."""
    return stop_token_ids(tokenizer, load_generation_config(model_path))
