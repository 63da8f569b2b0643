"""The math-verify grader (profile ``paper``, evaluation): the comparison a grader worker process
runs, and the cheap numeric verdicts the caller may take without one.

Only `rewards.grader.GraderPool` workers call `make_checker`: math-verify (sympy underneath) can run
forever on some inputs, and only a worker process can be killed out of a stuck C loop.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from fractions import Fraction
from typing import Any

from rewards.answer_parsing import split_assignment

# ----------------------------------------------------------------------------------------------
# Cheap checks (in the caller, no worker): what math-verify would say, where that is certain
# ----------------------------------------------------------------------------------------------

# A trailing point is not a number for math-verify ("3." is not 3); one way to match each string,
# so that a failed match costs linear time (`\d+\.?\d*` backtracks quadratically on long digits).
_PLAIN_NUMBER = re.compile(r"[-+]?(?:\d+(?:\.\d+)?|\.\d+)")
_LATEX_FRACTION = re.compile(r"(-?)\\frac\{([-+]?\d+)\}\{([-+]?\d+)\}")
_SLASH_FRACTION = re.compile(r"([-+]?\d+)/([-+]?\d+)")
# Decimals longer than this could lose digits in sympy's 15-digit floats: left to the grader.
_MAX_DECIMAL_DIGITS = 12
# math-verify compares floats after rounding to 6 decimals; a gap above 1e-5 survives that rounding.
_DECIMAL_GAP = Fraction(1, 10**5)
# Longer numbers are left to the grader: int() and Fraction() refuse strings of more than 4,300
# digits (sys.int_info.default_max_str_digits) with a ValueError, and a model may write them.
_MAX_NUMBER_CHARS = 200


def _simple_number(norm: str) -> tuple[Fraction, bool] | None:
    """(value, is_decimal) of an integer, decimal or integer-fraction literal; else None.

    None too for a literal longer than `_MAX_NUMBER_CHARS` (or one Python refuses to convert).
    """
    if len(norm) > _MAX_NUMBER_CHARS:
        return None
    try:
        return _parse_simple_number(norm)
    except ValueError:  # a conversion limit: the grader decides
        return None


def _parse_simple_number(norm: str) -> tuple[Fraction, bool] | None:
    if _PLAIN_NUMBER.fullmatch(norm):
        is_decimal = "." in norm
        if is_decimal and len(norm.lstrip("+-").replace(".", "").lstrip("0")) > _MAX_DECIMAL_DIGITS:
            return None
        return Fraction(norm), is_decimal
    latex = _LATEX_FRACTION.fullmatch(norm)
    slash = _SLASH_FRACTION.fullmatch(norm)
    if latex is not None:
        sign, num, den = latex.group(1), int(latex.group(2)), int(latex.group(3))
        num = -num if sign else num
    elif slash is not None:
        num, den = int(slash.group(1)), int(slash.group(2))
    else:
        return None
    return (Fraction(num, den), False) if den != 0 else None


def numeric_verdict(norm_a: str, norm_b: str) -> bool | None:
    """Decide equality of two plain numbers the way math-verify would; None when not certain.

    Integers and integer fractions are exact rationals for sympy (equal iff equal values). With a
    decimal involved math-verify rounds to 6 places, so only a clear gap means "different".
    """
    a, b = _simple_number(norm_a), _simple_number(norm_b)
    if a is None or b is None:
        return None
    (value_a, decimal_a), (value_b, decimal_b) = a, b
    if value_a == value_b:
        return True
    if not (decimal_a or decimal_b) or abs(value_a - value_b) > _DECIMAL_GAP:
        return False
    return None


def cheap_verdict(norm_a: str, norm_b: str) -> tuple[bool | None, str]:
    """What math-verify says about two answers, in either direction, where that is certain.

    Takes `rewards.answer_parsing.normalize_answer` forms. Returns (verdict, how): (True,
    "string_matches") for equal normal forms, or equal values of a one-letter assignment and a
    plain answer or of two assignments of the same letter (``x=3`` / ``3``); (bool,
    "numeric_shortcuts") from `numeric_verdict` on those values; (None, "") otherwise, e.g. for
    assignments of different letters (``x=3`` / ``y=3``, which math-verify compares as equations).
    """
    if norm_a == norm_b:
        return True, "string_matches"
    var_a, value_a = split_assignment(norm_a)
    var_b, value_b = split_assignment(norm_b)
    if var_a and var_b and var_a != var_b:
        return None, ""
    if value_a == value_b:
        return True, "string_matches"
    verdict = numeric_verdict(value_a, value_b)
    return (verdict, "numeric_shortcuts") if verdict is not None else (None, "")


# ----------------------------------------------------------------------------------------------
# Worker side
# ----------------------------------------------------------------------------------------------


def make_checker() -> Callable[[str, str, bool], bool]:
    """Build the math-verify comparison used inside a worker (imports math_verify)."""
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify
    from sympy import Expr, UnevaluatedExpr

    # Boxed first: answers are wrapped in `\boxed{}` so that bare LaTeX (`\frac{1}{2}`, `\{1,2\}`,
    # `2\sqrt{2}`) is extracted whole; ExprExtractionConfig catches plain `1/2`, `0.5`.
    configs = [LatexExtractionConfig(boxed_match_priority=0), ExprExtractionConfig()]

    @functools.lru_cache(maxsize=4096)  # voting compares one representative against many answers
    def parse_answer(answer: str) -> list[Any]:
        # `\boxed{...}` fails on unbalanced braces; then try `$...$`, then the bare text.
        for text in (f"\\boxed{{{answer}}}", f"${answer}$", answer):
            # The pool's process kill is the timeout: math-verify's own uses signal.alarm.
            parsed = parse(text, extraction_config=configs, parsing_timeout=None)
            if parsed:
                return parsed
        return []

    def clearly_apart(a: Any, b: Any) -> bool:
        """Two real constants whose values differ by far more than any rounding."""
        if not (isinstance(a, Expr) and isinstance(b, Expr) and a.is_number and b.is_number):
            return False  # sets, tuples, relations, matrices, anything with variables
        if a.has(UnevaluatedExpr) or b.has(UnevaluatedExpr):
            return False  # percentages: math-verify deems 9% equal to 9
        value_a, value_b = a.evalf(15), b.evalf(15)
        if not all(v.is_Float or v.is_Rational for v in (value_a, value_b)):
            return False  # complex, infinite, nan or unevaluated
        return bool(abs(value_a - value_b) > 1e-4 * max(1, abs(value_a), abs(value_b)))

    def certainly_different(gold_parsed: list[Any], pred_parsed: list[Any]) -> bool:
        """Skip verify when every sympy pair is clearly apart numerically.

        verify would compute the same numbers and then still try `simplify(a - b)` (most of its
        time on unequal answers, twice with `symmetric`), which cannot make clearly distinct
        constants equal. Extracted strings are compared as strings by verify: none may coincide.
        """
        gold_strings = {x.strip() for x in gold_parsed if isinstance(x, str)}
        if any(isinstance(x, str) and x.strip() in gold_strings for x in pred_parsed):
            return False
        gold_exprs = [x for x in gold_parsed if not isinstance(x, str)]
        pred_exprs = [x for x in pred_parsed if not isinstance(x, str)]
        return bool(gold_exprs and pred_exprs) and all(
            clearly_apart(g, p) for g in gold_exprs for p in pred_exprs
        )

    def check(gold: str, pred: str, symmetric: bool) -> bool:
        gold_parsed, pred_parsed = parse_answer(gold), parse_answer(pred)
        if not gold_parsed or not pred_parsed:
            return False
        if certainly_different(gold_parsed, pred_parsed):
            return False
        if verify(gold_parsed, pred_parsed, timeout_seconds=None):
            return True
        # verify is not symmetric (assignments, intervals): voting accepts either direction, as the
        # authors did with grade_answer both ways.
        return symmetric and bool(verify(pred_parsed, gold_parsed, timeout_seconds=None))

    return check
