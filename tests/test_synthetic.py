"""Generated arithmetic word problems (evaluation/synthetic.py): right answers, reproducible, disjoint
splits, files that the evaluation loaders and the Solver reward read as intended."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from evaluation.synthetic import TEMPLATES, make_problems, make_splits, write_problems
from rewards.answer_parsing import last_boxed

# "a op b = c" in a worked solution; the operators the templates write.
_EQUATION = re.compile(r"(\d+) ([+\-×÷]) (\d+) = (\d+)")
_APPLY = {
    "+": lambda a, b: a + b,
    "-": lambda a, b: a - b,
    "×": lambda a, b: a * b,
    "÷": lambda a, b: a // b if b and a % b == 0 else None,
}


def _check_worked_solution(row: dict) -> None:
    """Every equation of the worked solution is true arithmetic, uses numbers of the question or of
    earlier steps, has as many steps as the row says, and the last result is the boxed answer."""
    known = {int(x) for x in re.findall(r"\d+", row["question"])}
    equations = _EQUATION.findall(row["solution"])
    assert len(equations) == row["steps"], row
    for a, op, b, c in equations:
        a, b, c = int(a), int(b), int(c)
        assert a in known and b in known, (row, a, b)
        assert _APPLY[op](a, b) == c, row
        known.add(c)
    assert int(equations[-1][3]) == int(row["answer"]), row
    assert last_boxed(row["solution"]) == row["answer"]


def test_answers_are_right_and_non_negative_integers() -> None:
    rows = make_problems(400, seed=3)
    assert len(rows) == 400
    for row in rows:
        assert re.fullmatch(r"\d+", row["answer"]), row
        _check_worked_solution(row)
    # Every template is used, and every step count.
    assert {r["kind"] for r in rows} == {t.__name__.lstrip("_") for ts in TEMPLATES.values() for t in ts}
    assert {r["steps"] for r in rows} == set(TEMPLATES)


def test_same_seed_same_problems_other_seed_other_problems() -> None:
    assert make_problems(50, seed=7) == make_problems(50, seed=7)
    assert make_problems(50, seed=7) != make_problems(50, seed=8)
    # A prefix is stable: asking for more problems does not change the first ones.
    assert make_problems(80, seed=7)[:50] == make_problems(50, seed=7)


def test_steps_range_is_respected_and_checked() -> None:
    rows = make_problems(60, seed=0, min_steps=2, max_steps=2)
    assert {r["steps"] for r in rows} == {2}
    with pytest.raises(ValueError, match="steps"):
        make_problems(5, seed=0, min_steps=0)
    with pytest.raises(ValueError, match="steps"):
        make_problems(5, seed=0, min_steps=3, max_steps=2)


def test_splits_are_disjoint_and_sized() -> None:
    splits = make_splits({"train": 300, "test": 100}, seed=1)
    assert [len(splits["train"]), len(splits["test"])] == [300, 100]
    train_q = [r["question"] for r in splits["train"]]
    test_q = [r["question"] for r in splits["test"]]
    assert len(set(train_q)) == 300 and len(set(test_q)) == 100
    assert not set(train_q) & set(test_q)


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
def test_file_loads_as_a_math_benchmark(tmp_path: Path, suffix: str) -> None:
    from evaluation.loaders import load_benchmark

    rows = make_problems(20, seed=2)
    path = write_problems(tmp_path / f"arith{suffix}", rows)
    loaded = load_benchmark("gsm8k", path=path, limit=None)
    assert [item.question for item in loaded.items] == [r["question"] for r in rows]
    assert [item.gold for item in loaded.items] == [r["answer"] for r in rows]
    assert not list(tmp_path.glob(".*.tmp"))  # written atomically: no temporary left behind


def test_worked_solutions_earn_the_solver_reward() -> None:
    """The reward the Solver is trained with reads the boxed answer of a worked solution as right,
    and a wrong number as wrong."""
    from rewards.solver_reward import compute_solver_reward

    rows = make_problems(6, seed=4)
    items = [{"response": r["solution"], "ground_truth": r["answer"]} for r in rows]
    items += [
        {"response": "The answer is \\boxed{" + str(int(r["answer"]) + 1) + "}.", "ground_truth": r["answer"]}
        for r in rows
    ]
    scores = [s["overall"] for s in compute_solver_reward(items, profile="paper")]
    assert scores == [1.0] * 6 + [0.0] * 6


def test_cli_writes_the_same_file_as_the_api(tmp_path: Path) -> None:
    out = tmp_path / "cli.jsonl"
    cmd = [sys.executable, "-m", "evaluation.synthetic", "--out", str(out), "--n", "15", "--seed", "5"]
    subprocess.run(cmd, check=True, capture_output=True, timeout=120)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert rows == make_problems(15, seed=5)
    with pytest.raises(ValueError, match=r"\.jsonl or \.parquet"):
        write_problems(tmp_path / "x.csv", rows)
