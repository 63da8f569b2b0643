"""Which pseudo-labelled questions the Solver trains on (RZERO_SPEC.md section 3, "Filter").

A question is kept when its majority label is usable and the Solver's agreement p̂ lies in the
profile's band (inclusive at both ends). The checks run in this fixed order and the first one that
fails names the reason (so every dropped question is counted under exactly one reason):

1. ``no_answer``       the label is missing or blank (no Solver sample gave a counted answer);
2. ``label_none``      the label is the string ``None`` (after stripping), as the authors drop it
                       (in ``rzero_code`` it is mathruler's answer for a box-less response);
3. ``asks_for_proof``  (``rzero_code`` only) the question contains the Chinese 证明 ("proof"),
                       exactly the authors' check: no English proof words;
4. ``mentions_box``    (``rzero_code`` only) ``box`` occurs in the lower-cased question. The authors'
                       crude rule, kept as is: it catches questions that talk about ``\\boxed{}``
                       and also drops honest "balls into boxes" problems;
5. ``label_has_text``  (``rzero_code`` only) ``text`` occurs in the lower-cased label (``\\text{}``,
                       ``\\TEXT``, ``\\textbf{}``, but also a plain word such as "context");
6. ``p_below_band``    p̂ < low end of the band (the Solver mostly disagrees: too hard or ill-posed);
7. ``p_above_band``    p̂ > high end of the band (the Solver mostly agrees: too easy).

Checks 3-5 are exactly the drops of the authors' code, no more (RZERO_SPEC.md section 3, "Filter").
Bands: ``paper`` [0.25, 0.75] (with m = 10 votes: 3 to 7 agreeing answers), ``rzero_code`` [0.3, 0.8]
(p̂ there is the share among the answers left after dropping empty boxes, ``"None"`` included; see
`rewards.voting`). The band edges are compared with a 1e-9 tolerance so that a share such as 3/10
computed in floating point is never dropped by rounding.
"""

from __future__ import annotations

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

# The band of the paper's "w/o filtering" ablation: every p̂ is in it, so only the label checks
# (1-5) drop a question.
KEEP_ALL_BAND = (0.0, 1.0)

# The authors' three content drops, verbatim: `"证明" in question`, `'box' in question.lower()`,
# `'text' in majority_answer.lower()`.
_PROOF_ZH = "证明"


def asks_for_proof(question: str) -> bool:
    """True when the question contains 证明 (rule 3 in the module docstring; nothing else counts)."""
    return _PROOF_ZH in (question or "")


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
        if "text" in text.lower():
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
