"""Time every parser that reads model output on adversarial strings (issue 20, item 2).

Each parser runs in the calling process (reward actor, labelling, evaluation), outside the grader's
timeout, so a pattern that backtracks on some output stalls a whole stage. The cases are the
inputs that made the former patterns quadratic or cubic, at `--chars` characters (default
100,000). Each case runs in a forked child with a `--timeout` (default 20 s); a case that runs past
it prints "timeout". tests/test_parsers_adversarial.py checks the results of the same cases (no
timing there: this script prints the figures).

    .venv/bin/python scripts/bench_parsers.py [--chars 100000] [--timeout 20]

Output: one line per case: name, seconds (best of `--repeat`), and the result's repr, shortened.
"""

from __future__ import annotations

import argparse
import multiprocessing
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

OPTIONS = ("alpha", "beta", "gamma", "delta")


def cases(n: int) -> list[tuple[str, Callable[[], object]]]:
    """(name, thunk) per parser and adversarial input of about `n` characters."""
    from evaluation.judge import parse_verdict
    from evaluation.scoring import bbeh_correct, extract_bbeh, extract_choice, extract_math
    from question_generate.parsing import parse_generated
    from rewards import math_verify_grading as mv
    from rewards import solver_reward
    from rewards.answer_parsing import extract_answer, last_boxed, normalize_answer, parse_challenger_output

    def k(unit: str) -> int:
        return max(1, n // len(unit))

    out: list[tuple[str, Callable[[], object]]] = [
        ("choice: 'The answer is' + newlines", lambda: extract_choice("The answer is" + "\n" * n, OPTIONS)),
        ("choice: 'answer is ' repeated", lambda: extract_choice("answer is " * k("answer is "), OPTIONS)),
        (
            "choice: box of nested \\text{",
            lambda: extract_choice(
                "\\boxed{" + "\\text{" * k("\\text{") + "A" + "}" * (k("\\text{") + 1), OPTIONS
            ),
        ),
        (
            "format: <think> + '</think>\\boxed{' x k",
            lambda: solver_reward.format_ok("<think>" + "</think>\\boxed{" * k("</think>\\boxed{")),
        ),
        ("question block: '<question>' x k", lambda: parse_challenger_output("<question>" * k("<question>"))),
        (
            "question block rzero_code: '<question>' x k",
            lambda: parse_challenger_output("<question>" * k("<question>"), "rzero_code"),
        ),
        (
            "generation scan rzero_code: '\\boxed{' x k",
            lambda: parse_generated("<question>" + "\\boxed{" * k("\\boxed{"), "rzero_code"),
        ),
        (
            "normalize: nested \\text{",
            lambda: normalize_answer("\\text{" * k("\\text{") + "x" + "}" * k("\\text{")),
        ),
        (
            "normalize: nested \\boxed{",
            lambda: normalize_answer("\\boxed{" * k("\\boxed{") + "x" + "}" * k("\\boxed{")),
        ),
        ("normalize: '$' x n", lambda: normalize_answer("$" * n)),
        ("normalize: '^' + spaces", lambda: normalize_answer("^" + " " * n + "x")),
        ("normalize: spacing macros", lambda: normalize_answer("1" + "\\, " * k("\\, ") + "2")),
        ("numeric: digits + 'x'", lambda: mv.numeric_verdict("1" * n + "x", "1")),
        ("numeric: 5000-digit integers", lambda: mv.numeric_verdict("1" * 5000, "1" * 4999 + "2")),
        ("last_boxed: '\\boxed{' x k", lambda: last_boxed("\\boxed{" * k("\\boxed{"))),
        ("last_boxed: '{' x n", lambda: last_boxed("\\boxed" + "{" * n)),
        (
            "extract rzero_code: '\\boxed{' x k",
            lambda: extract_answer("\\boxed{" * k("\\boxed{"), "rzero_code"),
        ),
        ("extract_math: '\\boxed{' x k", lambda: extract_math("\\boxed{" * k("\\boxed{"))),
        ("bbeh: 'Final Answer:' x k", lambda: extract_bbeh("Final Answer:" * k("Final Answer:"))),
        ("bbeh: 'The answer is ' x k", lambda: bbeh_correct("The answer is " * k("The answer is "), "x")),
        ("judge verdict: '<think>' x k", lambda: parse_verdict("<think>" * k("<think>") + " YES")),
    ]
    # Present after the fix only (the former code applied the spec's regex inline, measured below).
    if hasattr(solver_reward, "remove_tag_whitespace"):
        out.append(
            ("tag whitespace: spaces + 'x'", lambda: solver_reward.remove_tag_whitespace(" " * n + "x"))
        )
    if hasattr(mv, "cheap_verdict"):
        out.append(
            ("cheap verdict: 5000-digit integers", lambda: mv.cheap_verdict("1" * 5000, "1" * 4999 + "2"))
        )
    return out


def _run(index: int, n: int, repeat: int, queue: multiprocessing.Queue) -> None:
    _, thunk = cases(n)[index]
    best, result = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        try:
            result = thunk()
        except Exception as exc:  # the figure to report is the failure itself
            result = f"error: {type(exc).__name__}"
        best = min(best, time.perf_counter() - start)
    text = repr(result)
    queue.put((best, text if len(text) <= 40 else text[:37] + "..."))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--chars", type=int, default=100_000, help="length of each adversarial string")
    parser.add_argument("--timeout", type=float, default=20.0, help="seconds per case before it is stopped")
    parser.add_argument("--repeat", type=int, default=3, help="runs per case (the best is printed)")
    args = parser.parse_args()
    ctx = multiprocessing.get_context("fork")
    names = [name for name, _ in cases(args.chars)]
    print(f"{'case':48} {'seconds':>9}  result   ({args.chars} chars, best of {args.repeat})")
    for i, name in enumerate(names):
        queue: multiprocessing.Queue = ctx.Queue()
        child = ctx.Process(target=_run, args=(i, args.chars, args.repeat, queue), daemon=True)
        child.start()
        child.join(args.timeout)
        if child.is_alive():
            child.kill()
            child.join()
            print(f"{name:48} {'timeout':>9}  (> {args.timeout:.0f} s)")
            continue
        if queue.empty():
            print(f"{name:48} {'failed':>9}  (exit code {child.exitcode})")
            continue
        seconds, result = queue.get()
        print(f"{name:48} {seconds:9.4f}  {result}")


if __name__ == "__main__":
    main()
