"""Parsers of model output on adversarial text (issue 20, items 2 and 3).

Every parser that reads generated text in the calling process (rewards, voting, labelling,
evaluation, the judge's reply) runs here on strings of 100,000 characters built to make the former
patterns backtrack (quadratic or cubic: minutes to hours at this length), and the test asserts what
each returns. No timing is asserted: scripts/bench_parsers.py prints the figures (README,
"Performance"); the module's timeout only turns a regression into a failure instead of a hang.

The linear rewrites must keep the former results: each is compared with the pattern it replaces on
many random short strings made of the characters that matter.

Long numbers (item 3): an answer of more than 4,300 digits made the numeric shortcut raise
ValueError (int() / Fraction() limits) in the caller; through the Solver reward, the vote and the
evaluation's scoring such a pair now goes to the grader.
"""

from __future__ import annotations

import random
import re

import pytest

from evaluation.judge import parse_verdict
from evaluation.loaders import Item
from evaluation.scoring import (
    _ANSWER_LINE,
    MAX_CHOICE_BOX_CHARS,
    bbeh_correct,
    extract_bbeh,
    extract_choice,
    extract_math,
    score_benchmark,
)
from question_generate.parsing import parse_generated
from rewards.answer_parsing import (
    ParsedQuestion,
    extract_answer,
    last_boxed,
    last_question_block,
    normalize_answer,
    parse_challenger_output,
)
from rewards.default_grader import get_default_pool
from rewards.math_verify_grading import cheap_verdict, numeric_verdict
from rewards.solver_reward import compute_solver_reward, format_ok, remove_tag_whitespace
from rewards.voting import LABEL, REWARD, vote

# A hang guard, not a timing assertion: each case takes milliseconds (scripts/bench_parsers.py).
pytestmark = pytest.mark.timeout(120)

N = 100_000
OPTIONS = ("alpha", "beta", "gamma", "delta")


def _times(unit: str) -> int:
    return N // len(unit)


K_TEXT = _times("\\text{")
K_BOX = _times("\\boxed{")


ADVERSARIAL = [
    # (name, call, expected result)
    ("answer-is + newlines", lambda: extract_choice("The answer is" + "\n" * N, OPTIONS), None),
    ("answer-is + newlines + letter", lambda: extract_choice("The answer is" + "\n" * N + "B", OPTIONS), "B"),
    ("answer-is + spaces + stars", lambda: extract_choice("Answer:" + " " * N + "** (C)", OPTIONS), "C"),
    ("answer-is repeated", lambda: extract_choice("answer is " * _times("answer is "), OPTIONS), None),
    # A box too long to be a choice is not read (MAX_CHOICE_BOX_CHARS); the answer line decides.
    (
        "choice box of nested text",
        lambda: extract_choice(
            "\\boxed{" + "\\text{" * K_TEXT + "A" + "}" * (K_TEXT + 1) + " answer: D", OPTIONS
        ),
        "D",
    ),
    (
        "format: think + '</think>\\boxed{' x k",
        lambda: format_ok("<think>" + "</think>\\boxed{" * 6_666),
        False,
    ),
    ("format: the same, closed", lambda: format_ok("<think>" + "</think>\\boxed{" * 6_666 + "}"), True),
    ("format: think x k", lambda: format_ok("<think>" * _times("<think>")), False),
    (
        "tag whitespace: a run no tag follows",
        lambda: remove_tag_whitespace("a" + " " * N + "b"),
        "a" + " " * N + "b",
    ),
    (
        "tag whitespace: a run before a tag",
        lambda: remove_tag_whitespace("a" + "\n" * N + "<think>"),
        "a<think>",
    ),
    ("question tags x k", lambda: parse_challenger_output("<question>" * _times("<question>")).question, ""),
    (
        "question tags x k, then closed",
        lambda: parse_challenger_output("<question>" * 9_000 + "q</question>\\boxed{1}").question,
        "<question>" * 8_999 + "q",
    ),
    (
        "question tags x k, rzero_code",
        lambda: parse_challenger_output("<question>" * _times("<question>"), "rzero_code").valid,
        False,
    ),
    (
        "generation scan: open boxes + question tags",
        lambda: parse_generated("<question>" * 9_000 + "\\boxed{" * 1_000, "rzero_code"),
        ParsedQuestion("", "\\boxed{" * 999, False),
    ),
    (
        "generation scan: nested boxes, closed",
        lambda: parse_generated("<question>q</question>" + "\\boxed{" * K_BOX + "}" * K_BOX, "rzero_code"),
        ParsedQuestion("q", "\\boxed{" * (K_BOX - 1) + "}" * (K_BOX - 1), True),
    ),
    ("normalize: nested boxes", lambda: normalize_answer("\\boxed{" * K_BOX + "x" + "}" * K_BOX), "x"),
    (
        "normalize: nested text (kept: not letters only)",
        lambda: normalize_answer("\\text{" * K_TEXT + "x" + "}" * K_TEXT),
        "\\text{" * K_TEXT + "x" + "}" * K_TEXT,
    ),
    ("normalize: dollars", lambda: normalize_answer("$" * N), ""),
    ("normalize: caret + spaces", lambda: normalize_answer("^" + " " * N + "x"), "^x"),
    ("normalize: caret + spaces + brace", lambda: normalize_answer("^" + " " * N + "{x"), "^{x"),
    ("normalize: spacing macros", lambda: normalize_answer("x" + "\\, " * _times("\\, ") + "+1"), "x+1"),
    ("numeric: digits + letter", lambda: numeric_verdict("1" * N + "x", "1"), None),
    ("numeric: digits", lambda: numeric_verdict("1" * N, "1" * (N - 1) + "2"), None),
    ("cheap verdict: equal digits", lambda: cheap_verdict("1" * N, "1" * N), (True, "string_matches")),
    ("last_boxed: open boxes", lambda: last_boxed("\\boxed{" * K_BOX), None),
    ("last_boxed: open braces", lambda: last_boxed("\\boxed" + "{" * N), None),
    ("last_boxed: deep nesting", lambda: len(last_boxed("\\boxed{" + "{" * N + "}" * N + "}") or ""), 2 * N),
    ("rzero_code extraction: open boxes", lambda: extract_answer("\\boxed{" * K_BOX, "rzero_code"), "None"),
    ("extract_math: open boxes", lambda: extract_math("\\boxed{" * K_BOX), None),
    (
        "bbeh: final-answer x k",
        lambda: extract_bbeh("Final Answer:" * _times("Final Answer:")),
        "Final Answer:" * (_times("Final Answer:") - 1),
    ),
    ("bbeh: answer-is x k", lambda: bbeh_correct("The answer is " * _times("The answer is "), "x"), False),
    ("judge: think never closed", lambda: parse_verdict("<think>" * _times("<think>") + " YES"), None),
    ("judge: think closed once", lambda: parse_verdict("<think>" * _times("<think>") + "</think> YES"), True),
]


@pytest.mark.parametrize(("name", "call", "expected"), ADVERSARIAL, ids=[c[0] for c in ADVERSARIAL])
def test_parser_on_adversarial_text(name: str, call, expected: object) -> None:
    assert call() == expected, name


def test_choice_box_cap_is_far_above_any_letter_or_option() -> None:
    # A box under the cap is still read as before, wrappers and all.
    assert extract_choice("\\boxed{\\text{\\textbf{B}}}", OPTIONS) == "B"
    assert extract_choice("\\boxed{" + " " * (MAX_CHOICE_BOX_CHARS - 10) + "C}", OPTIONS) == "C"


# ---------------------------------------------------------------------------------------------
# The linear rewrites give the former patterns' results
# ---------------------------------------------------------------------------------------------


def _random_strings(alphabet: list[str], count: int = 4000, max_len: int = 10, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, max_len))) for _ in range(count)]


def test_tag_whitespace_equals_the_spec_regex() -> None:
    spec = re.compile(r"\s*(<|>|/)\s*")
    for text in _random_strings([" ", "\n", "\t", "<", ">", "/", "a", "b"], max_len=12):
        assert remove_tag_whitespace(text) == spec.sub(r"\1", text), repr(text)


def test_format_check_equals_the_authors_fullmatch() -> None:
    authors = re.compile(r"<think>.*</think>.*\\boxed\{.*\}.*", re.DOTALL)
    for text in _random_strings(["<think>", "</think>", "\\boxed{", "}", "{", "a", "\n", "<", "/"]):
        assert format_ok(text) == (authors.fullmatch(text) is not None), repr(text)


def test_last_question_block_equals_findall() -> None:
    former = re.compile(r"<question>(.*?)</question>", re.DOTALL)
    for text in _random_strings(["<question>", "</question>", "a", " ", "<", "/"]):
        blocks = former.findall(text)
        assert last_question_block(text) == (blocks[-1] if blocks else ""), repr(text)


def test_answer_line_equals_the_former_pattern() -> None:
    former = re.compile(r"(?i:answer)\s*(?:(?i:is)\s*:?|:)\s*\**\s*\(?([A-Z])\)?(?![A-Za-z0-9])")
    alphabet = ["answer", "Answer", "is", "IS", ":", " ", "\n", "*", "(", ")", "A", "B", "x", "1"]
    for text in _random_strings(alphabet):
        assert [m.group(1) for m in _ANSWER_LINE.finditer(text)] == [
            m.group(1) for m in former.finditer(text)
        ], repr(text)


def test_judge_think_removal_equals_the_former_regex() -> None:
    for text in _random_strings(["<think>", "</think>", "YES", "NO", " "]):
        former = re.sub(r"<think>.*?</think>", " ", text, flags=re.S)
        words = former.strip().strip("*").split()
        head = words[0].strip(".,!:*").upper() if words else ""
        assert parse_verdict(text) == ({"YES": True, "NO": False}.get(head)), repr(text)


# ---------------------------------------------------------------------------------------------
# Long numbers through the real call paths (issue 20, item 3)
# ---------------------------------------------------------------------------------------------

BIG = "1" * 5000  # over int()'s 4,300-digit limit
BIG_OTHER = "1" * 4999 + "2"


def test_long_numbers_in_the_solver_reward() -> None:
    items = [
        {"response": f"<think>a</think> \\boxed{{{BIG}}}", "ground_truth": BIG},
        {"response": f"<think>a</think> \\boxed{{{BIG_OTHER}}}", "ground_truth": BIG},
        {"response": "<think>a</think> \\boxed{7}", "ground_truth": "7"},
    ]
    assert [r["overall"] for r in compute_solver_reward(items, profile="paper")] == [1.0, 0.0, 1.0]
    code = compute_solver_reward(items, profile="rzero_code")
    assert [r["accuracy"] for r in code] == [1.0, 0.0, 1.0]


def test_long_numbers_in_the_vote() -> None:
    answers = [BIG, BIG_OTHER, BIG, "3", f"x={BIG}"]
    for profile, stage in [("paper", REWARD), ("paper", LABEL), ("rzero_code", REWARD)]:
        [result] = vote([answers], profile, stage=stage)
        assert result.label == BIG and result.n_answers == 5, (profile, stage)
        # paper: x=BIG joins BIG's group (the assignment rule); BIG_OTHER is math-verify's (not equal).
        if profile == "paper":
            assert result.group_sizes == [3, 1, 1] and result.p_hat == pytest.approx(0.6)


def test_long_numbers_in_evaluation_scoring() -> None:
    items = [Item("m-0", 0, "q", BIG), Item("m-1", 1, "q", "0.5")]
    responses = [[f"\\boxed{{{BIG}}}", f"\\boxed{{{BIG_OTHER}}}"], [f"\\boxed{{{BIG}}}", "\\boxed{1/2}"]]
    score = score_benchmark("math", items, responses, pool=get_default_pool())
    assert [s.correct for s in score.items] == [[True, False], [False, True]]


def test_wrapper_stripping_equals_the_copying_loop() -> None:
    """`normalize_answer` strips nested wrappers on an index window with brace partners found once;
    the former way copied the answer and rescanned its braces per level (quadratic)."""
    from rewards.answer_parsing import _MATH_DELIMITERS, _matching_brace, _strip_wrappers

    box = re.compile(r"\\boxed\s*\{")
    font = re.compile(r"\\(?:text|textbf|textrm|mathrm|mathbf|mbox)\s*\{(?=[A-Za-z\s()]+\}\Z)")

    def copying_loop(s: str) -> str:
        s = s.strip()
        while True:
            for left, right in _MATH_DELIMITERS:
                if len(s) >= len(left) + len(right) and s.startswith(left) and s.endswith(right):
                    s = s[len(left) : len(s) - len(right)].strip()
                    break
            else:
                m = box.match(s) or font.match(s)
                if m is None or _matching_brace(s, m.end() - 1) != len(s) - 1:
                    return s
                s = s[m.end() : len(s) - 1].strip()

    alphabet = ["$", "\\(", "\\)", "\\[", "\\]", "\\boxed{", "\\text{", "{", "}", "\\", " ", "a", "1", "\\{"]
    for text in _random_strings(alphabet, count=6000):
        assert _strip_wrappers(text) == copying_loop(text), repr(text)
