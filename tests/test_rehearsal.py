"""The 8-GPU run rehearsed on CPU (scripts/rehearse.sh, pipeline/rehearsal.py; issue 18 item 1).

Unit tests: the presets give the plan's shapes to every stage launch (the driver's own config
builders), and the CPU knobs they need (Challenger ranks, Solver servers, engine shards) reach the
stage objects. The slow test runs the quarter scale end to end (tiny model, every stage; the experiment no_filter,
whose property it checks: kept = labelled minus the label drops) and checks the report's tables and
the shapes recorded by the run's own files.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from engine_batches import random_batch

from pipeline.config import load_pipeline_config
from pipeline.launch import challenger_config, evaluate_config, generate_config, label_config, solver_config
from pipeline.planner import plan_for
from question_evaluate.filtering import REASONS
from solver_service.server import SolverService
from training.common import build_engine_config
from verl.trainer.config import ActorConfig, AlgorithmConfig, ConfigError
from verl.workers.actor.dp_actor import PACKED_SDPA_MAX_TOKENS, DataParallelPPOActor

ROOT = Path(__file__).resolve().parents[1]
# scale -> (Challenger ranks, Solver servers, Solver ranks, engines, Challenger prompts per step,
# prompts per update, questions N, Solver prompts per step)
# (full: 2 Challenger ranks, not the plan's 4, so that 4 Solver servers fit in 24 GB beside them)
SHAPES = {"full": (2, 4, 8, 8, 512, 128, 8000, 512), "quarter": (1, 1, 2, 2, 128, 32, 2000, 128)}


@pytest.mark.parametrize("scale", sorted(SHAPES))
def test_preset_gives_every_stage_the_plans_shapes(scale: str, tmp_path: Path) -> None:
    ranks_c, servers, ranks_s, engines, prompts_c, per_update, n_questions, prompts_s = SHAPES[scale]
    pipe = load_pipeline_config(f"configs/pipeline/rehearsal_{scale}.yaml")
    plan = plan_for(pipe, gpus=[])
    assert (plan.trainer_world, plan.solver_servers, plan.solver_world, plan.engine_shards) == (
        ranks_c,
        servers,
        ranks_s,
        engines,
    )
    assert f"{servers} Solver server" in " ".join(plan.notes) or servers == 1
    challenger = challenger_config(pipe, plan, "base", "base", tmp_path / "c", 0)
    assert (challenger.world, challenger.solver_servers) == (ranks_c, servers)
    engine = build_engine_config(challenger)
    engine.validate(check_paths=False)
    assert (engine.data.rollout_batch_size, engine.worker.rollout.n) == (prompts_c, 4)
    assert engine.worker.actor.prompts_per_update == per_update
    assert engine.worker.reward.reward_kwargs["solver_votes"] == 10
    assert (engine.trainer.max_steps, engine.trainer.n_devices_per_node) == (1, ranks_c)
    solver = build_engine_config(solver_config(pipe, plan, "base", "d.parquet", tmp_path / "s", 0))
    solver.validate(check_paths=False)
    assert (solver.data.rollout_batch_size, solver.worker.rollout.n) == (prompts_s, 5)
    assert (solver.worker.actor.prompts_per_update, solver.trainer.n_devices_per_node) == (
        per_update,
        ranks_s,
    )
    generate = generate_config(pipe, plan, "challenger", tmp_path / "g", 0)
    assert generate.num_questions == n_questions and generate.engine.groups() == [None] * engines
    label = label_config(pipe, plan, "solver", "q.jsonl", tmp_path / "l", 0)
    assert label.engine.groups() == [None] * engines and label.profile == "paper"
    evaluate = evaluate_config(pipe, "solver", tmp_path / "e", "iter_1", plan=plan)
    assert evaluate.get("data_parallel_size", 1) == engines


def test_cpu_knobs_are_checked_and_reach_the_solver_service(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cpu_solver_servers"):
        load_pipeline_config(None, ["cpu_solver_servers=0"])
    with pytest.raises(ConfigError, match="cpu_shards"):
        load_pipeline_config(None, ["cpu_shards=0"])
    service = SolverService("model", tmp_path, None, cpu_servers=3, install_signal_handlers=False)
    assert [s.devices for s in service.servers] == [None, None, None]
    assert len({s.log_path for s in service.servers}) == 3
    # GPUs decide the count where there are some: one server per device group
    assert len(SolverService("model", tmp_path, ["0", "1"], cpu_servers=3).servers) == 2


def test_packed_sdpa_micro_batches_stay_small(tiny_model_dir: str) -> None:
    """Broke at the rehearsal's shape: packed rows through SDPA (CPU) attend through an L x L mask, so
    the default 32,768-token budget made one 1 G-entry mask per pass (7 GB, minutes). The budget is
    capped there; padded micro-batches keep the configured budget."""
    from transformers import AutoModelForCausalLM

    module = AutoModelForCausalLM.from_pretrained(
        tiny_model_dir, dtype=torch.float32, attn_implementation="sdpa"
    )
    data = random_batch(2000, bs=64, prompt=60, response=40)  # ~3,300 real tokens
    tokens = data.batch["attention_mask"].sum(-1)

    def groups(padding_free: bool) -> list[int]:
        actor = DataParallelPPOActor(ActorConfig(), AlgorithmConfig(), module, 4, padding_free=padding_free)
        micros, order = actor.micro_batches(data, 32768, 4)
        assert sorted(order) == list(range(64))
        return [int(m.batch["attention_mask"].sum()) for m in micros]

    packed = groups(True)
    assert len(packed) >= 2 and max(packed) <= PACKED_SDPA_MAX_TOKENS and sum(packed) == int(tokens.sum())
    assert len(groups(False)) == 1  # padded: the configured budget holds the whole batch


def test_the_cap_benchmark_times_each_cap_over_the_same_rows(tiny_model_dir: str, capsys) -> None:
    """scripts/bench_packed_sdpa.py (the figures behind PACKED_SDPA_MAX_TOKENS) runs, reports each
    cap's micro-batch count and leaves the module's cap as it was."""
    import importlib.util

    from verl.workers.actor import dp_actor

    spec = importlib.util.spec_from_file_location(
        "bench_packed_sdpa", ROOT / "scripts" / "bench_packed_sdpa.py"
    )
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    cap = dp_actor.PACKED_SDPA_MAX_TOKENS
    assert bench.main(["--model", tiny_model_dir, "--rows", "16", "--caps", "4096", "64"]) == 0
    assert cap == dp_actor.PACKED_SDPA_MAX_TOKENS
    lines = capsys.readouterr().out.splitlines()
    tokens = int(lines[0].split()[2])
    big, small = (int(line.split()[2]) for line in lines[1:3])
    assert big == 1 and small >= tokens // 64  # the whole batch in one pass; at least tokens / cap passes


@pytest.mark.slow
def test_quarter_rehearsal_runs_and_reports_the_shapes(tmp_path: Path, demo_model_dir: str) -> None:
    """scripts/rehearse.sh --scale quarter's python entry, end to end on the tiny model (its demo
    build, which writes parseable questions), then the shapes from the run's own files."""
    cmd = [sys.executable, "-m", "pipeline.rehearsal", "run", "--scale", "quarter", "--out", str(tmp_path)]
    proc = subprocess.run(
        [*cmd, "--model", demo_model_dir], cwd=ROOT, capture_output=True, text=True, timeout=1800
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    run = tmp_path / "rehearsal_quarter"
    report = json.loads((run / "rehearsal.json").read_text())
    assert "## Time per stage and phase" in proc.stdout and (run / "rehearsal.md").is_file()

    # The shapes, from the stages' own records (not from the report).
    challenger = run / "iter_1" / "challenger"
    config = yaml.safe_load((challenger / "train" / "config.yaml").read_text())
    assert (config["data"]["rollout_batch_size"], config["worker"]["rollout"]["n"]) == (128, 4)
    assert config["worker"]["actor"]["prompts_per_update"] == 32
    endpoints = json.loads((challenger / "solver_endpoints.json").read_text())["endpoints"]
    assert len(endpoints) == 1
    step = json.loads((challenger / "train" / "metrics.jsonl").read_text().splitlines()[0])
    for phase in ("reward_request", "reward_vote", "reward_penalty", "reward_decode", "ray_dispatch", "data"):
        assert f"timing_s/{phase}" in step, phase
    memory = json.loads((challenger / "manifest.json").read_text())["peak_rss_mib"]
    assert len(memory["workers"]) == 1 and len(memory["solver_servers"]) == 1
    assert memory["solver_servers"][0]["sum"] > 0 and memory["workers"][0]["self"] > 0
    generated = json.loads((run / "iter_1" / "question_generate" / "manifest.json").read_text())
    assert len((run / "iter_1" / "question_generate" / "questions.jsonl").read_text().splitlines()) == 2000
    assert len(generated["peak_rss_mib"]["shards"]) == 2
    stats = json.loads((run / "iter_1" / "question_evaluate" / "filter_stats.json").read_text())
    assert stats["votes"] == 10 and stats["solver_sampling"]["shards"] == 2
    # The experiment the rehearsal runs, no_filter: kept = labelled minus the label drops, whatever p̂.
    rows = [json.loads(line) for line in (run / "iter_1" / "question_evaluate" / "labelled.jsonl").open()]
    drops = {reason: sum(r["reason"] == reason for r in rows) for reason in REASONS}
    assert stats["band"] == [0.0, 1.0] and stats["valid"] == len(rows) > 0
    assert stats["kept"] == len(rows) - drops["no_answer"] - drops["label_none"]  # the paper's label drops
    assert drops["p_below_band"] == drops["p_above_band"] == 0
    assert all(r["kept"] == (r["reason"] is None) for r in rows)
    assert [r for r in rows if r["kept"] and not 0.25 <= r["p_hat"] <= 0.75]  # the paper's band drops these
    assert "- **experiment**: no_filter" in (run / "summary.md").read_text()
    # sampled as on the GPUs: one seed per engine, not one per request (vLLM's fast sampler)
    for stage in ("question_generate", "question_evaluate"):
        recorded = json.loads((run / "iter_1" / stage / "stage_config.json").read_text())
        assert recorded["engine"]["seed_mode"] == "per_engine", stage
    assert stats["answers"]["total"] == 10 * stats["valid"]
    labelled = json.loads((run / "iter_1" / "question_evaluate" / "manifest.json").read_text())
    assert {"answers", "voting", "outputs"} <= set(labelled["timings_s"])
    solver = yaml.safe_load((run / "iter_1" / "solver" / "train" / "config.yaml").read_text())
    assert (solver["data"]["rollout_batch_size"], solver["worker"]["rollout"]["n"]) == (128, 5)
    assert solver["trainer"]["n_devices_per_node"] == 2
    evaluate = json.loads((run / "iter_1" / "evaluate" / "stage_config.json").read_text())
    assert evaluate["data_parallel_size"] == 2

    # The report carries the same figures.
    assert (
        report["shapes"]["challenger"]["batch"] == 512
        and report["shapes"]["challenger"]["solver_servers"] == 1
    )
    assert report["shapes"]["question_generate"]["questions"] == 2000
    assert report["shapes"]["question_evaluate"]["votes"] == 10
    assert report["shapes"]["solver"]["batch"] == 640
    phases = {(r["stage"], r["phase"]) for r in report["phases"]}
    assert {("challenger", "reward_penalty"), ("question_evaluate", "voting"), ("solver", "adv")} <= phases
    assert report["outside_model_s"]["question_evaluate"] > 0 and report["reward_actor_s"]["challenger"] > 0
