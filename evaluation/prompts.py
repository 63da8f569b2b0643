"""Prompts for evaluation, worded as the R-Zero authors' evaluation scripts word them (RZERO_SPEC.md
section 5): they are part of the protocol behind the paper's numbers.

- Math benchmarks: the Solver prompt (`rzero.prompts.solver_messages`: the system prompt, the question
  as the user turn), the one string every Solver query uses (the authors' evaluation/generate.py).
- MMLU-Pro, SuperGPQA, BBEH: one user turn, built as the authors' eval_mmlupro.py,
  eval_supergpqa.py and eval_bbeh.py build it on a model with a chat template:
      query   = question + "\\n" [+ "Options are:\\n(A): ...\\n(B): ...\\n" + "\\n"]   (options: multiple choice)
      content = query + "\\n" + the benchmark's instruction
  so MMLU-Pro and SuperGPQA have two blank lines between the last option and the instruction, BBEH
  one blank line between the question and it. The instructions differ by benchmark, as the authors'
  do: MMLU-Pro asks for "the option letter", SuperGPQA for "the letter", BBEH for "the final answer
  option" (and no letter example). GPQA-Diamond has no script of the authors': it takes SuperGPQA's.

Each instruction is written once, in `INSTRUCTIONS`. The chat is rendered by the project's one
rendering (`verl.utils.chat`): the chat template, or the "system: ...\\nuser: ..." fallback for a model
without one (the authors' scripts add a variant instruction in that case; this project keeps one
wording per benchmark whatever the tokenizer).
"""

from __future__ import annotations

from typing import Any

from evaluation.loaders import OPTION_LETTERS, Item
from evaluation.registry import REGISTRY, resolve_name
from rzero.prompts import solver_messages
from verl.utils.chat import encode_chat, has_chat_template, render_chat
from verl.utils.stop_tokens import stop_token_ids

MMLU_PRO_INSTRUCTION = (
    "Please reason step by step, and put your final answer option within \\boxed{}. "
    "Only put the option letter in the box, e.g. \\boxed{A}. There is only one correct answer."
)
SUPERGPQA_INSTRUCTION = (
    "Please reason step by step, and put your final answer option within \\boxed{}. "
    "Only put the letter in the box, e.g. \\boxed{A}. There is only one correct answer."
)
BBEH_INSTRUCTION = "Please reason step by step, and put your final answer option within \\boxed{}."

INSTRUCTIONS: dict[str, str] = {
    "mmlu_pro": MMLU_PRO_INSTRUCTION,
    "supergpqa": SUPERGPQA_INSTRUCTION,
    "gpqa_diamond": SUPERGPQA_INSTRUCTION,
    "bbeh": BBEH_INSTRUCTION,
}
"""The instruction after each non-math benchmark's question (math benchmarks use the Solver prompt)."""


def format_options(options: tuple[str, ...] | list[str]) -> str:
    """`("x", "y")` -> "Options are:\\n(A): x\\n(B): y\\n" (the authors' `form_options`)."""
    return "Options are:\n" + "".join(f"({OPTION_LETTERS[i]}): {text}\n" for i, text in enumerate(options))


def build_messages(item: Item, benchmark: str) -> list[dict[str, str]]:
    """Chat messages for one item of `benchmark` (a registry name or alias)."""
    name = resolve_name(benchmark)
    metric = REGISTRY[name].metric
    if metric == "math":
        return solver_messages(item.question)  # the Solver prompt it was trained with (rzero.prompts)
    if name not in INSTRUCTIONS:
        raise ValueError(f"{name}: no evaluation instruction for this benchmark; add it to INSTRUCTIONS")
    query = item.question + "\n"
    if metric == "mc":
        if not item.options:
            raise ValueError(f"{item.id}: a multiple-choice item of {name} needs options")
        query += format_options(item.options) + "\n"
    return [{"role": "user", "content": query + "\n" + INSTRUCTIONS[name]}]


def render_prompt(tokenizer: Any, messages: list[dict[str, str]]) -> tuple[list[int], str, bool]:
    """Token ids and text of the prompt (`verl.utils.chat`, as every engine renders it); the bool
    says whether the chat template was used."""
    return encode_chat(tokenizer, messages), render_chat(tokenizer, messages), has_chat_template(tokenizer)


def stop_settings(tokenizer: Any, generation_config: Any = None) -> tuple[list[int], list[str]]:
    """(stop token ids, stop strings) for the responses to evaluation prompts.

    The project's one stop rule (`verl.utils.stop_tokens`), the same as in training, the Solver
    service and labelling; no stop strings, so that a model without a chat template answers here
    as it answers everywhere else.
    """
    return stop_token_ids(tokenizer, generation_config), []
