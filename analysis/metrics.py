"""The numbers of the run analysis: question diversity, length, p̂ histogram, and accuracy grading.

Diversity uses the repetition penalty's own BLEU (`rewards.repetition.bleu_distance_matrix`:
whitespace tokens, BLEU-4, nltk's method1 smoothing, hyp = q_i and ref = q_j for i < j), so the
numbers are the ones the Challenger reward sees. Accuracy uses the Solver reward's grading: the
profile's grader in the hang-proof pool, the reference (label) as gold, one direction.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from rewards.repetition import bleu_distance_matrix
from rewards.voting import make_grader_pool


def mean_pairwise_bleu(questions: Sequence[str]) -> float | None:
    """Mean BLEU over the pairs i < j (None for fewer than two questions)."""
    n = len(questions)
    if n < 2:
        return None
    distances = bleu_distance_matrix(questions)
    total = sum(1.0 - float(distances[i, j]) for i in range(n) for j in range(i + 1, n))
    return total / (n * (n - 1) / 2)


def distinct_n(questions: Sequence[str], n: int) -> float | None:
    """Distinct n-grams / all n-grams over the set (whitespace tokens); None when there is none."""
    grams = [
        tuple(tokens[k : k + n])
        for tokens in (q.split() for q in questions)
        for k in range(len(tokens) - n + 1)
    ]
    return len(set(grams)) / len(grams) if grams else None


def mean_length_words(questions: Sequence[str]) -> float | None:
    return sum(len(q.split()) for q in questions) / len(questions) if questions else None


def p_hat_histogram(p_hats: Sequence[float], votes: int | None) -> dict[str, int]:
    """Count per vote share: keys "k/m" for k = 0..m when m is known, else p̂ rounded to 2 decimals."""
    counts: dict[str, int] = {}
    if votes:
        counts = {f"{k}/{votes}": 0 for k in range(votes + 1)}
        for p in p_hats:
            if math.isfinite(p):
                key = f"{round(p * votes)}/{votes}"
                counts[key] = counts.get(key, 0) + 1
        return counts
    for p in p_hats:
        key = f"{p:.2f}"
        counts[key] = counts.get(key, 0) + 1
    return dict(sorted(counts.items()))


def question_stats(questions: Sequence[str], p_hats: Sequence[float], votes: int | None) -> dict:
    """Diversity, length and the p̂ histogram of one question set."""
    return {
        "n": len(questions),
        "mean_pairwise_bleu": mean_pairwise_bleu(questions),
        "distinct_2": distinct_n(questions, 2),
        "distinct_3": distinct_n(questions, 3),
        "mean_length_words": mean_length_words(questions),
        "mean_p_hat": sum(p_hats) / len(p_hats) if p_hats else None,
        "p_hat_hist": p_hat_histogram(p_hats, votes),
    }


def grade(
    pairs: Sequence[tuple[str | None, str | None]], profile: str, grader_workers: int = 2
) -> list[bool]:
    """For each (reference, answer): the answer is the reference's equal by the profile's grader.

    As the Solver reward grades (rewards/solver_reward.py): reference as gold, one direction; an empty
    or missing reference or answer is wrong; a grader timeout is wrong.
    """
    prepared = [((g or "").strip(), (p or "").strip()) for g, p in pairs]
    todo = [i for i, (g, p) in enumerate(prepared) if g and p]
    correct = [False] * len(prepared)
    if todo:
        with make_grader_pool(profile, grader_workers) as pool:
            verdicts = pool.equivalent_many([prepared[i] for i in todo], symmetric=False)
        for i, ok in zip(todo, verdicts):
            correct[i] = bool(ok)
    return correct


def accuracy(correct: Sequence[bool]) -> float | None:
    """Percent correct (None for an empty set)."""
    return 100.0 * sum(correct) / len(correct) if correct else None
