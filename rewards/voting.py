"""Majority vote over sampled answers, grouping answers by equivalence, per profile.

Definition (RZERO_SPEC.md sections 2 and 3): walk the answers in order; each counted answer joins
the first existing group whose representative (its first member) is "the same" as it, else it starts
a new group. The label is the representative of the largest group (ties: the group formed first)
and p_hat = largest group / m. What counts, what "the same" means and what m is depend on the
profile, and the answers must have been extracted the profile's way (`rewards.answer_parsing.
extract_answer`):

- ``paper`` (math-verify): None / empty answers (no box, empty box) form no group but count in m,
  so m = all answers. Same = equal `normalize_answer` forms, or math-verify in either direction.
- ``rzero_code`` (the authors' mathruler code): ``"None"`` (mathruler's answer for a response without
  a box; a Python None is read the same way) is an ordinary answer that can win; empty answers
  (``\\boxed{}``) join no group. Same = string-equal, or both contain ``"no "`` (lower-cased), or
  mathruler's ``grade_answer`` in either direction (each call in the killable pool with a 10 s limit;
  a timeout means "not the same"). The authors' two call sites differ, and so does `stage`:
  - ``"reward"`` (their Solver server, the Challenger reward): m = all answers, empty boxes
    included (5 empty + 5 "7": p_hat 0.5); a timeout of ``grade_answer(answer, rep)`` still tries
    ``grade_answer(rep, answer)``.
  - ``"label"`` (their pseudo-labelling): m = the answers left after dropping empty boxes (the same
    answers: p_hat 1.0); a timeout of ``grade_answer(answer, rep)`` moves on to the next group
    without the reverse call.
  ``paper`` is the same at both stages.

The implementation gives exactly that result with far fewer grader calls:
- identical answers (after `strip()`, which is how the grader sees them) are one unit with a count;
- within a question, a string that is certainly the same as a group representative (the profile's
  cheap rule above) joins the first such group without a worker, and is compared by the grader only
  with the groups before it;
- many questions advance together in rounds: each round sends every question's next comparisons
  to the pool as one `equivalent_many` batch, which runs them in parallel over the workers.

Entry point for stages: `vote(answers_per_question, profile, pool=None, stage=REWARD or LABEL)`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from rewards.answer_parsing import normalize_answer
from rewards.default_grader import get_default_pool
from rewards.grader import GraderPool
from rewards.mathruler_grading import NO_BOX, both_say_no
from rzero.profiles import PROFILES

# The grader each profile's "same answer" uses.
GRADER_BACKEND = {"paper": "math_verify", "rzero_code": "mathruler"}

# Where a vote is taken (RZERO_SPEC.md section 2, "`rzero_code` answer semantics"): the Challenger
# reward's call to the Solver, or the pseudo-labelling of generated questions.
REWARD, LABEL = "reward", "label"
STAGES = (REWARD, LABEL)

# The same strings recur across rounds and questions (common answers like "2" or "1/2").
_normalize = functools.lru_cache(maxsize=1 << 16)(normalize_answer)


def _check_profile(profile: str) -> None:
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; expected one of {tuple(PROFILES)}")


def _check_stage(stage: str) -> None:
    if stage not in STAGES:
        raise ValueError(f"unknown vote stage {stage!r}; expected one of {STAGES}")


def counts_empty_answers(profile: str, stage: str) -> bool:
    """Whether answers that join no group (empty boxes; ``paper``: also no box) count in m."""
    _check_profile(profile)
    _check_stage(stage)
    return profile == "paper" or stage == REWARD


def _reverse_after_timeout(profile: str, stage: str) -> bool:
    """Whether a timed-out first grader direction still tries the reverse one (see module doc)."""
    return not (profile == "rzero_code" and stage == LABEL)


def grader_backend(profile: str) -> str:
    """ "math_verify" for ``paper``, "mathruler" for ``rzero_code``."""
    _check_profile(profile)
    return GRADER_BACKEND[profile]


def make_grader_pool(profile: str, num_workers: int = 2, timeout_s: float | None = None) -> GraderPool:
    """A new pool with the profile's grader (timeout None: 5 s math-verify, 10 s mathruler).

    The caller owns it (use it as a context manager); `vote` accepts it as `pool`."""
    backend = grader_backend(profile)
    return GraderPool(num_workers=num_workers, timeout_s=timeout_s, backend=backend)


def _certainly_same(profile: str) -> Callable[[str, str], bool]:
    """The profile's cheap "same answer" rule, decided without the grader (distinct stripped strings)."""
    if profile == "rzero_code":
        return both_say_no
    return lambda a, b: _normalize(a) == _normalize(b)


@dataclass
class VoteResult:
    """Majority vote of one question's answers.

    label: representative (stripped) of the largest group, None when no answer was counted.
    p_hat: largest group / n_counted (0.0 when nothing was counted).
    group_sizes: size of each group, in order of formation.
    n_answers: all answers given; n_nonempty: answers that joined a group (``rzero_code``: ``"None"``
    included, empty boxes not); n_counted: m, the denominator of p_hat (``paper`` and ``rzero_code``
    at reward time: n_answers; ``rzero_code`` in labelling: n_nonempty).
    """

    label: str | None
    p_hat: float
    group_sizes: list[int]
    n_answers: int
    n_nonempty: int
    n_counted: int


@dataclass
class _QuestionVote:
    """Greedy grouping state of one question, advanced one distinct answer string at a time."""

    distinct: list[str]  # distinct stripped counted answers, in order of first appearance
    counts: list[int]  # how many answers each distinct string stands for
    n_answers: int
    same: Callable[[str, str], bool]  # the profile's cheap rule
    group_reps: list[int] = field(
        default_factory=list
    )  # index into `distinct` of each group's representative
    group_sizes: list[int] = field(default_factory=list)
    next_idx: int = 0  # the next distinct string to place
    candidates: list[int] = field(default_factory=list)  # groups being checked by the grader this round
    fallback: int | None = None  # group to join if no candidate matches (None: start a new group)

    @classmethod
    def from_answers(cls, answers: Sequence[str | None], profile: str) -> _QuestionVote:
        index: dict[str, int] = {}
        distinct: list[str] = []
        counts: list[int] = []
        for answer in answers:
            if answer is None and profile == "rzero_code":
                answer = NO_BOX  # mathruler's extraction gives "None" where last_boxed gives None
            text = (answer or "").strip()
            if not text:
                continue
            if text not in index:
                index[text] = len(distinct)
                distinct.append(text)
                counts.append(0)
            counts[index[text]] += 1
        return cls(distinct=distinct, counts=counts, n_answers=len(answers), same=_certainly_same(profile))

    def _place(self, group: int | None) -> None:
        """Put `distinct[next_idx]` into `group` (None: a new group) and move on."""
        count = self.counts[self.next_idx]
        if group is None:
            self.group_reps.append(self.next_idx)
            self.group_sizes.append(count)
        else:
            self.group_sizes[group] += count
        self.next_idx += 1

    def plan(self, pairs: list[tuple[str, str]]) -> int:
        """Place strings that need no grader call; then append the next string's grader pairs.

        Returns how many pairs were appended (0 once every string is placed).
        """
        while self.next_idx < len(self.distinct):
            text = self.distinct[self.next_idx]
            # The first group whose representative is certainly the same matches, so only the
            # groups before it need the grader.
            first_same = next(
                (g for g, rep in enumerate(self.group_reps) if self.same(self.distinct[rep], text)),
                None,
            )
            n_before = len(self.group_reps) if first_same is None else first_same
            if n_before == 0:
                self._place(first_same)
                continue
            self.candidates = list(range(n_before))
            self.fallback = first_same
            pairs.extend((self.distinct[self.group_reps[g]], text) for g in self.candidates)
            return len(self.candidates)
        return 0

    def resolve(self, verdicts: Sequence[bool]) -> None:
        """Place the pending string given the grader's verdicts on `candidates` (same order)."""
        match = next((g for g, same in zip(self.candidates, verdicts) if same), self.fallback)
        self.candidates, self.fallback = [], None
        self._place(match)

    def result(self, profile: str, stage: str) -> VoteResult:
        n_nonempty = sum(self.counts)
        n_counted = self.n_answers if counts_empty_answers(profile, stage) else n_nonempty
        if not self.group_sizes:
            return VoteResult(None, 0.0, [], self.n_answers, 0, n_counted)
        # max() returns the first maximum: ties go to the group formed first.
        best = max(range(len(self.group_sizes)), key=self.group_sizes.__getitem__)
        return VoteResult(
            label=self.distinct[self.group_reps[best]],
            p_hat=self.group_sizes[best] / n_counted,
            group_sizes=list(self.group_sizes),
            n_answers=self.n_answers,
            n_nonempty=n_nonempty,
            n_counted=n_counted,
        )


def _compare(pool: GraderPool, pairs: list[tuple[str, str]], reverse_after_timeout: bool) -> list[bool]:
    """ "Same answer" for (group representative, answer) pairs, both grader directions.

    With `reverse_after_timeout` both directions run together (`equivalent_many`). Without it (the
    ``rzero_code`` labelling), first ``grade_answer(answer, rep)`` for every pair, then the reverse
    only for pairs that were graded "not the same" without timing out."""
    if reverse_after_timeout:
        return pool.equivalent_many(pairs, symmetric=True)
    first = pool.verdicts_many(pairs, symmetric=False)
    retry = [k for k, verdict in enumerate(first) if verdict is False]
    second = pool.equivalent_many([(pairs[k][1], pairs[k][0]) for k in retry], symmetric=False)
    verdicts = [verdict is True for verdict in first]
    for k, verdict in zip(retry, second):
        verdicts[k] = verdict
    return verdicts


def majority_vote_many(
    answer_lists: Sequence[Sequence[str | None]],
    pool: GraderPool | None = None,
    profile: str = "paper",
    stage: str = LABEL,
) -> list[VoteResult]:
    """The majority vote of each question (its answers grouped by equivalence, greedy, in order: the
    module docstring gives the exact definition), batching their grader calls together.

    Each round places the next distinct answer of every unfinished question; all comparisons of a
    round go to the pool together (parallel over the workers, cached).
    Rounds <= the largest number of distinct answers of one question. `pool` must use the profile's
    grader (`make_grader_pool`); None: the process-wide pool of that grader, started only if needed.
    `stage`: REWARD or LABEL (the module docstring says what differs).
    """
    backend = grader_backend(profile)
    _check_stage(stage)
    reverse_after_timeout = _reverse_after_timeout(profile, stage)
    if pool is not None and getattr(pool, "backend", backend) != backend:
        raise ValueError(
            f"profile {profile!r} grades with {backend}, but the pool given uses {pool.backend}: "
            f"create it with rewards.voting.make_grader_pool({profile!r}, ...)"
        )
    votes = [_QuestionVote.from_answers(answers, profile) for answers in answer_lists]
    active = list(votes)
    while active:
        pairs: list[tuple[str, str]] = []
        planned: list[tuple[_QuestionVote, int]] = []
        for vote_state in active:
            n_pairs = vote_state.plan(pairs)
            if n_pairs:
                planned.append((vote_state, n_pairs))
        if not pairs:
            break
        pool = pool if pool is not None else get_default_pool(backend=backend)
        verdicts = _compare(pool, pairs, reverse_after_timeout)
        offset = 0
        for vote_state, n_pairs in planned:
            vote_state.resolve(verdicts[offset : offset + n_pairs])
            offset += n_pairs
        active = [vote_state for vote_state, _ in planned]
    return [vote_state.result(profile, stage) for vote_state in votes]


def vote(
    answers_per_question: Sequence[Sequence[str | None]],
    profile: str,
    pool: GraderPool | None = None,
    *,
    stage: str,
) -> list[VoteResult]:
    """The profile's majority vote for every question: label, p_hat and m (`n_counted`) each.

    `answers_per_question[i]` holds question i's answers extracted with
    ``rewards.answer_parsing.extract_answer(response, profile)``. `pool`: a pool from
    `make_grader_pool(profile, ...)`, or None for the process-wide one of the profile's grader.
    `stage`: REWARD (the Challenger reward) or LABEL (pseudo-labelling); ``rzero_code`` differs.
    """
    return majority_vote_many(answers_per_question, pool=pool, profile=profile, stage=stage)
