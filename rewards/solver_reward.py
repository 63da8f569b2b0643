"""The Solver's reward (RZERO_SPEC.md section 3): agreement with the majority-vote pseudo-label.

Engine plug-in: `worker.reward.reward_function=rewards.solver_reward:compute_solver_reward`.
    paper:      1 if the last \\boxed{} answer is equivalent to the label (math-verify), else 0
    rzero_code: 0.9 * accuracy + 0.1 * format (the authors' code), where
                accuracy = mathruler grade_answer(extract_boxed_content(response), label) and
                format   = the whole response matches <think>.*</think>.*\\boxed{.*}.* (re.DOTALL)
Equivalence runs in the hang-proof pool of the profile's grader with the label as gold (one
direction, as the authors call it); a timeout counts as wrong.
"""

from __future__ import annotations

import re

from rewards.answer_parsing import extract_answer
from rewards.default_grader import get_default_pool
from rewards.voting import grader_backend
from rzero.profiles import PROFILES

# The authors' pattern, applied with fullmatch: the response must *start* with <think>.
_FORMAT = re.compile(r"<think>.*</think>.*\\boxed\{.*\}.*", re.DOTALL)
FORMAT_WEIGHT = 0.1  # rzero_code: overall = (1 - FORMAT_WEIGHT) * accuracy + FORMAT_WEIGHT * format


def format_ok(response: str) -> bool:
    """The authors' format check: ``re.fullmatch(r"<think>.*</think>.*\\\\boxed\\{.*\\}.*", ...)``."""
    return _FORMAT.fullmatch(response or "") is not None


def compute_solver_reward(
    items: list[dict], profile: str = "paper", grader_workers: int = 2, **_: object
) -> list[dict]:
    """Batch reward: `overall`, `accuracy`, `format` per response."""
    if profile not in PROFILES:
        raise ValueError(f"unknown profile '{profile}': use paper or rzero_code")
    # rzero_code grades mathruler's "None" (no box) against the label too, as the authors do.
    preds = [extract_answer(item["response"], profile) or "" for item in items]
    golds = [str(item.get("ground_truth", "")) for item in items]
    to_grade = [i for i, (g, p) in enumerate(zip(golds, preds)) if g and p]
    correct = [False] * len(items)
    if to_grade:
        pool = get_default_pool(grader_workers, backend=grader_backend(profile))
        verdicts = pool.equivalent_many([(golds[i], preds[i]) for i in to_grade], symmetric=False)
        for i, ok in zip(to_grade, verdicts):
            correct[i] = ok
    results = []
    for item, ok in zip(items, correct):
        fmt = format_ok(item["response"])
        if profile == "paper":
            overall = float(ok)
        else:
            overall = (1.0 - FORMAT_WEIGHT) * float(ok) + FORMAT_WEIGHT * float(fmt)
        results.append({"overall": overall, "accuracy": float(ok), "format": float(fmt)})
    return results
