"""Solver stage: GRPO of the Solver on the pseudo-labelled questions (RZERO_SPEC.md section 3).

When fewer questions survived than one rollout batch, the rollout batch is lowered to what the data
and the devices allow (one update per step) and the configured number of steps still runs, cycling
over the data; the manifest and the log say so (the authors' code crashes there).
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from infra.stage_kit import finished_stage
from training.common import TrainStageConfig, build_engine_config, finish_stage
from verl.trainer.config import PPOConfig
from verl.utils.dataset import read_records

logger = logging.getLogger(__name__)


def fit_batch_to_data(config: PPOConfig, n_questions: int, world: int) -> str | None:
    """Lower the rollout batch when the dataset is smaller than one batch; returns a note, or None."""
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
        size = next(s for s in range(n_questions, 0, -1) if (s * n) % world == 0)
        actor.micro_batch_size_per_device_for_update = 1
    note = (
        f"dataset has {n_questions} questions, fewer than data.rollout_batch_size={data.rollout_batch_size}: "
        f"rollout batch lowered to {size} (one update per step); the {config.trainer.max_steps} steps cycle "
        "over the data as epochs"
    )
    data.rollout_batch_size = size
    actor.prompts_per_update = size
    return note


def run_solver_stage(config: TrainStageConfig) -> dict:
    """Train the Solver on the pseudo-labelled questions; returns the stage manifest."""
    from verl.trainer.ray_trainer import run_training  # heavy (Ray, torch): only when training

    out = Path(config.out_dir)
    if (done := finished_stage(out, "solver")) is not None:
        return done
    engine = build_engine_config(config)
    engine.data.train_files = config.dataset
    n_questions = len(read_records(config.dataset))
    notes = [note] if (note := fit_batch_to_data(engine, n_questions, config.world)) else []
    for note in notes:
        logger.info("%s", note)
    engine.validate()
    started = time.time()
    if config.device == "cuda":
        os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(config.trainer_devices)
    run_training(engine)
    inputs = {"solver_init": config.model, "dataset": config.dataset}
    return finish_stage(config, engine, inputs, started, notes, {"questions": n_questions})
