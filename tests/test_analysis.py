"""The run analysis (scripts/analyze_run.sh): a fabricated finished run of generated arithmetic
questions with known answers, some pseudo-labels wrong on purpose, the embedded tiny model as base
model and Solvers through the real engines, and an oracle endpoint (a local HTTP server speaking the
chat-completions shape) that returns the true answers. Label accuracy and both matrices are checked
against values computed here by hand; a rerun answers nothing again; per-set statistics by hand."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from local_http import serve

from analysis.analyze import analyze_run
from analysis.metrics import distinct_n, mean_pairwise_bleu, p_hat_histogram, question_stats
from analysis.oracle import OracleSpec
from evaluation.synthetic import make_problems
from infra.stage_kit import write_manifest
from infra.vllm_engines import EngineOptions
from pipeline.summary import write_run_summary
from question_evaluate.outputs import write_dataset
from verl.utils.fs import atomic_write_json, atomic_write_jsonl

ROOT = Path(__file__).resolve().parents[1]
PER_ITERATION = 3  # drawn from 4 kept questions per iteration: the draw is a real subset
MAX_TOKENS = 8


# ------------------------------------------------------------------------- oracle endpoint


class _OracleHandler(BaseHTTPRequestHandler):
    """Answers each Solver chat with the true answer of its question, boxed."""

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.requests.append({"auth": self.headers.get("Authorization"), "body": body})
        question = body["messages"][-1]["content"]
        if self.server.fail or question not in self.server.truth:
            self.send_response(500)
            self.end_headers()
            return
        content = f"The answer is \\boxed{{{self.server.truth[question]}}}"
        data = json.dumps({"choices": [{"index": 0, "message": {"role": "assistant", "content": content}}]})
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data.encode())

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def oracle_server() -> Iterator[ThreadingHTTPServer]:
    with serve(_OracleHandler, requests=[], truth={}, fail=False) as httpd:
        yield httpd


# ------------------------------------------------------------------------- a finished run


def fabricate_run(run_dir: Path, model: str) -> dict[str, dict]:
    """run.json and two iterations' question_evaluate + solver manifests; returns per iteration
    {question: (label, true answer, label is right)}. Labels: iter_1 3 of 4 right (one of them written
    "N.0", right only by the profile's equivalence), iter_2 1 of 4 right."""
    problems = make_problems(8, seed=3)
    # Which kept question's label is wrong, per iteration (the seed-0 draw of 3 of 4 takes rows 1-3 of
    # iter_1 and 0, 1, 3 of iter_2: the equivalence-only label and iter_2's right one are drawn).
    wrong = {1: {2}, 2: {0, 2, 3}}
    truth: dict[str, dict] = {}
    atomic_write_json(run_dir / "run.json", {"base_model": model, "profile": "paper", "tag": run_dir.name})
    for i in (1, 2):
        rows, per_set = [], {}
        for j, p in enumerate(problems[4 * (i - 1) : 4 * i]):
            label = str(int(p["answer"]) + 1) if j in wrong[i] else p["answer"]
            if i == 1 and j == 1:
                label += ".0"
            rows.append(
                {"id": f"q{i}-{j}", "question": p["question"], "label": label, "p_hat": 0.3 + 0.1 * j}
            )
            per_set[p["question"]] = (label, p["answer"], j not in wrong[i])
        stage = run_dir / f"iter_{i}" / "question_evaluate"
        dataset = write_dataset(stage / "train.parquet", rows)
        labelled = atomic_write_jsonl(stage / "labelled.jsonl", [*rows, {**rows[0], "p_hat": 1.0}])
        outputs = {"dataset": str(dataset), "labelled": str(labelled)}
        write_manifest(stage, "question_evaluate", outputs=outputs, config={"votes": 10})
        write_manifest(run_dir / f"iter_{i}" / "solver", "solver", outputs={"model": model})
        truth[f"iter_{i}"] = per_set
    (run_dir / "summary.md").write_text("# run summary\n\nstage tables\n")
    return truth


def _pct(flags: list[bool]) -> float:
    return 100.0 * sum(flags) / len(flags)


@pytest.mark.slow
def test_analysis_of_a_run_with_known_answers(
    tiny_model_dir: str, tmp_path: Path, oracle_server: ThreadingHTTPServer
) -> None:
    run_dir = tmp_path / "fab-run"
    truth = fabricate_run(run_dir, tiny_model_dir)
    oracle_server.truth = {q: a for per_set in truth.values() for q, (_, a, _) in per_set.items()}
    url = f"http://127.0.0.1:{oracle_server.server_address[1]}/v1"
    oracle = OracleSpec(url, "true-answers", api_key_env="ANALYSIS_TEST_KEY")
    args = dict(per_iteration=PER_ITERATION, oracle=oracle, max_tokens=MAX_TOKENS)
    record = analyze_run(run_dir, engine=EngineOptions(max_model_len=512), **args)

    rows = ["base", "solver_1", "solver_2"]
    assert [r["name"] for r in record["rows"]] == rows
    assert sorted(record["cells_computed"]) == sorted(
        f"{r}__iter_{i}" for r in [*rows, "oracle"] for i in (1, 2)
    )
    assert len(oracle_server.requests) == 2 * PER_ITERATION
    # The oracle was asked with the Solver chat, greedily.
    sent = oracle_server.requests[0]["body"]
    assert sent["model"] == "true-answers" and sent["temperature"] == 0.0
    assert sent["messages"][0]["content"].startswith("Please reason step by step")
    for set_name, per_set in truth.items():
        items = record["items"][set_name]
        assert len(items) == PER_ITERATION and len({it["question"] for it in items}) == PER_ITERATION
        assert all(it["question"] in per_set for it in items)
        label_right = [per_set[it["question"]][2] for it in items]  # known by construction
        assert record["label_accuracy"][set_name] == pytest.approx(_pct(label_right))
        assert [it["oracle"] for it in items] == [per_set[it["question"]][1] for it in items]
        # The oracle's row: it meets a label exactly where the label is right; itself always.
        assert record["matrix_vs_label"]["oracle"][set_name] == pytest.approx(_pct(label_right))
        assert record["matrix_vs_oracle"]["oracle"][set_name] == 100.0
        for row in rows:
            answers = [it["answers"][row] for it in items]
            by_label = [a is not None and a == per_set[it["question"]][0] for a, it in zip(answers, items)]
            by_truth = [a is not None and a == per_set[it["question"]][1] for a, it in zip(answers, items)]
            assert record["matrix_vs_label"][row][set_name] == pytest.approx(_pct(by_label))
            assert record["matrix_vs_oracle"][row][set_name] == pytest.approx(_pct(by_truth))
            cell = json.loads((run_dir / "analysis" / "cells" / f"{row}__{set_name}.json").read_text())
            assert cell["model"] == tiny_model_dir and len(cell["answers"]) == PER_ITERATION
    # By hand from the draw: iter_1 holds "N.0" (right by equivalence only), a right and a wrong label.
    assert any(it["label"].endswith(".0") and it["label_correct"] for it in record["items"]["iter_1"])
    assert record["label_accuracy"] == pytest.approx({"iter_1": 200 / 3, "iter_2": 100 / 3})
    stats = record["questions"]["iter_1"]
    assert stats["labelled_p_hat_hist"]["10/10"] == 1 and sum(stats["kept_p_hat_hist"].values()) == 4

    # Outputs: the json, the markdown, the plot, and one section in the run summary.
    out = run_dir / "analysis"
    assert json.loads((out / "analysis.json").read_text())["label_accuracy"] == record["label_accuracy"]
    assert (out / "accuracy.png").stat().st_size > 0
    summary = (run_dir / "summary.md").read_text()
    assert summary.startswith("# run summary") and summary.count("## Analysis: question difficulty") == 1
    assert "Pseudo-label accuracy" in (out / "analysis.md").read_text()

    # The driver's summary rewrite (after a later iteration) keeps the section.
    write_run_summary(run_dir)
    assert (run_dir / "summary.md").read_text().count("## Analysis: question difficulty") == 1

    # A rerun answers nothing again: no engine, no request; the same numbers; one summary section.
    again = analyze_run(run_dir, engine=EngineOptions(max_model_len=512), **args)
    assert again["cells_computed"] == [] and len(oracle_server.requests) == 2 * PER_ITERATION
    assert again["matrix_vs_oracle"] == record["matrix_vs_oracle"]
    assert (run_dir / "summary.md").read_text().count("## Analysis: question difficulty") == 1

    # A lost oracle cell is asked again, and only it (through the script); a failing endpoint writes
    # no cell, so the next run retries instead of reading "no answer".
    (out / "cells" / "oracle__iter_2.json").unlink()
    oracle_server.fail = True
    with pytest.raises(RuntimeError, match="requests to the oracle endpoint"):
        analyze_run(run_dir, engine=EngineOptions(max_model_len=512), **args)
    assert not (out / "cells" / "oracle__iter_2.json").exists()
    oracle_server.fail = False
    n_before = len(oracle_server.requests)
    cmd = ["bash", str(ROOT / "scripts/analyze_run.sh"), str(run_dir), "--per-iteration", str(PER_ITERATION)]
    cmd += ["--oracle", url, "--oracle-model", "true-answers", "--oracle-api-key-env", "ANALYSIS_TEST_KEY"]
    cmd += ["--max-tokens", str(MAX_TOKENS)]
    proc = subprocess.run(
        cmd, capture_output=True, text=True, cwd=tmp_path, env={**_env(), "ANALYSIS_TEST_KEY": "k"}
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    final = json.loads((out / "analysis.json").read_text())
    assert final["cells_computed"] == ["oracle__iter_2"]
    assert final["label_accuracy"] == record["label_accuracy"]
    assert len(oracle_server.requests) - n_before == PER_ITERATION
    assert all(r["auth"] == "Bearer k" for r in oracle_server.requests[n_before:])


def _env() -> dict[str, str]:
    import os

    return dict(os.environ)


# ------------------------------------------------------------------------- unit checks, by hand


def test_question_statistics_by_hand() -> None:
    same = "a b c d e"
    assert mean_pairwise_bleu([same, same]) == pytest.approx(1.0)
    assert mean_pairwise_bleu(["a b c d", "w x y z"]) == 0.0
    # Three questions: BLEU(q0, q1) = 1 and 0 with the disjoint third: mean (1 + 0 + 0) / 3.
    assert mean_pairwise_bleu([same, same, "v w x y z"]) == pytest.approx(1 / 3)
    assert mean_pairwise_bleu(["one"]) is None
    # 2-grams of "a b a b": (a,b) (b,a) (a,b) -> 2 distinct of 3; with "a b": 2 of 4.
    assert distinct_n(["a b a b"], 2) == pytest.approx(2 / 3)
    assert distinct_n(["a b a b", "a b"], 2) == pytest.approx(2 / 4)
    assert distinct_n(["a b"], 3) is None
    assert p_hat_histogram([0.3, 0.3, 0.5, 1.0], 10) == {
        **{f"{k}/10": 0 for k in range(11)},
        "3/10": 2,
        "5/10": 1,
        "10/10": 1,
    }
    stats = question_stats(["a b c", "d e"], [0.4, 0.6], 5)
    assert stats["mean_length_words"] == 2.5 and stats["mean_p_hat"] == pytest.approx(0.5)


def test_bad_inputs_are_refused_before_any_model_loads(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"run\.json not found"):
        analyze_run(tmp_path)
    atomic_write_json(tmp_path / "run.json", {"base_model": "no/such-model", "profile": "paper"})
    with pytest.raises(RuntimeError, match="no kept question"):
        analyze_run(tmp_path)
    with pytest.raises(ValueError, match="--oracle-model"):
        analyze_run(tmp_path, oracle=OracleSpec("http://127.0.0.1:1/v1"))
    with pytest.raises(ValueError, match="plain http to another machine"):
        analyze_run(tmp_path, oracle=OracleSpec("http://example.com/v1", "m"))
    with pytest.raises(ValueError, match="neither an http"):
        analyze_run(tmp_path, oracle=OracleSpec(str(tmp_path / "no-model")))
    proc = subprocess.run(
        ["bash", str(ROOT / "scripts/analyze_run.sh"), str(tmp_path / "nothing")],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2 and "run.json not found" in proc.stderr
