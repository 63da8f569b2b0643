"""The one way a stage is launched: build its config from the pipeline settings and the device plan,
write it into the stage folder as `stage_config.json`, run `python -m <stage> --config FILE` in its
own process, and take the stage's manifest (written last by the stage) as the sign it finished.

The driver launches every stage this way; `scripts/questioner_train.sh` and `scripts/solver_train.sh`
launch one training stage alone through this module's CLI:

    python -m pipeline.launch challenger SOLVER_MODEL CHALLENGER_INIT OUT_DIR [--preset P] [k=v ...]
    python -m pipeline.launch solver SOLVER_INIT DATASET OUT_DIR [--preset P] [k=v ...]
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from infra.logs import setup_logging
from infra.preflight import EXIT_PREFLIGHT
from infra.stage_kit import EXIT_INTERRUPTED, finished_stage, is_done, read_manifest, write_stage_config
from infra.vllm_engines import EngineOptions
from pipeline.config import PipelineConfig, load_pipeline_config
from pipeline.experiments import get_experiment
from pipeline.planner import DevicePlan, plan_for
from pipeline.preflight import preflight_stage
from question_evaluate.pseudo_label import LabelConfig
from question_generate.generate import GenerateConfig
from rzero.profiles import PROFILES
from training.common import TrainStageConfig, build_engine_config
from verl.trainer.config import CONFIG_DIR

logger = logging.getLogger(__name__)

PROJECT_ROOT = CONFIG_DIR.parent
STAGE_CONFIG = "stage_config.json"
# The Python module each stage runs as (`python -m MODULE --config FILE`).
STAGE_MODULES = {
    "challenger": "training",
    "question_generate": "question_generate",
    "question_evaluate": "question_evaluate",
    "solver": "training",
    "evaluate": "evaluation",
}


class StageFailed(RuntimeError):
    """A stage process failed; the message says which and how to resume."""


class StageInterrupted(StageFailed):
    """Ctrl-C (or SIGTERM) stopped a stage; the same command resumes it."""


RESUME_HINT = (
    "rerun the same command to resume (finished stages are skipped, a training stage resumes from its "
    "last checkpoint, question generation keeps its finished shards)"
)
# After Ctrl-C, how long the stage (which got the same SIGINT) may take to stop by itself.
INTERRUPT_GRACE_S = 60.0


def run_process(cmd: list[str]) -> int:
    """Run a stage process (in the project root) to its end and return its exit code. On Ctrl-C
    (the terminal sent SIGINT to the stage as well) wait for it to stop, then re-raise."""
    proc = subprocess.Popen(cmd, cwd=PROJECT_ROOT)
    try:
        return proc.wait()
    except KeyboardInterrupt:
        _stop(proc)
        raise


def _stop(proc: subprocess.Popen) -> int:
    """Wait for a stage that got Ctrl-C to exit; terminate it, then kill it, if it does not."""
    for send, wait_s in ((None, INTERRUPT_GRACE_S), (proc.terminate, 15.0), (proc.kill, None)):
        if send is not None:
            send()
        try:
            return proc.wait(timeout=wait_s)
        except subprocess.TimeoutExpired:
            continue
    return proc.wait()


def run_stage(stage: str, stage_dir: Path, config: Any) -> dict:
    """Run one stage unless its manifest says it is done; return its manifest."""
    if (manifest := finished_stage(stage_dir, stage)) is not None:
        return manifest
    stage_dir.mkdir(parents=True, exist_ok=True)
    config_path = write_stage_config(stage_dir / STAGE_CONFIG, config)
    cmd = [sys.executable, "-m", STAGE_MODULES[stage], "--config", str(config_path)]
    logger.info("%s/%s: %s", stage_dir.parent.name, stage, " ".join(cmd))
    started = time.time()
    try:
        returncode = run_process(cmd)
    except KeyboardInterrupt:
        raise StageInterrupted(
            f"stage {stage} interrupted after {time.time() - started:.0f}s; nothing it finished is lost: "
            + RESUME_HINT
        ) from None
    if returncode in (EXIT_INTERRUPTED, -signal.SIGINT, -signal.SIGTERM):
        raise StageInterrupted(
            f"stage {stage} was stopped by a signal (exit code {returncode}); {RESUME_HINT}"
        )
    if returncode != 0:
        raise StageFailed(
            f"stage {stage} failed with exit code {returncode} after {time.time() - started:.0f}s; "
            "fix the cause and rerun the same command to resume"
        )
    manifest = read_manifest(stage_dir)
    if manifest is None:
        raise StageFailed(f"stage {stage} exited 0 but wrote no manifest in {stage_dir}")
    return manifest


def engine_args(pipe: PipelineConfig, stage: str) -> list[str]:
    """The run's engine files and overrides for a training stage, in precedence order."""
    extra = pipe.challenger_overrides if stage == "challenger" else pipe.solver_overrides
    return [*[f"config={p}" for p in pipe.engine_configs], *pipe.engine_overrides, *extra]


def challenger_prompt_args(pipe: PipelineConfig, seed: int) -> list[str]:
    """The run's Challenger prompt for its GRPO, the one question generation uses (`prompt_variant`,
    `challenger.persona_file`, the seed of the persona draws): the prompt source's kwargs."""
    key = "data.prompt_source_kwargs"
    args = [f"{key}.variant={pipe.prompt_variant}", f"{key}.seed={seed}"]
    if pipe.challenger.persona_file:
        args.append(f"{key}.persona_file={pipe.challenger.persona_file}")
    return args


def challenger_config(
    pipe: PipelineConfig,
    plan: DevicePlan,
    solver: str,
    challenger: str,
    out: Path,
    seed: int,
    extra: list[str] = (),
) -> TrainStageConfig:
    cuda = plan.kind == "cuda"
    return TrainStageConfig(
        stage="challenger",
        model=challenger,
        out_dir=str(out),
        profile=pipe.profile,
        solver_model=solver,
        engine_args=[*challenger_prompt_args(pipe, seed), *engine_args(pipe, "challenger"), *extra],
        device=plan.kind,
        world=plan.trainer_world,
        trainer_devices=list(plan.challenger_trainer) if cuda else [],
        solver_devices=list(plan.challenger_solver) if cuda else [],
        shared_gpu=plan.shared_gpu,
        seed=seed,
        solver_servers=plan.solver_servers,
    )


def solver_config(
    pipe: PipelineConfig,
    plan: DevicePlan,
    solver: str,
    dataset: str,
    out: Path,
    seed: int,
    extra: list[str] = (),
) -> TrainStageConfig:
    return TrainStageConfig(
        stage="solver",
        model=solver,
        out_dir=str(out),
        profile=pipe.profile,
        dataset=dataset,
        engine_args=[*engine_args(pipe, "solver"), *extra],
        device=plan.kind,
        world=plan.solver_world,
        trainer_devices=list(plan.devices) if plan.kind == "cuda" else [],
        seed=seed,
    )


def reward_overrides(options: Mapping[str, Any]) -> list[str]:
    """Engine overrides for a plan step's `reward_kwargs` option (the Challenger reward's kwargs)."""
    kwargs = options.get("reward_kwargs") or {}
    return [f"worker.reward.reward_kwargs.{key}={value}" for key, value in kwargs.items()]


def run_engine_configs(
    pipe: PipelineConfig, plan: DevicePlan, base: str, run_dir: Path
) -> list[tuple[str, Any]]:
    """(stage, validated effective engine config) of each training stage the run's experiment runs
    in an iteration (both, or the Solver's alone), as its first iteration launches it from `base`."""
    steps = {step.stage: step for step in get_experiment(pipe.experiment).iteration(1)}
    configs = []
    if "challenger" in steps:
        extra = reward_overrides(steps["challenger"].options)
        config = challenger_config(pipe, plan, base, base, run_dir, pipe.seed, extra)
        configs.append(("challenger", build_engine_config(config)))
    configs.append(
        ("solver", build_engine_config(solver_config(pipe, plan, base, "<dataset>", run_dir, pipe.seed)))
    )
    for _, config in configs:
        config.validate(check_paths=False)
    return configs


def generate_config(
    pipe: PipelineConfig, plan: DevicePlan, challenger: str, out: Path, seed: int
) -> GenerateConfig:
    # Prompt + answer room for the engine.
    engine = EngineOptions(
        devices=list(plan.devices),
        max_model_len=pipe.gen_max_tokens + 1024,
        cpu_shards=plan.engine_shards,
        seed_mode=pipe.engine_seed_mode,
    )
    return GenerateConfig(
        model=challenger,
        out_dir=str(out),
        num_questions=pipe.num_questions,
        variant=pipe.prompt_variant,
        persona_file=pipe.challenger.persona_file,
        temperature=pipe.gen_temperature,
        top_p=pipe.gen_top_p,
        max_tokens=pipe.gen_max_tokens,
        seed=seed,
        profile=pipe.profile,
        engine=engine,
    )


def label_config(
    pipe: PipelineConfig,
    plan: DevicePlan,
    solver: str,
    questions: str,
    out: Path,
    seed: int,
    band: tuple[float, float] | None = None,
) -> LabelConfig:
    """`band`: the kept p̂ band when the experiment sets one (None: the profile's)."""
    # The longest question the Challenger can write, the chat markup, and the answer.
    engine = EngineOptions(
        devices=list(plan.devices),
        max_model_len=pipe.gen_max_tokens + 512 + pipe.label_max_tokens,
        cpu_shards=plan.engine_shards,
        seed_mode=pipe.engine_seed_mode,
    )
    return LabelConfig(
        solver=solver,
        questions=questions,
        out_dir=str(out),
        profile=pipe.profile,
        votes=pipe.votes or None,
        max_tokens=pipe.label_max_tokens,
        seed=seed,
        band=tuple(band) if band is not None else None,
        engine=engine,
    )


def evaluate_config(
    pipe: PipelineConfig,
    model: str,
    out: Path,
    label: str,
    data: dict[str, str] | None = None,
    plan: DevicePlan | None = None,
) -> dict[str, Any]:
    """Options of `python -m evaluation --config FILE` (the evaluation CLI's own option names).

    `data`: benchmark -> local file, on top of `pipe.eval_data` (the run's generated benchmark).
    `plan`: on CPU, its `engine_shards` engines (when > 1; on GPUs one per device group)."""
    config: dict[str, Any] = {"model": model, "out": str(out), "label": label, "seed": pipe.seed}
    if pipe.eval_benchmarks:
        config["benchmarks"] = list(pipe.eval_benchmarks)
    if pipe.eval_data_dir:
        config["data_dir"] = pipe.eval_data_dir
    if files := {**pipe.eval_data, **(data or {})}:
        config["data"] = files
    if pipe.eval_max_tokens:
        config["max_tokens"] = pipe.eval_max_tokens
    if pipe.eval_max_model_len:
        config["max_model_len"] = pipe.eval_max_model_len
    if pipe.eval_grader_workers:
        config["grader_workers"] = pipe.eval_grader_workers
    if plan is not None and plan.kind == "cpu" and plan.engine_shards > 1:
        config["data_parallel_size"] = plan.engine_shards
    return config


def main(argv: list[str] | None = None) -> int:
    """Run one training stage alone (scripts/questioner_train.sh, scripts/solver_train.sh)."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("stage", choices=["challenger", "solver"])
    parser.add_argument("model", help="challenger: the frozen Solver; solver: the Solver to train")
    parser.add_argument("input", help="challenger: the Challenger to train; solver: the dataset (parquet)")
    parser.add_argument("out_dir")
    parser.add_argument(
        "--preset", default=None, help="pipeline preset yaml (e.g. configs/pipeline/demo.yaml)"
    )
    parser.add_argument("--profile", default=None, choices=tuple(PROFILES))
    parser.add_argument("--set", action="append", default=[], help="pipeline setting key=value")
    parser.add_argument("overrides", nargs="*", help="engine config key=value for this stage")
    args = parser.parse_args(argv)
    setup_logging()
    pipe = load_pipeline_config(
        args.preset, list(args.set) + ([f"profile={args.profile}"] if args.profile else [])
    )
    plan = plan_for(pipe)
    if plan.kind == "cpu":
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    out = Path(args.out_dir)
    if args.stage == "challenger":
        config = challenger_config(pipe, plan, args.model, args.input, out, pipe.seed, args.overrides)
    else:
        config = solver_config(pipe, plan, args.model, args.input, out, pipe.seed, args.overrides)
    if not is_done(out):  # a finished stage needs nothing (run_stage says it is skipped)
        checked = preflight_stage(config, plan)
        print(checked.report(), file=sys.stderr if checked.problems else sys.stdout, flush=True)
        if checked.problems:
            return EXIT_PREFLIGHT
    try:
        run_stage(args.stage, out, config)
    except StageInterrupted as e:
        logger.warning("%s", e)
        return EXIT_INTERRUPTED
    except StageFailed as e:
        logger.error("%s", e)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
