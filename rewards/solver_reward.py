"""The Solver's reward (RZERO_SPEC.md section 3): agreement with the majority-vote pseudo-label.

Engine plug-in: `worker.reward.reward_function=rewards.solver_reward:compute_solver_reward`.
    paper:      1 if the last \\boxed{} answer is equivalent to the label (math-verify), else 0
    rzero_code: 0.9 * accuracy + 0.1 * format (the authors' code), on the response with the
                whitespace around `<`, `>`, `/` removed first (`remove_tag_whitespace`), where
                accuracy = mathruler grade_answer(extract_boxed_content(response), label) and
                format   = the whole response matches <think>.*</think>.*\\boxed{.*}.* (re.DOTALL)
Equivalence runs in the hang-proof pool of the profile's grader with the label as gold (one
direction, as the authors call it); a timeout counts as wrong.
"""

from __future__ import annotations

import re

from rewards.answer_parsing import extract_answer
from rewards.default_grader import get_default_pool
from rewards.grader import default_grader_workers
from rewards.voting import grader_backend
from rzero.profiles import PROFILES

FORMAT_WEIGHT = 0.1  # rzero_code: overall = (1 - FORMAT_WEIGHT) * accuracy + FORMAT_WEIGHT * format

# The authors' clean-up, ``re.sub(r"\s*(<|>|/)\s*", r"\1", text)``, removes every whitespace run
# that touches a `<`, `>` or `/`. Their pattern retries from every character of a long run that
# none follows (quadratic); this one tries a run once, from its first character (the lookbehind),
# or right after the delimiter. Same result (tests/test_parsers_adversarial.py compares the two).
_TAG_SPACE = re.compile(r"(?<!\s)\s+(?=[<>/])|(?<=[<>/])\s+")


def remove_tag_whitespace(text: str) -> str:
    """The authors' ``re.sub(r"\\s*(<|>|/)\\s*", r"\\1", text)`` (RZERO_SPEC section 2), in linear time."""
    return _TAG_SPACE.sub("", text)


def format_ok(response: str) -> bool:
    """The authors' format check, ``re.fullmatch(r"<think>.*</think>.*\\\\boxed\\{.*\\}.*", text,
    re.DOTALL)``: the text starts with ``<think>``, and a ``</think>``, then a ``\\boxed{``, then a
    ``}`` follow in that order. Found with `str.find` (the earliest of each is the best choice):
    the regex's nested `.*` backtrack cubically on text such as ``<think>`` + many ``</think>\\boxed{``.
    """
    text = response or ""
    if not text.startswith("<think>"):
        return False
    pos = len("<think>")
    for token in ("</think>", "\\boxed{", "}"):
        pos = text.find(token, pos)
        if pos < 0:
            return False
        pos += len(token)
    return True


def compute_solver_reward(
    items: list[dict], profile: str = "paper", grader_workers: int | None = None, **_: object
) -> list[dict]:
    """Batch reward: `overall`, `accuracy`, `format` per response."""
    if profile not in PROFILES:
        raise ValueError(f"unknown profile '{profile}': use paper or rzero_code")
    # rzero_code scores the text without whitespace around `<`, `>`, `/`, as the authors' reward
    # does (a newline before <think> keeps the format point); paper scores the response as written.
    texts = [
        remove_tag_whitespace(item["response"] or "") if profile == "rzero_code" else item["response"]
        for item in items
    ]
    # rzero_code grades mathruler's "None" (no box) against the label too, as the authors do.
    preds = [extract_answer(text, profile) or "" for text in texts]
    golds = [str(item.get("ground_truth", "")) for item in items]
    to_grade = [i for i, (g, p) in enumerate(zip(golds, preds)) if g and p]
    correct = [False] * len(items)
    if to_grade:
        pool = get_default_pool(grader_workers or default_grader_workers(), backend=grader_backend(profile))
        verdicts = pool.equivalent_many([(golds[i], preds[i]) for i in to_grade], symmetric=False)
        for i, ok in zip(to_grade, verdicts):
            correct[i] = ok
    results = []
    for text, ok in zip(texts, correct):
        fmt = format_ok(text)
        if profile == "paper":
            overall = float(ok)
        else:
            overall = (1.0 - FORMAT_WEIGHT) * float(ok) + FORMAT_WEIGHT * float(fmt)
        results.append({"overall": overall, "accuracy": float(ok), "format": float(fmt)})
    return results
