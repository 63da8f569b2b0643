"""Solver stage: GRPO of the Solver on the pseudo-labelled questions (RZERO_SPEC.md section 3).

When fewer questions survived than one rollout batch, the rollout batch is lowered to what the data
and the devices allow (one update per step) and the configured number of steps still runs, cycling
over the data; the manifest and the log say so (the authors' code crashes there).
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from pathlib import Path

from infra.stage_kit import finished_stage
from training.common import TrainStageConfig, build_engine_config, finish_stage
from verl.trainer.config import PPOConfig
from verl.utils.dataset import read_records
from verl.utils.fs import atomic_write

logger = logging.getLogger(__name__)


def fit_batch_to_data(config: PPOConfig, n_questions: int, world: int) -> str | None:
    """Lower the rollout batch when the dataset is smaller than one batch; returns a note, or None.

    The batch's n responses per prompt must split evenly over the `world` ranks. When no batch of at
    most `n_questions` prompts does (e.g. 1 question, n = 5, 2 ranks), the batch is the smallest one
    that does, and the caller repeats the questions to fill it (`repeat_to_batch`).
    """
    data, actor, n = config.data, config.worker.actor, config.worker.rollout.n
    if n_questions >= data.rollout_batch_size:
        return None
    if n_questions < 1:
        raise RuntimeError(
            "no question survived the filter: nothing to train the Solver on (see the "
            "question_evaluate stage's filter_stats.json)"
        )
    micro = actor.micro_batch_size_per_device_for_update
    for size in range(n_questions, 0, -1):
        if (size * n) % world == 0 and ((size * n) // world) % micro == 0:
            break
    else:  # no size satisfies the micro batch: use micro batches of one response
        fitting = [s for s in range(n_questions, 0, -1) if (s * n) % world == 0]
        size = fitting[0] if fitting else world // math.gcd(n, world)
        actor.micro_batch_size_per_device_for_update = 1
    note = (
        f"dataset has {n_questions} questions, fewer than data.rollout_batch_size={data.rollout_batch_size}: "
        f"rollout batch lowered to {size} (one update per step); the {config.trainer.max_steps} steps cycle "
        "over the data as epochs"
    )
    if size > n_questions:
        note += (
            f"; {size} x {n} responses are the fewest that split over {world} ranks, so the questions are "
            f"repeated to fill the batch"
        )
    data.rollout_batch_size = size
    actor.prompts_per_update = size
    return note


def repeat_to_batch(dataset: str, n_fitting: int, batch_size: int, out_dir: Path) -> str:
    """`dataset` itself, or when it holds fewer fitting questions than one batch, a copy with every
    row repeated enough times (`<out_dir>/train_repeated.parquet`, written atomically)."""
    if n_fitting >= batch_size:
        return dataset
    import pyarrow as pa
    import pyarrow.parquet as pq

    records = read_records(dataset)
    copies = -(-batch_size // n_fitting)  # ceil: the too-long rows are dropped again by the trainer
    table = pa.Table.from_pylist([dict(r) for _ in range(copies) for r in records])
    return str(atomic_write(out_dir / "train_repeated.parquet", lambda tmp: pq.write_table(table, tmp)))


def nothing_to_train(dataset: str) -> str:
    """Why the Solver has no question, from the labelling stage's filter_stats.json beside the
    dataset when it is there, and the ways out."""
    message = f"no question survived the filter: {dataset} is empty, nothing to train the Solver on."
    stats_path = Path(dataset).parent / "filter_stats.json"
    try:
        stats = json.loads(stats_path.read_text())
    except (OSError, ValueError):
        return message + " (no filter_stats.json beside it to say why)"
    dropped = {reason: n for reason, n in stats.get("dropped_by_reason", {}).items() if n}
    message += (
        f" {stats_path}: {stats.get('questions')} questions, {stats.get('valid')} valid, "
        f"{stats.get('kept')} kept, dropped {dropped or 'none'}."
    )
    if not stats.get("valid"):
        # Seen with SmolLM2-135M-Instruct: it does not write the format, so the Challenger's reward
        # was 0 for every sample and GRPO had no signal to teach it with.
        return message + (
            " No Challenger output parsed (the question_generate manifest counts why): the base model "
            "does not write the Challenger's <question>...</question> \\boxed{} format; R-Zero needs a "
            "base model that follows the Challenger prompt."
        )
    return message + (
        " Every valid question was dropped (reasons above): more questions (--set num_questions=N) "
        "or the other profile's band (--profile rzero_code) may keep some."
    )


def fitting_questions(config: PPOConfig) -> tuple[int, int]:
    """(questions in the dataset, those whose prompt fits data.max_prompt_length), counted with the
    engine's own prompt dataset: the trainer drops the longer ones, so the rollout batch must be
    fitted to what is left (a Challenger may write a question too long for the Solver's prompt)."""
    from transformers import AutoTokenizer

    from verl.trainer.ray_trainer import build_dataset

    model = config.worker.actor.model
    tokenizer = AutoTokenizer.from_pretrained(
        model.tokenizer_path or model.model_path, trust_remote_code=model.trust_remote_code
    )
    n_questions = len(read_records(config.data.train_files))
    return n_questions, len(build_dataset(config, tokenizer, config.data.train_files))


def run_solver_stage(config: TrainStageConfig) -> dict:
    """Train the Solver on the pseudo-labelled questions; returns the stage manifest."""
    from verl.trainer.ray_trainer import run_training  # heavy (Ray, torch): only when training

    out = Path(config.out_dir)
    if (done := finished_stage(out, "solver")) is not None:
        return done
    if not read_records(config.dataset):  # before the engine config and the tokenizer load
        raise RuntimeError(nothing_to_train(config.dataset))
    engine = build_engine_config(config)
    engine.data.train_files = config.dataset
    n_questions, n_fitting = fitting_questions(engine)
    notes = []
    if n_fitting < n_questions:
        if n_fitting == 0:
            raise RuntimeError(
                f"none of the {n_questions} questions in {config.dataset} fits "
                f"data.max_prompt_length={engine.data.max_prompt_length} tokens: raise it, or keep "
                "shorter questions"
            )
        notes.append(
            f"{n_questions - n_fitting} of {n_questions} questions are longer than "
            f"data.max_prompt_length={engine.data.max_prompt_length} tokens and were left out"
        )
    if note := fit_batch_to_data(engine, n_fitting, config.world):
        notes.append(note)
    batch = engine.data.rollout_batch_size
    engine.data.train_files = repeat_to_batch(config.dataset, n_fitting, batch, Path(config.out_dir))
    for note in notes:
        logger.info("%s", note)
    engine.validate()
    started = time.time()
    if config.device == "cuda":
        os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(config.trainer_devices)
    run_training(engine)
    inputs = {"solver_init": config.model, "dataset": config.dataset}
    counts = {"questions": n_questions, "questions_too_long": n_questions - n_fitting}
    return finish_stage(config, engine, inputs, started, notes, counts)
