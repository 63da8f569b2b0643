"""The R-Zero prompts, each written once: the Solver's (RZERO_SPEC.md sections 2 and 3) and the
Challenger's zero-data prompt (section 2, in our own words).

Solver: one system prompt, used wherever the Solver answers (the Solver service queried by the
Challenger reward, pseudo-labelling, Solver GRPO through `solver_prompt_config()`, evaluation of the
math benchmarks), so that p̂ is measured with the prompt the Solver is trained and evaluated with.

Challenger: every prompt is the same two-message chat; no dataset is needed. Variants:
- `default`: a competition-math problem setter;
- `persona`: the role sentence ("You are an expert setter of ...") replaced by "You are <persona>.",
  the persona drawn per prompt (seeded by (seed, prompt index)) from a persona list file: one persona
  a line, blank lines ignored; `configs/personas.txt` ships, `--set challenger.persona_file=FILE`
  (question generation: `--persona-file`) takes a user's. The authors draw theirs from PersonaHub
  ("You are {persona}." in place of their role sentence).
- `general`: a domain-general question writer (science, logic, everyday reasoning), still with one
  short checkable answer in \\boxed{}.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path

# The authors' and Qwen's standard math prompt (RZERO_SPEC.md section 2, "The Solver prompt").
SOLVER_SYSTEM_PROMPT = "Please reason step by step, and put your final answer within \\boxed{}."


def solver_messages(question: str, system_prompt: str = SOLVER_SYSTEM_PROMPT) -> list[dict[str, str]]:
    """The Solver chat for one question: the system prompt, then the question as the user turn.

    Returns `[{"role": "system", ...}, {"role": "user", ...}]`, ready for
    `tokenizer.apply_chat_template(..., add_generation_prompt=True)`.
    """
    return [
        {"role": "system", "content": system_prompt},
        {"role": "user", "content": question.strip()},
    ]


VARIANTS = ("default", "persona", "general")

PERSONA_FILE = Path(__file__).resolve().parents[1] / "configs" / "personas.txt"
"""The persona list that ships (used when the `persona` variant is given no file)."""

_FORMAT_RULES = (
    "Think it through privately, work out the answer yourself, and then output exactly two things and "
    "nothing else: the problem statement inside <question>...</question>, followed by its final answer "
    "written as \\boxed{final answer}."
)

MATH_ROLE_SENTENCE = "You are an expert setter of competition mathematics problems."
"""The role sentence of the math prompt: the `persona` variant replaces it (RZERO_SPEC.md section 2)."""

MATH_TASK = (
    "Privately design one new, "
    "non-trivial problem from any area (algebra, geometry, number theory, combinatorics, prealgebra, "
    "probability, statistics or calculus) that fewer than about 30% of strong high-school competitors "
    "could solve. Do not reuse textbook exercises or well-known contest problems."
)

MATH_ROLE = f"{MATH_ROLE_SENTENCE} {MATH_TASK}"

GENERAL_ROLE = (
    "You are an expert writer of hard reasoning questions across domains: science, logic, economics, "
    "history, law, engineering and everyday reasoning. Privately design one new question whose answer "
    "is a single short, checkable value (a number, a word or a letter), hard enough that fewer than "
    "about 30% of strong students would answer it correctly. Do not copy known exam questions."
)

USER_MESSAGE = (
    "Write one new challenging question now, as <question>...</question> followed by \\boxed{final answer}."
)


def load_personas(path: str | os.PathLike | None = None) -> tuple[str, ...]:
    """The personas of a persona list file (default `PERSONA_FILE`): one a line, blank lines ignored.

    Raises:
        ValueError: the file does not exist or holds no persona (the message names the fix).
    """
    file = Path(path) if path else PERSONA_FILE
    if not file.is_file():
        raise ValueError(
            f"challenger.persona_file: '{file}' does not exist; give a text file with one persona a "
            f"line (e.g. {PERSONA_FILE})"
        )
    personas = tuple(line.strip() for line in file.read_text(encoding="utf-8").splitlines() if line.strip())
    if not personas:
        raise ValueError(
            f"challenger.persona_file: '{file}' holds no persona (only blank lines); write one persona a "
            "line, e.g. 'a retired olympiad coach who loves elegant counting arguments'"
        )
    return personas


def draw_persona(personas: Sequence[str], seed: int, index: int) -> str:
    """The persona of prompt `index`: a draw seeded by (seed, index), independent of batching and of
    how many prompts are drawn (the authors draw one per prompt, unseeded)."""
    digest = hashlib.sha256(f"persona:{seed}:{index}".encode()).digest()
    return personas[int.from_bytes(digest[:8], "big") % len(personas)]


def challenger_messages(
    variant: str = "default", index: int = 0, personas: Sequence[str] | None = None, seed: int = 0
) -> list[dict[str, str]]:
    """The Challenger chat for prompt number `index`.

    `personas` and `seed` only matter for `persona`: the persona of prompt `index` is
    `draw_persona(personas, seed, index)` (personas: `load_personas()`'s when None).
    """
    if variant == "default":
        role = MATH_ROLE
    elif variant == "general":
        role = GENERAL_ROLE
    elif variant == "persona":
        persona = draw_persona(personas or load_personas(), seed, index).rstrip(".")
        role = f"You are {persona}. {MATH_TASK}"
    else:
        raise ValueError(f"unknown Challenger prompt variant '{variant}': use one of {', '.join(VARIANTS)}")
    return [
        {"role": "system", "content": f"{role} {_FORMAT_RULES}"},
        {"role": "user", "content": USER_MESSAGE},
    ]


def challenger_prompts(
    variant: str, indices: Sequence[int], persona_file: str = "", seed: int = 0
) -> list[list[dict[str, str]]]:
    """The Challenger chats of prompts `indices` (the persona file is read once, checked first)."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown Challenger prompt variant '{variant}': use one of {', '.join(VARIANTS)}")
    if persona_file and variant != "persona":
        raise ValueError(
            f"challenger.persona_file is set but the prompt variant is '{variant}': personas are only "
            "used by the 'persona' variant (set prompt_variant=persona, or drop the file)"
        )
    personas = load_personas(persona_file) if variant == "persona" else None
    return [challenger_messages(variant, i, personas, seed) for i in indices]


def challenger_prompt_records(
    num_prompts: int, variant: str = "default", persona_file: str = "", seed: int = 0, **_: object
) -> list[dict]:
    """`num_prompts` prompt records for the engine's dataset: {"messages": [...], "answer": ""}."""
    if num_prompts < 1:
        raise ValueError(f"num_prompts must be >= 1, got {num_prompts}")
    chats = challenger_prompts(variant, range(num_prompts), persona_file, seed)
    return [{"messages": chat, "answer": ""} for chat in chats]
