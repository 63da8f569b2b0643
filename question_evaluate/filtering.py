"""Which pseudo-labelled questions the Solver trains on (RZERO_SPEC.md section 3, "Filter").

A question is kept when its majority label is usable and the Solver's agreement p̂ lies in the
profile's band (inclusive at both ends). The checks run in this fixed order and the first one that
fails names the reason (so every dropped question is counted under exactly one reason):

1. ``no_answer``       the label is missing or blank (no Solver sample had a ``\\boxed{}`` answer);
2. ``label_none``      the label is the string ``None`` (after stripping), as the authors drop it;
3. ``asks_for_proof``  (``rzero_code`` only) the question asks for a proof: it contains, as whole
                       words and case-insensitively, "prove" / "proves" / "proving" / "disprove" /
                       "proof", or "show that", or the Chinese 证明 (the authors' own check). A proof
                       has no single checkable answer, so its majority label means nothing;
4. ``mentions_box``    (``rzero_code`` only) the question contains "box" anywhere, case-insensitively.
                       This is the authors' crude rule, kept as is: it catches questions that talk
                       about ``\\boxed{}`` (often leaking or dictating the answer) and also drops
                       honest "balls into boxes" problems;
5. ``label_has_text``  (``rzero_code`` only) the label contains ``\\text`` (``\\text{}``,
                       ``\\textbf{}``, ...): a worded answer that the math grader cannot compare;
6. ``p_below_band``    p̂ < low end of the band (the Solver mostly disagrees: too hard or ill-posed);
7. ``p_above_band``    p̂ > high end of the band (the Solver mostly agrees: too easy).

Bands: ``paper`` [0.25, 0.75] (with m = 10 votes: 3 to 7 agreeing answers), ``rzero_code`` [0.3, 0.8]
(with m = 9: 3 to 7 of 9; p̂ there is the share among non-empty answers). The band edges are compared
with a 1e-9 tolerance so that a share such as 3/10 computed in floating point is never dropped by
rounding.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from rzero.profiles import get_profile

# In check order; `filter_question` returns the first that applies.
REASONS = (
    "no_answer",
    "label_none",
    "asks_for_proof",
    "mentions_box",
    "label_has_text",
    "p_below_band",
    "p_above_band",
)

BAND_TOLERANCE = 1e-9

_ASKS_FOR_PROOF = re.compile(
    r"\b(?:prove|proves|proving|disprove|proof)\b|\bshow\s+that\b|证明", re.IGNORECASE
)


def asks_for_proof(question: str) -> bool:
    """True when the question asks for a proof (see rule 3 in the module docstring)."""
    return _ASKS_FOR_PROOF.search(question or "") is not None


def filter_question(
    label: str | None,
    p_hat: float,
    question: str,
    profile: str = "paper",
    band: tuple[float, float] | None = None,
) -> tuple[bool, str | None]:
    """(keep, reason): reason is None when kept, else one of `REASONS` (checked in that order).

    Args:
        label: the majority answer (None when no sample had an answer).
        p_hat: the majority share, in [0, 1].
        question: the question text (used by the ``rzero_code`` content checks).
        profile: ``paper`` or ``rzero_code``; decides the band and whether checks 3-5 apply.
        band: (low, high) overriding the profile's band, e.g. (0.0, 1.0) for the paper's
            "without filtering" ablation; the label checks still apply.
    """
    low, high = band if band is not None else get_profile(profile).band
    text = (label or "").strip()
    if not text:
        return False, "no_answer"
    if text == "None":
        return False, "label_none"
    if profile == "rzero_code":
        if asks_for_proof(question):
            return False, "asks_for_proof"
        if "box" in (question or "").lower():
            return False, "mentions_box"
        if "\\text" in text:
            return False, "label_has_text"
    if p_hat < low - BAND_TOLERANCE:
        return False, "p_below_band"
    if p_hat > high + BAND_TOLERANCE:
        return False, "p_above_band"
    return True, None


def count_reasons(reasons: Iterable[str | None]) -> dict[str, int]:
    """{"kept": n, <reason>: n for every reason in `REASONS`} (zeros included) from per-question reasons."""
    counts = {"kept": 0, **dict.fromkeys(REASONS, 0)}
    for reason in reasons:
        key = "kept" if reason is None else reason
        if key not in counts:
            raise ValueError(f"unknown drop reason {reason!r}")
        counts[key] += 1
    return counts
