"""The authors' answer semantics (profile ``rzero_code``), built on PyPI ``mathruler`` (RZERO_SPEC.md
section 2, "`rzero_code` answer semantics").

- `extract_boxed_content`: mathruler's extraction, used as is. It returns the literal string
  ``"None"`` for a response without a ``\\boxed{`` (or whose last box is never closed) and ``""``
  for an empty box; only the exact opener ``\\boxed{`` counts (not ``\\boxed {`` or ``\\fbox{``).
- `both_say_no`: the authors' cheap rule that two answers containing ``"no "`` are the same
  ("no solution" and "no real roots" are both "there is none").
- `make_checker`: the comparison a grader worker process runs (``grade_answer``, which uses sympy
  and can hang, so it only ever runs inside `rewards.grader.GraderPool`).

mathruler is imported lazily: it pulls in sympy and pylatexenc, which the ``paper`` profile never
needs in the caller's process.
"""

from __future__ import annotations

from collections.abc import Callable

NO_BOX = "None"  # what mathruler's extraction returns for a response without a box


def extract_boxed_content(text: str | None) -> str:
    """mathruler's ``extract_boxed_content`` (``"None"`` without a box, ``""`` for ``\\boxed{}``)."""
    from mathruler.grader import extract_boxed_content as _extract

    return _extract(text or "")


def both_say_no(a: str, b: str) -> bool:
    """The authors' rule: answers that both contain ``"no "`` (lower-cased) are the same answer."""
    return "no " in a.lower() and "no " in b.lower()


def make_checker() -> Callable[[str, str, bool], bool]:
    """The worker-side comparison ``check(gold, pred, symmetric)``.

    ``grade_answer(given, ground_truth)`` is not symmetric; the authors call it with the candidate
    first. ``symmetric`` adds the other direction (either suffices). The pool sends each direction
    as its own job when it can, so that each `grade_answer` call gets its own timeout, as theirs did.
    """
    from mathruler.grader import grade_answer

    def check(gold: str, pred: str, symmetric: bool) -> bool:
        if grade_answer(pred, gold):
            return True
        return symmetric and bool(grade_answer(gold, pred))

    return check
