"""End to end on CPU with the tiny model and real vLLM: scripts/evaluate.sh on two fixture benchmarks
(AMC-style math with mean@4 sampling, MMLU-Pro-style multiple choice greedy), the resume path, and
the data-parallel worker process. Two engine starts in all (the script's, the worker's).

The tiny model is random, so accuracies are ~0; what is tested is the path and the files.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import subprocess
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest
from local_http import serve

ROOT = Path(__file__).resolve().parents[1]
# No --max-tokens: the runner's default budgets (4096 math, 8192 general) reach the engine, and the
# short model length (prompts are 51 to 127 tokens) is what ends the random model's responses.
MAX_MODEL_LEN = 192
GEN_ARGS = [
    "--k",
    "4",
    "--sample-temperature",
    "1.0",
    "--max-model-len",
    str(MAX_MODEL_LEN),
    "--grader-workers",
    "1",
]

pytestmark = pytest.mark.slow


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _write_jsonl(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return str(path)


def _run_script(
    model: str, out_dir: Path, data: dict[str, str], storage: Path
) -> subprocess.CompletedProcess:
    """scripts/evaluate.sh with local files given through the environment, as on an offline node:
    AMC from a data folder (file named by an alias), MMLU-Pro from a file whose question column
    has another name (mapped with EVAL_FIELDS)."""
    env = dict(os.environ)
    env.update(
        OUT_DIR=str(out_dir),
        STORAGE_PATH=str(storage),
        EVAL_DATA_DIR=data["data_dir"],
        EVAL_DATA=f"mmlu_pro={data['mmlu_pro']}",
        EVAL_FIELDS="mmlu_pro: question=stem",
        EVAL_OFFLINE="1",
        EVAL_LABEL=out_dir.name,
    )
    cmd = ["bash", str(ROOT / "scripts" / "evaluate.sh"), model, "amc23", "mmlu_pro", *GEN_ARGS]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return proc


@pytest.fixture(scope="module")
def fixture_data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("bench")
    amc = [
        {"id": i, "question": f"What is {a} plus {b}?", "answer": float(a + b), "url": "-"}
        for i, (a, b) in enumerate([(2, 3), (10, 7), (40, 2)])
    ]
    mmlu = [
        {
            "question_id": 0,
            "stem": "Which number is even?",
            "options": ["3", "5", "8", "9"],
            "answer": "C",
            "category": "math",
        },
        {
            "question_id": 1,
            "stem": "Which is a colour?",
            "options": ["blue", "seven", "run"],
            "answer": "A",
            "category": "other",
        },
    ]
    _write_jsonl(folder / "amc.jsonl", amc)
    return {"data_dir": str(folder), "mmlu_pro": _write_jsonl(folder / "mmlu_pro_renamed.jsonl", mmlu)}


@pytest.fixture(scope="module")
def eval_run(
    tiny_model_dir: str, fixture_data: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Path:
    storage = tmp_path_factory.mktemp("storage")
    # An earlier result beside this one (as the base model's is beside each iteration's): the
    # script then also writes the comparison table and plot over both.
    earlier = storage / "eval" / "earlier"
    earlier.mkdir(parents=True)
    earlier_results = {"label": "earlier", "benchmarks": {"amc23": {"accuracy": 25.0, "protocol": "greedy"}}}
    (earlier / "results.json").write_text(json.dumps(earlier_results), encoding="utf-8")
    out = storage / "eval" / "tiny-first"
    _run_script(tiny_model_dir, out, fixture_data, storage)
    return out


def test_evaluate_sh_writes_per_item_results_summary_and_csv(eval_run: Path) -> None:
    results = json.loads((eval_run / "results.json").read_text())
    assert set(results["benchmarks"]) == {"amc23", "mmlu_pro"}
    for name, n_items in (("amc23", 3), ("mmlu_pro", 2)):
        entry = results["benchmarks"][name]
        items = _jsonl(eval_run / name / "items.jsonl")
        assert len(items) == n_items == entry["num_items"]
        assert all({"gold", "preds", "correct", "score", "question"} <= set(r) for r in items)
        # The reported accuracy is the mean of the per-item mean@k scores, and unparsed is counted.
        assert entry["accuracy"] == pytest.approx(100 * sum(r["score"] for r in items) / n_items)
        assert entry["unparsed"] == sum(p is None for r in items for p in r["preds"])
        assert not entry["reused_responses"]
    assert [r["gold"] for r in _jsonl(eval_run / "amc23" / "items.jsonl")] == ["5.0", "17.0", "42.0"]
    assert [r["options"] for r in _jsonl(eval_run / "mmlu_pro" / "items.jsonl")][1] == [
        "blue",
        "seven",
        "run",
    ]
    assert "grader" in results and results["math_avg_n"] == 1

    summary = (eval_run / "summary.md").read_text()
    assert "| Model | AVG | AMC (mean@4 T=1 top_p=0.95) |" in summary  # the paper's budget: no departure
    assert f"| tiny-first | {results['math_avg']:.2f}* |" in summary
    assert "MMLU-Pro" in summary
    (record,) = list(csv.DictReader(io.StringIO((eval_run / "summary.csv").read_text())))
    assert record["model"] == "tiny-first" and record["amc23_protocol"] == "mean@4 T=1 top_p=0.95"
    assert record["mmlu_pro"] == f"{results['benchmarks']['mmlu_pro']['accuracy']:.2f}"
    assert record["mmlu_pro_protocol"] == "greedy"


def test_default_token_budgets_reach_the_engine(eval_run: Path, tiny_model_dir: str) -> None:
    """No --max-tokens: 4096 new tokens for math, 8192 for the general benchmarks (the paper's), given
    to the engine, so only the model length ends a response that does not stop by itself."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    results = json.loads((eval_run / "results.json").read_text())
    assert {n: e["max_tokens"] for n, e in results["benchmarks"].items()} == {"amc23": 4096, "mmlu_pro": 8192}
    truncated = 0
    for name in ("amc23", "mmlu_pro"):
        for row in _jsonl(eval_run / name / "responses.jsonl"):
            room = MAX_MODEL_LEN - len(tokenizer(row["prompt"], add_special_tokens=False)["input_ids"])
            for reason, tokens in zip(row["finish_reasons"], row["num_tokens"]):
                assert tokens <= room
                if reason == "length":
                    truncated += 1
                    assert tokens == room  # the model length ended it, not a smaller budget
    assert truncated > 0


def test_mean_at_k_uses_k_distinct_sampled_responses(eval_run: Path) -> None:
    results = json.loads((eval_run / "results.json").read_text())
    amc = results["benchmarks"]["amc23"]
    assert (amc["k"], amc["temperature"], amc["num_responses"]) == (4, 1.0, 12)
    rows = _jsonl(eval_run / "amc23" / "responses.jsonl")
    for row in rows:
        assert len(row["responses"]) == 4
        assert len(set(row["responses"])) == 4, "mean@4 must be 4 distinct samples, not 4 greedy copies"
        assert row["chat_template"] and row["prompt"].startswith("<|im_start|>system\n")
    assert len(_jsonl(eval_run / "amc23" / "items.jsonl")[0]["preds"]) == 4
    mmlu = results["benchmarks"]["mmlu_pro"]
    assert (mmlu["k"], mmlu["protocol"]) == (1, "greedy")
    assert all(len(r["responses"]) == 1 for r in _jsonl(eval_run / "mmlu_pro" / "responses.jsonl"))


def test_comparison_over_sibling_results(eval_run: Path) -> None:
    comparison = (eval_run.parent / "comparison.md").read_text()
    assert "| earlier | 25.00* |" in comparison and "| tiny-first |" in comparison
    assert (eval_run.parent / "comparison.png").read_bytes()[:4] == b"\x89PNG"


class _JudgeSaysYes(BaseHTTPRequestHandler):
    """A chat-completions endpoint whose judge accepts every candidate and records what it was asked."""

    received: list[dict] = []

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).received.append(body)
        data = json.dumps(
            {"choices": [{"index": 0, "message": {"role": "assistant", "content": "YES"}}]}
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args) -> None:
        pass


# Known responses written over the copied responses.jsonl (the random tiny model answers nothing
# right): per item, what the rules and the judge must make of them.
KNOWN_RESPONSES = {
    "amc23": [  # golds 5, 17, 42
        ["\\boxed{5}", "\\boxed{5}", "\\boxed{6}", "no answer here"],  # rules 2/4; judge also takes "6"
        ["\\boxed{17}", "I give up", "no answer here", "\\boxed{16}"],  # rules 1/4; judge also takes "16"
        ["\\boxed{42}"] * 4,  # 4/4
    ],
    "mmlu_pro": [["\\boxed{C}"], ["The answer is (B)"]],  # golds C, A: 1 of 2
}


def test_rerun_reuses_responses_without_starting_an_engine(
    eval_run: Path, fixture_data: dict[str, str], tiny_model_dir: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Same run again (in process) into a copy of the outputs whose responses are replaced by known
    ones, with the LLM judge switched on: the accuracies are the ones the known answers give, and the
    judge server receives exactly the rule-wrong answers that have an extracted answer."""
    from evaluation.cli import main as cli_main

    second = eval_run.parent / "tiny-second"
    shutil.copytree(eval_run, second)
    (second / "results.json").unlink()
    for name, responses in KNOWN_RESPONSES.items():
        path = second / name / "responses.jsonl"
        rows = _jsonl(path)
        assert len(rows) == len(responses)
        for row, known in zip(rows, responses):
            assert len(row["responses"]) == len(known)
            row["responses"] = known
        _write_jsonl(path, rows)
    _JudgeSaysYes.received = []
    with serve(_JudgeSaysYes) as httpd, caplog.at_level("INFO", logger="evaluation.runner"):
        argv = [
            "--model", tiny_model_dir, "--benchmarks", "amc23,mmlu_pro", "--out", str(second), "--offline",
            "--data-dir", fixture_data["data_dir"], "--data", f"mmlu_pro={fixture_data['mmlu_pro']}",
            "--fields", "mmlu_pro:question=stem", *GEN_ARGS,
            "--judge-url", f"http://127.0.0.1:{httpd.server_address[1]}/v1", "--judge-model", "judge",
        ]  # fmt: skip
        assert cli_main(argv) == 0
    assert sum("reusing" in r.getMessage() for r in caplog.records) == 2
    again = json.loads((second / "results.json").read_text())
    assert all(again["benchmarks"][n]["reused_responses"] for n in ("amc23", "mmlu_pro"))
    # Rules: AMC mean@4 = (2/4 + 1/4 + 4/4) / 3; MMLU-Pro 1 of 2.
    assert again["benchmarks"]["amc23"]["accuracy"] == pytest.approx(100 * (0.5 + 0.25 + 1.0) / 3)
    assert again["benchmarks"]["mmlu_pro"]["accuracy"] == pytest.approx(50.0)
    # The judge re-checks math (rule-wrong answers with an extracted answer: "6" and "16"), not
    # multiple choice; it accepts both, and its score is reported beside the rule-based one.
    asked = sorted(
        r["messages"][1]["content"].rsplit("Candidate answer:\n", 1)[1] for r in _JudgeSaysYes.received
    )
    assert asked == ["16\n\nEquivalent?", "6\n\nEquivalent?"]
    assert all(r["model"] == "judge" for r in _JudgeSaysYes.received)
    assert again["benchmarks"]["amc23"]["judge_accuracy"] == pytest.approx(100 * (0.75 + 0.5 + 1.0) / 3)
    assert again["benchmarks"]["mmlu_pro"]["judge_accuracy"] is None
    assert again["judge"]["model"] == "judge" and again["judge"]["failures"] == 0
    assert again["judge"]["requests_sent"] == 2
    assert "AMC (judge)" in (second / "summary.md").read_text()


def test_data_parallel_worker_keeps_order_seeds_and_limits(tiny_model_dir: str) -> None:
    from transformers import AutoTokenizer

    from evaluation.generate import DataParallelEngine, EngineConfig, GenRequest, SamplingConfig

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    ids = [tokenizer(f"What is {i} times {i}?")["input_ids"] for i in range(3)]
    sampled = SamplingConfig(k=4, temperature=1.0, max_tokens=12, seed=3)
    engine = DataParallelEngine(
        EngineConfig(model=tiny_model_dir, max_model_len=256), groups=[""]
    )  # one CPU worker
    try:
        requests = [
            GenRequest(ids[i], SamplingConfig(temperature=1.0, max_tokens=m), seed=i)
            for i, m in enumerate((3, 11, 6))
        ]
        requests += [
            GenRequest(ids[0], sampled, sampled.request_seed(0)),
            GenRequest(list(range(5, 300)), sampled, 0),
        ]
        out = engine.generate(requests)
        again = engine.generate(requests[3:4])
    finally:
        engine.close()
    assert [len(o) for o in out] == [1, 1, 1, 4, 4]
    # Results come back in request order: each has the length its own max_tokens allows.
    for completions, limit in zip(out[:3], (3, 11, 6)):
        assert completions[0].num_tokens == limit or completions[0].finish_reason == "stop"
        assert completions[0].num_tokens <= limit
    assert len({c.text for c in out[3]}) == 4
    assert [c.text for c in again[0]] == [c.text for c in out[3]]  # seeded: the same 4 samples again
    assert [c.finish_reason for c in out[4]] == ["prompt_too_long"] * 4  # 295 ids >= max_model_len 256
    assert engine._procs == []
