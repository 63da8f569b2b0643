"""Question generation's reading of a Challenger sample (question_generate/parsing.py), per profile.

RZERO_SPEC.md section 2, "Validity in `rzero_code`": the authors' generator wants a `<question>`
block and at least one `\\boxed{` anywhere (an empty or unclosed box counts, a box-less sample is
invalid), which is not what their reward wants (box-less valid with the answer "None", an empty last
box invalid). Checked through the row builder the generation shards use.
"""

from __future__ import annotations

import pytest

from infra.vllm_engines import Sample
from question_generate.generate import _question_row, invalid_reason
from question_generate.parsing import has_question_block, parse_generated, scan_boxes
from rewards.answer_parsing import ParsedQuestion, parse_challenger_output


def _row(text: str, profile: str) -> dict:
    return _question_row(0, Sample(text, "stop", 7), 0, profile)


@pytest.mark.parametrize(
    ("text", "generation", "reward"),
    [
        # The spec's two crafted cases, and how the reward reads the same texts.
        ("<question>q</question>", ParsedQuestion("q", "", False), ParsedQuestion("q", "None", True)),
        ("<question>q</question> \\boxed{}", ParsedQuestion("q", "", True), ParsedQuestion("q", "", False)),
        # An unclosed box counts (to the end of the text); mathruler sees no box at all.
        (
            "<question>q</question> \\boxed{ 3",
            ParsedQuestion("q", "3", True),
            ParsedQuestion("q", "None", True),
        ),
        # Any box anywhere, the last one is the answer; nested braces are counted.
        (
            "\\boxed{5} <question> q </question>",
            ParsedQuestion("q", "5", True),
            ParsedQuestion("q", "5", True),
        ),
        (
            "<question>q</question> \\boxed{1} then \\boxed{\\frac{1}{2}}",
            ParsedQuestion("q", "\\frac{1}{2}", True),
            ParsedQuestion("q", "\\frac{1}{2}", True),
        ),
        # No question block (or one never closed): invalid at both stages.
        ("just \\boxed{3}", ParsedQuestion("", "3", False), ParsedQuestion("", "3", False)),
        ("<question>q \\boxed{3}", ParsedQuestion("", "3", False), ParsedQuestion("", "3", False)),
        # The authors' `if questions and answers` tests the list of blocks: an empty block is one.
        ("<question> </question> \\boxed{3}", ParsedQuestion("", "3", True), ParsedQuestion("", "3", False)),
        # Only the exact opener `\boxed{` is scanned.
        (
            "<question>q</question> \\fbox{3}",
            ParsedQuestion("q", "", False),
            ParsedQuestion("q", "None", True),
        ),
    ],
)
def test_rzero_code_generation_validity_differs_from_the_reward(
    text: str, generation: ParsedQuestion, reward: ParsedQuestion
) -> None:
    assert parse_generated(text, "rzero_code") == generation
    assert parse_challenger_output(text, "rzero_code") == reward
    row = _row(text, "rzero_code")  # what the generation shard writes
    assert (row["question"], row["answer"], row["valid"]) == (
        generation.question,
        generation.answer,
        generation.valid,
    )


@pytest.mark.parametrize(
    "text",
    ["<question>q</question>", "<question>q</question> \\boxed{}", "<question>q</question> \\boxed{7}"],
)
def test_paper_generation_reads_as_the_reward(text: str) -> None:
    assert parse_generated(text, "paper") == parse_challenger_output(text, "paper")
    assert _row(text, "paper")["valid"] == parse_challenger_output(text, "paper").valid


def test_the_scanner_and_the_block_check() -> None:
    assert scan_boxes("a \\boxed{1} b \\boxed{{2}} c \\boxed{}") == ["1", "{2}", ""]
    assert scan_boxes("\\boxed{x \\boxed{y} z") == ["x \\boxed{y} z"]  # unclosed: the rest is inside
    assert scan_boxes("\\boxed {1} \\fbox{2}") == []
    assert has_question_block("x <question></question>") and not has_question_block("</question><question>")
    # A long output is scanned in one pass (no regex backtracking over many openers).
    assert len(scan_boxes("\\boxed{" * 20000)) == 1 and not has_question_block("<question>" * 20000)


def test_invalid_reasons_of_generation_rows() -> None:
    assert invalid_reason(_row("<question>q</question>", "rzero_code")) == "no_answer"
    assert invalid_reason(_row("no tags \\boxed{2}", "rzero_code")) == "no_question"
    assert invalid_reason(_row("<question>q</question> \\boxed{}", "rzero_code")) is None
    with pytest.raises(ValueError, match="profile"):
        parse_generated("x", "authors")
