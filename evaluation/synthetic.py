"""Generated arithmetic word problems with known integer answers: a benchmark that needs no download.

Written for this project (no item comes from a published benchmark). Each problem is a short story
with one to three arithmetic steps on small whole numbers; its answer is a non-negative integer, and
each comes with a worked solution that ends in `\\boxed{answer}` (usable as a few-shot example).
Everything is a pure function of the seed, so a benchmark file is reproducible from its command.

    from evaluation.synthetic import make_problems, make_splits, write_problems
    rows = make_problems(100, seed=0)            # [{"question", "answer", "solution", "kind", "steps"}]
    splits = make_splits({"train": 256, "test": 64}, seed=0)   # no question in two splits
    write_problems("bench/arith.jsonl", rows)    # .jsonl or .parquet, written atomically

    python -m evaluation.synthetic --out arith.jsonl --n 100 --seed 0 [--max-steps 2]

`answer` is the decimal string of the integer (a string so that every file format and the
evaluation loaders read the same value). The file loads as a math benchmark in the evaluation
harness, e.g. under the GSM8K schema: `python -m evaluation --benchmarks gsm8k --data gsm8k=FILE`.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
from collections.abc import Callable
from pathlib import Path

from verl.utils.fs import atomic_write, atomic_write_jsonl

_NAMES = ("Ada", "Ben", "Chloe", "Dev", "Emma", "Farid", "Grace", "Hugo", "Iris", "Jonas", "Kira", "Liam")
_ITEMS = ("apples", "marbles", "stickers", "pencils", "cookies", "stamps", "shells", "cards")
_CONTAINERS = ("boxes", "bags", "jars", "baskets", "crates")
# (singular, plural, price range in dollars)
_GOODS = (
    ("notebook", "notebooks", 2, 9),
    ("sandwich", "sandwiches", 3, 8),
    ("ticket", "tickets", 4, 15),
    ("toy car", "toy cars", 2, 12),
    ("book", "books", 5, 20),
)

# A template draws its numbers from `rng` and returns (question, answer, worked solution).
Template = Callable[[random.Random], tuple[str, int, str]]


def _people(rng: random.Random) -> tuple[str, str]:
    first, second = rng.sample(_NAMES, 2)
    return first, second


def _add(rng: random.Random) -> tuple[str, int, str]:
    name, _ = _people(rng)
    item, a, b = rng.choice(_ITEMS), rng.randint(5, 60), rng.randint(3, 40)
    q = f"{name} has {a} {item}. Then {name} finds {b} more {item}. How many {item} does {name} have now?"
    return q, a + b, f"{name} starts with {a} and finds {b} more, so {a} + {b} = {a + b}."


def _subtract(rng: random.Random) -> tuple[str, int, str]:
    name, friend = _people(rng)
    item = rng.choice(_ITEMS)
    a = rng.randint(20, 90)
    b = rng.randint(2, a - 1)
    q = f"{name} had {a} {item} and gave {b} of them to {friend}. How many {item} does {name} have left?"
    return q, a - b, f"{name} gives away {b} of {a}, so {a} - {b} = {a - b}."


def _multiply(rng: random.Random) -> tuple[str, int, str]:
    item, box = rng.choice(_ITEMS), rng.choice(_CONTAINERS)
    a, b = rng.randint(2, 12), rng.randint(3, 15)
    q = f"There are {a} {box} with {b} {item} in each. How many {item} are there in all?"
    return q, a * b, f"{a} {box} with {b} each make {a} × {b} = {a * b}."


def _divide(rng: random.Random) -> tuple[str, int, str]:
    name, _ = _people(rng)
    item = rng.choice(_ITEMS)
    share, friends = rng.randint(2, 12), rng.randint(2, 9)
    total = share * friends
    q = f"{name} shares {total} {item} equally among {friends} friends. How many {item} does each friend get?"
    return q, share, f"{total} shared among {friends} is {total} ÷ {friends} = {share}."


def _packs_plus(rng: random.Random) -> tuple[str, int, str]:
    name, _ = _people(rng)
    item, box = rng.choice(_ITEMS), rng.choice(_CONTAINERS)
    packs, per, had = rng.randint(2, 9), rng.randint(3, 12), rng.randint(1, 30)
    q = (
        f"{name} already has {had} {item} and buys {packs} {box} of {item} with {per} in each. "
        f"How many {item} does {name} have now?"
    )
    bought = packs * per
    solution = f"The {box} hold {packs} × {per} = {bought}. Adding the {had} already there: {bought} + {had} = {bought + had}."
    return q, bought + had, solution


def _change(rng: random.Random) -> tuple[str, int, str]:
    name, _ = _people(rng)
    good, goods, low, high = rng.choice(_GOODS)
    price, count = rng.randint(low, high), rng.randint(2, 6)
    cost = price * count
    paid = next(v for v in (10, 20, 50, 100, 200) if v > cost)  # the smallest bill that leaves change
    q = (
        f"A {good} costs {price} dollars. {name} buys {count} of them and pays with a {paid}-dollar bill. "
        f"How many dollars of change does {name} get?"
    )
    solution = f"The {goods} cost {count} × {price} = {cost} dollars, so the change is {paid} - {cost} = {paid - cost}."
    return q, paid - cost, solution


def _days(rng: random.Random) -> tuple[str, int, str]:
    name, _ = _people(rng)
    per_day, days, extra = rng.randint(4, 25), rng.randint(2, 7), rng.randint(3, 30)
    q = (
        f"{name} reads {per_day} pages every day for {days} days, and then {extra} more pages on the "
        f"weekend. How many pages does {name} read in total?"
    )
    week = per_day * days
    solution = f"In {days} days: {per_day} × {days} = {week} pages. With the weekend: {week} + {extra} = {week + extra}."
    return q, week + extra, solution


def _buy_then_give(rng: random.Random) -> tuple[str, int, str]:
    name, friend = _people(rng)
    item, box = rng.choice(_ITEMS), rng.choice(_CONTAINERS)
    had, packs, per = rng.randint(3, 30), rng.randint(2, 6), rng.randint(3, 10)
    total = had + packs * per
    given = rng.randint(1, total - 1)
    q = (
        f"{name} has {had} {item}, buys {packs} {box} with {per} {item} in each, and then gives {given} "
        f"{item} to {friend}. How many {item} does {name} have left?"
    )
    solution = (
        f"The {box} hold {packs} × {per} = {packs * per}, so {name} has {had} + {packs * per} = {total}. "
        f"After giving {given} away: {total} - {given} = {total - given}."
    )
    return q, total - given, solution


# Templates by number of arithmetic steps.
TEMPLATES: dict[int, tuple[Template, ...]] = {
    1: (_add, _subtract, _multiply, _divide),
    2: (_packs_plus, _change, _days),
    3: (_buy_then_give,),
}


def make_problem(rng: random.Random, min_steps: int = 1, max_steps: int = 3) -> dict[str, str | int]:
    """One problem drawn from `rng`: {"question", "answer" (decimal string), "solution", "kind", "steps"}."""
    steps = rng.randint(min_steps, max_steps)
    template = rng.choice(TEMPLATES[steps])
    question, answer, worked = template(rng)
    assert answer >= 0, (template.__name__, question)  # every template keeps counts non-negative
    return {
        "question": question,
        "answer": str(answer),
        "solution": f"{worked} The answer is \\boxed{{{answer}}}.",
        "kind": template.__name__.lstrip("_"),
        "steps": steps,
    }


def _check_steps(min_steps: int, max_steps: int) -> None:
    if not (min(TEMPLATES) <= min_steps <= max_steps <= max(TEMPLATES)):
        raise ValueError(
            f"steps must satisfy {min(TEMPLATES)} <= min_steps <= max_steps <= {max(TEMPLATES)}, "
            f"got {min_steps}..{max_steps}"
        )


def make_problems(n: int, seed: int = 0, min_steps: int = 1, max_steps: int = 3) -> list[dict]:
    """`n` distinct problems (no repeated question text), a pure function of the arguments."""
    _check_steps(min_steps, max_steps)
    return make_splits({"all": n}, seed, min_steps, max_steps)["all"]


def make_splits(
    sizes: dict[str, int], seed: int = 0, min_steps: int = 1, max_steps: int = 3
) -> dict[str, list[dict]]:
    """Disjoint splits (e.g. {"train": 256, "test": 64}): no question text is in two splits or twice
    in one, so a held-out accuracy measures problems the model was not trained on. The splits are
    filled in the order given from one seeded stream."""
    _check_steps(min_steps, max_steps)
    if any(n < 0 for n in sizes.values()):
        raise ValueError(f"split sizes must be >= 0, got {sizes}")
    rng = random.Random(seed)
    seen: set[str] = set()
    out: dict[str, list[dict]] = {}
    budget = 100 * (sum(sizes.values()) + 10)  # the template space is large; this only stops a bug
    for name, n in sizes.items():
        rows: list[dict] = []
        while len(rows) < n:
            budget -= 1
            if budget < 0:
                raise RuntimeError(f"could not draw {sum(sizes.values())} distinct problems")
            problem = make_problem(rng, min_steps, max_steps)
            if problem["question"] not in seen:
                seen.add(problem["question"])
                rows.append(problem)
        out[name] = rows
    return out


def write_problems(path: str | os.PathLike, rows: list[dict]) -> Path:
    """Write rows as .jsonl or .parquet (by the suffix), atomically. Returns the path."""
    path = Path(path)
    if path.suffix == ".jsonl":
        return atomic_write_jsonl(path, rows)
    if path.suffix == ".parquet":
        import pandas as pd

        frame = pd.DataFrame(rows)
        return atomic_write(path, lambda tmp: frame.to_parquet(tmp, index=False))
    raise ValueError(f"cannot write '{path}': use a .jsonl or .parquet file name")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", required=True, help="output file (.jsonl or .parquet)")
    parser.add_argument("--n", type=int, default=100, help="number of problems")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--min-steps", type=int, default=1)
    parser.add_argument("--max-steps", type=int, default=3)
    args = parser.parse_args(argv)
    rows = make_problems(args.n, args.seed, args.min_steps, args.max_steps)
    print(f"{len(rows)} problems -> {write_problems(args.out, rows)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
