"""The R-Zero prompts, each written once: the Solver's (RZERO_SPEC.md sections 2 and 3) and the
Challenger's zero-data prompt (section 2, in our own words).

Solver: one system prompt, used wherever the Solver answers (the Solver service queried by the
Challenger reward, pseudo-labelling, Solver GRPO through `solver_prompt_config()`, evaluation of the
math benchmarks), so that p̂ is measured with the prompt the Solver is trained and evaluated with.

Challenger: every prompt is the same two-message chat; no dataset is needed. Variants:
- `default`: a competition-math problem setter;
- `persona`: the role sentence replaced by a persona (one per prompt, cycled deterministically);
- `general`: a domain-general question writer (science, logic, everyday reasoning), still with one
  short checkable answer in \\boxed{}.
"""

from __future__ import annotations

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

_FORMAT_RULES = (
    "Think it through privately, work out the answer yourself, and then output exactly two things and "
    "nothing else: the problem statement inside <question>...</question>, followed by its final answer "
    "written as \\boxed{final answer}."
)

MATH_ROLE = (
    "You are an expert setter of competition mathematics problems. Privately design one new, "
    "non-trivial problem from any area (algebra, geometry, number theory, combinatorics, prealgebra, "
    "probability, statistics or calculus) that fewer than about 30% of strong high-school competitors "
    "could solve. Do not reuse textbook exercises or well-known contest problems."
)

GENERAL_ROLE = (
    "You are an expert writer of hard reasoning questions across domains: science, logic, economics, "
    "history, law, engineering and everyday reasoning. Privately design one new question whose answer "
    "is a single short, checkable value (a number, a word or a letter), hard enough that fewer than "
    "about 30% of strong students would answer it correctly. Do not copy known exam questions."
)

PERSONAS = (
    "a retired olympiad coach who loves elegant counting arguments",
    "a probabilist who designs puzzles about random processes",
    "a geometer who hides algebra inside figures",
    "a number theorist fond of divisibility and modular tricks",
    "a calculus teacher who writes optimisation problems with a twist",
    "a statistician who writes problems about expectation and variance",
)

USER_MESSAGE = (
    "Write one new challenging question now, as <question>...</question> followed by \\boxed{final answer}."
)


def challenger_messages(variant: str = "default", index: int = 0) -> list[dict[str, str]]:
    """The Challenger chat for prompt number `index` (the index only matters for `persona`)."""
    if variant == "default":
        role = MATH_ROLE
    elif variant == "general":
        role = GENERAL_ROLE
    elif variant == "persona":
        persona = PERSONAS[index % len(PERSONAS)]
        role = MATH_ROLE.replace(
            "You are an expert setter of competition mathematics problems.",
            f"You are {persona}, and an expert setter of competition mathematics problems.",
        )
    else:
        raise ValueError(f"unknown Challenger prompt variant '{variant}': use one of {', '.join(VARIANTS)}")
    return [
        {"role": "system", "content": f"{role} {_FORMAT_RULES}"},
        {"role": "user", "content": USER_MESSAGE},
    ]


def challenger_prompt_records(num_prompts: int, variant: str = "default", **_: object) -> list[dict]:
    """`num_prompts` prompt records for the engine's dataset: {"messages": [...], "answer": ""}."""
    if num_prompts < 1:
        raise ValueError(f"num_prompts must be >= 1, got {num_prompts}")
    return [{"messages": challenger_messages(variant, i), "answer": ""} for i in range(num_prompts)]
