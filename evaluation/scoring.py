"""Rule-based scoring of responses: math (math-verify), multiple choice (option letter), BBEH (fuzzy match).

Everything here is deterministic: an answer that cannot be extracted is wrong and is counted as
"unparsed". Multiple choice is also scored the authors' way beside it (RZERO_SPEC.md section 5):
where their scripts find no letter they draw a random one of A-J (unseeded); here the draw is
seeded by (seed, item id, response index), so the "random letter" score is reproducible and the
strict score stays the headline.

Math answers are graded by the project's hang-proof `GraderPool` with the gold answer first and
`symmetric=False` (gold is the reference); a grader timeout counts as wrong and is counted.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from evaluation.loaders import OPTION_LETTERS, Item
from rewards.answer_parsing import last_boxed


@dataclass
class ItemScore:
    """Per-question result: the extracted answer and verdict of each of its k responses."""

    preds: list[str | None]
    correct: list[bool]
    judge: list[bool | None] = field(default_factory=list)  # LLM-judge verdicts, when enabled
    # Multiple choice only: verdicts with a seeded random letter in place of each unparsed answer.
    correct_random_letter: list[bool] | None = None

    @property
    def score(self) -> float:
        """Mean correctness over the k responses (mean@k; 0/1 when k = 1)."""
        return sum(self.correct) / len(self.correct) if self.correct else 0.0

    @property
    def score_random_letter(self) -> float | None:
        """`score` with the random-letter verdicts (None outside multiple choice)."""
        verdicts = self.correct_random_letter
        if verdicts is None:
            return None
        return sum(verdicts) / len(verdicts) if verdicts else 0.0

    @property
    def unparsed(self) -> int:
        return sum(p is None for p in self.preds)


# ----------------------------------------------------------------------------- extraction

_LATEX_WRAPPERS = re.compile(
    r"\\(?:text|textbf|textit|mathrm|mathbf|mathit|textrm|texttt|boxed)\s*\{([^{}]*)\}"
)


def _unwrap_latex(text: str) -> str:
    """Drop \\text{...}-style wrappers, math delimiters and markdown bold around a short answer."""
    previous = None
    while previous != text:
        previous, text = text, _LATEX_WRAPPERS.sub(r"\1", text)
    for token in ("$", "\\(", "\\)", "\\[", "\\]", "**"):
        text = text.replace(token, "")
    return text.strip()


def extract_math(response: str) -> str | None:
    """The content of the last balanced \\boxed{} of the response (None when there is none)."""
    boxed = last_boxed(response)
    if boxed is None or not boxed.strip():
        return None
    return boxed.strip()


_SINGLE_LETTER = re.compile(r"\(?\s*([A-Za-z])\s*\)?[.:]?")
_LEADING_LETTER = re.compile(r"(?:\(([A-Z])\)|([A-Z])[.:)])(?:\s|$)")
# "The answer is (C)", "Answer: C", "final answer: **B**" - the last such line wins. Written as
# `answer\s*(?:is\s*:?|:)\s*\**\s*\(?X` reads, but with no two whitespace runs next to each other
# (`is\s*:?\s*\**\s*` backtracks cubically over a long whitespace run after "answer is").
_ANSWER_LINE = re.compile(
    r"(?i:answer)\s*(?:(?i:is)\s*(?::\s*)?|:\s*)(?:\*+\s*)?\(?([A-Z])\)?(?![A-Za-z0-9])"
)
# A box this long cannot hold a letter or an option's text: it is not read as a choice (the
# "answer is" line decides), which bounds the fixed-point unwrapping of `\text{}` wrappers (one
# pass per nesting level) on model output.
MAX_CHOICE_BOX_CHARS = 2000


def _letter_from_box(content: str, options: Sequence[str]) -> str | None:
    if len(content) > MAX_CHOICE_BOX_CHARS:
        return None
    valid = OPTION_LETTERS[: len(options)]
    text = _unwrap_latex(content)
    match = _SINGLE_LETTER.fullmatch(text)
    if match and match.group(1).upper() in valid:
        return match.group(1).upper()
    match = _LEADING_LETTER.match(text)
    if match:
        letter = match.group(1) or match.group(2)
        return letter if letter in valid else None
    # The model boxed the option's text instead of its letter: accept an exact (normalised) match.
    normalised = _normalise_option(text)
    hits = [OPTION_LETTERS[i] for i, option in enumerate(options) if _normalise_option(option) == normalised]
    return hits[0] if len(hits) == 1 else None


def _normalise_option(text: str) -> str:
    return re.sub(r"\s+", " ", _unwrap_latex(text)).strip().rstrip(".").lower()


def extract_choice(response: str, options: Sequence[str]) -> str | None:
    """Option letter chosen by a response: the letter in the last \\boxed{}, else the last
    "answer is (X)" / "Answer: X" line; None when neither gives a valid letter."""
    boxed = last_boxed(response)
    if boxed is not None:
        letter = _letter_from_box(boxed, options)
        if letter is not None:
            return letter
    valid = OPTION_LETTERS[: len(options)]
    for match in reversed(list(_ANSWER_LINE.finditer(response))):
        if match.group(1) in valid:
            return match.group(1)
    return None


# The letters the authors' MMLU-Pro / SuperGPQA scripts draw from when they find none.
AUTHORS_RANDOM_LETTERS = "ABCDEFGHIJ"


def random_letter(seed: int, item_id: str, response_index: int) -> str:
    """The seeded stand-in for the authors' ``random.choice(['A', ..., 'J'])`` on an unparsed answer.

    A string seed is hashed with sha512 by `random`, so the draw is the same on every machine."""
    return random.Random(f"{seed}:{item_id}:{response_index}").choice(AUTHORS_RANDOM_LETTERS)


_FINAL_ANSWER_LINES = (re.compile(r"Final Answer:(.*?)(?:\n|$)"), re.compile(r"The answer is:?(.*?)(?:\n|$)"))


def extract_bbeh(response: str) -> str | None:
    """BBEH answer: the last \\boxed{} content, else the last "Final Answer:" / "The answer is:" line."""
    boxed = last_boxed(response)
    if boxed is not None and boxed.strip():
        return boxed.strip()
    for pattern in _FINAL_ANSWER_LINES:
        matches = pattern.findall(response)
        if matches and matches[-1].strip():
            return matches[-1].strip()
    return None


# ----------------------------------------------------------------------------- BBEH rules

_BBEH_PREFIXES = ("The answer is:", "The final answer is ", "The final answer is: ", "The answer is ")


def _bbeh_strip_latex(text: str) -> str:
    if len(text) >= 2 and text.startswith("$") and text.endswith("$"):
        text = text[1:-1]
    for wrapper in ("boxed{", "text{", "texttt{"):
        if wrapper in text and text.endswith("}"):
            text = text[:-1].split(wrapper, 1)[1]
    return text


def bbeh_normalise_prediction(prediction: str) -> str:
    """BBEH's prediction clean-up: answer prefixes, LaTeX wrappers, case, ", ", bold, first line, final "."."""
    text = prediction.strip()
    for prefix in _BBEH_PREFIXES:
        if prefix in text:
            text = text.split(prefix)[-1].strip()
    if text.endswith("."):
        text = text[:-1]
    text = _bbeh_strip_latex(text).lower()
    text = text.replace(", ", ",").replace("**", "")
    text = text.split("\n")[0]
    return text[:-1] if text.endswith(".") else text


def bbeh_normalise_reference(reference: str) -> str:
    return reference.strip().lower().replace(", ", ",")


def bbeh_fuzzy_match(prediction: str, reference: str) -> bool:
    """BBEH's match on normalised strings: equal, "(a)" vs "a", equal numbers, quotes, brackets, "?"."""
    if prediction == reference:
        return True
    if len(prediction) == 3 and prediction[0] == "(" and prediction[-1] == ")":
        return prediction[1] == reference
    if len(reference) == 3 and reference[0] == "(" and reference[-1] == ")":
        return reference[1] == prediction
    try:
        if float(prediction) == float(reference):
            return True
    except ValueError:
        pass
    if prediction.replace("'", "") == reference.replace("'", ""):
        return True
    if f"[{reference}]" == prediction or f"[{prediction}]" == reference:
        return True
    return prediction.endswith("?") and prediction[:-1] == reference


def bbeh_correct(prediction: str | None, reference: str) -> bool:
    if prediction is None:
        return False
    return bbeh_fuzzy_match(bbeh_normalise_prediction(prediction), bbeh_normalise_reference(reference))


# ----------------------------------------------------------------------------- benchmark scoring


@dataclass
class BenchmarkScore:
    """Scores of one benchmark; `grader_timeouts` counts math-verify calls that hit the timeout."""

    items: list[ItemScore]
    grader_timeouts: int = 0

    @property
    def accuracy(self) -> float:
        """Mean over questions of the per-question mean@k, in percent (strict: unparsed = wrong)."""
        return 100.0 * sum(s.score for s in self.items) / len(self.items) if self.items else 0.0

    @property
    def accuracy_random_letter(self) -> float | None:
        """Multiple choice: `accuracy` with a seeded random letter for each unparsed answer, as the
        authors score (in percent); None for other metrics."""
        per_item = [s.score_random_letter for s in self.items]
        if not per_item or any(v is None for v in per_item):
            return None
        return 100.0 * sum(per_item) / len(per_item)  # type: ignore[arg-type]

    @property
    def unparsed(self) -> int:
        return sum(s.unparsed for s in self.items)


def score_benchmark(
    metric: str,
    items: Sequence[Item],
    responses: Sequence[Sequence[str]],
    pool: Any = None,
    seed: int = 0,
) -> BenchmarkScore:
    """Score k responses per item. `pool` is a `rewards.grader.GraderPool` (needed for "math").

    Args:
        responses: responses[i] holds the k response texts of items[i].
        seed: seeds the random letters of the multiple-choice "random letter" score (the run's seed).
    """
    if len(items) != len(responses):
        raise ValueError(f"{len(items)} items but {len(responses)} response lists")
    if metric == "math":
        return _score_math(items, responses, pool)
    scores = []
    for item, texts in zip(items, responses):
        if metric == "mc":
            if not item.options:
                raise ValueError(f"{item.id}: a multiple-choice item needs options")
            preds = [extract_choice(t, item.options) for t in texts]
            correct = [p == item.gold for p in preds]
            letters = [p if p is not None else random_letter(seed, item.id, j) for j, p in enumerate(preds)]
            scores.append(ItemScore(preds, correct, correct_random_letter=[x == item.gold for x in letters]))
            continue
        if metric == "bbeh":
            preds = [extract_bbeh(t) for t in texts]
            correct = [bbeh_correct(p, item.gold) for p in preds]
        else:
            raise ValueError(f"unknown metric {metric!r}")
        scores.append(ItemScore(preds, correct))
    return BenchmarkScore(scores)


def _score_math(items: Sequence[Item], responses: Sequence[Sequence[str]], pool: Any) -> BenchmarkScore:
    if pool is None:
        raise ValueError("math scoring needs a GraderPool")
    preds = [[extract_math(t) for t in texts] for texts in responses]
    # Grade each distinct (gold, pred) pair once: with k = 32 samples many answers repeat.
    pairs = sorted({(item.gold, p) for item, ps in zip(items, preds) for p in ps if p is not None})
    before = pool.stats_snapshot().get("timeouts", 0)
    verdicts = dict(zip(pairs, pool.equivalent_many(pairs, symmetric=False))) if pairs else {}
    timeouts = pool.stats_snapshot().get("timeouts", 0) - before
    scores = [
        ItemScore(ps, [p is not None and bool(verdicts[(item.gold, p)]) for p in ps])
        for item, ps in zip(items, preds)
    ]
    return BenchmarkScore(scores, grader_timeouts=timeouts)
