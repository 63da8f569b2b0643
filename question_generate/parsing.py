"""How question generation reads a Challenger sample (RZERO_SPEC.md sections 2 and 3).

``paper``: as the reward reads it (`rewards.answer_parsing.parse_challenger_output`): the last
non-empty ``<question>`` block and a non-empty last balanced box.

``rzero_code``: the authors' generator, which is not their reward: a sample is valid when it holds a
``<question>...</question>`` block and at least one ``\\boxed{`` anywhere. Their scanner walks every
``\\boxed{`` and counts braces, so an empty box (``\\boxed{}``) or one never closed (a truncated
sample) still counts, and a box-less sample is invalid (the reward, on the contrary, takes a
box-less question as valid with the answer "None" and refuses an empty last box). The question is
the last block, stripped; the answer the last box's content, stripped (to the end of the text for
an unclosed box).
"""

from __future__ import annotations

from rewards.answer_parsing import ParsedQuestion, parse_challenger_output

BOX_OPENER = "\\boxed{"  # the authors' scanner looks for this exact text (not `\boxed {` or `\fbox{`)
QUESTION_OPEN, QUESTION_CLOSE = "<question>", "</question>"


def scan_boxes(text: str) -> list[str]:
    """The content of every ``\\boxed{`` in `text`, in order, as the authors' generator scans them.

    Plain brace counting from the opener (no escapes); an unclosed box runs to the end of the text
    and ends the scan. One pass over the text (linear time)."""
    contents: list[str] = []
    i = 0
    while (start := text.find(BOX_OPENER, i)) != -1:
        j = start + len(BOX_OPENER)
        depth = 1
        while j < len(text) and depth:
            if text[j] == "{":
                depth += 1
            elif text[j] == "}":
                depth -= 1
            j += 1
        contents.append(text[start + len(BOX_OPENER) : j - 1 if depth == 0 else len(text)])
        i = j
    return contents


def has_question_block(text: str) -> bool:
    """Whether ``<question>(.*?)</question>`` (DOTALL) matches: an opener with a closer after it."""
    start = text.find(QUESTION_OPEN)
    return start != -1 and text.find(QUESTION_CLOSE, start + len(QUESTION_OPEN)) != -1


def parse_generated(text: str | None, profile: str) -> ParsedQuestion:
    """A generated sample's question, answer and validity by the profile's generation rule."""
    reward_view = parse_challenger_output(text or "", profile)  # checks the profile's name too
    if profile != "rzero_code":
        return reward_view
    text = text or ""
    boxes = scan_boxes(text)
    return ParsedQuestion(
        question=reward_view.question,  # the last block, stripped (the same in both readings)
        answer=boxes[-1].strip() if boxes else "",
        valid=has_question_block(text) and bool(boxes),
    )
