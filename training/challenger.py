"""Challenger stage: GRPO of the Challenger against the frozen Solver (RZERO_SPEC.md section 2).

Start the frozen Solver as vLLM servers (on the GPUs the plan reserves for them; on CPU as many as
the plan says, one by default),
train the Challenger for exactly `trainer.max_steps` steps with the challenger reward, stop the
servers (also on error or Ctrl-C), record the HF folder of the last step in the manifest.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from infra.stage_kit import finished_stage
from solver_service.server import SolverService
from training.common import TrainStageConfig, build_engine_config, finish_stage
from verl.utils.fs import atomic_write_json
from verl.utils.import_utils import load_function
from verl.utils.vllm_runner import model_runner_env

logger = logging.getLogger(__name__)


def run_challenger_stage(config: TrainStageConfig) -> dict:
    """Train the Challenger against the frozen Solver; returns the stage manifest."""
    from verl.trainer.ray_trainer import run_training  # heavy (Ray, torch): only when training

    out = Path(config.out_dir)
    if (done := finished_stage(out, "challenger")) is not None:
        return done
    engine = build_engine_config(config)
    kwargs = engine.worker.reward.reward_kwargs
    endpoints_file = out / "solver_endpoints.json"
    kwargs["solver_endpoints_file"] = str(endpoints_file)
    engine.validate()  # before any server or worker starts
    if engine.data.prompt_source:
        # The prompt settings too (a missing or empty persona file): one prompt, before any model loads.
        load_function(engine.data.prompt_source)(**{**engine.data.prompt_source_kwargs, "num_prompts": 1})
    started = time.time()
    # The solver needs room for the longest question the Challenger can write plus its answer.
    solver_len = engine.data.max_response_length + 512 + int(kwargs.get("solver_max_tokens", 4096))
    on_gpu = config.device == "cuda"
    if on_gpu:
        # Ray (started by this process) must only see the trainer's GPUs; the servers get theirs.
        os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(config.trainer_devices)
        if config.shared_gpu:
            engine.worker.rollout.gpu_memory_utilization = min(
                engine.worker.rollout.gpu_memory_utilization, 0.35
            )
    service = SolverService(
        config.solver_model,
        out / "solver_service",
        config.solver_devices or None,
        dtype="auto" if on_gpu else "float32",
        max_model_len=solver_len,
        enforce_eager=not on_gpu,
        gpu_memory_utilization=0.25 if config.shared_gpu else None,
        seed=config.seed,
        cpu_servers=config.solver_servers,
        # the rollout's vLLM model runner (worker.rollout.model_runner) for the Solver's servers too
        env=model_runner_env(engine.worker.rollout.model_runner),
    )
    logger.info("starting %d Solver server(s) for %s", len(service.servers), config.solver_model)
    with service:
        atomic_write_json(
            endpoints_file,
            {
                "endpoints": service.endpoints,
                "model_name": service.model_name,
                "model": config.solver_model,
                "max_model_len": solver_len,
                "pids": service.pids,
            },
        )
        logger.info("Solver ready at %s; training %d steps", service.endpoints, engine.trainer.max_steps)
        run_training(engine)
        servers_mib = service.peak_rss_mib()  # while they still run
    inputs = {"solver_model": config.solver_model, "challenger_init": config.model}
    counts = {"solver_servers": len(service.servers)}
    return finish_stage(config, engine, inputs, started, [], counts, {"solver_servers": servers_mib})
