"""A toy task the tiny random model can learn in a few dozen CPU steps (like verl's digit completion).

Prompt: "Write digits: 3 1 4". Reward: the share of the response's characters that are digits
(whitespace ignored), in [0, 1]. A random model scores ~0.2-0.3 (the tiny tokenizer has many digit
tokens); a policy that learns to emit digits (or to stop early after digits) scores near 1. The
reward is dense, so GRPO's advantage sign decides the direction: with the sign flipped, the score
falls instead of rising, which the engine's learning test detects.

The prompt-dependent variant (`prompt_digit_reward`): only the digits the prompt names count, so the
reward of a response depends on the prompt it is paired with (the engine's oracle test).

    python -m verl.utils.toy_task --out data/toy.parquet --n 256
"""

from __future__ import annotations

import argparse
import random
import re

import pandas as pd

from verl.utils.fs import atomic_write


def make_toy_dataset(path: str, n: int = 256, seed: int = 0) -> str:
    """Write `n` toy prompts to a parquet (or jsonl) file with columns `prompt` and `answer`."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        digits = " ".join(str(rng.randrange(10)) for _ in range(rng.randint(2, 5)))
        rows.append({"prompt": f"Write digits: {digits}", "answer": digits})
    frame = pd.DataFrame(rows)
    if path.endswith(".jsonl"):
        atomic_write(path, lambda tmp: frame.to_json(tmp, orient="records", lines=True))
    else:
        atomic_write(path, lambda tmp: frame.to_parquet(tmp, index=False))
    return path


def digit_share(text: str) -> float:
    chars = [c for c in text if not c.isspace()]
    return sum(c.isdigit() for c in chars) / len(chars) if chars else 0.0


def digit_reward(batch: list[dict], **_: object) -> list[dict]:
    """Batch reward function for the engine: `overall` = digit share, plus `length` for logging."""
    return [
        {"overall": digit_share(item["response"]), "length": float(len(item["response"]))} for item in batch
    ]


def prompt_digits(prompt: str) -> set[str]:
    """The digits a toy prompt asks for ("... Write digits: 3 1 4 ..." -> {"3", "1", "4"})."""
    match = re.search(r"Write digits:((?:\s*\d)+)", prompt)
    if match is None:
        raise ValueError(f"not a toy prompt (no 'Write digits: ...'): {prompt[:200]!r}")
    return set(match.group(1).split())


def prompt_digit_share(prompt: str, response: str) -> float:
    """Share of the response's characters (whitespace ignored) that are digits its prompt asks for:
    the same response scores differently under another prompt."""
    wanted = prompt_digits(prompt)
    chars = [c for c in response if not c.isspace()]
    return sum(c in wanted for c in chars) / len(chars) if chars else 0.0


def prompt_digit_reward(batch: list[dict], **_: object) -> list[dict]:
    """Batch reward function of the prompt-dependent toy task: `overall` = prompt_digit_share.

    A response paired with the wrong prompt, or grouped with another prompt's responses, gets
    another reward: the engine's oracle test (tests/test_engine_oracle.py) runs on it."""
    return [{"overall": prompt_digit_share(item["prompt"], item["response"])} for item in batch]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", required=True)
    parser.add_argument("--n", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(make_toy_dataset(args.out, args.n, args.seed))


if __name__ == "__main__":
    main()
