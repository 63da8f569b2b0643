"""One Solver prompt everywhere (RZERO_SPEC.md section 2): the Solver service, pseudo-labelling, the
Solver GRPO stage and math evaluation render the same chat for the same question."""

from __future__ import annotations

from transformers import AutoTokenizer

from evaluation.loaders import Item
from evaluation.prompts import build_messages, render_prompt
from question_evaluate.solver_answers import solver_prompt_ids
from rzero.prompts import SOLVER_SYSTEM_PROMPT
from solver_service.client import SolverClient
from training.common import TrainStageConfig, build_engine_config
from verl.trainer.ray_trainer import build_dataset

QUESTION = "What is the remainder when 2^10 is divided by 7?"


def test_the_spec_string() -> None:
    assert SOLVER_SYSTEM_PROMPT == "Please reason step by step, and put your final answer within \\boxed{}."


def test_every_solver_query_renders_the_same_chat(tiny_model_dir: str, tmp_path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    # Solver service (Challenger reward): the client renders the chat itself.
    service = SolverClient(["http://127.0.0.1:9"], "solver", tokenizer).format_prompt(QUESTION)
    # Pseudo-labelling.
    (label_ids,) = solver_prompt_ids(tokenizer, [QUESTION])
    # Solver GRPO: the stage's engine config, through the engine's own dataset builder.
    stage = TrainStageConfig(stage="solver", model=tiny_model_dir, out_dir=str(tmp_path))
    engine = build_engine_config(stage)
    data = tmp_path / "train.jsonl"
    data.write_text(f'{{"question": "{QUESTION}", "answer": "2"}}\n')
    (grpo_ids,) = [row["raw_prompt_ids"] for row in build_dataset(engine, tokenizer, str(data)).rows]
    # Math evaluation.
    eval_ids, eval_text, used_template = render_prompt(
        tokenizer, build_messages(Item("x", 0, QUESTION, "2"), "math")
    )

    assert used_template and SOLVER_SYSTEM_PROMPT in service and QUESTION in service
    assert tokenizer.decode(label_ids) == tokenizer.decode(list(grpo_ids)) == eval_text == service
    assert list(label_ids) == list(grpo_ids) == eval_ids
