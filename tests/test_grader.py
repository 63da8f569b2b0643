"""The math-verify grader pool (rewards/grader.py): equivalence, cache, timeouts, crashes, threads.

Real worker processes and real math-verify throughout. Two pools per module (start-up of a worker
costs a second or more): the process-wide default pool, and a one-worker pool with a short timeout
for the timeout and crash cases, where "the next query" must land on the replacement worker.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from rewards.default_grader import get_default_pool
from rewards.grader import STAT_KEYS, GraderPool

# sympy evaluates 9^(9^(9^9)) - 9^(9^(9^8)) digit by digit: an uninterruptible big-integer power
# that runs for hours (measured below, on every run).
TOWER_A = "9^{9^{9^{9}}}"
TOWER_B = "9^{9^{9^{8}}}"
SHORT_TIMEOUT_S = 1.5
# Kill + reap + starting the replacement's interpreter, on a busy 2-core machine.
RETURN_MARGIN_S = 2.0


@pytest.fixture(scope="module")
def pools() -> Iterator[tuple[GraderPool, GraderPool]]:
    # Created together so that their workers start up in parallel. The default pool stays up for
    # other test modules (it is closed at exit).
    default = get_default_pool()
    with GraderPool(num_workers=1, timeout_s=SHORT_TIMEOUT_S, cache_size=3) as one_worker:
        yield default, one_worker


@pytest.fixture
def pool(pools: tuple[GraderPool, GraderPool]) -> GraderPool:
    return pools[0]


@pytest.fixture
def small_pool(pools: tuple[GraderPool, GraderPool]) -> GraderPool:
    return pools[1]


def _delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {k: after[k] - before[k] for k in STAT_KEYS}


def _pid_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


# ---------------------------------------------------------------------------------------------
# Equivalence semantics
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("a", "b"),
    [
        (r"\frac{1}{2}", "0.5"),
        (r"\dfrac{1}{2}", "1/2"),
        ("x=3", "3"),
        (r"2\sqrt{2}", r"\sqrt{8}"),
        (r"\{1,2\}", r"\{2,1\}"),
        ("1,000", "1000"),
        (r"10\%", "0.1"),
        ("x^2+1", "1+x^2"),
        (r"\frac{\pi}{2}", r"\pi/2"),
        ("[1,2)", r"\left[1, 2\right)"),
    ],
)
def test_equivalent_forms(pool: GraderPool, a: str, b: str) -> None:
    assert pool.equivalent(a, b)
    assert pool.equivalent(b, a)
    assert pool.equivalent(a, b, symmetric=False)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("3", "4"),
        (r"\frac{1}{2}", r"\frac{1}{3}"),
        ("A", "B"),
        (r"\sqrt{2}", "2"),
        ("(1,2]", "(1,2)"),
        ("12", "12.001"),
    ],
)
def test_different_answers(pool: GraderPool, a: str, b: str) -> None:
    assert not pool.equivalent(a, b)


def test_symmetric_flag(pool: GraderPool) -> None:
    # math-verify accepts the relation `x>1` as gold for the interval, not the other way round.
    assert pool.equivalent("x>1", r"(1,\infty)", symmetric=False)
    assert not pool.equivalent(r"(1,\infty)", "x>1", symmetric=False)
    assert pool.equivalent(r"(1,\infty)", "x>1", symmetric=True)


def test_string_match_skips_the_workers(pool: GraderPool) -> None:
    before = pool.stats_snapshot()
    assert pool.equivalent(r"$\dfrac{1}{2}$", r"\boxed{\frac {1}{2}}")
    d = _delta(before, pool.stats_snapshot())
    assert d["calls"] == 1 and d["string_matches"] == 1 and d["verify_calls"] == 0


def test_empty_answer_is_never_equivalent(pool: GraderPool) -> None:
    before = pool.stats_snapshot()
    assert pool.equivalent_many([("", ""), ("  ", "3"), ("3", "")]) == [False, False, False]
    assert _delta(before, pool.stats_snapshot())["verify_calls"] == 0


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ("417", "732", False),
        ("x=12", "13", False),  # normal forms "12" and "13"
        ("0.5", "1/2", True),
        (r"\frac{6}{8}", "0.75", True),
        ("-2", "2", False),
        ("1.5", "1.6", False),
    ],
)
def test_plain_numbers_are_decided_without_a_worker(pool: GraderPool, a: str, b: str, expected: bool) -> None:
    before = pool.stats_snapshot()
    assert pool.equivalent(a, b) is expected
    d = _delta(before, pool.stats_snapshot())
    assert d["numeric_shortcuts"] == 1 and d["verify_calls"] == 0


def test_close_decimals_are_left_to_math_verify(pool: GraderPool) -> None:
    # math-verify rounds floats to 6 decimals: 0.333333 is 1/3 for it, 0.33333 is not. Gaps this
    # small (< 1e-5) are not decided by the numeric shortcut.
    before = pool.stats_snapshot()
    assert pool.equivalent("0.333333", "1/3")
    assert not pool.equivalent("0.33333", "1/3")
    assert _delta(before, pool.stats_snapshot())["verify_calls"] == 2


def test_pool_agrees_with_plain_math_verify(pool: GraderPool) -> None:
    """The cheap paths (numbers in the caller, clearly distinct constants in the worker) give what
    math-verify itself gives, both ways, on inputs chosen to reach each path and its edges."""
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify

    configs = [LatexExtractionConfig(boxed_match_priority=0), ExprExtractionConfig()]

    def reference(a: str, b: str) -> bool:
        pa = parse(f"\\boxed{{{a}}}", extraction_config=configs, parsing_timeout=None)
        pb = parse(f"\\boxed{{{b}}}", extraction_config=configs, parsing_timeout=None)
        return verify(pa, pb, timeout_seconds=None) or verify(pb, pa, timeout_seconds=None)

    pairs = [
        (r"9\%", "9"),  # math-verify equates a percentage with its integer
        (r"10\%", "0.1"),
        (r"\pi", "3.14159265"),
        (r"\pi", "3.1416"),
        (r"\sqrt{2}", "1.41421356"),
        (r"\sqrt{2}", "1.4142"),
        ("10^{-8}", r"2\cdot 10^{-8}"),  # both round to 0 at 6 decimals
        (r"\infty", "1000000"),
        ("2i", "2"),
        (r"\frac{2}{3}", "0.666667"),
        ("123456789012.5", "123456789012.6"),
        ("5!", "120"),
        (r"\binom{5}{2}", "11"),
        (r"\log_2 8", "3"),
        ("7", "7.0000001"),
        ("3", "4"),
    ]
    results = pool.equivalent_many(pairs)
    assert results == [reference(a, b) for a, b in pairs]
    assert any(results) and not all(results)


# Pairs whose normal forms are (or, before the rules were checked, were) equal: each rule of
# `normalize_answer` and `cheap_verdict` with cases math-verify accepts and cases it refuses.
SHORTCUT_PAIRS = [
    # Assignments: math-verify compares `x=3` with `3` by value, two assignments as equations.
    ("x = 3", "3"),
    ("x=3", "x = 3"),
    ("y=2x+1", "2x+1"),
    ("x = 1/2", "0.5"),
    ("x=3", "y=3"),
    ("x=3", "y=3.0"),
    ("X=3", "x=3"),
    ("x=12", "13"),
    # Degrees: `^\circ` and `^{\circ}` only.
    (r"90^\circ", "90"),
    (r"90^{\circ}", "90"),
    ("45°", "45"),
    (r"10^ {\circ }", "10"),
    # Font and box macros around the whole answer.
    (r"\text{yes}", "yes"),
    (r"\text{ no solution }", "no solution"),
    (r"\textbf{(B)}", "(B)"),
    (r"\mathrm{cm}", "cm"),
    (r"\boxed{x=5}", "x=5"),
    (r"\boxed{1,2}", "1,2"),
    (r"\text{x = 5}", "5"),
    (r"\text{3.5}", "3.5"),
    (r"\text{12}", "12.0"),
    (r"\text{1, 2}", "1,2"),
    (r"\operatorname{abc}", "abc"),
    # Math delimiters, \dfrac, \left( ... \right), spacing macros and whitespace.
    ("$3$", "3"),
    (r"\(x\)", "x"),
    (r"$$\frac12$$", r"\frac12"),
    (r"\dfrac{1}{2}", r"\tfrac{1}{2}"),
    (r"\left(1,2\right)", "(1, 2)"),
    (r"\left.x\right|_0", "x|_0"),
    (r"x\!=\!3", "3"),
    (r"3\!\cdot\!4", r"3 \cdot 4"),
    (r"1\,000", "1000"),
    (r"1\,000", r"1\;000"),
    (r"1\!000", "1 000"),
    (r"5\ cm", "5 cm"),
    ("x + 1", "x+1"),
    ("1 2", "1  2"),
    # A trailing period, which math-verify does not read as decoration.
    ("3.", "3"),
    ("A.", "A"),
    (r"\frac{1}{2}.", r"\frac{1}{2}"),
    # Plain numbers (the numeric shortcut).
    ("3.0", "3"),
    ("+3", "3.0"),
    (".5", "0.5"),
    ("007", "7"),
    ("0.50", "1/2"),
    (r"-\frac{1}{2}", "-0.5"),
    ("1/-2", "-0.5"),
]


def test_normal_form_shortcut_agrees_with_math_verify(pool: GraderPool) -> None:
    """Issue 19: the pool's shortcut ("equal normal forms are equal", numbers by value) gives what
    math-verify itself gives, in each direction on its own (evaluation grades gold-first with
    symmetric=False; voting takes either direction). Where math-verify refuses a rule, the pair
    must go to the grader."""
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify

    from rewards.answer_parsing import normalize_answer
    from rewards.math_verify_grading import cheap_verdict

    configs = [LatexExtractionConfig(boxed_match_priority=0), ExprExtractionConfig()]

    def one_way(gold: str, pred: str) -> bool:
        pg = parse(f"\\boxed{{{gold}}}", extraction_config=configs, parsing_timeout=None)
        pp = parse(f"\\boxed{{{pred}}}", extraction_config=configs, parsing_timeout=None)
        return bool(verify(pg, pp, timeout_seconds=None))

    decided = []
    for a, b in SHORTCUT_PAIRS:
        forward, backward = one_way(a, b), one_way(b, a)
        verdict, _ = cheap_verdict(normalize_answer(a), normalize_answer(b))
        if verdict is not None:
            decided.append((a, b))
            assert verdict == forward == backward, (a, b, verdict, forward, backward)
        assert pool.equivalent(a, b, symmetric=False) == forward, (a, b)
        assert pool.equivalent(b, a, symmetric=False) == backward, (b, a)
    # The shortcut still decides the common forms (not a test that passes by deciding nothing).
    for pair in [("x = 3", "3"), (r"90^\circ", "90"), (r"\text{yes}", "yes"), ("$3$", "3"), ("0.50", "1/2")]:
        assert pair in decided
    assert ("x=3", "y=3") not in decided and ("3.", "3") not in decided


def test_equivalent_many_order_and_dedup(pool: GraderPool) -> None:
    pairs = [
        (r"\sqrt{12}", r"2\sqrt{3}"),
        (r"\sqrt{2}", r"\sqrt{3}"),
        (r"\sqrt{12}", r"2\sqrt{3}"),
        (r"\sqrt{20}", r"2\sqrt{5}"),
        (r"2\sqrt{3}", r"\sqrt{12}"),
    ]
    before = pool.stats_snapshot()
    assert pool.equivalent_many(pairs) == [True, False, True, True, True]
    d = _delta(before, pool.stats_snapshot())
    # The repeated pair and its mirror image (symmetric) share one worker call.
    assert d["calls"] == 5 and d["verify_calls"] == 3 and d["cache_hits"] == 2


def test_cache(pool: GraderPool) -> None:
    a, b = r"\frac{\sqrt{2}}{2}", r"\frac{1}{\sqrt{2}}"
    first = pool.stats_snapshot()
    assert pool.equivalent(a, b)
    second = pool.stats_snapshot()
    assert _delta(first, second)["verify_calls"] == 1
    assert pool.equivalent(a, b)
    assert pool.equivalent(b, a)  # symmetric: order does not matter
    third = pool.stats_snapshot()
    assert _delta(second, third)["cache_hits"] == 2 and _delta(second, third)["verify_calls"] == 0
    # One-directional results are cached per direction.
    assert pool.equivalent(b, a, symmetric=False)
    assert _delta(third, pool.stats_snapshot())["verify_calls"] == 1


def test_cache_is_bounded_lru(small_pool: GraderPool) -> None:
    # cache_size=3: the fourth distinct pair evicts the least recently used one.
    pairs = [(f"\\sqrt{{{2 * k * k}}}", f"{k}\\sqrt{{2}}") for k in (2, 3, 5, 7)]
    assert small_pool.equivalent_many(pairs[:3]) == [True] * 3
    assert small_pool.equivalent(*pairs[0])  # refresh pair 0: pair 1 is now the oldest
    before = small_pool.stats_snapshot()
    assert small_pool.equivalent(*pairs[3])  # evicts pair 1
    assert small_pool.equivalent(*pairs[0]) and small_pool.equivalent(*pairs[2])  # still cached
    assert small_pool.equivalent(*pairs[1])  # evicted: graded again
    d = _delta(before, small_pool.stats_snapshot())
    assert d["verify_calls"] == 2 and d["cache_hits"] == 2


def test_default_pool_is_one_per_process(pool: GraderPool) -> None:
    assert get_default_pool() is pool and get_default_pool(num_workers=5) is pool


# ---------------------------------------------------------------------------------------------
# Timeouts and crashes
# ---------------------------------------------------------------------------------------------


def _start_unguarded_comparison(a: str, b: str) -> subprocess.Popen:
    """Run the worker's comparison code on (a, b) in a plain process, with no timeout at all.

    Its first output line is the (system-wide) monotonic time at which the comparison started.
    """
    code = (
        "import sys, time\n"
        "from rewards.grader_worker import make_checker as _make_checker\n"
        "check = _make_checker()\n"
        "print(time.monotonic(), flush=True)\n"
        "print(check(sys.argv[1], sys.argv[2], True), flush=True)\n"
    )
    return subprocess.Popen(
        [sys.executable, "-c", code, a, b], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )


def test_timeout_kills_and_replaces_the_worker(small_pool: GraderPool) -> None:
    # Measured on every run: without the pool, the same comparison is still running at 2x the
    # timeout (it runs alongside the pool checks to save time).
    unguarded = _start_unguarded_comparison(TOWER_A, TOWER_B)
    try:
        _check_pool_timeout(small_pool)
        assert unguarded.stdout is not None
        started_at = float(unguarded.stdout.readline())
        with pytest.raises(subprocess.TimeoutExpired):
            unguarded.wait(timeout=max(0.0, started_at + 2 * SHORT_TIMEOUT_S - time.monotonic()))
    finally:
        unguarded.kill()
        unguarded.wait()


def _check_pool_timeout(small_pool: GraderPool) -> None:
    assert small_pool.equivalent("2", "2.0")  # the worker is up
    (old_pid,) = small_pool.worker_pids()
    before = small_pool.stats_snapshot()
    start = time.monotonic()
    assert small_pool.equivalent(TOWER_A, TOWER_B) is False
    elapsed = time.monotonic() - start
    assert SHORT_TIMEOUT_S <= elapsed < SHORT_TIMEOUT_S + RETURN_MARGIN_S
    d = _delta(before, small_pool.stats_snapshot())
    assert d["timeouts"] == 1 and d["worker_restarts"] == 1 and d["errors"] == 0
    (new_pid,) = small_pool.worker_pids()
    assert new_pid != old_pid
    assert not _pid_exists(old_pid)  # killed and reaped
    # The only worker is now the replacement: it answers normal queries correctly.
    assert small_pool.equivalent(r"2\sqrt{2}", r"\sqrt{8}")
    assert not small_pool.equivalent("5", "6")
    # The timed-out pair is cached as "not equal": no second hang.
    start = time.monotonic()
    assert small_pool.equivalent(TOWER_B, TOWER_A) is False
    assert time.monotonic() - start < SHORT_TIMEOUT_S


def test_worker_crash_mid_call_counts_error_and_replaces(small_pool: GraderPool) -> None:
    assert small_pool.equivalent("3", "3.0")
    before = small_pool.stats_snapshot()
    outcome: list[bool] = []
    caller = threading.Thread(target=lambda: outcome.append(small_pool.equivalent(TOWER_A, "9^{9^{9^{7}}}")))
    caller.start()
    deadline = time.monotonic() + 10
    busy: list[int] = []
    while not busy and time.monotonic() < deadline:  # wait until the worker holds the call
        busy = [pid for pid, state in small_pool.worker_states() if state == "busy"]
    assert busy, "the call never reached a worker"
    os.kill(busy[0], signal.SIGKILL)  # what the OOM killer would do
    caller.join(timeout=SHORT_TIMEOUT_S + RETURN_MARGIN_S)
    assert not caller.is_alive() and outcome == [False]
    d = _delta(before, small_pool.stats_snapshot())
    assert d["errors"] == 1 and d["worker_restarts"] == 1 and d["timeouts"] <= 1
    assert busy[0] not in small_pool.worker_pids()
    assert small_pool.equivalent(r"\frac{6}{4}", "1.5")


def test_broken_environment_raises_instead_of_hanging(monkeypatch: pytest.MonkeyPatch) -> None:
    # A worker interpreter that cannot start (no standard library) fails fast, three times.
    monkeypatch.setenv("PYTHONHOME", "/nonexistent")
    with GraderPool(num_workers=1, timeout_s=SHORT_TIMEOUT_S) as broken:
        with pytest.raises(RuntimeError, match="broken"):
            broken.equivalent(r"\sqrt{2}", r"\sqrt{3}")
        assert broken.stats_snapshot()["errors"] >= 1


def test_closed_pool_raises_and_reaps_workers() -> None:
    fresh = GraderPool(num_workers=2)
    pids = fresh.worker_pids()
    fresh.close()
    fresh.close()  # idempotent
    assert fresh.closed
    assert not any(_pid_exists(pid) for pid in pids)
    with pytest.raises(RuntimeError, match="closed"):
        fresh.equivalent("1", "2")


# ---------------------------------------------------------------------------------------------
# Threads
# ---------------------------------------------------------------------------------------------


def test_concurrent_callers_get_their_own_results(pool: GraderPool) -> None:
    n_threads = 6
    barrier = threading.Barrier(n_threads)

    def work(k: int) -> tuple[list[bool], list[bool]]:
        # Distinct pairs per thread (no cache sharing); a mix of equal and unequal answers, all
        # graded by the workers.
        pairs = [
            (f"\\frac{{{2 * k + 1}}}{{4}}\\pi", f"{(2 * k + 1) / 4}\\pi"),
            (f"{k + 1}\\pi", f"{k + 2}\\pi"),
            (f"{k + 1}\\sqrt{{2}}", f"\\sqrt{{{2 * (k + 1) ** 2}}}"),
            (f"{k + 1}\\sqrt{{2}}", f"\\sqrt{{{2 * (k + 1) ** 2 + 1}}}"),
        ]
        barrier.wait()
        one_by_one = [pool.equivalent(a, b) for a, b in pairs[:2]]
        batched = pool.equivalent_many(pairs[2:])
        return one_by_one, batched

    with ThreadPoolExecutor(n_threads) as executor:
        results = list(executor.map(work, range(n_threads)))
    assert results == [([True, False], [True, False])] * n_threads


def test_usable_from_an_unguarded_script() -> None:
    # Workers are fresh interpreters that never re-import the caller's __main__: a script without
    # an `if __name__ == "__main__"` guard (here `python -c`) works, unlike multiprocessing spawn.
    code = (
        "from rewards.grader import GraderPool\n"
        "pool = GraderPool(num_workers=1)\n"
        "print(pool.equivalent(r'\\sqrt{8}', r'2\\sqrt{2}'), pool.equivalent(r'\\sqrt{8}', r'3\\sqrt{2}'))\n"
        "pool.close()\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["True", "False"]


# ---------------------------------------------------------------------------------------------
# The mathruler backend (profile rzero_code)
# ---------------------------------------------------------------------------------------------

# grade_answer("9**9**9", "1/3") hands sympy 9**387420489 (its bad-input guards look for "^" only).
MR_HANG = "9**9**9"


@pytest.fixture(scope="module")
def mr_small_pool() -> Iterator[GraderPool]:
    with GraderPool(num_workers=1, timeout_s=SHORT_TIMEOUT_S, backend="mathruler") as p:
        yield p


def test_mathruler_backend_grades_as_mathruler(mr_small_pool: GraderPool, pool: GraderPool) -> None:
    assert mr_small_pool.equivalent("0.5", r"\frac{1}{2}")
    assert mr_small_pool.equivalent("x=3", "3")
    # mathruler refuses an unreduced fraction; math-verify accepts it.
    assert not mr_small_pool.equivalent("1/2", "2/4") and pool.equivalent("1/2", "2/4")
    # No math-verify shortcut applies: equal values in another form still go to a worker ...
    before = mr_small_pool.stats_snapshot()
    assert mr_small_pool.equivalent("5", "5.00", symmetric=False)
    d = _delta(before, mr_small_pool.stats_snapshot())
    assert d["verify_calls"] == 1 and d["numeric_shortcuts"] == 0
    # ... only the same string after strip() is certain (grade_answer(x, x) is always True).
    before = mr_small_pool.stats_snapshot()
    assert mr_small_pool.equivalent(" 17 ", "17")
    assert _delta(before, mr_small_pool.stats_snapshot())["string_matches"] == 2  # both directions


def test_mathruler_symmetric_is_two_calls_with_their_own_timeout(mr_small_pool: GraderPool) -> None:
    before = mr_small_pool.stats_snapshot()
    assert not mr_small_pool.equivalent("41", "43", symmetric=True)
    d = _delta(before, mr_small_pool.stats_snapshot())
    assert d["calls"] == 2 and d["verify_calls"] == 2  # grade_answer both ways, one job each
    # A hanging grade_answer is killed at the timeout and counts as "not the same".
    assert mr_small_pool.equivalent("7", "7.0")  # the worker is up
    (old_pid,) = mr_small_pool.worker_pids()
    before = mr_small_pool.stats_snapshot()
    start = time.monotonic()
    assert mr_small_pool.equivalent("1/3", MR_HANG, symmetric=False) is False
    assert SHORT_TIMEOUT_S <= time.monotonic() - start < SHORT_TIMEOUT_S + RETURN_MARGIN_S
    d = _delta(before, mr_small_pool.stats_snapshot())
    assert d["timeouts"] == 1 and d["worker_restarts"] == 1
    assert mr_small_pool.worker_pids() != [old_pid] and not _pid_exists(old_pid)
    assert mr_small_pool.equivalent("0.25", r"\frac{1}{4}")  # the replacement serves


def test_default_pools_per_backend() -> None:
    mr = get_default_pool(backend="mathruler")
    assert (mr.backend, mr.timeout_s) == ("mathruler", 10.0)  # the authors' 10 s per call
    assert get_default_pool(backend="mathruler") is mr and get_default_pool() is not mr
    assert get_default_pool().backend == "math_verify"
    with pytest.raises(ValueError, match="backend"):
        GraderPool(num_workers=1, backend="sympy")
