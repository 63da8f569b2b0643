"""Majority vote by answer equivalence (rewards/voting.py), per profile, on real grader pools.

``paper``: math-verify, box-less answers are no vote but count in m. ``rzero_code`` (the authors'
code): mathruler, ``"None"`` for a box-less answer is a vote, empty boxes leave m, the "no " rule.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import pytest

from rewards.answer_parsing import extract_answer
from rewards.default_grader import get_default_pool
from rewards.grader import GraderPool
from rewards.mathruler_grading import both_say_no
from rewards.voting import (
    LABEL,
    REWARD,
    VoteResult,
    majority_vote_many,
    make_grader_pool,
    vote,
)


def majority_vote(answers, pool=None, profile: str = "paper", stage: str = LABEL) -> VoteResult:
    """One question's vote through the stages' batched entry point."""
    return majority_vote_many([answers], pool=pool, profile=profile, stage=stage)[0]


# grade_answer("9**9**9", "1/3") hands sympy 9**387420489 (as in test_grader.py): a call that times out.
MR_HANG = "9**9**9"
SHORT_TIMEOUT_S = 1.5


@pytest.fixture(scope="module")
def pool() -> GraderPool:
    # The process-wide math-verify pool: shared with other test modules, closed at exit.
    return get_default_pool()


@pytest.fixture(scope="module")
def mr_pool() -> GraderPool:
    # The process-wide mathruler pool (what the rzero_code rewards use).
    return get_default_pool(backend="mathruler")


def _pool_for(profile: str, pool: GraderPool, mr_pool: GraderPool) -> GraderPool:
    return pool if profile == "paper" else mr_pool


def reference_greedy_vote(answers: Sequence[str | None], pool: GraderPool, profile: str) -> VoteResult:
    """The definition, literally: one answer at a time, one `equivalent` call per comparison."""
    reps: list[str] = []
    sizes: list[int] = []
    for answer in answers:
        if answer is None and profile == "rzero_code":
            answer = "None"
        text = (answer or "").strip()
        if not text:
            continue
        for g, rep in enumerate(reps):
            cheap = profile == "rzero_code" and (rep == text or both_say_no(rep, text))
            if cheap or pool.equivalent(rep, text, symmetric=True):
                sizes[g] += 1
                break
        else:
            reps.append(text)
            sizes.append(1)
    n_nonempty = sum(sizes)
    m = len(answers) if profile == "paper" else n_nonempty
    if not sizes:
        return VoteResult(None, 0.0, [], len(answers), 0, m)
    best = sizes.index(max(sizes))
    return VoteResult(reps[best], sizes[best] / m, sizes, len(answers), n_nonempty, m)


# ---------------------------------------------------------------------------------------------
# The spec's crafted cases (RZERO_SPEC.md sections 2 and 3; issue 10)
# ---------------------------------------------------------------------------------------------


def _extracted(responses: list[str], profile: str) -> list[str | None]:
    return [extract_answer(r, profile) for r in responses]


def test_five_boxless_of_ten(pool: GraderPool, mr_pool: GraderPool) -> None:
    # 5 responses without a box, then 5 boxed "7".
    responses = ["I could not finish."] * 5 + ["so \\boxed{7}"] * 5
    # rzero_code: "None" x5 is a group formed first, tied with "7" x5: label "None", p = 5/10 (the
    # authors' maximum reward; the filter then drops the question for its "None" label).
    code = vote([_extracted(responses, "rzero_code")], "rzero_code", mr_pool, stage=LABEL)[0]
    assert code == VoteResult("None", 0.5, [5, 5], 10, 10, 10)
    # paper: box-less answers are no vote but count in m: "7" with 5 of 10.
    paper = vote([_extracted(responses, "paper")], "paper", pool, stage=LABEL)[0]
    assert paper == VoteResult("7", 0.5, [5], 10, 5, 10)
    # 5 box-less and 5 different boxed answers: rzero_code still 0.5 ("None"); paper 1/10.
    scattered = ["no box"] * 5 + [f"\\boxed{{{k}}}" for k in (11, 12, 13, 14, 15)]
    assert vote([_extracted(scattered, "rzero_code")], "rzero_code", mr_pool, stage=LABEL)[0].p_hat == 0.5
    assert vote([_extracted(scattered, "rzero_code")], "rzero_code", mr_pool, stage=LABEL)[0].label == "None"
    assert vote([_extracted(scattered, "paper")], "paper", pool, stage=LABEL)[0].p_hat == pytest.approx(0.1)


def test_four_none_five_seven_of_nine(mr_pool: GraderPool) -> None:
    result = vote([["None"] * 4 + ["7"] * 5], "rzero_code", mr_pool, stage=LABEL)[0]
    assert result == VoteResult("7", 5 / 9, [4, 5], 9, 9, 9)
    # A Python None (what last_boxed gives) is read as mathruler's "None": the same vote.
    assert vote([[None] * 4 + ["7"] * 5], "rzero_code", mr_pool, stage=LABEL)[0] == result


def test_empty_boxes_leave_m_in_rzero_code_only(pool: GraderPool, mr_pool: GraderPool) -> None:
    responses = ["\\boxed{}"] * 3 + ["\\boxed{7}"] * 4 + ["no box", "no box"]
    code = vote([_extracted(responses, "rzero_code")], "rzero_code", mr_pool, stage=LABEL)[0]
    assert code == VoteResult("7", 4 / 6, [4, 2], 9, 6, 6)  # m = 9 - 3 empty boxes
    paper = vote([_extracted(responses, "paper")], "paper", pool, stage=LABEL)[0]
    assert paper == VoteResult("7", 4 / 9, [4], 9, 4, 9)
    # Only empty boxes: nothing counted.
    assert vote([["", " "]], "rzero_code", mr_pool, stage=LABEL)[0] == VoteResult(None, 0.0, [], 2, 0, 0)


def test_empty_boxes_count_in_m_at_reward_time_not_in_labelling(
    pool: GraderPool, mr_pool: GraderPool
) -> None:
    # The spec's case (section 2): 5 empty boxes + 5 "7" of 10.
    responses = ["\\boxed{}"] * 5 + ["\\boxed{7}"] * 5
    code = _extracted(responses, "rzero_code")
    # Reward time (the authors' Solver server): largest group / all m samples.
    assert vote([code], "rzero_code", mr_pool, stage=REWARD)[0] == VoteResult("7", 0.5, [5], 10, 5, 10)
    # Labelling: largest group / the non-empty answers.
    assert vote([code], "rzero_code", mr_pool, stage=LABEL)[0] == VoteResult("7", 1.0, [5], 10, 5, 5)
    # paper: the same at both stages (m = all answers).
    paper = _extracted(responses, "paper")
    for stage in (REWARD, LABEL):
        assert vote([paper], "paper", pool, stage=stage)[0] == VoteResult("7", 0.5, [5], 10, 5, 10)
    with pytest.raises(ValueError, match="stage"):
        vote([code], "rzero_code", mr_pool, stage="training")


def test_rzero_code_labelling_skips_the_reverse_direction_after_a_timeout() -> None:
    # grade_answer(answer, rep) first: ("1/3" is the representative, MR_HANG the answer) it hangs.
    with make_grader_pool("rzero_code", num_workers=2, timeout_s=SHORT_TIMEOUT_S) as own:
        before = own.stats_snapshot()
        label = majority_vote(["1/3", MR_HANG], own, "rzero_code", stage=LABEL)
        after = own.stats_snapshot()
        assert label.group_sizes == [1, 1]
        # One grader call, which timed out; the reverse grade_answer("1/3", MR_HANG) never ran.
        assert after["timeouts"] - before["timeouts"] == 1
        assert after["verify_calls"] - before["verify_calls"] == 1
        # Reward time: the reverse direction is still asked after the first one times out (another
        # representative, so that no cached verdict stands in for a call).
        before = own.stats_snapshot()
        reward = majority_vote(["1/7", MR_HANG], own, "rzero_code", stage=REWARD)
        after = own.stats_snapshot()
        assert reward.group_sizes == [1, 1]
        assert after["verify_calls"] - before["verify_calls"] == 2
        assert after["timeouts"] - before["timeouts"] >= 1
        # Labelling still tries the reverse when the first direction answers "no" in time.
        before = own.stats_snapshot()
        assert majority_vote(["41", "43"], own, "rzero_code", stage=LABEL).group_sizes == [1, 1]
        assert own.stats_snapshot()["verify_calls"] - before["verify_calls"] == 2


def test_the_no_rule_and_mathruler_grading(pool: GraderPool, mr_pool: GraderPool) -> None:
    answers = ["No solution", "no real roots", "there is no x", "1/2", "0.5", "2/4", "2/4"]
    code = vote([answers], "rzero_code", mr_pool, stage=LABEL)[0]
    # "no " in all three; mathruler: 0.5 == 1/2, but an unreduced 2/4 is not 1/2.
    assert code == VoteResult("No solution", 3 / 7, [3, 2, 2], 7, 7, 7)
    # math-verify merges 2/4 with 1/2 and knows no "no " rule.
    paper = vote([answers], "paper", pool, stage=LABEL)[0]
    assert paper == VoteResult("1/2", 4 / 7, [1, 1, 1, 4], 7, 7, 7)


def test_a_pool_of_the_wrong_grader_is_refused(pool: GraderPool) -> None:
    with pytest.raises(ValueError, match="make_grader_pool"):
        vote([["1", "2"]], "rzero_code", pool, stage=LABEL)


def test_make_grader_pool_per_profile() -> None:
    with make_grader_pool("rzero_code", num_workers=1) as own:
        assert (own.backend, own.timeout_s) == ("mathruler", 10.0)
        assert vote([["0.5", "\\frac{1}{2}", "3"]], "rzero_code", own, stage=LABEL)[0].group_sizes == [2, 1]
        assert own.stats_snapshot()["verify_calls"] >= 1
    with make_grader_pool("paper", num_workers=1, timeout_s=3.0) as own:
        assert (own.backend, own.timeout_s) == ("math_verify", 3.0)


# ---------------------------------------------------------------------------------------------
# Hand-checked cases
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("profile", ["paper", "rzero_code"])
def test_all_agree(pool: GraderPool, mr_pool: GraderPool, profile: str) -> None:
    grader = _pool_for(profile, pool, mr_pool)
    before = grader.stats_snapshot()["verify_calls"]
    assert majority_vote(["17"] * 10, grader, profile) == VoteResult("17", 1.0, [10], 10, 10, 10)
    assert grader.stats_snapshot()["verify_calls"] == before  # identical answers need no worker


def test_equivalent_forms_are_merged(pool: GraderPool, mr_pool: GraderPool) -> None:
    answers = [r"\frac{1}{2}", "0.5", "1/2", "3", r"\dfrac{1}{2}", None, "", "3", "0.50", "7"]
    # Groups: {1/2 in five forms} = 5, {3, 3} = 2, {7} = 1; 8 answers with a box of 10.
    paper = majority_vote(answers, pool, "paper")
    assert paper == VoteResult(r"\frac{1}{2}", 5 / 10, [5, 2, 1], 10, 8, 10)
    # rzero_code: the same groups by mathruler, plus "None" (the None); the "" leaves m.
    code = majority_vote(answers, mr_pool, "rzero_code")
    assert code == VoteResult(r"\frac{1}{2}", 5 / 9, [5, 2, 1, 1], 10, 9, 9)


def test_tie_goes_to_the_group_formed_first(pool: GraderPool, mr_pool: GraderPool) -> None:
    result = majority_vote(["2", "3", "3", "2.0", "4"], pool, "paper")
    assert result == VoteResult("2", 2 / 5, [2, 2, 1], 5, 5, 5)
    result = majority_vote(["3", "2", "2", "3", "4"], mr_pool, "rzero_code")
    assert result == VoteResult("3", 2 / 5, [2, 2, 1], 5, 5, 5)


@pytest.mark.parametrize("answers", [[None, "", "   "], []])
def test_no_counted_answer(pool: GraderPool, mr_pool: GraderPool, answers: list[str | None]) -> None:
    assert majority_vote(answers, pool, "paper") == VoteResult(None, 0.0, [], len(answers), 0, len(answers))
    code = majority_vote(answers, mr_pool, "rzero_code")
    if answers:  # the None is a "None" vote; the blanks are empty boxes
        assert code == VoteResult("None", 1.0, [1], 3, 1, 1)
    else:
        assert code == VoteResult(None, 0.0, [], 0, 0, 0)


def test_label_is_the_first_member_stripped(pool: GraderPool) -> None:
    result = majority_vote(["  0.25 ", r"\frac{1}{4}", "0.25", "9"], pool, "paper")
    assert result == VoteResult("0.25", 3 / 4, [3, 1], 4, 4, 4)


def test_unknown_profile(pool: GraderPool) -> None:
    with pytest.raises(ValueError, match="profile"):
        majority_vote(["1"], pool, "majority")


# ---------------------------------------------------------------------------------------------
# Batched voting equals the greedy definition
# ---------------------------------------------------------------------------------------------

# Forms of a few values, with formatting variants that the normalisation merges and others that
# only the grader merges; None and "" stand for responses without a box / with an empty box.
_FORMS = [
    ["1/2", r"\frac{1}{2}", "0.5", r"\dfrac{1}{2}", r"$\frac12$", "2/4"],
    ["3", "3.0", "x=3", " 3 ", r"\text{3}"],
    [r"2\sqrt{2}", r"\sqrt{8}", r"2 \sqrt{2}"],
    [r"\{1,2\}", r"\{2,1\}", "1, 2"],
    ["7", "07", r"\frac{14}{2}"],
    ["(1,2)", "no solution", "No real x"],
    [r"\pi", "None"],
    [None, ""],
]


def _random_answer_lists(n_questions: int, m: int, seed: int) -> list[list[str | None]]:
    rng = random.Random(seed)
    lists = []
    for _ in range(n_questions):
        values = rng.sample(_FORMS, k=rng.randint(1, 4))
        lists.append([rng.choice(rng.choice(values)) for _ in range(m)])
    return lists


@pytest.mark.parametrize("profile", ["paper", "rzero_code"])
def test_batched_vote_equals_greedy_definition(pool: GraderPool, mr_pool: GraderPool, profile: str) -> None:
    grader = _pool_for(profile, pool, mr_pool)
    answer_lists = _random_answer_lists(n_questions=30, m=10, seed=0)
    batched = majority_vote_many(answer_lists, grader, profile)
    assert batched == [reference_greedy_vote(answers, grader, profile) for answers in answer_lists]
    assert [majority_vote(answers, grader, profile) for answers in answer_lists] == batched


def test_batching_saves_grader_calls(pool: GraderPool) -> None:
    # Fresh strings (not in the cache): 3 questions whose answers all agree up to formatting.
    answer_lists = [
        [
            f"{k}\\sqrt{{2}}",
            f"{k}\\sqrt{{2}}",
            f"\\sqrt{{{2 * k * k}}}",
            f"\\sqrt{{2}}\\cdot {k}",
            f" {k}\\sqrt{{2}}",
        ]
        for k in (11, 13, 15)
    ]
    before = pool.stats_snapshot()
    results = majority_vote_many(answer_lists, pool, "paper")
    after = pool.stats_snapshot()
    assert [r.group_sizes for r in results] == [[5]] * 3
    # Per question, the two other forms against the first one; repeats cost nothing.
    assert after["verify_calls"] - before["verify_calls"] == 2 * 3
