"""What both training stages share: their launch config, the engine config built from it (the one
place it is built, also for the driver's dry run), and the stage's end (checks and manifest)."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from infra.stage_kit import read_manifest, write_manifest
from rzero.profiles import get_profile
from rzero.prompts import SOLVER_SYSTEM_PROMPT
from verl.trainer.config import CONFIG_DIR, PPOConfig, load_config
from verl.utils import checkpoint as ckpt

logger = logging.getLogger(__name__)

STAGES = ("challenger", "solver")


@dataclass
class TrainStageConfig:
    """One training stage, as the driver launches it (`python -m training --config FILE`).

    model: the model this stage trains (Challenger_{i-1} or Solver_{i-1}); also its KL reference.
    solver_model: challenger stage: the frozen Solver its reward queries.
    dataset: solver stage: the pseudo-labelled train.parquet.
    engine_args: `config=FILE` and `key=value` items layered over the stage yaml, in order.
    device: "cuda" or "cpu"; world: training ranks; trainer_devices / solver_devices: GPU ids of the
    trainer and (challenger stage) of the Solver servers; shared_gpu: both on one GPU;
    solver_servers: Solver servers on CPU (on CUDA: one per group of `solver_devices`).
    """

    stage: str
    model: str
    out_dir: str
    profile: str = "paper"
    solver_model: str = ""
    dataset: str = ""
    engine_args: list[str] = field(default_factory=list)
    device: str = "cpu"
    world: int = 2
    trainer_devices: list[str] = field(default_factory=list)
    solver_devices: list[str] = field(default_factory=list)
    shared_gpu: bool = False
    seed: int = 0
    solver_servers: int = 1

    @classmethod
    def from_dict(cls, data: dict) -> TrainStageConfig:
        config = cls(**data)
        if config.stage not in STAGES:
            raise ValueError(f"stage '{config.stage}' is unknown: use one of {', '.join(STAGES)}")
        return config


def build_engine_config(config: TrainStageConfig) -> PPOConfig:
    """The effective engine config of a training stage (not yet validated).

    Layers, lowest first: engine defaults < the profile's overlay for this role (and the Solver
    prompt for the solver stage) < configs/<stage>.yaml < the run's engine files and overrides.
    """
    overlay = dict(get_profile(config.profile).engine_overlay(config.stage))
    overlays = [(f"profile '{config.profile}' ({config.stage})", overlay)]
    if config.stage == "solver":
        # The prompt p̂ was measured with (rzero/prompts.py), written once.
        overlays.append(("the Solver prompt", {"data": {"system_prompt": SOLVER_SYSTEM_PROMPT}}))
    args = [
        f"config={CONFIG_DIR / f'{config.stage}.yaml'}",
        f"worker.actor.model.model_path={config.model}",
        f"trainer.output_dir={Path(config.out_dir) / 'train'}",
        f"trainer.n_devices_per_node={config.world}",
        f"trainer.device={config.device}",
        f"trainer.seed={config.seed}",
        *config.engine_args,
    ]
    return load_config(args, overlays=overlays)


def _trainer_memory(output_dir: str) -> dict:
    """The trainer's process_memory.json ({} when this run resumed past its last step)."""
    path = Path(output_dir) / "process_memory.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def finish_stage(
    config: TrainStageConfig,
    engine: PPOConfig,
    inputs: dict,
    started: float,
    notes: list[str],
    counts: dict,
    memory_mib: dict | None = None,
) -> dict:
    """Check that training reached its last step and exported it; write the manifest (last).

    The manifest's `peak_rss_mib` adds the trainer's `process_memory.json` (Ray workers, reward
    actor) to `memory_mib` (e.g. the Solver servers')."""
    step = ckpt.latest_step(engine.trainer.output_dir)
    if step != engine.trainer.max_steps:
        raise RuntimeError(
            f"{config.stage} stage: training ended at step {step}, expected {engine.trainer.max_steps}"
        )
    hf = ckpt.step_dir(engine.trainer.output_dir, step) / "hf"
    if not (hf / "config.json").is_file():
        raise RuntimeError(f"{config.stage} stage: the last step has no HF export at {hf}")
    write_manifest(
        config.out_dir,
        config.stage,
        outputs={"model": str(hf), "metrics": str(Path(engine.trainer.output_dir) / "metrics.jsonl")},
        inputs=inputs,
        config={"profile": config.profile, **engine.to_dict()},
        counts={"steps": step, **counts},
        timings_s={"total": time.time() - started},
        notes=notes,
        memory_mib={**_trainer_memory(engine.trainer.output_dir), **(memory_mib or {})},
    )
    logger.info("%s stage done: model %s", config.stage, hf)
    return read_manifest(config.out_dir) or {}
