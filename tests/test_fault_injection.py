"""The fault-injection matrix (issue 12): `bash scripts/main.sh` SIGKILLed, whole process group, at a
chosen point of every stage, then rerun with the same command.

Run with `pytest tests/test_fault_injection.py --fault-matrix` (about 30-40 minutes on 2 cores); the
CI subset is in test_fault_checkpoint.py and test_fault_malformed.py.

Every kill point is found by watching what marks it (a checkpoint folder, a shard file, grader worker
processes, a benchmark's metrics.json, a log line), with bounded waits. After each kill:
- every process of the killed attempt (found by an environment marker: stage processes, vLLM servers
  and engines, Ray's raylet and workers, grader workers) is gone within a bounded poll;
- the rerun completes and leaves no process behind;
- no temporary or half-written file is left, and every manifest names files that exist;
- the outputs equal those of an uninterrupted run with the same seeds (the baseline): questions,
  labels, dataset, filter statistics, counts, the Solver's metrics and final weights (within the
  engine's resume tolerance, see test_engine_e2e.py), evaluation results. The Challenger stage's
  rewards come from a vLLM server answering concurrent unseeded requests, so it is not
  bit-reproducible: the later kill points reuse the baseline's Challenger (the stage folders before
  the kill point are copied from the baseline), and a kill inside the Challenger stage is checked
  for what is comparable (it resumes from its checkpoint and the run completes, cleanly).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
from fault_kit import (
    BINARY,
    MALFORMED,
    NORMAL,
    ROOT,
    Attempt,
    Proc,
    assert_no_process_left,
    attempt_processes,
    check_storage_clean,
    comparable_metrics,
    copy_run,
    kill_attempt,
    normalised,
    raw_outputs,
    run_driver,
    start_driver,
    wait_for,
    write_generation_shard,
)

from infra.stage_kit import read_jsonl, read_manifest
from verl.utils import checkpoint as ckpt

# A test's limit includes building the module's fixtures (the demo model and the baseline run).
pytestmark = [pytest.mark.slow, pytest.mark.fault, pytest.mark.timeout(3600)]

TAG = "demo"
STAGE_TIMEOUT_S = 1500  # one attempt, on a busy 2-core machine
# The engine's resume tolerance (test_engine_e2e.py): metrics rel 1e-4 / abs 1e-5, weights 1e-5 / 1e-6.
METRIC_TOL = dict(rel=1e-4, abs=1e-5)
WEIGHT_TOL = dict(rtol=1e-5, atol=1e-6)


# ---- fixtures ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fault_matrix")


@pytest.fixture(scope="module")
def preset(workdir: Path) -> Path:
    """The demo preset plus a checkpoint after every training step (the kill points before and after
    one) and a second benchmark next to the demo's generated one (the kill point between two)."""
    from evaluation.synthetic import make_problems, write_problems

    extra = workdir / "eval_data" / "math500.jsonl"
    rows = make_problems(6, seed=11, max_steps=2)
    write_problems(extra, [{"problem": r["question"], "answer": r["answer"]} for r in rows])
    settings = yaml.safe_load((ROOT / "configs" / "pipeline" / "demo.yaml").read_text())
    settings["challenger_overrides"] = [*settings.get("challenger_overrides", []), "trainer.save_freq=1"]
    settings["solver_overrides"] = [*settings.get("solver_overrides", []), "trainer.save_freq=1"]
    first = settings.get("eval_benchmarks") or ["gsm8k"]
    settings.update(evaluate=True, eval_benchmarks=[*first, "math500"], eval_data={"math500": str(extra)})
    path = workdir / "fault.yaml"
    path.write_text(yaml.safe_dump(settings))
    return path


@pytest.fixture(scope="module")
def demo_model_storage(workdir: Path) -> Path:
    """A storage holding only the demo's base model (built once, as main.sh builds it)."""
    from pipeline.driver import ensure_demo_model

    storage = workdir / "model_storage"
    ensure_demo_model(storage)
    return storage


def fresh_storage(demo_model_storage: Path, path: Path) -> Path:
    shutil.copytree(demo_model_storage, path)
    return path


@pytest.fixture(scope="module")
def baseline(workdir: Path, demo_model_storage: Path, preset: Path) -> Path:
    """The uninterrupted run every kill point is compared with."""
    storage = fresh_storage(demo_model_storage, workdir / "baseline")
    attempt = run_driver(
        ["--preset", str(preset)], storage, workdir / "baseline.log", workdir, STAGE_TIMEOUT_S
    )
    assert attempt.proc.returncode == 0, attempt.tail()
    assert_no_process_left(attempt, what="the finished run (after it exited)")
    return storage


# ---- one kill, one rerun --------------------------------------------------------------------------


def kill_then_rerun(
    storage: Path, preset: Path, log_dir: Path, point, what: str
) -> tuple[list[Proc], Attempt]:
    """Start the run, SIGKILL its process group once `point(attempt)` holds, check that every process
    of it is gone, rerun the same command to the end; returns (processes at the kill, the rerun)."""
    args = ["--preset", str(preset)]
    first = start_driver(args, storage, log_dir / "first.log", log_dir)
    wait_for(first, lambda: point(first), what, timeout_s=STAGE_TIMEOUT_S, poll_s=0.05)
    procs = kill_attempt(first)
    assert_no_process_left(first)
    second = run_driver(args, storage, log_dir / "second.log", log_dir, STAGE_TIMEOUT_S)
    assert second.proc.returncode == 0, second.tail()
    assert_no_process_left(second, what="the rerun (after it exited)")
    check_storage_clean(storage)
    return procs, second


def run_dir(storage: Path) -> Path:
    return storage / TAG


def iter_dir(storage: Path) -> Path:
    return storage / TAG / "iter_1"


# ---- comparing with the baseline ------------------------------------------------------------------


def assert_same_generation(storage: Path, base: Path) -> None:
    a, b = (
        read_manifest(iter_dir(base) / "question_generate"),
        read_manifest(iter_dir(storage) / "question_generate"),
    )
    assert Path(b["outputs"]["questions"]).read_text() == Path(a["outputs"]["questions"]).read_text()
    assert b["counts"] == a["counts"]


def assert_same_labels(storage: Path, base: Path) -> None:
    import pyarrow.parquet as pq

    a, b = (
        read_manifest(iter_dir(base) / "question_evaluate"),
        read_manifest(iter_dir(storage) / "question_evaluate"),
    )
    assert read_jsonl(b["outputs"]["labelled"]) == read_jsonl(a["outputs"]["labelled"])
    assert (
        pq.read_table(b["outputs"]["dataset"]).to_pylist()
        == pq.read_table(a["outputs"]["dataset"]).to_pylist()
    )
    stats_a, stats_b = (json.loads(Path(m["outputs"]["filter_stats"]).read_text()) for m in (a, b))
    for stats in (stats_a, stats_b):  # timings and reuse differ between runs, not the results
        stats["solver_sampling"] = {
            k: v for k, v in stats["solver_sampling"].items() if not k.endswith("_s") and k != "shards_reused"
        }
    assert stats_b == stats_a
    assert b["counts"] == a["counts"]


def assert_same_solver(storage: Path, base: Path) -> None:
    import torch
    from safetensors.torch import load_file

    a, b = read_manifest(iter_dir(base) / "solver"), read_manifest(iter_dir(storage) / "solver")
    assert b["counts"] == a["counts"]
    metrics_a, metrics_b = (comparable_metrics(Path(m["outputs"]["metrics"])) for m in (a, b))
    assert [m["step"] for m in metrics_b] == [m["step"] for m in metrics_a]
    for row_a, row_b in zip(metrics_a, metrics_b):
        assert row_a.keys() == row_b.keys()
        for key in row_a:
            assert row_b[key] == pytest.approx(row_a[key], **METRIC_TOL), (row_a["step"], key)
    weights_a, weights_b = (load_file(Path(m["outputs"]["model"]) / "model.safetensors") for m in (a, b))
    assert weights_a.keys() == weights_b.keys()
    for name in weights_a:
        torch.testing.assert_close(weights_b[name], weights_a[name], **WEIGHT_TOL)


def evaluation_results(out: Path, storage: Path) -> dict:
    """results.json without what describes the run rather than the results, paths under the storage
    made relative, and every benchmark's items.jsonl."""
    results = json.loads((out / "results.json").read_text())
    items = {p.parent.name: read_jsonl(p) for p in sorted(out.glob("*/items.jsonl"))}
    return {"results": normalised(_results_only(results), storage), "items": items}


# Keys of results.json that describe the run (wall time, reuse, the grader pool's own counters, a
# hash that includes paths), not the results.
_RUN_DEPENDENT = ("seconds", "started", "finished", "grader", "resumed", "reused_responses", "resume_key")


def _results_only(value):
    if isinstance(value, dict):
        return {k: _results_only(v) for k, v in value.items() if k not in _RUN_DEPENDENT}
    if isinstance(value, list):
        return [_results_only(v) for v in value]
    return value


def assert_same_evaluation(storage: Path, base: Path) -> None:
    """Every evaluation the baseline ran (none while the demo does not evaluate) gave the same."""
    for results in sorted(run_dir(base).glob("**/results.json")):
        where = results.parent.relative_to(run_dir(base))
        got = evaluation_results(run_dir(storage) / where, storage)
        assert got == evaluation_results(results.parent, base), where


def questions_table(storage: Path) -> str:
    text = (run_dir(storage) / "summary.md").read_text()
    return text[text.index("### Questions") : text.index("###", text.index("### Questions") + 3)]


def assert_same_summary(storage: Path, base: Path) -> None:
    text = (run_dir(storage) / "summary.md").read_text()
    base_text = (run_dir(base) / "summary.md").read_text()
    for stage in ("challenger", "question_generate", "question_evaluate", "solver", "evaluate"):
        status = "done" if f"| {stage} | done |" in base_text else "not run"
        assert f"| {stage} | {status} |" in text, stage
    assert questions_table(storage) == questions_table(base)


def assert_same_after(storage: Path, base: Path, first_stage: str) -> None:
    """Outputs of `first_stage` and every later stage equal the baseline's."""
    order = ["question_generate", "question_evaluate", "solver", "evaluate", "summary"]
    checks = {
        "question_generate": assert_same_generation,
        "question_evaluate": assert_same_labels,
        "solver": assert_same_solver,
        "evaluate": assert_same_evaluation,
        "summary": assert_same_summary,
    }
    for stage in order[order.index(first_stage) :]:
        checks[stage](storage, base)


def copied_before(baseline: Path, workdir: Path, name: str, stages: list[str]) -> Path:
    storage = workdir / name / "storage"
    copy_run(baseline, storage, TAG, stages)
    return storage


# ---- the matrix -----------------------------------------------------------------------------------


def test_baseline_is_complete_and_clean(baseline: Path) -> None:
    check_storage_clean(baseline)
    for stage in ("challenger", "question_generate", "question_evaluate", "solver", "evaluate"):
        assert read_manifest(iter_dir(baseline) / stage) is not None, stage
    assert read_manifest(run_dir(baseline) / "eval_base") is not None
    assert (run_dir(baseline) / "summary.md").is_file()


def test_kill_in_challenger_training_with_solver_service_up(
    workdir: Path, demo_model_storage: Path, preset: Path
) -> None:
    storage = fresh_storage(demo_model_storage, workdir / "challenger" / "storage")
    stage = iter_dir(storage) / "challenger"
    service: dict = {}

    def training_with_service_up(_: Attempt) -> bool:  # step 1 checkpointed, step 2 under way
        if (stage / "solver_endpoints.json").is_file() and ckpt.latest_step(stage / "train") == 1:
            service.update(json.loads((stage / "solver_endpoints.json").read_text()))
            return True
        return False

    procs, second = kill_then_rerun(
        storage, preset, workdir / "challenger", training_with_service_up, "step-1 checkpoint"
    )
    # The kill hit the Solver server, Ray and the trainer (all of them gone: kill_then_rerun).
    killed = {p.pid for p in procs}
    assert service["pids"] and set(service["pids"]) <= killed, (service["pids"], killed)
    assert any("raylet" in p.cmdline for p in procs)
    assert f"resumed from {ckpt.step_dir(stage / 'train', 1)} (step 1)" in second.log_text()
    manifest = read_manifest(stage)
    assert manifest["counts"]["steps"] == 2 and ckpt.saved_steps(stage / "train") == [1, 2]
    steps = [m["step"] for m in comparable_metrics(Path(manifest["outputs"]["metrics"]))]
    assert steps == [1, 2]
    for later in ("question_generate", "question_evaluate", "solver"):
        assert read_manifest(iter_dir(storage) / later) is not None, later


def test_kill_in_question_generation(workdir: Path, baseline: Path, preset: Path) -> None:
    storage = copied_before(baseline, workdir, "generate", ["challenger"])
    shards = iter_dir(storage) / "question_generate" / "shards"

    def sampling(_: Attempt) -> bool:  # the shard folder exists once the engine is being built
        return shards.is_dir() and any(shards.iterdir())

    kill_then_rerun(storage, preset, workdir / "generate", sampling, "question generation under way")
    assert_same_after(storage, baseline, "question_generate")


def test_kill_in_labelling_while_grading(workdir: Path, baseline: Path, preset: Path) -> None:
    storage = copied_before(baseline, workdir, "label", ["challenger", "question_generate"])
    stage = iter_dir(storage) / "question_evaluate"

    def grading(attempt: Attempt) -> bool:  # answers sampled, grader workers running, no labels yet
        if not list(stage.glob("shards/*/answers-*.jsonl")) or (stage / "labelled.jsonl").exists():
            return False
        return any("grader" in p.cmdline for p in attempt_processes(attempt.attempt_id))

    procs, _ = kill_then_rerun(storage, preset, workdir / "label", grading, "the grader pool at work")
    assert any("grader" in p.cmdline for p in procs)
    assert_same_after(storage, baseline, "question_evaluate")


def test_kill_in_solver_training_before_a_checkpoint(workdir: Path, baseline: Path, preset: Path) -> None:
    storage = copied_before(
        baseline, workdir, "solver_before", ["challenger", "question_generate", "question_evaluate"]
    )
    train = iter_dir(storage) / "solver" / "train"

    def workers_ready(attempt: Attempt) -> bool:  # Ray, FSDP workers and their vLLM engines up; no checkpoint
        return "workers ready" in attempt.log_text()

    procs, second = kill_then_rerun(
        storage, preset, workdir / "solver_before", workers_ready, "Solver workers ready"
    )
    assert any("raylet" in p.cmdline for p in procs)
    assert "resumed from" not in second.log_text()
    assert ckpt.saved_steps(train) == [1, 2]
    assert_same_after(storage, baseline, "solver")


def test_kill_in_solver_training_after_a_checkpoint(workdir: Path, baseline: Path, preset: Path) -> None:
    storage = copied_before(
        baseline, workdir, "solver_after", ["challenger", "question_generate", "question_evaluate"]
    )
    train = iter_dir(storage) / "solver" / "train"
    _, second = kill_then_rerun(
        storage,
        preset,
        workdir / "solver_after",
        lambda _: ckpt.latest_step(train) == 1,
        "Solver checkpoint of step 1",
    )
    assert f"resumed from {ckpt.step_dir(train, 1)} (step 1)" in second.log_text()
    assert_same_after(storage, baseline, "solver")


def test_kill_in_evaluation_between_benchmarks(workdir: Path, baseline: Path, preset: Path) -> None:
    stages = ["challenger", "question_generate", "question_evaluate", "solver"]
    storage = copied_before(baseline, workdir, "evaluate", stages)
    stage = iter_dir(storage) / "evaluate"
    benchmarks = yaml.safe_load(preset.read_text())["eval_benchmarks"]
    kept: dict = {}

    def one_benchmark_done(_: Attempt) -> bool:  # the first benchmark's metrics.json, no results.json
        done = [b for b in benchmarks if (stage / b / "metrics.json").is_file()]
        if done and not (stage / "results.json").exists():
            items = stage / done[0] / "items.jsonl"
            kept.update(done=done, items=items, stat=(items.stat().st_ino, items.stat().st_mtime_ns))
            return True
        return False

    kill_then_rerun(storage, preset, workdir / "evaluate", one_benchmark_done, "one benchmark evaluated")
    assert len(kept["done"]) < len(benchmarks), f"the kill came after {kept['done']}: nothing left to do"
    # The finished benchmark was kept as it was (neither generated nor scored again).
    results = json.loads((stage / "results.json").read_text())
    assert results["benchmarks"][kept["done"][0]]["resumed"] is True
    items = kept["items"]
    assert (items.stat().st_ino, items.stat().st_mtime_ns) == kept["stat"]
    assert_same_after(storage, baseline, "evaluate")


def test_kill_while_writing_the_summary(workdir: Path, baseline: Path, preset: Path) -> None:
    stages = ["challenger", "question_generate", "question_evaluate", "solver", "evaluate"]
    storage = copied_before(baseline, workdir, "summary", stages)
    run = run_dir(storage)
    state: dict[str, bool] = {}

    def summary_being_written(_: Attempt) -> bool:  # a plot or summary.md open under its temporary name
        writing = any(run.glob("plots/.*.tmp")) or any(run.glob(".summary.md.*.tmp"))
        if writing:
            state["summary_existed"] = (run / "summary.md").exists()
        return writing

    kill_then_rerun(storage, preset, workdir / "summary", summary_being_written, "the summary being written")
    assert state.get("summary_existed") is False, "the kill came after summary.md was written"
    assert_same_after(storage, baseline, "summary")


# ---- malformed Challenger outputs through the whole pipeline ---------------------------------------


def test_malformed_outputs_through_the_pipeline(workdir: Path, baseline: Path, preset: Path) -> None:
    """The baseline's Challenger samples with the last five replaced by the malformed outputs, handed
    to the generation stage as its shard file; then `main.sh` runs generation (which reuses the
    shard), labelling, the Solver, evaluation and the summary for real."""
    from pipeline.config import load_pipeline_config
    from pipeline.launch import generate_config
    from pipeline.planner import plan_devices

    storage = copied_before(baseline, workdir, "malformed", ["challenger"])
    pipe = load_pipeline_config(str(preset))
    plan = plan_devices(None, pipe.solver_gpus or None, pipe.cpu_ranks)
    it = iter_dir(storage)
    challenger = read_manifest(it / "challenger")["outputs"]["model"]
    config = generate_config(pipe, plan, challenger, it / "question_generate", pipe.seed + 1)  # as the driver
    base_rows = read_jsonl(read_manifest(iter_dir(baseline) / "question_generate")["outputs"]["questions"])
    texts, names = [r["raw"] for r in base_rows], [f"normal{i}" for i in range(len(base_rows))]
    texts[-len(MALFORMED) :], names[-len(MALFORMED) :] = list(MALFORMED.values()), list(MALFORMED)
    write_generation_shard(config, texts, names)

    attempt = run_driver(
        ["--preset", str(preset)], storage, workdir / "malformed" / "run.log", workdir, STAGE_TIMEOUT_S
    )
    assert attempt.proc.returncode == 0, attempt.tail()
    assert_no_process_left(attempt, what="the finished run (after it exited)")
    check_storage_clean(storage)

    kept_rows = base_rows[: -len(MALFORMED)]
    gen = read_manifest(it / "question_generate")["counts"]
    assert gen["generated"] == len(base_rows)
    assert gen["valid"] == sum(r["valid"] for r in kept_rows) + 2  # binary, long_question
    from question_generate.generate import invalid_reason

    for reason in ("empty", "no_question", "no_answer"):
        expected = sum(invalid_reason(r) == reason for r in kept_rows) + 1
        assert gen[f"invalid_{reason}"] == expected, reason
    assert gen["truncated"] == sum(r["finish_reason"] == "length" for r in kept_rows) + 1
    label = read_manifest(it / "question_evaluate")["counts"]
    assert label["questions_too_long"] == 1 and label["valid"] == gen["valid"]
    labelled = read_jsonl(read_manifest(it / "question_evaluate")["outputs"]["labelled"])
    binary = next(r for r in labelled if BINARY in r["question"])
    assert len(binary["answers"]) == label.get("votes", len(binary["answers"]))
    assert read_manifest(it / "solver")["counts"]["steps"] == 2
    summary = (run_dir(storage) / "summary.md").read_text()
    rows = {line.split("|")[1].strip(): line for line in summary.splitlines() if line.startswith("| ")}
    for key in ("invalid_empty", "invalid_no_question", "invalid_no_answer", "truncated"):
        assert f"{key} {gen[key]}" in rows["question_generate"], key
    assert "questions_too_long 1" in rows["question_evaluate"]


def test_challenger_reward_on_malformed_outputs_with_a_real_solver_server(
    workdir: Path, demo_model_storage: Path
) -> None:
    """The reward's Solver client against the demo's vLLM OpenAI server (as the Challenger stage
    starts it): no request fails on the malformed questions, every score is a number."""
    import math

    from rewards import challenger_reward
    from rewards.challenger_reward import compute_challenger_reward
    from solver_service.server import SolverService

    model = str(demo_model_storage / "tiny-qwen3-rzero")
    out = workdir / "reward_service"
    max_model_len = 40 + 512 + 40  # the demo's Challenger stage: response + question room + answer
    with SolverService(
        model, out, None, dtype="float32", max_model_len=max_model_len, enforce_eager=True
    ) as service:
        endpoints = out / "endpoints.json"
        info = {"endpoints": service.endpoints, "model_name": service.model_name, "model": model}
        endpoints.write_text(json.dumps({**info, "max_model_len": max_model_len, "pids": service.pids}))
        challenger_reward._clients.clear()
        items = [{"response": text} for text in raw_outputs()]
        scores = compute_challenger_reward(items, solver_endpoints_file=str(endpoints), solver_max_tokens=40)
        challenger_reward._clients.clear()
    assert len(scores) == len(items)
    by_name = dict(zip([f"normal{i}" for i in range(len(NORMAL))] + list(MALFORMED), scores))
    assert all(math.isfinite(v) for s in scores for v in s.values()), scores
    for name in ("long_output", "unbalanced", "empty"):
        assert by_name[name]["valid"] == 0.0 and by_name[name]["overall"] == 0.0, name
    assert by_name["binary"]["valid"] == 1.0 and by_name["binary"]["m"] == 10.0  # the server answered it
    assert by_name["long_question"]["valid"] == 1.0 and by_name["long_question"]["overall"] == 0.0
