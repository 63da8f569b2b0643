"""Extracting answers from model text, and the cheap answer normalisation used before the grader.

- `last_boxed`: the content of the last ``\\boxed{...}`` (nested braces handled).
- `extract_answer`: a Solver response's answer as the profile reads it (``paper``: `last_boxed`;
  ``rzero_code``: mathruler's extraction, ``"None"`` for a box-less response).
- `parse_challenger_output`: the Challenger's ``<question>...</question>`` + ``\\boxed{answer}``,
  valid by the profile's rule.
- `normalize_answer`: a conservative canonical form. Two answers with equal normal forms are
  *certainly* the same answer; different normal forms mean "ask the math grader"
  (`rewards.grader`), never "different".
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from rzero.profiles import PROFILES

# `\boxed{`, `\boxed {` and `\fbox{` open a box; `\boxedfoo` is another macro and must not match.
_BOX_OPEN = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])\s*\{")
_QUESTION_BLOCK = re.compile(r"<question>(.*?)</question>", re.DOTALL)


def _matching_brace(text: str, open_idx: int) -> int | None:
    """Index of the ``}`` closing the ``{`` at `open_idx`, or None when the text ends first.

    A backslash escapes the next character, so ``\\{`` / ``\\}`` (literal braces, as in the set
    ``\\{1,2\\}``) do not count, and ``\\\\`` (a line break) does not escape what follows it.
    """
    depth = 0
    i = open_idx
    n = len(text)
    while i < n:
        ch = text[i]
        if ch == "\\":
            i += 2
            continue
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    return None


def last_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` (or ``\\boxed {...}``, ``\\fbox{...}``) in `text`.

    Nested braces are handled. Returns None when there is no box, or when the last box is never
    closed (a truncated response): an earlier box is then an intermediate result, not the answer.
    The content is returned as written (not stripped).
    """
    if not text:
        return None
    matches = list(_BOX_OPEN.finditer(text))
    if not matches:
        return None
    open_idx = matches[-1].end() - 1
    close_idx = _matching_brace(text, open_idx)
    if close_idx is None:
        return None
    return text[open_idx + 1 : close_idx]


@dataclass(frozen=True)
class ParsedQuestion:
    """One Challenger output: the question, its proposed answer, and whether both are present."""

    question: str
    answer: str
    valid: bool


def _check_profile(profile: str) -> None:
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; expected one of {tuple(PROFILES)}")


def extract_answer(response: str | None, profile: str = "paper") -> str | None:
    """The answer of a Solver response, as the profile's voting and rewards read it.

    ``paper``: stripped content of the last balanced box (`last_boxed`), None without one (no vote).
    ``rzero_code``: mathruler's ``extract_boxed_content``: ``"None"`` (a string, an ordinary vote)
    without a box, ``""`` for an empty box (dropped from the vote).
    """
    _check_profile(profile)
    if profile == "rzero_code":
        from rewards.mathruler_grading import extract_boxed_content

        return extract_boxed_content(response)
    boxed = last_boxed(response or "")
    return boxed.strip() if boxed is not None else None


def parse_challenger_output(text: str, profile: str = "paper") -> ParsedQuestion:
    """Parse a Challenger response (RZERO_SPEC section 2, "Parsing" and "`rzero_code` answer semantics").

    question = stripped text of the last ``<question>...</question>`` block in both profiles.
    ``paper``: answer = stripped content of the last balanced ``\\boxed{...}``; valid iff question and
    answer are non-empty.
    ``rzero_code`` (the authors' code): answer = mathruler's extraction, ``"None"`` without a box;
    valid iff the question is non-empty and the answer is not ``""``, so a box-less question is valid
    and only an empty ``\\boxed{}`` (which their ``if questions and answers`` rejects) is not.
    """
    _check_profile(profile)
    text = text or ""
    blocks = _QUESTION_BLOCK.findall(text)
    question = blocks[-1].strip() if blocks else ""
    answer = extract_answer(text, profile) or ""
    return ParsedQuestion(question=question, answer=answer, valid=bool(question) and bool(answer))


# ----------------------------------------------------------------------------------------------
# Normalisation
# ----------------------------------------------------------------------------------------------

# Delimiter pairs that only say "this is math": `$x$`, `$$x$$`, `\(x\)`, `\[x\]`.
_MATH_DELIMITERS = (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]"))
# Macros that only change the font of their argument; removed when they wrap the whole answer.
_WRAPPER_MACROS = ("boxed", "text", "textbf", "textrm", "mathrm", "mathbf", "mbox", "operatorname")
_WHOLE_WRAPPER = re.compile(r"^\\(" + "|".join(_WRAPPER_MACROS) + r")\s*\{")
# `\left.` / `\right.` are invisible delimiters: drop them whole, before `\left` / `\right`.
_INVISIBLE_DELIMS = re.compile(r"\\(?:left|right)\.")
_SIZE_MACROS = re.compile(r"\\(?:left|right)(?![A-Za-z])")
# Thin/medium/thick/negative spaces (`\!`, `\,`, `\;`, `\:`) and the control space `\ `: pure
# typography. The control space becomes a plain space so that `5\ cm` does not turn into `5\cm`.
_SPACING_MACROS = re.compile(r"\\[!,;:]")
_CONTROL_SPACE = re.compile(r"\\\s")
_DEGREES = re.compile(r"\^\s*\{?\s*\\circ\s*\}?|°")
_FRAC_VARIANTS = re.compile(r"\\[dt]frac(?![A-Za-z])")
# A single-variable assignment such as `x = 3` or `y=2x+1` (only one `=` in the answer).
_ASSIGNMENT = re.compile(r"^[A-Za-z]\s*=\s*(?=\S)")
# Whitespace is dropped unless it separates two word characters (`\pi r`, `1 2`), where removing
# it could join two tokens into a different one.
_SPACE_RUN = re.compile(r"\s+")


def _strip_delimiters(s: str) -> str:
    changed = True
    while changed:
        changed = False
        for left, right in _MATH_DELIMITERS:
            if len(s) >= len(left) + len(right) and s.startswith(left) and s.endswith(right):
                s = s[len(left) : len(s) - len(right)].strip()
                changed = True
                break
    return s


def _strip_whole_wrapper(s: str) -> str:
    """``\\text{abc}`` -> ``abc``, only when the macro's group spans the whole answer."""
    while True:
        m = _WHOLE_WRAPPER.match(s)
        if m is None:
            return s
        close_idx = _matching_brace(s, m.end() - 1)
        if close_idx != len(s) - 1:
            return s
        s = s[m.end() : close_idx].strip()


def _drop_spaces(s: str) -> str:
    def keep_if_between_words(m: re.Match[str]) -> str:
        before = s[m.start() - 1] if m.start() > 0 else ""
        after = s[m.end()] if m.end() < len(s) else ""
        return " " if before.isalnum() and after.isalnum() else ""

    return _SPACE_RUN.sub(keep_if_between_words, s)


def normalize_answer(s: str | None) -> str:
    """Conservative canonical form of an answer, for the cheap "certainly equal" check.

    Removes: surrounding whitespace and math delimiters (``$``, ``$$``, ``\\(\\)``, ``\\[\\]``),
    ``\\left`` / ``\\right``, spacing macros (``\\!``, ``\\,``, ``\\;``, ``\\:``), whitespace that does
    not separate two word characters, one trailing period, a font/box wrapper around the whole
    answer (``\\text{}``, ``\\mathrm{}``, ``\\boxed{}``, ...), degree marks (``^\\circ``,
    ``^{\\circ}``, ``°``), and a leading single-variable assignment (``x=``) when the answer has no
    other ``=``. ``\\dfrac`` / ``\\tfrac`` become ``\\frac``. None -> "".

    Equal outputs imply the same answer; unequal outputs decide nothing.
    """
    if s is None:
        return ""
    s = s.strip()
    for _ in range(3):  # wrappers may nest in either order, e.g. `$\text{x = 5}$.`
        before = s
        s = _strip_delimiters(s)
        if s.endswith(".") and not s.endswith("\\."):
            s = s[:-1].rstrip()
        s = _strip_whole_wrapper(s)
        if s == before:
            break
    s = _INVISIBLE_DELIMS.sub("", s)
    s = _SIZE_MACROS.sub("", s)
    s = _SPACING_MACROS.sub("", s)
    s = _CONTROL_SPACE.sub(" ", s)
    s = _FRAC_VARIANTS.sub(r"\\frac", s)
    s = _DEGREES.sub("", s)
    if s.count("=") == 1:
        s = _ASSIGNMENT.sub("", s)
    return _drop_spaces(s.strip())
