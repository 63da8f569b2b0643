"""Malformed Challenger outputs (issue 12, fault-injection suite): a 100k-character output, binary
bytes, unbalanced braces, a 50k-character <question>, an empty generation.

- the Challenger reward (through the real Solver client, against a scripted completions server:
  the reward must be computed for any text) and the repetition penalty (fast path against the
  nltk + sklearn reference) take them without an error;
- question generation counts each (its shard file is written by hand from the raw outputs with
  the stage's own row builder; the real stage reuses it and writes counts and manifest); the real
  labelling stage (vLLM on the tiny model) labels or drops them and counts why;
- the Solver stage counts the question too long for its prompt and sizes its batch without it;
  with --fault-matrix it also trains on that dataset, is killed after its first checkpoint and
  resumes (two Ray start-ups: kept out of the CI subset for time);
- the run summary shows every count.
The same outputs through a whole `scripts/main.sh` run are in test_fault_injection.py (full matrix).
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest
from fault_kit import (
    BINARY,
    MALFORMED,
    NORMAL,
    ROOT,
    assert_no_process_left,
    check_storage_clean,
    kill_attempt,
    raw_outputs,
    run_to_end,
    start,
    wait_for,
    write_generation_shard,
)
from local_http import serve, solver_endpoints_file

from infra.stage_kit import read_jsonl, read_manifest, write_stage_config
from infra.vllm_engines import EngineOptions

# ---- the reward function and the repetition penalty ---------------------------------------------


class _AnyQuestion(BaseHTTPRequestHandler):
    """Completions server answering every prompt (n samples: \\boxed{7} and \\boxed{8} alternating);
    records the prompts it received."""

    received: list[str] = []

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        prompts = body["prompt"] if isinstance(body["prompt"], list) else [body["prompt"]]
        type(self).received.extend(prompts)
        choices = [
            {"index": i * body["n"] + j, "text": f"\\boxed{{{7 + j % 2}}}", "finish_reason": "stop"}
            for i in range(len(prompts))
            for j in range(body["n"])
        ]
        self._send({"id": "x", "object": "text_completion", "model": body["model"], "choices": choices})

    def do_GET(self) -> None:
        self._send({"data": [{"id": "scripted", "max_model_len": 1024}]})

    def _send(self, payload: dict) -> None:
        data = json.dumps(payload).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture()
def any_question_solver(tmp_path: Path, tiny_model_dir: str):
    from rewards import challenger_reward

    _AnyQuestion.received = []
    with serve(_AnyQuestion) as server:  # loopback, a free port
        endpoints = solver_endpoints_file(server, tmp_path / "endpoints.json", tiny_model_dir, 1024)
        challenger_reward._clients.clear()
        yield endpoints
    challenger_reward._clients.clear()


@pytest.mark.parametrize("profile", ["paper", "rzero_code"])
def test_challenger_reward_scores_malformed_outputs(any_question_solver: str, profile: str) -> None:
    from rewards.challenger_reward import compute_challenger_reward

    items = [{"response": text} for text in raw_outputs()]
    scores = compute_challenger_reward(
        items, solver_endpoints_file=any_question_solver, profile=profile, solver_max_tokens=16
    )
    assert len(scores) == len(items)
    by_name = dict(zip([f"normal{i}" for i in range(len(NORMAL))] + list(MALFORMED), scores))
    for name, score in by_name.items():
        numbers = {k: v for k, v in score.items() if k not in ("question", "solver_answers")}
        assert all(math.isfinite(v) for v in numbers.values()), (name, score)
        # the rollout log's fields: the parsed question ("" when invalid), the Solver's answers
        assert isinstance(score["question"], str) and isinstance(score["solver_answers"], list)
    # Invalid outputs: no Solver call, the profile's invalid score. In rzero_code a question without
    # a closed box is valid (its answer is mathruler's "None"), as in the authors' code.
    invalid = ("long_output", "unbalanced", "empty") if profile == "paper" else ("long_output", "empty")
    assert by_name["unbalanced"]["valid"] == (profile == "rzero_code")
    for name in invalid:
        assert by_name[name]["valid"] == 0.0, name
        if profile == "paper":
            assert by_name[name]["overall"] == 0.0
        else:
            assert by_name[name]["overall"] == pytest.approx(-1.0 - by_name[name]["penalty"])
    # The binary question reached the Solver and got its 5/5 split of 7s and 8s.
    assert by_name["binary"]["valid"] == 1.0 and by_name["binary"]["p_hat"] == pytest.approx(0.5)
    assert any(BINARY[:40] in prompt for prompt in _AnyQuestion.received)
    # The 50k-character question does not fit the Solver's context: never sent, its 10 answers are
    # empty (RZERO_SPEC section 2 then gives p_hat and the reward below). It shares no 4-gram with
    # the other questions: alone in its cluster, penalty 1 / B.
    long_q = by_name["long_question"]
    assert long_q["valid"] == 1.0
    assert not any("seven seven seven" in prompt for prompt in _AnyQuestion.received)
    assert long_q["penalty"] == pytest.approx(1 / len(items))
    if profile == "paper":
        # No answer has a box: no group, p_hat = 0 / 10; 1 - 2|0 - 0.5| = 0; reward max(0, 0 - pen) = 0.
        assert (long_q["p_hat"], long_q["m"], long_q["uncertainty"], long_q["overall"]) == (
            0.0,
            10.0,
            0.0,
            0.0,
        )
    else:
        # Each empty answer is mathruler's "None" (no box): one group of all 10, p_hat = 1.0;
        # reward min(1.0, 0.0) - pen = -1 / B.
        assert (long_q["p_hat"], long_q["m"], long_q["uncertainty"]) == (1.0, 10.0, 0.0)
        assert long_q["overall"] == pytest.approx(-1 / len(items))


def test_repetition_penalty_of_malformed_questions_matches_the_reference() -> None:
    from rewards.answer_parsing import parse_challenger_output
    from rewards.repetition import reference_repetition_penalty, repetition_penalty

    # As the reward clusters them: an invalid output is an empty question.
    parsed = [parse_challenger_output(text) for text in raw_outputs()]
    questions = [p.question if p.valid else "" for p in parsed]
    questions += [MALFORMED["long_output"], MALFORMED["unbalanced"], BINARY]  # raw text as questions too
    fast = repetition_penalty(questions)
    assert fast.shape == (len(questions),)
    assert all(0 < p <= 1 for p in fast.tolist())
    assert fast.tolist() == pytest.approx(reference_repetition_penalty(questions).tolist(), abs=0)
    # The smallest such batch: one word repeated past 1024 times, nothing shared with the others.
    assert repetition_penalty(["seven " * 2000, "two words"]).tolist() == [0.5, 0.5]


# ---- generation and labelling stages --------------------------------------------------------------


def run_stage_module(module: str, config_path: Path, log: Path, timeout_s: float = 600) -> None:
    with open(log, "w") as out:
        proc = subprocess.run(
            [sys.executable, "-m", module, "--config", str(config_path)],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            timeout=timeout_s,
            check=False,
        )
    assert proc.returncode == 0, log.read_text()[-4000:]


@pytest.fixture(scope="module")
def labelled_run(tiny_model_dir: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """iter_1/question_generate (the malformed outputs) and iter_1/question_evaluate (real vLLM)."""
    from question_evaluate.pseudo_label import LabelConfig
    from question_generate.generate import GenerateConfig

    run = tmp_path_factory.mktemp("malformed") / "run"
    gen_dir, label_dir = run / "iter_1" / "question_generate", run / "iter_1" / "question_evaluate"
    gen = GenerateConfig(
        model=tiny_model_dir, out_dir=str(gen_dir), num_questions=len(raw_outputs()), max_tokens=4096
    )
    gen.engine = EngineOptions(devices=[], max_model_len=4096 + 1024)
    write_generation_shard(gen, raw_outputs())
    run_stage_module(
        "question_generate", write_stage_config(gen_dir / "stage_config.json", gen), run / "gen.log"
    )
    label = LabelConfig(
        solver=tiny_model_dir,
        questions=str(gen_dir),
        out_dir=str(label_dir),
        votes=4,
        max_tokens=16,
        engine=EngineOptions(devices=[], max_model_len=512 + 16),
    )
    config_path = write_stage_config(label_dir / "stage_config.json", label)
    run_stage_module("question_evaluate", config_path, run / "label.log")
    return run


def test_generation_counts_every_malformed_output(labelled_run: Path) -> None:
    manifest = read_manifest(labelled_run / "iter_1" / "question_generate")
    assert manifest is not None
    assert "resumed: 1 of 1 shards were already complete and were reused" in manifest["notes"]
    counts = manifest["counts"]
    assert counts["generated"] == len(NORMAL) + len(MALFORMED)
    # binary and long_question are well-formed questions; the other three are invalid, one reason each
    assert counts["valid"] == len(NORMAL) + 2 and counts["invalid"] == 3
    assert counts["invalid_empty"] == 1  # the empty generation
    assert counts["invalid_no_question"] == 1  # the 100k-character ramble
    assert counts["invalid_no_answer"] == 1  # the unclosed box
    assert counts["truncated"] == 1  # the ramble stopped at max_tokens
    rows = read_jsonl(manifest["outputs"]["questions"])
    assert rows[len(NORMAL)]["raw"] == MALFORMED["long_output"]  # stored whole
    assert BINARY in rows[len(NORMAL) + 1]["question"]  # the bytes survive the jsonl round trip


def test_labelling_counts_what_the_solver_could_not_read(labelled_run: Path) -> None:
    manifest = read_manifest(labelled_run / "iter_1" / "question_evaluate")
    assert manifest is not None
    counts = manifest["counts"]
    assert counts["questions"] == len(NORMAL) + len(MALFORMED) and counts["valid"] == len(NORMAL) + 2
    assert counts["questions_too_long"] == 1  # the 50k-character question
    labelled = {r["id"]: r for r in read_jsonl(manifest["outputs"]["labelled"])}
    too_long = labelled[f"q{len(NORMAL) + 3:06d}"]
    assert too_long["reason"] == "no_answer" and too_long["answers"] == [None] * 4
    binary = labelled[f"q{len(NORMAL) + 1:06d}"]
    assert BINARY in binary["question"] and len(binary["answers"]) == 4
    assert counts["kept"] + counts["dropped"] == counts["valid"]
    check_storage_clean(labelled_run)


def test_summary_shows_the_counts(labelled_run: Path) -> None:
    from pipeline.summary import write_run_summary

    text = write_run_summary(labelled_run, 1).read_text()
    row = next(line for line in text.splitlines() if line.startswith("| question_generate | done |"))
    for key in ("invalid_empty 1", "invalid_no_question 1", "invalid_no_answer 1", "truncated 1"):
        assert key in row, row
    row = next(line for line in text.splitlines() if line.startswith("| question_evaluate | done |"))
    assert "questions_too_long 1" in row, row


# ---- the Solver stage on a dataset with malformed questions, killed after a checkpoint -------------


def write_malformed_dataset(path: Path) -> Path:
    """train.parquet as labelling writes it: 7 questions that fit the Solver's prompt (3 normal, binary
    bytes, unbalanced braces, an empty question, braces in the label) and one of 50k characters."""
    from question_evaluate.outputs import write_dataset

    rows = [
        {"question": "Ada has 12 apples and buys 5 more. How many apples?", "label": "17"},
        {"question": "What is 6 times 7?", "label": "42"},
        {"question": "Ben has 30 cards and gives away 8. How many are left?", "label": "22"},
        {"question": f"What is {BINARY} plus 3?", "label": "7"},
        {"question": "Solve {x + {y = 2 for {x", "label": "{{4"},
        {"question": "", "label": "0"},
        {"question": "Compute \\frac{1}{2} + \\frac{1}{2}.", "label": "\\frac{2}{2"},
        {"question": ("seven " * 8400)[:50_000], "label": "7"},
    ]
    return write_dataset(path, [{**r, "p_hat": 0.5, "id": f"q{i:06d}"} for i, r in enumerate(rows)])


def solver_command(tiny_model_dir: str, dataset: Path, out: Path) -> list[str]:
    """`scripts/solver_train.sh`'s launch, with the demo preset and a checkpoint after every step."""
    preset = ROOT / "configs" / "pipeline" / "demo.yaml"
    launch = [sys.executable, "-m", "pipeline.launch", "solver", tiny_model_dir, str(dataset), str(out)]
    return [*launch, "trainer.save_freq=1", "--preset", str(preset)]


@pytest.mark.fault  # ~3 min (two Ray start-ups): with --fault-matrix; CI keeps the unit checks below
def test_solver_stage_on_malformed_questions_killed_after_a_checkpoint(
    tiny_model_dir: str, tmp_path: Path
) -> None:
    from verl.utils import checkpoint as ckpt

    dataset = write_malformed_dataset(tmp_path / "train.parquet")
    out = tmp_path / "run" / "iter_1" / "solver"
    cmd, storage = solver_command(tiny_model_dir, dataset, out), tmp_path / "storage"
    first = start(cmd, storage, tmp_path / "first.log", ROOT)
    wait_for(first, lambda: ckpt.latest_step(out / "train") == 1, "checkpoint of step 1", timeout_s=900)
    procs = kill_attempt(first)
    assert any("raylet" in p.cmdline for p in procs), [p.cmdline for p in procs]
    assert_no_process_left(first)
    assert read_manifest(out) is None

    second = run_to_end(cmd, storage, tmp_path / "second.log", ROOT, timeout_s=900)
    assert second.proc.returncode == 0, second.tail()
    assert_no_process_left(second, what="the finished run (after it exited)")
    assert f"resumed from {ckpt.step_dir(out / 'train', 1)} (step 1)" in second.log_text()
    manifest = read_manifest(out)
    assert manifest is not None and manifest["counts"]["steps"] == 2
    # Every question is counted: 8 in the dataset, one too long for the prompt (left out, said so).
    assert manifest["counts"]["questions"] == 8 and manifest["counts"]["questions_too_long"] == 1
    assert any("1 of 8 questions are longer than" in note for note in manifest["notes"])
    from verl.utils.logger import read_metrics

    assert [m["step"] for m in read_metrics(out / "train" / "metrics.jsonl")] == [1, 2]
    check_storage_clean(tmp_path / "run")


def test_solver_stage_counts_the_questions_too_long_for_its_prompt(
    tmp_path: Path, tiny_model_dir: str
) -> None:
    """The check behind the Solver stage's batch size, without training: of the 8 questions, the
    50k-character one does not fit data.max_prompt_length (512 in the demo) and is counted."""
    from training.common import TrainStageConfig, build_engine_config
    from training.solver import fitting_questions

    dataset = write_malformed_dataset(tmp_path / "train.parquet")
    preset = ROOT / "configs" / "tiny_cpu.yaml"
    config = TrainStageConfig(
        stage="solver", model=tiny_model_dir, out_dir=str(tmp_path / "solver"), dataset=str(dataset),
        engine_args=[f"config={preset}"],
    )  # fmt: skip
    engine = build_engine_config(config)
    engine.data.train_files = str(dataset)
    assert fitting_questions(engine) == (8, 7)
