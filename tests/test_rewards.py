"""Challenger and Solver rewards on crafted batches, per profile.

The Solver's answers must be crafted to test the formulas exactly, which a random tiny model cannot
give; so the Solver here is a scripted OpenAI-compatible completions server on 127.0.0.1 that the
real client talks to over HTTP (the real vLLM server is exercised in test_solver_service.py and the
Challenger stage test).
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from rewards import challenger_reward
from rewards.challenger_reward import challenger_scores, compute_challenger_reward
from rewards.repetition import repetition_penalty
from rewards.solver_reward import compute_solver_reward, format_ok

# Scripted Solver: the answers to each question (10 samples), keyed by a marker in the question.
SCRIPT = {
    "AGREE": ["\\boxed{4}"] * 10,
    "HALF": ["\\boxed{\\frac{1}{2}}"] * 3
    + ["\\boxed{0.5}"] * 2
    + ["\\boxed{7}"] * 5,  # 1/2 == 0.5: a 5/5 split
    "SEVEN": ["\\boxed{12}"] * 7 + ["\\boxed{13}"] * 2 + ["no answer"],
}

QUESTIONS = {
    "AGREE": "AGREE Compute the number of ordered pairs of positive integers whose product equals two hundred.",
    "HALF": "HALF A fair coin is tossed repeatedly until two consecutive heads appear; find the probability.",
    "SEVEN": "SEVEN Triangle ABC has sides thirteen fourteen fifteen; find the inradius times the semiperimeter.",
}


class _Handler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        prompts = body["prompt"] if isinstance(body["prompt"], list) else [body["prompt"]]
        choices = []
        for p_index, prompt in enumerate(prompts):
            key = next(k for k in SCRIPT if k in prompt)
            for j in range(body["n"]):
                choices.append(
                    {"index": p_index * body["n"] + j, "text": SCRIPT[key][j], "finish_reason": "stop"}
                )
        payload = json.dumps(
            {"id": "x", "object": "text_completion", "model": body["model"], "choices": choices}
        )
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload.encode())

    def do_GET(self) -> None:
        payload = json.dumps({"data": [{"id": "scripted", "max_model_len": 4096}]})
        self.send_response(200)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload.encode())

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture()
def scripted_solver(tmp_path: Path, tiny_model_dir: str):
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)  # port 0: a free port
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    endpoints = tmp_path / "endpoints.json"
    endpoints.write_text(
        json.dumps(
            {
                "endpoints": [f"http://127.0.0.1:{server.server_address[1]}"],
                "model_name": "scripted",
                "model": tiny_model_dir,
                "max_model_len": 4096,
            }
        )
    )
    challenger_reward._clients.clear()
    yield server, str(endpoints)
    server.shutdown()
    server.server_close()
    challenger_reward._clients.clear()


def _response(question: str, answer: str = "42") -> str:
    return f"<think>design</think><question>{question}</question> \\boxed{{{answer}}}"


def _batch() -> list[dict]:
    return [
        {"response": _response(QUESTIONS["AGREE"])},  # p=1.0
        {"response": _response(QUESTIONS["HALF"])},  # p=0.5
        {"response": _response(QUESTIONS["SEVEN"])},  # p=0.7
        {"response": "I refuse to write a question."},  # invalid
        {"response": _response(QUESTIONS["HALF"], "1")},  # duplicate question of item 1
        {"response": _response(QUESTIONS["HALF"], "2")},  # duplicate question of item 1
    ]


def test_penalty_groups_duplicates() -> None:
    questions = [
        QUESTIONS["AGREE"],
        QUESTIONS["HALF"],
        QUESTIONS["SEVEN"],
        "",
        QUESTIONS["HALF"],
        QUESTIONS["HALF"],
    ]
    assert repetition_penalty(questions).tolist() == pytest.approx([1 / 6, 3 / 6, 1 / 6, 1 / 6, 3 / 6, 3 / 6])


@pytest.mark.parametrize(
    ("profile", "expected"),
    [
        # valid: max(0, (1 - 2|p - 0.5|) - pen); invalid: 0
        ("paper", [0.0, 1 - 0.5, 0.6 - 1 / 6, 0.0, 1 - 0.5, 1 - 0.5]),
        # valid: min(p, 1 - p) - pen; invalid: -1 - pen
        ("rzero_code", [0 - 1 / 6, 0.5 - 0.5, 0.3 - 1 / 6, -1 - 1 / 6, 0.5 - 0.5, 0.5 - 0.5]),
    ],
)
def test_challenger_reward_exact_per_profile(scripted_solver, profile: str, expected: list[float]) -> None:
    _, endpoints = scripted_solver
    out = compute_challenger_reward(
        _batch(), solver_endpoints_file=endpoints, profile=profile, solver_votes=10
    )
    assert [r["overall"] for r in out] == pytest.approx(expected)
    assert [r["p_hat"] for r in out] == pytest.approx([1.0, 0.5, 0.7, 0.0, 0.5, 0.5])
    assert [r["valid"] for r in out] == [1.0, 1.0, 1.0, 0.0, 1.0, 1.0]
    assert [r["penalty"] for r in out] == pytest.approx([1 / 6, 3 / 6, 1 / 6, 1 / 6, 3 / 6, 3 / 6])
    assert [r["uncertainty"] for r in out] == pytest.approx([0.0, 1.0, 0.6, 0.0, 1.0, 1.0])


def test_challenger_scores_formula_edges() -> None:
    pen = np.array([0.9, 0.0])
    assert challenger_scores([True, True], [0.5, 0.0], pen, "paper") == pytest.approx([0.1, 0.0])
    assert challenger_scores([True, False], [0.5, 0.0], pen, "rzero_code") == pytest.approx([-0.4, -1.0])
    with pytest.raises(ValueError, match="unknown profile"):
        challenger_scores([True], [0.5], np.array([0.0]), "other")


def test_challenger_reward_fails_fast_when_solver_is_gone(scripted_solver) -> None:
    from solver_service.server import SolverServiceError

    server, endpoints = scripted_solver
    server.shutdown()
    server.server_close()
    start = time.monotonic()
    with pytest.raises(SolverServiceError):
        compute_challenger_reward(
            _batch(), solver_endpoints_file=endpoints, solver_votes=10, request_timeout_s=2.0, max_retries=1
        )
    assert time.monotonic() - start < 30  # retries are bounded: it never hangs


def test_challenger_reward_needs_endpoints() -> None:
    with pytest.raises(ValueError, match="solver_endpoints_file"):
        compute_challenger_reward([{"response": "x"}])


def test_solver_reward_per_profile() -> None:
    items = [
        {
            "response": "<think>ok</think> so \\boxed{\\dfrac{1}{2}}",
            "ground_truth": "0.5",
        },  # right, formatted
        {"response": "the answer is \\boxed{3}", "ground_truth": "x=3"},  # right, no think block
        {"response": "<think>hmm</think> \\boxed{5}", "ground_truth": "4"},  # wrong, formatted
        {"response": "no box at all", "ground_truth": "4"},  # wrong, no format
    ]
    paper = compute_solver_reward(items, profile="paper")
    assert [r["overall"] for r in paper] == [1.0, 1.0, 0.0, 0.0]
    code = compute_solver_reward(items, profile="rzero_code")
    assert [r["overall"] for r in code] == pytest.approx([1.0, 0.9, 0.1, 0.0])
    assert [r["format"] for r in code] == [1.0, 0.0, 1.0, 0.0]
    assert format_ok("<think>a\nb</think>\n\\boxed{1}") and not format_ok("\\boxed{1}<think></think>")
