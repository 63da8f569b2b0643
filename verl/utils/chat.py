"""Rendering a chat into a prompt, written once for every engine and client of the project.

With a chat template: the tokenizer's template with the generation prompt; the text already holds
every special token the model expects, so it is tokenised without adding special tokens again (no
doubled BOS).

Without one (base checkpoints saved without a template): the layout of the R-Zero authors' code
(their trainer's dataset, Solver server, question generation, labelling and evaluation scripts),
one `role: content` line per message joined by a newline, nothing after the last message:

    system: Please reason step by step, ...
    user: What is 2+3?

That text is tokenised with the tokenizer's own special tokens (its BOS, if it has one), as the
model saw text in pre-training and as vLLM's completions endpoint tokenises a text prompt.

Every path (GRPO prompts through `verl.utils.dataset`, question generation and labelling through
`infra.vllm_engines.encode_chats`, the Solver service client, evaluation) calls `render_chat` /
`encode_chat`, so a model without a template is prompted the same way everywhere.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

Messages = Sequence[dict[str, str]]


def has_chat_template(tokenizer: Any) -> bool:
    """Whether `tokenizer` carries a chat template (an empty string counts as none)."""
    return bool(getattr(tokenizer, "chat_template", None))


def plain_chat(messages: Messages) -> str:
    """The template-less layout: `"system: S\\nuser: U"` (one `role: content` line per message)."""
    return "\n".join(f"{m['role']}: {m['content']}" for m in messages)


def render_chat(tokenizer: Any, messages: Messages) -> str:
    """The prompt text of `messages`: the chat template with the generation prompt, or `plain_chat`."""
    if has_chat_template(tokenizer):
        return tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=True)
    return plain_chat(messages)


def adds_special_tokens(tokenizer: Any) -> bool:
    """Whether the text of `render_chat` is tokenised with the tokenizer's special tokens.

    False with a template (the rendered text holds them already), True without one.
    """
    return not has_chat_template(tokenizer)


def encode_chat(tokenizer: Any, messages: Messages) -> list[int]:
    """Prompt token ids of `messages`: `render_chat`'s text, tokenised as `adds_special_tokens` says."""
    text = render_chat(tokenizer, messages)
    return list(tokenizer(text, add_special_tokens=adds_special_tokens(tokenizer))["input_ids"])
