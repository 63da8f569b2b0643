"""The pseudo-label filter: band per profile (edges included), every drop reason, the order of checks."""

from __future__ import annotations

import pytest

from question_evaluate.filtering import (
    REASONS,
    asks_for_proof,
    count_reasons,
    filter_question,
)
from rzero.profiles import PROFILES, get_profile

Q = "What is the remainder when 2^10 is divided by 7?"


def test_profile_settings_match_the_spec() -> None:
    settings = {name: (p.votes, p.band, p.iterations) for name, p in PROFILES.items()}
    assert settings == {"paper": (10, (0.25, 0.75), 3), "rzero_code": (9, (0.3, 0.8), 5)}
    with pytest.raises(ValueError, match="unknown"):
        get_profile("nope")


@pytest.mark.parametrize(
    ("p_hat", "expected"),
    [
        (0.2, (False, "p_below_band")),  # 2 of 10
        (0.25, (True, None)),  # lower edge, inclusive
        (3 / 10, (True, None)),  # 3 of 10
        (7 / 10, (True, None)),  # 7 of 10
        (0.75, (True, None)),  # upper edge, inclusive
        (0.8, (False, "p_above_band")),  # 8 of 10
        (0.0, (False, "p_below_band")),
        (1.0, (False, "p_above_band")),
    ],
)
def test_paper_band(p_hat: float, expected: tuple[bool, str | None]) -> None:
    assert filter_question("1", p_hat, Q, "paper") == expected


@pytest.mark.parametrize(
    ("p_hat", "expected"),
    [
        (2 / 9, (False, "p_below_band")),
        (0.25, (False, "p_below_band")),
        (0.3, (True, None)),  # lower edge, inclusive
        (3 / 10, (True, None)),  # the float 3/10 computed, not typed
        (0.1 * 3, (True, None)),  # 0.30000000000000004: not dropped by rounding
        (3 / 9, (True, None)),
        (7 / 9, (True, None)),
        (0.8, (True, None)),  # upper edge, inclusive
        (8 / 10, (True, None)),
        (8 / 9, (False, "p_above_band")),
        (1.0, (False, "p_above_band")),
    ],
)
def test_rzero_code_band(p_hat: float, expected: tuple[bool, str | None]) -> None:
    assert filter_question("1", p_hat, Q, "rzero_code") == expected


@pytest.mark.parametrize("profile", ["paper", "rzero_code"])
@pytest.mark.parametrize(
    ("label", "reason"),
    [
        (None, "no_answer"),
        ("", "no_answer"),
        ("  ", "no_answer"),
        ("None", "label_none"),
        (" None ", "label_none"),
    ],
)
def test_unusable_labels_are_dropped_in_both_profiles(profile: str, label: str | None, reason: str) -> None:
    assert filter_question(label, 0.5, Q, profile) == (False, reason)


def test_none_as_part_of_a_label_is_a_label() -> None:
    assert filter_question("\\{None\\}", 0.5, Q, "paper") == (True, None)
    assert filter_question("none", 0.5, Q, "paper") == (True, None)


def test_only_the_chinese_proof_word_drops_in_rzero_code() -> None:
    zh = "证明：对于所有正整数 n，n^2 + n 是偶数。"
    assert asks_for_proof(zh)
    assert filter_question("1", 0.5, zh, "rzero_code") == (False, "asks_for_proof")
    assert filter_question("1", 0.5, zh, "paper") == (True, None)


@pytest.mark.parametrize(
    "question",
    [
        # The authors' code drops none of these: English proof words are not its rule.
        "Prove that there are infinitely many primes of the form 4k+3, and give the least one.",
        "PROVE: for all n, n^3 - n is divisible by 6; what is the largest such fixed divisor?",
        "Show that x^2 + 1 > 0 for every real x, then find the minimum of x^2 + 1.",
        "Give a proof that sqrt(2) is irrational, then compute floor(100 sqrt(2)).",
        "Disprove the claim that every odd number is prime by naming the least counterexample.",
    ],
)
def test_english_proof_words_are_kept_in_both_profiles(question: str) -> None:
    assert not asks_for_proof(question)
    assert filter_question("1", 0.5, question, "rzero_code") == (True, None)
    assert filter_question("1", 0.5, question, "paper") == (True, None)


@pytest.mark.parametrize(
    "question",
    [
        "Put your answer in \\boxed{} and compute 2+2.",
        "How many ways to put 5 balls into 3 BOXES?",
        "A Box holds 4.",
    ],
)
def test_box_mentions_are_dropped_in_rzero_code_only(question: str) -> None:
    assert filter_question("4", 0.5, question, "rzero_code") == (False, "mentions_box")
    assert filter_question("4", 0.5, question, "paper") == (True, None)


@pytest.mark.parametrize(
    "label",
    [
        "\\text{yes}",
        "5\\text{ cm}",
        "\\textbf{A}",
        "\\TEXT{yes}",  # the authors lower-case the label first
        "\\mathrm{Text}",
        "context",  # a plain word containing "text" drops too: their rule is a substring test
    ],
)
def test_text_labels_are_dropped_in_rzero_code_only(label: str) -> None:
    assert filter_question(label, 0.5, Q, "rzero_code") == (False, "label_has_text")
    assert filter_question(label, 0.5, Q, "paper") == (True, None)


def test_rzero_code_drops_nothing_else() -> None:
    # Words near the three rules, none of which the authors' code drops.
    for question in ("Find the proof-free value of 2+2.", "What is 3 x 3 in a bo x?", "Compute 7 mod 4."):
        assert filter_question("\\mathrm{t}", 0.5, question, "rzero_code") == (True, None)
    assert filter_question("te xt", 0.5, Q, "rzero_code") == (True, None)


def test_checks_run_in_the_documented_order() -> None:
    box_and_proof = "证明 the box holds 4 balls."
    # label checks come before the content checks ...
    assert filter_question(None, 0.5, box_and_proof, "rzero_code") == (False, "no_answer")
    assert filter_question("None", 0.5, box_and_proof, "rzero_code") == (False, "label_none")
    # ... the proof check before the box check before the \text check ...
    assert filter_question("\\text{x}", 0.5, box_and_proof, "rzero_code") == (False, "asks_for_proof")
    assert filter_question("\\text{x}", 0.5, "The box holds 4.", "rzero_code") == (False, "mentions_box")
    # ... and every content check before the band.
    assert filter_question("\\text{x}", 0.0, Q, "rzero_code") == (False, "label_has_text")
    assert filter_question("1", 0.0, "The box holds 4.", "rzero_code") == (False, "mentions_box")
    assert REASONS == (
        "no_answer",
        "label_none",
        "asks_for_proof",
        "mentions_box",
        "label_has_text",
        "p_below_band",
        "p_above_band",
    )


def test_band_override_keeps_everything_with_a_label() -> None:
    assert filter_question("1", 0.0, Q, "paper", band=(0.0, 1.0)) == (True, None)
    assert filter_question("1", 1.0, Q, "paper", band=(0.0, 1.0)) == (True, None)
    assert filter_question(None, 0.0, Q, "paper", band=(0.0, 1.0)) == (False, "no_answer")
    assert filter_question("1", 0.5, Q, "paper", band=(0.6, 0.9)) == (False, "p_below_band")


def test_count_reasons_counts_every_reason_with_zeros() -> None:
    counts = count_reasons([None, "no_answer", None, "p_above_band", "no_answer"])
    assert counts == {
        "kept": 2,
        "no_answer": 2,
        "label_none": 0,
        "asks_for_proof": 0,
        "mentions_box": 0,
        "label_has_text": 0,
        "p_below_band": 0,
        "p_above_band": 1,
    }
    with pytest.raises(ValueError, match="unknown drop reason"):
        count_reasons(["bogus"])
