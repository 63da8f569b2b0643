"""Prompts for evaluation: the chat messages per metric, rendered with the model's chat template.

The wording follows the authors' evaluation scripts: math questions get the Solver prompt
(`rzero.prompts.solver_messages`, the one string every Solver query uses), multiple-choice questions list the options as "(A): ..." and
ask for the letter in \\boxed{}, BBEH questions ask for the final answer in \\boxed{}. A model
without a chat template gets a plain "system: / user: / assistant:" transcript.
"""

from __future__ import annotations

from typing import Any

from evaluation.loaders import OPTION_LETTERS, Item
from rzero.prompts import solver_messages
from verl.utils.stop_tokens import stop_token_ids

MC_INSTRUCTION = (
    "Please reason step by step, and put your final answer option within \\boxed{}. "
    "Only put the option letter in the box, e.g. \\boxed{A}. There is only one correct answer."
)
BBEH_INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."

PLAIN_STOP_STRINGS = ("\nuser:", "\nsystem:")


def format_options(options: tuple[str, ...] | list[str]) -> str:
    """`("x", "y")` -> "Options are:\\n(A): x\\n(B): y\\n"."""
    lines = [f"({OPTION_LETTERS[i]}): {text}" for i, text in enumerate(options)]
    return "Options are:\n" + "\n".join(lines) + "\n"


def build_messages(item: Item, metric: str) -> list[dict[str, str]]:
    """Chat messages for one item under `metric` ("math", "mc" or "bbeh")."""
    if metric == "math":
        return solver_messages(item.question)  # the Solver prompt it was trained with (rzero.prompts)
    if metric == "mc":
        if not item.options:
            raise ValueError(f"{item.id}: a multiple-choice item needs options")
        content = f"{item.question}\n{format_options(item.options)}\n{MC_INSTRUCTION}"
        return [{"role": "user", "content": content}]
    if metric == "bbeh":
        return [{"role": "user", "content": f"{item.question}\n\n{BBEH_INSTRUCTION}"}]
    raise ValueError(f"unknown metric {metric!r}")


def plain_prompt(messages: list[dict[str, str]]) -> str:
    """Transcript for models without a chat template (base checkpoints saved without one)."""
    lines = [f"{m['role']}: {m['content']}" for m in messages]
    return "\n".join(lines) + "\nassistant:"


def render_prompt(tokenizer: Any, messages: list[dict[str, str]]) -> tuple[list[int], str, bool]:
    """Token ids and text of the prompt; the bool says whether the chat template was used.

    With a chat template the rendered text already holds every special token the model expects,
    so it is tokenised without adding special tokens again (no doubled BOS); a plain prompt is
    tokenised with them.
    """
    if getattr(tokenizer, "chat_template", None):
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        return list(ids), text, True
    text = plain_prompt(messages)
    ids = tokenizer(text, add_special_tokens=True)["input_ids"]
    return list(ids), text, False


def stop_settings(
    tokenizer: Any, used_template: bool, generation_config: Any = None
) -> tuple[list[int], list[str]]:
    """(stop token ids, stop strings) for responses to prompts rendered by `render_prompt`.

    The project's one stop rule (`verl.utils.stop_tokens`); a plain transcript also stops at the
    next "user:" / "system:" line.
    """
    ids = stop_token_ids(tokenizer, generation_config)
    return ids, ([] if used_template else list(PLAIN_STOP_STRINGS))
