"""Models without a chat template are prompted the same way on every path (issue 17 item 8): the
authors' "system: ...\\nuser: ..." layout (verl.utils.chat), through each path's own rendering:
Solver GRPO and Challenger GRPO (the engine's dataset), the Solver service client, pseudo-labelling,
question generation and evaluation."""

from __future__ import annotations

from pathlib import Path

from transformers import AutoTokenizer

from evaluation.loaders import Item
from evaluation.prompts import build_messages, render_prompt
from question_evaluate.solver_answers import solver_prompt_ids
from question_generate.generate import challenger_prompt_ids
from rzero.prompts import SOLVER_SYSTEM_PROMPT, USER_MESSAGE, challenger_messages
from solver_service.client import SolverClient
from training.common import TrainStageConfig, build_engine_config
from verl.trainer.ray_trainer import build_dataset

QUESTION = "What is the remainder when 2^10 is divided by 7?"


def test_a_question_renders_the_same_on_every_path(tiny_model_dir: str, tmp_path: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    tokenizer.chat_template = None  # a base checkpoint saved without a template
    expected = f"system: {SOLVER_SYSTEM_PROMPT}\nuser: {QUESTION}"
    expected_ids = tokenizer(expected)["input_ids"]

    client = SolverClient(["http://127.0.0.1:9"], "solver", tokenizer)  # no request is sent
    service = client.format_prompt(QUESTION)
    (label_ids,) = solver_prompt_ids(tokenizer, [QUESTION])
    stage = TrainStageConfig(stage="solver", model=tiny_model_dir, out_dir=str(tmp_path))
    data = tmp_path / "train.jsonl"
    data.write_text(f'{{"question": "{QUESTION}", "answer": "2"}}\n')
    (grpo_ids,) = [
        row["raw_prompt_ids"] for row in build_dataset(build_engine_config(stage), tokenizer, str(data)).rows
    ]
    eval_ids, eval_text, used_template = render_prompt(
        tokenizer, build_messages(Item("x", 0, QUESTION, "2"), "math500")
    )

    assert service == eval_text == expected and not used_template
    assert client.add_special_tokens  # the server tokenises the text as the engines below do
    assert list(label_ids) == list(grpo_ids) == eval_ids == expected_ids


def test_the_challenger_prompt_renders_the_same_in_training_and_generation(
    tiny_model_dir: str, tmp_path: Path
) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    tokenizer.chat_template = None
    stage = TrainStageConfig(stage="challenger", model=tiny_model_dir, out_dir=str(tmp_path))
    engine = build_engine_config(stage)
    engine.data.prompt_source_kwargs["num_prompts"] = 2
    grpo_ids = [list(row["raw_prompt_ids"]) for row in build_dataset(engine, tokenizer, "").rows]
    generation_ids = challenger_prompt_ids(tokenizer, {"variant": "default", "seed": 0}, 0, 2)

    system = challenger_messages()[0]["content"]
    assert (
        grpo_ids == generation_ids == [tokenizer(f"system: {system}\nuser: {USER_MESSAGE}")["input_ids"]] * 2
    )
