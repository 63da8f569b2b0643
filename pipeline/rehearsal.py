"""The 8-GPU run rehearsed on CPU (issue 18 item 1): the paper's shapes on the embedded tiny model,
and the report of what the run spent outside the model and each process's peak memory.

    bash scripts/rehearse.sh [--scale full|quarter] [OUT_DIR]
    python -m pipeline.rehearsal run --scale quarter --out OUT_DIR [--model DIR]
    python -m pipeline.rehearsal report RUN_DIR          # the table of a finished run again

`run` builds the tiny model when no `--model` is given, runs one iteration of the `paper` profile
through the driver (`python -m pipeline.driver MODEL rehearsal_<scale> --preset
configs/pipeline/rehearsal_<scale>.yaml`, the run in OUT_DIR/rehearsal_<scale>), then writes
`rehearsal.json` and `rehearsal.md` beside the run (in the run folder) and prints the tables.

Everything the report says is read from the run's own files: each stage's manifest (its timings,
counts, `peak_rss_mib`), the training stages' `train/metrics.jsonl` (`timing_s/*`: the step's phases,
the reward's phases, Ray's dispatch and merge in the driver; `perf/reward_actor_peak_rss_mib`),
`train/config.yaml` and `train/process_memory.json` (each Ray worker's peak RSS), the labelling
stage's `filter_stats.json` and the evaluation's `results.json` and `stage_config.json`.

Each phase is tagged `model` (generation, log-probs, the update, the weight sync, the engines'
sampling and start), `outside` (on the stage's critical path and paid whatever its GPUs: data
preparation, advantages, waiting for the reward, Ray's dispatch and merge, answer extraction,
voting, writing outputs), `startup` (a training stage's time around its step: Ray, workers, engines,
the Solver servers, the checkpoint), or `reward actor` (decoding and the reward function, in their
own process while the log-prob passes run; the Challenger's split into parsing, the Solver
requests: fan-out, the servers' sampling and the replies, voting and the repetition penalty). The
`outside` sum per stage adds the `outside` rows only; the reward actor's work is summed apart (it
reaches the critical path only through the `reward` wait).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from infra.logs import setup_logging
from verl.trainer.config import CONFIG_DIR
from verl.utils.fs import atomic_write_json, atomic_write_text

PROJECT_ROOT = CONFIG_DIR.parent
SCALES = ("full", "quarter")
REPORT_JSON = "rehearsal.json"
REPORT_MD = "rehearsal.md"

# The training step's phases (verl/trainer/ray_trainer.py): which are the model's work.
_TRAIN_PHASES = [
    ("data", "outside", "next batch from the loader (tokenised prompts)"),
    ("gen", "model", "rollout generation (incl. Ray dispatch to the workers)"),
    ("old_log_prob", "model", "old log-probs"),
    ("ref_log_prob", "model", "reference log-probs"),
    ("reward", "outside", "waiting for the reward actor after the log-prob passes (critical path)"),
    ("adv", "outside", "advantages"),
    ("update_actor", "model", "actor update"),
    ("sync_weights", "model", "weight sync into the rollout engines"),
    ("ray_dispatch", "outside", "Ray: splitting the batch and sending the shards (driver side)"),
    ("ray_merge", "outside", "Ray: merging the workers' replies (driver side)"),
]
# The reward actor's phases (verl/workers/reward/manager.py, rewards/challenger_reward.py).
REWARD_ACTOR = "reward actor"
_REWARD_PHASES = [
    ("reward_decode", REWARD_ACTOR, "detokenising the batch"),
    ("reward_fn", REWARD_ACTOR, "the reward function (for the Challenger: the four rows below)"),
    ("reward_parse", REWARD_ACTOR, "  parsing the Challenger outputs"),
    ("reward_request", REWARD_ACTOR, "  Solver answers: fan-out to the servers, their sampling, replies"),
    ("reward_vote", REWARD_ACTOR, "  answer extraction and majority voting (grader pool)"),
    ("reward_penalty", REWARD_ACTOR, "  repetition penalty (BLEU clustering over the batch)"),
]


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def _first_metrics(path: Path) -> dict:
    """The first step's metrics of a training run (the rehearsal trains one step)."""
    if not path.is_file():
        return {}
    for line in path.read_text().splitlines():
        if line.strip():
            return json.loads(line)
    return {}


def _row(stage: str, phase: str, kind: str, seconds: float | None, what: str) -> dict:
    return {"stage": stage, "phase": phase, "kind": kind, "seconds": seconds, "what": what}


def _training(run: Path, stage: str) -> tuple[list[dict], dict, dict]:
    """(phase rows, shapes, memory) of a training stage."""
    folder = run / "iter_1" / stage
    manifest = _read_json(folder / "manifest.json")
    metrics = _first_metrics(folder / "train" / "metrics.jsonl")
    config = yaml.safe_load((folder / "train" / "config.yaml").read_text()) if manifest else {}
    rows = []
    timing = {k.removeprefix("timing_s/"): v for k, v in metrics.items() if k.startswith("timing_s/")}
    for name, kind, what in _TRAIN_PHASES + _REWARD_PHASES:
        if name in timing:
            rows.append(_row(stage, name, kind, timing[name], what))
    total = manifest.get("timings_s", {}).get("total")
    if total is not None and "step" in timing:
        rows.append(
            _row(
                stage,
                "setup_and_save",
                "startup",
                total - timing["step"],
                "stage total minus the step: Ray, workers and engines starting, Solver servers "
                "(Challenger), the checkpoint and HF export",
            )
        )
    rows.append(_row(stage, "total", "", total, "the stage, as its manifest records"))
    shapes: dict[str, Any] = {}
    if config:
        data, actor, rollout = config["data"], config["worker"]["actor"], config["worker"]["rollout"]
        shapes = {
            "prompts_per_step": data["rollout_batch_size"],
            "rollouts_per_prompt": rollout["n"],
            "batch": data["rollout_batch_size"] * rollout["n"],
            "prompts_per_update": actor["prompts_per_update"],
            "updates_per_step": data["rollout_batch_size"] // actor["prompts_per_update"],
            "ranks": config["trainer"]["n_devices_per_node"],
            "steps": manifest.get("counts", {}).get("steps"),
        }
        if stage == "challenger":
            kwargs = config["worker"]["reward"]["reward_kwargs"]
            shapes["solver_votes"] = kwargs.get("solver_votes")
            shapes["solver_servers"] = manifest.get("counts", {}).get("solver_servers")
            shapes["questions_valid"] = round(metrics.get("reward/valid", 0.0) * shapes["batch"])
            shapes["solver_answers"] = round(metrics.get("reward/m", 0.0) * shapes["batch"])
    memory = dict(manifest.get("peak_rss_mib", {}))
    if "perf/reward_actor_peak_rss_mib" in metrics:
        memory.setdefault("reward_actor_at_step", metrics["perf/reward_actor_peak_rss_mib"])
    return rows, shapes, memory


def _slowest_shard_engine_s(stage_dir: Path) -> float:
    """The longest engine time (start + sampling) of one shard, from the shards' .meta.json files:
    the part of the shards' wall time that is the model's (maxima of each taken apart would come
    from different shards)."""
    metas = [_read_json(p) for p in stage_dir.glob("shards/*/*.meta.json")]
    return max((m.get("engine_start_s", 0.0) + m.get("generate_s", 0.0) for m in metas), default=0.0)


def _generation(run: Path) -> tuple[list[dict], dict, dict]:
    manifest = _read_json(run / "iter_1" / "question_generate" / "manifest.json")
    t, counts = manifest.get("timings_s", {}), manifest.get("counts", {})
    stage = "question_generate"
    rows = [
        _row(stage, "engine_start", "model", t.get("engine_start_max"), "engine start (slowest shard)"),
        _row(stage, "sampling", "model", t.get("sampling_max"), "sampling (slowest shard)"),
    ]
    if "shards" in t and "total" in t:
        rows += [
            _row(
                stage,
                "shard_overhead",
                "outside",
                t["shards"] - _slowest_shard_engine_s(run / "iter_1" / stage),
                "shard processes: spawn, prompts, parsing, rows (beyond the slowest shard's engine)",
            ),
            _row(
                stage,
                "merge_and_write",
                "outside",
                t["total"] - t["shards"],
                "questions.jsonl, counts, manifest",
            ),
        ]
    rows.append(_row(stage, "total", "", t.get("total"), "the stage, as its manifest records"))
    shapes = {
        "questions": counts.get("questions", counts.get("generated")),
        "valid": counts.get("valid"),
        "shards": len(manifest.get("peak_rss_mib", {}).get("shards", [])),
    }
    return rows, shapes, dict(manifest.get("peak_rss_mib", {}))


def _labelling(run: Path) -> tuple[list[dict], dict, dict]:
    folder = run / "iter_1" / "question_evaluate"
    manifest = _read_json(folder / "manifest.json")
    stats = _read_json(folder / "filter_stats.json")
    sampling = stats.get("solver_sampling", {})
    t = manifest.get("timings_s", {})
    stage = "question_evaluate"
    engine, sample = sampling.get("engine_start_max_s"), sampling.get("sampling_max_s")
    rows = [
        _row(stage, "engine_start", "model", engine, "engine start (slowest shard)"),
        _row(stage, "sampling", "model", sample, "m answers per valid question (slowest shard)"),
    ]
    if "answers" in t:
        rows.append(
            _row(
                stage,
                "answers_overhead",
                "outside",
                t["answers"] - _slowest_shard_engine_s(folder),
                "reading questions, shard processes, prompts, answer extraction, merge",
            )
        )
    rows += [
        _row(stage, "voting", "outside", t.get("voting"), "majority vote over m answers (grader pool)"),
        _row(
            stage, "outputs", "outside", t.get("outputs"), "labelled.jsonl, train.parquet, histogram, stats"
        ),
        _row(stage, "total", "", t.get("total"), "the stage, as its manifest records"),
    ]
    shapes = {
        "questions": stats.get("questions"),
        "valid": stats.get("valid"),
        "votes": stats.get("votes"),
        "answers": stats.get("answers", {}).get("total"),
        "kept": stats.get("kept"),
        "shards": sampling.get("shards"),
    }
    return rows, shapes, dict(manifest.get("peak_rss_mib", {}))


def _evaluation(run: Path, folder_name: str, stage: str) -> tuple[list[dict], dict, dict]:
    folder = run / folder_name
    manifest = _read_json(folder / "manifest.json")
    results = _read_json(folder / "results.json")
    config = _read_json(folder / "stage_config.json")
    rows = []
    items = 0
    for name, entry in results.get("benchmarks", {}).items():
        items += entry.get("num_items", 0)
        rows.append(
            _row(stage, name, "model", entry.get("seconds"), "generation and scoring of the benchmark")
        )
    rows.append(
        _row(stage, "total", "", manifest.get("timings_s", {}).get("total"), "the stage's benchmarks")
    )
    shapes = {"items": items, "engines": config.get("data_parallel_size", 1)}
    return rows, shapes, dict(manifest.get("peak_rss_mib", {}))


def build_report(run: Path) -> dict:
    """The rehearsal's report of a run folder: phases, shapes and peak memory per stage."""
    record = _read_json(run / "run.json")
    parts = {
        "eval_base": _evaluation(run, "eval_base", "eval_base"),
        "challenger": _training(run, "challenger"),
        "question_generate": _generation(run),
        "question_evaluate": _labelling(run),
        "solver": _training(run, "solver"),
        "evaluate": _evaluation(run, "iter_1/evaluate", "evaluate"),
    }
    phases = [row for rows, _, _ in parts.values() for row in rows]
    outside = {
        stage: round(sum(r["seconds"] or 0.0 for r in rows if r["kind"] == "outside"), 3)
        for stage, (rows, _, _) in parts.items()
    }
    reward_actor = {
        stage: round(
            sum(r["seconds"] or 0.0 for r in rows if r["phase"] in ("reward_decode", "reward_fn")), 3
        )
        for stage, (rows, _, _) in parts.items()
        if stage in ("challenger", "solver")
    }
    return {
        "run": str(run),
        "plan": record.get("plan", {}),
        "preset": record.get("preset"),
        "phases": phases,
        "outside_model_s": outside,
        "reward_actor_s": reward_actor,
        "shapes": {stage: shapes for stage, (_, shapes, _) in parts.items()},
        "peak_rss_mib": {stage: memory for stage, (_, _, memory) in parts.items()},
    }


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


def _memory_cells(memory: dict) -> str:
    """One line of a stage's peak RSS figures (MiB)."""
    cells = []
    for key, value in memory.items():
        if isinstance(value, dict) and "self" in value:  # a process's {"self", "children"}
            cells.append(f"{key} {value['self']:.0f}")
        elif isinstance(value, list):
            figures = [v.get("self", v.get("sum")) if isinstance(v, dict) else v for v in value]
            cells.append(f"{key} [{', '.join(_fmt(round(f)) if f is not None else '-' for f in figures)}]")
        else:
            cells.append(f"{key} {_fmt(value)}")
    return "; ".join(cells)


def format_report(report: dict) -> str:
    """The report as markdown tables (printed and written to rehearsal.md)."""
    plan = report["plan"]
    lines = [
        f"# Rehearsal of {report['run']}",
        "",
        f"preset {report['preset']}; devices: Challenger {plan.get('trainer_world')} rank(s) + "
        f"{plan.get('cpu_solver_servers')} Solver server(s), Solver {plan.get('solver_world')} rank(s), "
        f"{plan.get('cpu_shards')} engine(s) per generation / labelling / evaluation stage (the 8-GPU "
        "plan: Challenger 4 ranks + 4 servers, Solver 8 ranks, 8 engines; the full preset trains the "
        "Challenger on 2 ranks so that 4 servers fit beside them in 24 GB)",
        "",
        "## Shapes (read from the run's files)",
        "",
        "| stage | shapes |",
        "| --- | --- |",
    ]
    for stage, shapes in report["shapes"].items():
        lines.append(f"| {stage} | {', '.join(f'{k} {_fmt(v)}' for k, v in shapes.items())} |")
    lines += [
        "",
        "## Time per stage and phase (seconds; kind: model; outside = on the critical path, paid "
        "whatever the GPUs; startup; reward actor = beside the log-prob passes)",
        "",
        "| stage | phase | kind | s | what |",
        "| --- | --- | --- | ---: | --- |",
    ]
    for r in report["phases"]:
        lines.append(f"| {r['stage']} | {r['phase']} | {r['kind']} | {_fmt(r['seconds'])} | {r['what']} |")
    lines += ["", "| stage | outside the model, s | reward actor, s |", "| --- | ---: | ---: |"]
    lines += [
        f"| {stage} | {s:.2f} | {_fmt(report['reward_actor_s'].get(stage))} |"
        for stage, s in report["outside_model_s"].items()
    ]
    lines += [
        "",
        "## Peak memory (RSS, MiB): self = the stage process, children = its largest finished child, "
        "shards / workers = each engine process / Ray training rank, solver_servers = each server's "
        "processes summed",
        "",
        "| stage | peak RSS |",
        "| --- | --- |",
    ]
    for stage, memory in report["peak_rss_mib"].items():
        lines.append(f"| {stage} | {_memory_cells(memory)} |")
    return "\n".join(lines) + "\n"


def write_report(run: Path) -> dict:
    """Build the report of `run`, write rehearsal.json and rehearsal.md into it, print the tables."""
    report = build_report(run)
    atomic_write_json(run / REPORT_JSON, report)
    text = format_report(report)
    atomic_write_text(run / REPORT_MD, text)
    print(text, flush=True)
    return report


def run_rehearsal(scale: str, out: Path, model: str | None = None) -> Path:
    """Run one iteration at `scale` into `out`/rehearsal_<scale> through the driver; returns the run
    folder (the driver's exit code, when not 0, raises)."""
    from pipeline.driver import ensure_demo_model

    out = out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    model = model or ensure_demo_model(out)
    tag = f"rehearsal_{scale}"
    preset = PROJECT_ROOT / "configs" / "pipeline" / f"{tag}.yaml"
    env = {**os.environ, "STORAGE_PATH": str(out), "TOKENIZERS_PARALLELISM": "false"}
    env.setdefault("HF_HUB_OFFLINE", "1")
    cmd = [sys.executable, "-m", "pipeline.driver", model, tag, "--preset", str(preset)]
    print("rehearsal:", " ".join(cmd), flush=True)
    code = subprocess.run(cmd, cwd=PROJECT_ROOT, env=env, check=False).returncode
    if code != 0:
        raise SystemExit(f"rehearsal: the run failed with exit code {code}; rerun the same command to resume")
    return out / tag


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the rehearsal, then report")
    run.add_argument("--scale", choices=SCALES, default="full")
    run.add_argument("--out", default="storage/rehearsal", help="folder of the run (STORAGE_PATH)")
    run.add_argument("--model", default=None, help="base model folder (default: build the tiny model)")
    report = sub.add_parser("report", help="the report of a finished rehearsal run folder")
    report.add_argument("run_dir")
    args = parser.parse_args(argv)
    setup_logging()
    if args.command == "run":
        write_report(run_rehearsal(args.scale, Path(args.out), args.model))
    else:
        run_dir = Path(args.run_dir)
        if not (run_dir / "run.json").is_file():
            print(f"error: {run_dir} holds no run.json: give the run folder (OUT_DIR/rehearsal_<scale>)")
            return 2
        write_report(run_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
