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
_QUESTION_OPEN, _QUESTION_CLOSE = "<question>", "</question>"


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


def last_question_block(text: str) -> str:
    """Text of the last ``<question>...</question>`` block ("" when there is none), as written.

    The same blocks as ``re.findall(r"<question>(.*?)</question>", text, re.DOTALL)`` (each opening
    tag closes at the next closing tag; the search resumes after it), found with `str.find` so that
    the cost is linear: the regex restarts its scan at every opening tag (quadratic on a response
    of repeated ``<question>`` tags).
    """
    block, pos = "", 0
    while True:
        start = text.find(_QUESTION_OPEN, pos)
        if start < 0:
            return block
        start += len(_QUESTION_OPEN)
        end = text.find(_QUESTION_CLOSE, start)
        if end < 0:  # no closing tag after this opening one: none after any later one either
            return block
        block, pos = text[start:end], end + len(_QUESTION_CLOSE)


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
    question = last_question_block(text).strip()
    answer = extract_answer(text, profile) or ""
    return ParsedQuestion(question=question, answer=answer, valid=bool(question) and bool(answer))


# ----------------------------------------------------------------------------------------------
# Normalisation
# ----------------------------------------------------------------------------------------------
# Every rule below is one that math-verify (the grader the normal form stands in for) agrees with
# in both directions; tests/test_grader.py checks each against math-verify itself. Rules that
# math-verify contradicts were removed: a trailing period ("3." is not 3 for it), `°` (only
# `^\circ` / `^{\circ}` are degrees), `\left.` (`\left.x\right|_0` is not `x|_0`), a thin space
# between two digits (`1\,000` parses as 000), a font macro around anything but letters and spaces
# (`\text{3.5}` is not 3.5, `\text{x = 5}` not 5), and the assignment `x=` when both answers are
# assignments of different variables (`x=3` is not `y=3`; see `split_assignment`).
# Every step is linear in the answer's length (answers are model output: RZERO_SPEC section 4).

# Delimiter pairs that only say "this is math": `$x$`, `$$x$$`, `\(x\)`, `\[x\]`.
_MATH_DELIMITERS = (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]"))
# `\boxed{...}` around the whole answer is removed whatever it holds (math-verify reads the box);
# font macros only around letters, spaces and parentheses (math-verify reads `\text{12}` as a
# string, which is not 12.0).
_WHOLE_BOX = re.compile(r"\\boxed\s*\{")
_WHOLE_FONT = re.compile(r"\\(?:text|textbf|textrm|mathrm|mathbf|mbox)\s*\{(?=[A-Za-z\s()]+\}\Z)")
# `\left(` -> `(`; `\left.` / `\right.` (invisible delimiters) are kept as written.
_SIZE_MACROS = re.compile(r"\\(?:left|right)(?![A-Za-z.])")
# Thin/medium/thick/negative spaces (`\!`, `\,`, `\;`, `\:`): pure typography, dropped unless
# they separate two digits (math-verify reads `1\,000` as 000, `1\!000` otherwise). The
# control space `\ ` becomes a plain space, so that `5\ cm` does not turn into `5\cm`.
_SPACING_MACRO = re.compile(r"\\[!,;:]")
_CONTROL_SPACE = re.compile(r"\\\s")
_DEGREES = re.compile(r"\^(?:\\circ|\{\\circ\})(?![A-Za-z])")
_FRAC_VARIANTS = re.compile(r"\\[dt]frac(?![A-Za-z])")
# A single-variable assignment such as `x = 3` or `y=2x+1` (only one `=` in the answer).
_ASSIGNMENT = re.compile(r"([A-Za-z])\s*=\s*(?=\S)")
# Whitespace is dropped unless it separates two word characters (`\pi r`, `1 2`), where removing
# it could join two tokens into a different one.
_SPACE_RUN = re.compile(r"\s+")


def _brace_partners(s: str) -> dict[int, int]:
    """Index of each ``{`` -> index of its ``}``, for every balanced pair, in one pass.

    Reads the text as `_matching_brace` does (a backslash escapes the next character), so the
    partner of a brace is what `_matching_brace` would find from it.
    """
    partners: dict[int, int] = {}
    stack: list[int] = []
    i, n = 0, len(s)
    while i < n:
        ch = s[i]
        if ch == "\\":
            i += 2
            continue
        if ch == "{":
            stack.append(i)
        elif ch == "}" and stack:
            partners[stack.pop()] = i
        i += 1
    return partners


def _strip_wrappers(s: str) -> str:
    """Remove math delimiters and a box or font macro around the whole answer, nested in any order.

    ``$\\boxed{\\text{yes}}$`` -> ``yes``. Works on a window [lo, hi) of the text, so nested wrappers
    cost one pass over the answer, not one copy per level.
    """
    partners = _brace_partners(s)
    lo, hi = 0, len(s)

    def skip_space(lo: int, hi: int) -> tuple[int, int]:
        while lo < hi and s[lo].isspace():
            lo += 1
        while hi > lo and s[hi - 1].isspace():
            hi -= 1
        return lo, hi

    lo, hi = skip_space(lo, hi)
    while True:
        for left, right in _MATH_DELIMITERS:
            if hi - lo >= len(left) + len(right) and s.startswith(left, lo) and s.endswith(right, lo, hi):
                lo, hi = skip_space(lo + len(left), hi - len(right))
                break
        else:
            m = _WHOLE_BOX.match(s, lo, hi) or _WHOLE_FONT.match(s, lo, hi)
            if m is None or partners.get(m.end() - 1) != hi - 1:
                return s[lo:hi]
            lo, hi = skip_space(m.end(), hi - 1)


def _drop_spacing_macros(s: str) -> str:
    def replace(m: re.Match[str]) -> str:
        # The nearest non-space characters on either side; the scans cross only whitespace, so
        # each whitespace run is read at most twice in all.
        i, j = m.start() - 1, m.end()
        while i >= 0 and s[i].isspace():
            i -= 1
        while j < len(s) and s[j].isspace():
            j += 1
        between_digits = i >= 0 and j < len(s) and s[i].isdigit() and s[j].isdigit()
        return m.group() if between_digits else " "

    return _SPACING_MACRO.sub(replace, s)


def _drop_spaces(s: str) -> str:
    def keep_if_between_words(m: re.Match[str]) -> str:
        before = s[m.start() - 1] if m.start() > 0 else ""
        after = s[m.end()] if m.end() < len(s) else ""
        return " " if before.isalnum() and after.isalnum() else ""

    return _SPACE_RUN.sub(keep_if_between_words, s)


def normalize_answer(s: str | None) -> str:
    """Conservative canonical form of an answer, for the cheap "certainly equal" check.

    Removes: surrounding whitespace and math delimiters (``$``, ``$$``, ``\\(\\)``, ``\\[\\]``),
    a ``\\boxed{}`` around the whole answer, a font macro (``\\text{}``, ``\\mathrm{}``, ...)
    around a whole answer of letters, spaces and parentheses, ``\\left`` / ``\\right`` before a
    visible delimiter, spacing macros (``\\!``, ``\\,``, ``\\;``, ``\\:``) that do not separate
    two digits, whitespace that does not separate two word characters, and the degree marks
    ``^\\circ`` / ``^{\\circ}``. ``\\dfrac`` / ``\\tfrac`` become ``\\frac``, a control space
    ``\\ `` a space. None -> "". A leading assignment ``x=`` is kept: see `split_assignment`.

    Equal outputs imply that math-verify finds the answers equal, in either direction (the rules
    and the cases math-verify contradicts are listed above); unequal outputs decide nothing.
    Linear in the length of `s`.
    """
    if s is None:
        return ""
    s = _strip_wrappers(s)
    s = _SIZE_MACROS.sub("", s)
    s = _drop_spacing_macros(s)
    s = _CONTROL_SPACE.sub(" ", s)
    s = _FRAC_VARIANTS.sub(r"\\frac", s)
    s = _DEGREES.sub("", s)
    return _drop_spaces(s.strip())


def split_assignment(norm: str) -> tuple[str, str]:
    """(variable, value) of a normal form that assigns one letter (``x=3`` -> ``("x", "3")``).

    ``("", norm)`` when `norm` is not such an assignment (no ``=``, more than one, or a left side
    that is not a single letter). math-verify compares ``x=3`` with ``3`` by its value, but two
    assignments as equations, so ``x=3`` and ``y=3`` differ: callers compare values only when at
    most one side assigns, or both assign the same variable.
    """
    if norm.count("=") != 1:
        return "", norm
    m = _ASSIGNMENT.match(norm)
    return (m.group(1), norm[m.end() :]) if m else ("", norm)
