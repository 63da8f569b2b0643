"""The run's preflight: everything `scripts/main.sh` can check in seconds before the first stage,
every problem listed at once with its fix (the driver exits 2; `--dry-run` prints the list).

- the base model is reachable (local folder, or a hub id that resolves or is cached);
- the evaluation data of every benchmark is reachable (a local file, the generated benchmark, or the
  hub), or evaluation is off;
- the GPUs of the plan exist, and both training stages' engine configs are valid on it;
- the disk holding the run has room for the checkpoints it keeps: parameters x bytes per parameter
  x checkpoints kept per stage (trainer.save_limit) x training stages;
- a rerun of a tag uses the settings recorded in its run.json, or `--accept-changed-settings`.

The training stage scripts run `preflight_stage` (models, dataset, GPUs, disk of one stage).
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evaluation.preflight import describe_missing, unavailable_benchmarks
from evaluation.registry import DEFAULT_BENCHMARKS, resolve_name
from infra.preflight import (
    Problem,
    check_files,
    check_gpus,
    check_model,
    free_bytes,
    hub_offline,
    human_bytes,
    human_count,
    model_parameters,
    offline_note,
    probe_hub,
)
from pipeline.config import GENERATED_BENCHMARK, PipelineConfig
from pipeline.planner import DevicePlan
from training.common import TrainStageConfig, build_engine_config
from verl.trainer.config import ConfigError

ACCEPT_FLAG = "--accept-changed-settings"
OPTIMIZER_BYTES_PER_PARAM = 12  # fp32 sharded parameters + AdamW's two fp32 moments


@dataclass
class Preflight:
    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def report(self) -> str:
        lines = [f"preflight: {n}" for n in self.notes]
        if not self.problems:
            return "\n".join([*lines, "preflight: ok"])
        lines.append(f"preflight: {len(self.problems)} problem(s); nothing was started.")
        for i, p in enumerate(self.problems, 1):
            lines += [f"  {i}. {p.what}", f"     fix: {p.fix}"]
        return "\n".join(lines)


def run_record(base_model: str, tag: str, pipe: PipelineConfig, plan: DevicePlan, preset: str | None) -> dict:
    """What run.json records of a run's settings (a rerun must match it)."""
    return {
        "base_model": base_model,
        "tag": tag,
        "experiment": pipe.experiment,
        "profile": pipe.profile,
        "iterations": pipe.iterations,
        "preset": preset,
        "plan": plan.to_dict(),
        "pipeline": pipe.to_dict(),
    }


# ----------------------------------------------------------------------------- settings of a rerun


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        flat: dict[str, Any] = {}
        for key, item in value.items():
            flat.update(_flatten(item, f"{prefix}{key}."))
        return flat
    return {prefix.rstrip("."): value}


def settings_changes(recorded: dict, requested: dict) -> list[str]:
    """`key: old -> new` for each setting that differs (keys as dotted paths). A setting the older
    run.json does not have counts only when it is not at its default."""
    old, new = _flatten(recorded), _flatten(requested)
    # (an older run.json names no experiment: it ran the default one)
    defaults = _flatten(
        {
            "pipeline": PipelineConfig().to_dict(),
            "experiment": PipelineConfig().experiment,
            # (plan counts an older run.json does not have: their defaults are what it ran)
            "plan": {"cpu_challenger_ranks": 0, "cpu_solver_servers": 1, "cpu_shards": 1},
        }
    )
    changes = []
    for key in sorted(set(old) | set(new)):
        if key in ("changes",) or key.startswith("changes."):
            continue
        if key not in old and key in defaults and new.get(key) == defaults[key]:
            continue
        if old.get(key, "(absent)") != new.get(key, "(absent)"):
            changes.append(f"{key}: {old.get(key, '(absent)')!r} -> {new.get(key, '(absent)')!r}")
    return changes


def check_rerun(run_dir: Path, record: dict, accept: bool) -> tuple[list[Problem], list[str]]:
    path = run_dir / "run.json"
    if not path.is_file():
        return [], []
    try:
        recorded = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        return [
            Problem(f"{path} is unreadable ({e})", "delete it to start the tag afresh, or use another tag")
        ], []
    changes = settings_changes(recorded, record)
    if not changes:
        return [], [f"rerun of '{run_dir.name}' with its recorded settings: finished stages are skipped"]
    listing = "; ".join(changes)
    if accept:
        return [], [f"settings differ from {path} and are accepted ({ACCEPT_FLAG}): {listing}"]
    return [
        Problem(
            f"this rerun of '{run_dir.name}' differs from its {path}: {listing}",
            f"rerun with the recorded settings, use another tag, or add {ACCEPT_FLAG} to go on with "
            "these (finished stages keep the outputs of the old settings)",
        )
    ], []


def accepted_record(run_dir: Path, record: dict) -> dict:
    """The new run.json after accepted changes: the changes are appended to its history."""
    path = run_dir / "run.json"
    if not path.is_file():
        return record
    recorded = json.loads(path.read_text())
    changes = settings_changes(recorded, record)
    history = list(recorded.get("changes", []))
    if changes:
        history.append({"at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "changes": changes})
    return {**record, "changes": history} if history else record


# ----------------------------------------------------------------------------- evaluation data


def eval_benchmarks(pipe: PipelineConfig) -> list[str]:
    return [resolve_name(n) for n in (pipe.eval_benchmarks or DEFAULT_BENCHMARKS)]


def check_eval_data(pipe: PipelineConfig) -> list[Problem]:
    if not pipe.evaluate:
        return []
    try:
        names = eval_benchmarks(pipe)
    except KeyError as e:
        return [Problem(f"eval_benchmarks: {e}", "use names from `python -m evaluation list`")]
    if pipe.eval_generated_items > 0:  # the generated benchmark takes this slot; written at run time
        names = [n for n in names if n != GENERATED_BENCHMARK]
    missing = unavailable_benchmarks(names, pipe.eval_data, pipe.eval_data_dir or None)
    if not missing:
        return []
    return [
        Problem(
            f"evaluation data missing for {len(missing)} of {len(names)} benchmark(s): "
            f"{describe_missing(missing)}",
            "point at local files: --set eval_data_dir=DIR with <benchmark>.jsonl/.json/.parquet/.csv "
            "(names and aliases: python -m evaluation list) or --set eval_data.NAME=FILE; "
            "or turn evaluation off: --set evaluate=false",
        )
    ]


# ----------------------------------------------------------------------------- disk


def checkpoints_kept(config: Any) -> int:
    """Checkpoints a training stage leaves: one per save (the last step always), at most save_limit."""
    t = config.trainer
    steps = max(1, t.max_steps)
    saves = 1 if t.save_freq <= 0 else math.ceil(steps / t.save_freq)
    return saves if t.save_limit < 0 else max(1, min(saves, t.save_limit))


def checkpoint_bytes_per_param(config: Any, on_gpu: bool) -> int:
    hf = (2 if on_gpu else 4) if config.trainer.export_hf else 0  # the hf/ folder: bf16 on GPU
    return OPTIMIZER_BYTES_PER_PARAM + hf


def existing_checkpoint_bytes(run_dir: Path) -> int:
    total = 0
    for root, _, files in os.walk(run_dir):
        if "/checkpoints" in root:
            total += sum(os.path.getsize(os.path.join(root, f)) for f in files)
    return total


def check_disk(
    params: int | None, stages: list[tuple[str, Any]], on_gpu: bool, run_dir: Path
) -> tuple[list[Problem], list[str]]:
    """`stages`: (name, engine config) of every training stage the run will run."""
    if not params:
        return [], ["disk: the model's size is not known before download; checkpoint space not checked"]
    per_stage = [params * checkpoint_bytes_per_param(c, on_gpu) * checkpoints_kept(c) for _, c in stages]
    need = max(0, sum(per_stage) - existing_checkpoint_bytes(run_dir))
    free = free_bytes(run_dir)
    kept = sorted({checkpoints_kept(c) for _, c in stages})
    bytes_pp = sorted({checkpoint_bytes_per_param(c, on_gpu) for _, c in stages})
    detail = (
        f"{human_count(params)} parameters x {'/'.join(map(str, bytes_pp))} bytes x "
        f"{'/'.join(map(str, kept))} checkpoint(s) kept (trainer.save_limit) x {len(stages)} training stages"
    )
    note = f"disk: the run keeps about {human_bytes(sum(per_stage))} of checkpoints ({detail}); {human_bytes(free)} free"
    if free >= need:
        return [], [note]
    return [
        Problem(
            f"not enough disk under {run_dir}: {human_bytes(free)} free, about {human_bytes(need)} more needed ({detail})",
            "free space, point STORAGE_PATH at a larger disk, or keep fewer checkpoints "
            "(--set engine_overrides=[trainer.save_limit=1])",
        )
    ], [note]


# ----------------------------------------------------------------------------- the whole run


def preflight_run(
    base_model: str,
    run_dir: Path,
    pipe: PipelineConfig,
    plan: DevicePlan,
    record: dict,
    engine_configs: Callable[[], list[tuple[str, Any]]],
    accept_changes: bool = False,
    model_is_built: bool = False,
) -> Preflight:
    """Every check of a run. `engine_configs` gives (stage, validated engine config) of the two
    training stages (`pipeline.launch.run_engine_configs`); `model_is_built`: the demo builds its
    base model after the preflight."""
    result = Preflight()
    if hub_offline():
        result.notes.append(offline_note())
    elif (unreachable := probe_hub()) is not None:
        result.notes.append(
            f"the Hugging Face hub cannot be reached ({unreachable}): only local folders and the HF "
            "cache are checked (set HF_HUB_OFFLINE=1 to skip this probe)"
        )
    if not model_is_built:
        result.problems += check_model(base_model, "base model")
    result.problems += check_eval_data(pipe)
    result.problems += check_gpus(plan.devices)
    try:
        configs = engine_configs()
    except ConfigError as e:
        result.problems.append(Problem(f"engine config on this plan: {e}", "fix the setting it names"))
        configs = []
    if configs and model_is_built:
        result.notes.append("disk: the base model is built after these checks; checkpoint space not checked")
    elif configs:
        stages = [s for _ in range(pipe.iterations) for s in configs]
        problems, notes = check_disk(model_parameters(base_model), stages, plan.kind == "cuda", run_dir)
        result.problems += problems
        result.notes += notes
    problems, notes = check_rerun(run_dir, record, accept_changes)
    result.problems += problems
    result.notes += notes
    return result


def preflight_stage(config: TrainStageConfig, plan: DevicePlan) -> Preflight:
    """A training stage run alone (scripts/questioner_train.sh, scripts/solver_train.sh)."""
    result = Preflight()
    if config.stage == "challenger":
        result.problems += check_model(config.solver_model, "Solver model (frozen, served)")
        result.problems += check_model(config.model, "Challenger to train")
    else:
        result.problems += check_model(config.model, "Solver to train")
        result.problems += check_files([config.dataset], "dataset")
    result.problems += check_gpus(plan.devices)
    try:
        engine = build_engine_config(config)
        engine.validate(check_paths=False)
    except ConfigError as e:
        result.problems.append(Problem(f"engine config: {e}", "fix the setting it names"))
        return result
    problems, notes = check_disk(
        model_parameters(config.model), [(config.stage, engine)], plan.kind == "cuda", Path(config.out_dir)
    )
    result.problems += problems
    result.notes += notes
    return result
