"""The evaluation prompt of each benchmark, as the R-Zero authors' evaluation scripts word and lay it
out (evaluation/eval_mmlupro.py, eval_supergpqa.py, eval_bbeh.py, generate.py): the first item of
small files shaped like the hub datasets, loaded by the real loader, rendered by the real prompt
builder and the chat template, compared character by character."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from evaluation.loaders import load_benchmark
from evaluation.prompts import build_messages, render_prompt

# First rows shaped like the hub datasets (the columns each dataset has; values shortened).
ROWS = {
    "mmlu_pro": {
        "question_id": 70,
        "question": "Typical advertising regulatory bodies suggest, for example that adverts must not: encourage "
        "_________, cause unnecessary ________ or _____, and must not cause _______ offence.",
        "options": [
            "Safe practices, Fear, Jealousy, Trivial",
            "Unsafe practices, Distress, Joy, Trivial",
            "Safe practices, Wants, Jealousy, Trivial",
        ],
        "answer": "B",
        "answer_index": 1,
        "cot_content": "",
        "category": "business",
        "src": "ori_mmlu-business_ethics",
    },
    "supergpqa": {
        "uuid": "0a2b",
        "question": "Which of the following is the most stable conformation?",
        "options": ["chair", "boat", "twist-boat", "half-chair"],
        "answer": "chair",
        "answer_letter": "A",
        "discipline": "Science",
        "field": "Chemistry",
        "subfield": "Organic Chemistry",
        "difficulty": "middle",
        "is_calculation": False,
    },
    "bbeh": {
        "question": "Today is Christmas Eve of 1937. What is the date tomorrow in MM/DD/YYYY?",
        "answer": "12/25/1937",
        "task": "date understanding",
    },
    "math500": {
        "problem": "What is $1+1$?",
        "solution": "$1+1=\\boxed{2}$.",
        "answer": "2",
        "subject": "Prealgebra",
        "level": 1,
        "unique_id": "test/prealgebra/1.json",
    },
}

EXPECTED_USER = {
    "mmlu_pro": "Typical advertising regulatory bodies suggest, for example that adverts must not: encourage "
    "_________, cause unnecessary ________ or _____, and must not cause _______ offence.\n"
    "Options are:\n"
    "(A): Safe practices, Fear, Jealousy, Trivial\n"
    "(B): Unsafe practices, Distress, Joy, Trivial\n"
    "(C): Safe practices, Wants, Jealousy, Trivial\n"
    "\n"
    "\n"
    "Please reason step by step, and put your final answer option within \\boxed{}. Only put the option "
    "letter in the box, e.g. \\boxed{A}. There is only one correct answer.",
    "supergpqa": "Which of the following is the most stable conformation?\n"
    "Options are:\n"
    "(A): chair\n"
    "(B): boat\n"
    "(C): twist-boat\n"
    "(D): half-chair\n"
    "\n"
    "\n"
    "Please reason step by step, and put your final answer option within \\boxed{}. Only put the letter "
    "in the box, e.g. \\boxed{A}. There is only one correct answer.",
    "bbeh": "Today is Christmas Eve of 1937. What is the date tomorrow in MM/DD/YYYY?\n"
    "\n"
    "Please reason step by step, and put your final answer option within \\boxed{}.",
}

MATH_SYSTEM = "Please reason step by step, and put your final answer within \\boxed{}."


def _first_item(tmp_path: Path, name: str):
    path = tmp_path / f"{name}.jsonl"
    path.write_text(json.dumps(ROWS[name]) + "\n", encoding="utf-8")
    return load_benchmark(name, path).items[0]


@pytest.mark.parametrize("name", sorted(EXPECTED_USER))
def test_general_benchmark_prompts_are_the_authors(tmp_path: Path, tiny_model_dir: str, name: str) -> None:
    from transformers import AutoTokenizer

    item = _first_item(tmp_path, name)
    messages = build_messages(item, name)
    assert messages == [{"role": "user", "content": EXPECTED_USER[name]}]
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    _, text, used = render_prompt(tokenizer, messages)
    assert used and text == f"<|im_start|>user\n{EXPECTED_USER[name]}<|im_end|>\n<|im_start|>assistant\n"
    tokenizer.chat_template = None  # the one fallback of the project (verl.utils.chat)
    assert render_prompt(tokenizer, messages)[1] == f"user: {EXPECTED_USER[name]}"


def test_math_benchmark_prompt_is_the_solver_prompt(tmp_path: Path, tiny_model_dir: str) -> None:
    from transformers import AutoTokenizer

    messages = build_messages(_first_item(tmp_path, "math500"), "math500")
    assert messages == [
        {"role": "system", "content": MATH_SYSTEM},
        {"role": "user", "content": "What is $1+1$?"},
    ]
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    assert render_prompt(tokenizer, messages)[1] == (
        f"<|im_start|>system\n{MATH_SYSTEM}<|im_end|>\n<|im_start|>user\nWhat is $1+1$?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    tokenizer.chat_template = None
    assert render_prompt(tokenizer, messages)[1] == f"system: {MATH_SYSTEM}\nuser: What is $1+1$?"
