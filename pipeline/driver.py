"""The R-Zero iteration driver behind `scripts/main.sh`.

    python -m pipeline.driver [BASE_MODEL] [TAG] [--experiment NAME] [--iterations I] [--profile P]
                              [--preset FILE] [--solver-gpus K] [--set key=value ...] [--dry-run]
                              [--accept-changed-settings]

With no BASE_MODEL it runs the demo: it builds the embedded tiny model (taught the R-Zero output
formats) and runs one iteration with configs/pipeline/demo.yaml on CPU. For i = 1..I:

    challenger        GRPO of Challenger_{i-1} against the frozen Solver_{i-1}   -> iter_i/challenger
    question_generate N questions from Challenger_i                              -> iter_i/question_generate
    question_evaluate Solver_{i-1} answers m times, majority label, band filter  -> iter_i/question_evaluate
    solver            GRPO of Solver_{i-1} on the kept questions                 -> iter_i/solver
    evaluate          benchmarks of Solver_i (and of the base model once)        -> iter_i/evaluate

That is the default experiment, `rzero`. `--experiment NAME` runs another plan of the same stages
(pipeline/experiments.py: no_rl_challenger, no_rep_penalty, no_filter, single_model): which stages
run, which model each starts from and which reward or filter options it gets; `--dry-run` prints it.

Every stage runs in its own process (`pipeline.launch`), reads its inputs from the previous stages'
manifests, writes under `$STORAGE_PATH/<TAG>/iter_<i>/<stage>/` and marks completion last; a rerun
of the same command skips finished stages and resumes the interrupted one.

Before anything starts, the preflight (`pipeline.preflight`) checks the model, the evaluation data,
the GPUs, the disk and a rerun's settings, and lists every problem with its fix (exit code 2).
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from evaluation.synthetic import make_problems, write_problems
from infra.logs import setup_logging
from infra.preflight import EXIT_PREFLIGHT
from infra.stage_kit import EXIT_INTERRUPTED, require_output
from pipeline.config import GENERATED_BENCHMARK, PipelineConfig, load_pipeline_config
from pipeline.describe import describe_run
from pipeline.experiments import BASE, EXPERIMENTS, Step, get_experiment
from pipeline.launch import (
    RESUME_HINT,
    StageFailed,
    StageInterrupted,
    challenger_config,
    evaluate_config,
    generate_config,
    label_config,
    reward_overrides,
    run_engine_configs,
    run_stage,
    solver_config,
)
from pipeline.planner import DevicePlan, plan_for
from pipeline.preflight import ACCEPT_FLAG, Preflight, accepted_record, preflight_run, run_record
from pipeline.reuse import check_reuse_source, link_if_same
from pipeline.summary import write_run_summary
from verl.trainer.config import CONFIG_DIR, ConfigError
from verl.utils.fs import atomic_write_json

logger = logging.getLogger("driver")

DEMO_FORMAT_STEPS = 200
DEMO_PRESET = "configs/pipeline/demo.yaml"


def storage_root() -> Path:
    return Path(os.environ.get("STORAGE_PATH", "storage")).resolve()


_TAG = re.compile(r"^[A-Za-z0-9._-]+$")


def run_tag(base_model: str, given: str | None) -> str:
    """The run's name under $STORAGE_PATH: `given`, or the base model's name (a local folder's own
    name, or the last part of a hub id), lower-cased. A name, never a path: `[A-Za-z0-9._-]+`, not
    `.` or `..`, so the run cannot write outside $STORAGE_PATH. Raises ValueError naming the fix."""
    if given is not None:
        tag = given
    else:
        local = Path(base_model).expanduser()
        # A local folder named by a relative path ("." or "../model") has its name only once resolved.
        name = local.resolve().name if local.is_dir() else base_model.rstrip("/").rsplit("/", 1)[-1]
        tag = name.lower()
    if not _TAG.match(tag) or tag in (".", ".."):
        source = "the TAG given" if given is not None else f"the tag derived from the model {base_model!r}"
        raise ValueError(
            f"{source} ({tag!r}) is not a run name: use letters, digits, '.', '_' and '-' only (not "
            "'.' or '..'), e.g. bash scripts/main.sh MODEL my-run"
        )
    return tag


def ensure_demo_model(root: Path) -> str:
    """The demo's base model: the tiny Qwen3 taught the R-Zero formats (built once, then reused)."""
    from model_zoo.tiny import build_tiny_model  # torch + tokenizers: only for the demo

    path = root / "tiny-qwen3-rzero"
    if not (path / "config.json").is_file():
        logger.info("building the embedded tiny model into %s (about a minute on 2 cores)", path)
        build_tiny_model(path, seed=0, format_steps=DEMO_FORMAT_STEPS)
    return str(path)


class Driver:
    def __init__(
        self, base_model: str, tag: str, pipe: PipelineConfig, plan: DevicePlan, preset: str | None
    ) -> None:
        self.base_model, self.tag, self.pipe, self.plan, self.preset = base_model, tag, pipe, plan, preset
        self.run_dir = storage_root() / tag
        self.eval_files: dict[str, str] = {}  # benchmark -> file this run generated
        # another run whose identical finished stages this run links instead of running (pipeline/reuse.py)
        self.reuse_source = (
            check_reuse_source(pipe.reuse_from, self.run_dir, base_model) if pipe.reuse_from else None
        )

    def describe(self) -> str:
        return describe_run(self.base_model, self.tag, self.run_dir, self.pipe, self.plan)

    def record(self) -> dict:
        return run_record(self.base_model, self.tag, self.pipe, self.plan, self.preset)

    def preflight(self, accept_changes: bool, model_is_built: bool) -> Preflight:
        return preflight_run(
            self.base_model,
            self.run_dir,
            self.pipe,
            self.plan,
            self.record(),
            lambda: run_engine_configs(self.pipe, self.plan, self.base_model, self.run_dir),
            accept_changes,
            model_is_built,
        )

    def run(self) -> str:
        """Every iteration, stage by stage, as the experiment's plan says; returns the final Solver."""
        # 0700: the run's models, checkpoints (unpickled on resume) and data are its user's alone.
        self.run_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        atomic_write_json(self.run_dir / "run.json", accepted_record(self.run_dir, self.record()))
        self._write_generated_benchmark()
        experiment = get_experiment(self.pipe.experiment)
        self._evaluate(self.base_model, "eval_base", "base")
        for i in range(1, self.pipe.iterations + 1):
            try:
                for step in experiment.iteration(i):
                    self.run_step(step, i)
            except StageFailed:
                # What the iteration did before the failure (counts, drop reasons, reward curves) is
                # what explains it: the summary lists the finished stages and the unfinished one.
                logger.info("summary so far: %s", write_run_summary(self.run_dir, i))
                raise
            logger.info("iteration %d summary: %s", i, write_run_summary(self.run_dir, i))
        solver = self._model(experiment.solver_ref(self.pipe.iterations))
        logger.info("done: final Solver %s; summary %s", solver, self.run_dir / "summary.md")
        return solver

    def _model(self, ref: str) -> str:
        """The model a plan reference names: the base model, or a finished stage's output model."""
        return self.base_model if ref == BASE else require_output(self.run_dir / ref, "model")

    def run_step(self, step: Step, i: int) -> None:
        """Build the stage's config from the step (models, input, options) and run it.

        Training stages keep the run's seed; sampling stages draw fresh samples every iteration."""
        p, plan = self.pipe, self.plan
        model = self._model(step.model)
        if step.stage == "evaluate":
            self._evaluate(model, step.out, step.options.get("label", f"iter_{i}"))
            return
        if step.stage == "challenger":
            solver = self._model(step.solver)
            reward = reward_overrides(step.options)

            def build(out: Path) -> Any:
                return challenger_config(p, plan, solver, model, out, p.seed, reward)

        elif step.stage == "question_generate":

            def build(out: Path) -> Any:
                return generate_config(p, plan, model, out, p.seed + i)

        elif step.stage == "question_evaluate":
            questions = require_output(self.run_dir / step.data, "questions")

            def build(out: Path) -> Any:
                return label_config(p, plan, model, questions, out, p.seed + i, step.options.get("band"))

        elif step.stage == "solver":
            dataset = require_output(self.run_dir / step.data, "dataset")

            def build(out: Path) -> Any:
                return solver_config(p, plan, model, dataset, out, p.seed)

        else:
            raise ValueError(f"the plan names an unknown stage '{step.stage}'")
        self._launch(step.stage, step.out, build)

    def _launch(self, stage: str, rel: str, build: Callable[[Path], Any]) -> None:
        """Run the stage in `run_dir/rel` (skipped when finished), unless `reuse_from` holds the very
        stage this run would launch (pipeline/reuse.py): then that folder is linked here instead."""
        if self.reuse_source is not None:
            link_if_same(self.reuse_source, self.run_dir, rel, stage, build)
        out = self.run_dir / rel
        run_stage(stage, out, build(out))

    def _write_generated_benchmark(self) -> None:
        """The demo's benchmark: generated arithmetic word problems, written once into the run folder."""
        n = self.pipe.eval_generated_items
        if not (self.pipe.evaluate and n > 0):
            return
        path = self.run_dir / "eval_data" / f"arithmetic_{n}_seed{self.pipe.seed}.jsonl"
        if not path.is_file():
            write_problems(path, make_problems(n, seed=self.pipe.seed))
        if self.reuse_source is not None:
            # the same problems in the other run's file: its evaluations were of this benchmark
            other = self.reuse_source / "eval_data" / path.name
            if other.is_file() and other.read_bytes() == path.read_bytes():
                path = other
        self.eval_files[GENERATED_BENCHMARK] = str(path)
        logger.info(
            "evaluation: %d generated arithmetic problems in the %s slot: %s", n, GENERATED_BENCHMARK, path
        )

    def _evaluate(self, model: str, rel: str, label: str) -> None:
        if not self.pipe.evaluate:
            logger.info("evaluation of %s skipped (pipeline setting evaluate=false)", label)
            return

        def build(out: Path) -> Any:
            return evaluate_config(self.pipe, model, out, label, self.eval_files, self.plan)

        self._launch("evaluate", rel, build)


def _pipeline_sets(args: argparse.Namespace) -> list[str]:
    sets = list(args.set)
    if args.iterations is not None:
        sets.append(f"iterations={args.iterations}")
    if args.profile:
        sets.append(f"profile={args.profile}")
    if args.experiment:
        sets.append(f"experiment={args.experiment}")
    if args.solver_gpus is not None:
        sets.append(f"solver_gpus={args.solver_gpus}")
    if args.gpu_mem is not None:
        sets.append(f"gpu_mem_gib={args.gpu_mem}")
    if args.reuse_from:
        sets.append(f"reuse_from={args.reuse_from}")
    return sets


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("base_model", nargs="?", default=None, help="HF model id or folder (none: the demo)")
    parser.add_argument(
        "tag", nargs="?", default=None, help="run name under $STORAGE_PATH (default: from the model)"
    )
    parser.add_argument(
        "--iterations", type=int, default=None, help="default: the profile's (paper 3, rzero_code 5)"
    )
    parser.add_argument("--profile", default=None, choices=["paper", "rzero_code"])
    parser.add_argument(
        "--experiment",
        default=None,
        choices=list(EXPERIMENTS),
        help="the plan the iterations follow (pipeline/experiments.py; default rzero, the paper's loop)",
    )
    parser.add_argument("--preset", default=None, help=f"pipeline preset yaml (the demo uses {DEMO_PRESET})")
    parser.add_argument(
        "--reuse-from",
        default=None,
        metavar="RUN_DIR",
        help="link another run's finished stages where this run would launch the very same stage "
        "(same models, inputs, seeds, settings), e.g. an ablation's iteration-1 Challenger from the main run",
    )
    parser.add_argument(
        "--solver-gpus", type=int, default=None, help="GPUs for the Solver servers (default half)"
    )
    parser.add_argument(
        "--gpu-mem", type=float, default=None, help="GiB per GPU for the memory plan (default nvidia-smi)"
    )
    parser.add_argument("--set", action="append", default=[], help="pipeline setting key=value (repeatable)")
    parser.add_argument(
        "--dry-run", action="store_true", help="print the plan, every setting and the preflight; run nothing"
    )
    parser.add_argument(
        ACCEPT_FLAG,
        dest="accept_changed_settings",
        action="store_true",
        help="rerun a tag with settings that differ from its run.json (the changes are recorded there)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    setup_logging()
    args = build_parser().parse_args(argv)
    demo = args.base_model is None
    preset = args.preset or (DEMO_PRESET if demo else None)
    try:
        pipe = load_pipeline_config(preset, _pipeline_sets(args))
        plan = plan_for(pipe)
    except (ConfigError, ValueError) as e:
        print(f"config error: {e}", file=sys.stderr)
        return EXIT_PREFLIGHT
    if plan.kind == "cpu":
        # (VLLM_CPU_KVCACHE_SPACE: each engine entry point picks one that fits, infra.cpu_kvcache.)
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    if demo:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
    base = str(storage_root() / "tiny-qwen3-rzero") if demo else args.base_model
    try:
        tag = run_tag(base, args.tag or ("demo" if demo else None))
    except ValueError as e:
        print(f"config error: {e}", file=sys.stderr)
        return EXIT_PREFLIGHT
    try:
        driver = Driver(base, tag, pipe, plan, str(CONFIG_DIR.parent / preset) if preset else None)
    except ConfigError as e:
        print(f"config error: {e}", file=sys.stderr)
        return EXIT_PREFLIGHT
    checked = driver.preflight(args.accept_changed_settings, model_is_built=demo)
    if args.dry_run:
        return _dry_run(driver, checked)
    if checked.problems:
        print(checked.report(), file=sys.stderr, flush=True)
        return EXIT_PREFLIGHT
    print(checked.report(), flush=True)
    try:
        if demo:
            ensure_demo_model(storage_root())
        print(driver.describe(), flush=True)
        driver.run()
    except ConfigError as e:
        print(f"config error: {e}", file=sys.stderr)
        return EXIT_PREFLIGHT
    except StageInterrupted as e:
        logger.warning("%s", e)
        return EXIT_INTERRUPTED
    except KeyboardInterrupt:  # between stages (summary, model build): nothing half-written counts
        logger.warning("interrupted; %s", RESUME_HINT)
        return EXIT_INTERRUPTED
    except StageFailed as e:
        logger.error("%s", e)
        return 1
    return 0


def _dry_run(driver: Driver, checked: Preflight) -> int:
    """Print the plan and the preflight's findings; start nothing."""
    try:
        print(driver.describe(), flush=True)
    except ConfigError as e:
        print(f"config error: {e}", file=sys.stderr)
        return EXIT_PREFLIGHT
    print("\n" + checked.report(), flush=True)
    if checked.problems:
        print("(a real run would stop here with exit code 2)", flush=True)
    print("\n--dry-run: nothing was started", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
