"""Answer extraction and the cheap normalisation (rewards/answer_parsing.py)."""

from __future__ import annotations

import pytest

from rewards.answer_parsing import (
    ParsedQuestion,
    extract_answer,
    last_boxed,
    normalize_answer,
    parse_challenger_output,
    split_assignment,
)

# ---------------------------------------------------------------------------------------------
# last_boxed
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (r"The answer is \boxed{42}.", "42"),
        (r"\boxed{\frac{1}{2}}", r"\frac{1}{2}"),
        (r"\boxed{\sqrt{\frac{a^{2}}{b}}} done", r"\sqrt{\frac{a^{2}}{b}}"),  # nested braces
        (r"first \boxed{1}, then \boxed{2}", "2"),  # the last box wins
        (r"\boxed {7}", "7"),  # space before the brace
        (r"\fbox{x+1}", "x+1"),
        (r"\boxed{ 5 }", " 5 "),  # content as written, not stripped
        (r"\boxed{\{1,2\}}", r"\{1,2\}"),  # escaped braces are literal characters
        (r"\boxed{\{1,2}", r"\{1,2"),  # ... so an escaped brace does not close the box
        (r"\boxed{\left\{ x \right\}}", r"\left\{ x \right\}"),
        (r"\boxed{a \\ {b}}", r"a \\ {b}"),  # `\\` is a line break, the next brace counts
        (r"\boxed{}", ""),
    ],
)
def test_last_boxed_extracts_content(text: str, expected: str) -> None:
    assert last_boxed(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "no box here",
        "",
        r"\boxed{3",  # never closed
        r"\boxed{1} and later a truncated \boxed{2",  # last box unbalanced: no answer, not the earlier one
        r"\boxedfoo{3}",  # another macro
        r"\boxed 3",  # no braces
    ],
)
def test_last_boxed_none_when_absent_or_unbalanced(text: str) -> None:
    assert last_boxed(text) is None


# ---------------------------------------------------------------------------------------------
# parse_challenger_output
# ---------------------------------------------------------------------------------------------


def test_parse_challenger_output_valid() -> None:
    text = "<question>\n  What is $1+1$?  \n</question>\n\n\\boxed{ 2 }"
    assert parse_challenger_output(text) == ParsedQuestion(question="What is $1+1$?", answer="2", valid=True)


def test_parse_challenger_output_uses_last_question_block_and_last_box() -> None:
    text = (
        "Draft: <question>Old question</question> \\boxed{1}\n"
        "Final: <question>Find $x$ with \\boxed{} style answers.</question>\n"
        "\\boxed{\\frac{3}{4}}"
    )
    parsed = parse_challenger_output(text)
    assert parsed.question == "Find $x$ with \\boxed{} style answers."
    assert parsed.answer == "\\frac{3}{4}"
    assert parsed.valid


@pytest.mark.parametrize(
    ("text", "question", "answer"),
    [
        (r"no tags at all \boxed{3}", "", "3"),  # no question block
        ("<question>Q?</question> and no box", "Q?", ""),
        ("<question>Q?</question> \\boxed{  }", "Q?", ""),  # empty box
        ("<question>   </question> \\boxed{3}", "", "3"),  # blank question
        ("<question>Q?</question> \\boxed{3", "Q?", ""),  # truncated box
        ("<question>unclosed \\boxed{3}", "", "3"),  # question block never closed
    ],
)
def test_parse_challenger_output_invalid(text: str, question: str, answer: str) -> None:
    assert parse_challenger_output(text) == ParsedQuestion(question=question, answer=answer, valid=False)
    assert parse_challenger_output(text, "paper") == parse_challenger_output(text)  # paper is the default


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # A question without a box is valid: its answer is mathruler's "None".
        ("<question>Q?</question> and no box", ParsedQuestion("Q?", "None", True)),
        ("<question>Q?</question> \\boxed{3", ParsedQuestion("Q?", "None", True)),  # truncated box
        ("<question>Q?</question> \\boxed {3}", ParsedQuestion("Q?", "None", True)),  # not mathruler's opener
        ("<question> Q? </question> \\boxed{ 3 }", ParsedQuestion("Q?", "3", True)),
        # The authors' `if questions and answers`: an empty box or a missing question is invalid.
        ("<question>Q?</question> \\boxed{  }", ParsedQuestion("Q?", "", False)),
        (r"no tags at all \boxed{3}", ParsedQuestion("", "3", False)),
        ("<question>   </question> no box", ParsedQuestion("", "None", False)),
    ],
)
def test_parse_challenger_output_rzero_code(text: str, expected: ParsedQuestion) -> None:
    assert parse_challenger_output(text, "rzero_code") == expected


def test_extract_answer_per_profile() -> None:
    assert extract_answer("no box", "paper") is None
    assert extract_answer("no box", "rzero_code") == "None"
    assert extract_answer("\\boxed{}", "paper") == "" and extract_answer("\\boxed{}", "rzero_code") == ""
    assert extract_answer("\\boxed{ \\frac{1}{2} } then \\boxed{7}", "rzero_code") == "7"
    assert extract_answer("\\fbox{7}", "paper") == "7" and extract_answer("\\fbox{7}", "rzero_code") == "None"
    with pytest.raises(ValueError, match="profile"):
        extract_answer("\\boxed{1}", "other")
    with pytest.raises(ValueError, match="profile"):
        parse_challenger_output("<question>Q</question>", "other")


# ---------------------------------------------------------------------------------------------
# normalize_answer
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("  42  ", "42"),
        ("$42$", "42"),
        ("$$42$$", "42"),
        (r"\(42\)", "42"),
        (r"\dfrac{1}{2}", r"\frac{1}{2}"),
        (r"\tfrac{1}{2}", r"\frac{1}{2}"),
        (r"\left( 1, 2 \right)", "(1,2)"),
        (r"\left[ 1, 2 \right]", "[1,2]"),
        (r"x\,+\,1", "x+1"),
        (r"3\!\cdot\!4", r"3\cdot 4"),  # a space, not nothing: `\pi\,r` must not become `\pir`
        (r"\text{yes}", "yes"),
        (r"\mathrm{B}", "B"),
        (r"\textbf{(C)}", "(C)"),
        (r"\text{ no solution }", "no solution"),
        (r"\boxed{7}", "7"),
        (r"90^\circ", "90"),
        (r"90^{\circ}", "90"),
        ("x = 3", "x=3"),  # the assignment stays: see split_assignment
        (r"$\boxed{\text{yes}}$", "yes"),  # nested wrappers
        (r"\boxed{x = 5}", "x=5"),
        ("x + y", "x+y"),
        (r"\frac {1} {2}", r"\frac{1}{2}"),
        (None, ""),
    ],
)
def test_normalize_answer(raw: str | None, expected: str) -> None:
    assert normalize_answer(raw) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("1 2", "1 2"),  # a space between two tokens is kept: "1 2" is not "12"
        (r"\pi r", r"\pi r"),  # ... and `\pi r` does not become the macro `\pir`
        ("x=y=3", "x=y=3"),  # only a single assignment is dropped
        (r"x \le 3", r"x\le 3"),
        (r"50\%", r"50\%"),  # percent is not dropped: 50% is 0.5, not 50
        (r"\text{5} \text{cm}", r"\text{5}\text{cm}"),  # wrapper not around the whole answer
        (r"f(x)=2", "f(x)=2"),
        # Forms math-verify does not equate with the stripped one (tests/test_grader.py):
        ("42.", "42."),  # "42." is not 42 for math-verify
        (r"1\,000", r"1\,000"),  # a thin space between digits: math-verify reads 000
        ("90°", "90°"),  # only ^\circ and ^{\circ} are degrees to math-verify
        (r"\left.\frac{x}{2}\right|", r"\left.\frac{x}{2}|"),  # `\left.x\right|_0` is not `x|_0`
        (r"\text{3.5}", r"\text{3.5}"),  # a font macro only around letters: \text{3.5} is a string
        (r"\text{x = 5}", r"\text{x=5}"),
        (r"\operatorname{abc}", r"\operatorname{abc}"),
    ],
)
def test_normalize_answer_is_conservative(raw: str, expected: str) -> None:
    assert normalize_answer(raw) == expected


def test_normalize_answer_equates_surface_variants_only() -> None:
    same = [r"$\dfrac{1}{2}$", r"\boxed{\tfrac{1}{2}}", r"  \frac {1}{2} ", r"\(\frac{1}{2}\)"]
    assert len({normalize_answer(s) for s in same}) == 1
    # Mathematically equal but textually different forms are left to the grader.
    assert normalize_answer(r"\frac{1}{2}") != normalize_answer("0.5")


@pytest.mark.parametrize(
    ("norm", "expected"),
    [
        ("x=3", ("x", "3")),
        ("y=2x+1", ("y", "2x+1")),
        ("x=y=3", ("", "x=y=3")),  # two `=`: an equation chain, not an assignment
        ("f(x)=2", ("", "f(x)=2")),
        ("3", ("", "3")),
        ("x=", ("", "x=")),
    ],
)
def test_split_assignment(norm: str, expected: tuple[str, str]) -> None:
    assert split_assignment(norm) == expected
