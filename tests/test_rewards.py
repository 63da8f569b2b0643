"""Challenger and Solver rewards on crafted batches, per profile, end to end.

The Solver's answers must be crafted to test the formulas exactly, which a random tiny model cannot
give; so the Solver here is a scripted OpenAI-compatible completions server on 127.0.0.1 that the
real client talks to over HTTP (the real vLLM server is exercised in test_solver_service.py and the
Challenger stage test).
"""

from __future__ import annotations

import json
import time
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import numpy as np
import pytest
from local_http import serve, solver_endpoints_file

from rewards import challenger_reward
from rewards.answer_parsing import ParsedQuestion, parse_challenger_output
from rewards.challenger_reward import challenger_scores, compute_challenger_reward
from rewards.default_grader import get_default_pool
from rewards.repetition import repetition_penalty
from rewards.solver_reward import compute_solver_reward, format_ok

# Scripted Solver: the answers to each question (10 samples), keyed by a marker in the question.
SCRIPT = {
    "AGREE": ["\\boxed{4}"] * 10,
    "HALF": ["\\boxed{\\frac{1}{2}}"] * 3
    + ["\\boxed{0.5}"] * 2
    + ["\\boxed{7}"] * 5,  # 1/2 == 0.5 for both graders: a 5/5 split
    "SEVEN": ["\\boxed{12}"] * 7 + ["\\boxed{13}"] * 2 + ["no answer"],
    # 5 box-less + 5 different answers: paper 1/10; rzero_code "None" x5 of 10 = 0.5.
    "NOBOX": ["I give up."] * 5 + [f"\\boxed{{{k}}}" for k in (21, 22, 23, 24, 25)],
    # 5 empty boxes + 5 sevens: paper 5/10; rzero_code at reward time (the authors' Solver server)
    # also 5/10: empty boxes join no group but count in m (their labelling would say 5/5).
    "EMPTY": ["\\boxed{}"] * 5 + ["\\boxed{7}"] * 5,
    "BOXLESS": ["\\boxed{2}"] * 3 + ["\\boxed{5}"] * 7,
    # math-verify merges 2/4 with 1/2 (6 of 10); mathruler does not (the 4 threes or 4 halves: 0.4).
    "QUARTER": ["\\boxed{1/2}"] * 4 + ["\\boxed{2/4}"] * 2 + ["\\boxed{3}"] * 4,
}

QUESTIONS = {
    "AGREE": "AGREE Compute the number of ordered pairs of positive integers whose product equals two hundred.",
    "HALF": "HALF A fair coin is tossed repeatedly until two consecutive heads appear; find the probability.",
    "SEVEN": "SEVEN Triangle ABC has sides thirteen fourteen fifteen; find the inradius times the semiperimeter.",
    "NOBOX": "NOBOX Let f be a cubic polynomial with f(1)=2, f(2)=5, f(3)=10 and f(4)=17; determine f(6).",
    "EMPTY": "EMPTY How many subsets of a twelve element set contain no two consecutive integers at all?",
    "BOXLESS": "BOXLESS Seven friends shake hands once each pair; each handshake lasts three seconds. Total?",
    "QUARTER": "QUARTER What fraction of the divisors of sixty are multiples of three, in lowest terms please?",
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
    with serve(_Handler) as server:  # loopback, a free port
        endpoints = solver_endpoints_file(server, tmp_path / "endpoints.json", tiny_model_dir, 4096)
        challenger_reward._clients.clear()
        yield server, endpoints
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
        {"response": _response(QUESTIONS["NOBOX"])},
        {"response": _response(QUESTIONS["EMPTY"])},
        # A question without a box: invalid in paper, valid in rzero_code (its answer is "None").
        {"response": f"<question>{QUESTIONS['BOXLESS']}</question> The answer is 63."},
        {"response": _response(QUESTIONS["QUARTER"])},
    ]


# Per profile, for the 10 items of `_batch`: (valid, p_hat, m). B = 10: the HALF cluster has 3
# members (penalty 0.3), every other question is alone (0.1).
PENALTY = [0.1, 0.3, 0.1, 0.1, 0.3, 0.3, 0.1, 0.1, 0.1, 0.1]
EXPECTED_VOTES = {
    "paper": (
        [True, True, True, False, True, True, True, True, False, True],
        [1.0, 0.5, 0.7, 0.0, 0.5, 0.5, 0.1, 0.5, 0.0, 0.6],
        [10, 10, 10, 0, 10, 10, 10, 10, 0, 10],
    ),
    "rzero_code": (
        [True, True, True, False, True, True, True, True, True, True],
        [1.0, 0.5, 0.7, 0.0, 0.5, 0.5, 0.5, 0.5, 0.7, 0.4],
        [10, 10, 10, 0, 10, 10, 10, 10, 10, 10],
    ),
}


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
    ("profile", "expected", "uncertainty"),
    [
        # valid: max(0, (1 - 2|p - 0.5|) - pen); invalid: 0
        (
            "paper",
            [0.0, 1 - 0.3, 0.6 - 0.1, 0.0, 1 - 0.3, 1 - 0.3, 0.2 - 0.1, 1 - 0.1, 0.0, 0.8 - 0.1],
            [0.0, 1.0, 0.6, 0.0, 1.0, 1.0, 0.2, 1.0, 0.0, 0.8],
        ),
        # valid: min(p, 1 - p) - pen; invalid: -1 - pen
        (
            "rzero_code",
            [
                0 - 0.1,
                0.5 - 0.3,
                0.3 - 0.1,
                -1 - 0.1,
                0.5 - 0.3,
                0.5 - 0.3,
                0.5 - 0.1,
                0.5 - 0.1,
                0.3 - 0.1,
                0.4 - 0.1,
            ],
            [0.0, 0.5, 0.3, 0.0, 0.5, 0.5, 0.5, 0.5, 0.3, 0.4],
        ),
    ],
)
def test_challenger_reward_exact_per_profile(
    scripted_solver, profile: str, expected: list[float], uncertainty: list[float]
) -> None:
    _, endpoints = scripted_solver
    backend = "math_verify" if profile == "paper" else "mathruler"
    before = get_default_pool(backend=backend).stats_snapshot()["calls"]
    out = compute_challenger_reward(
        _batch(), solver_endpoints_file=endpoints, profile=profile, solver_votes=10
    )
    valid, p_hat, m = EXPECTED_VOTES[profile]
    assert [r["valid"] for r in out] == [float(v) for v in valid]
    assert [r["p_hat"] for r in out] == pytest.approx(p_hat)
    assert [r["m"] for r in out] == m
    assert [r["penalty"] for r in out] == pytest.approx(PENALTY)
    assert [r["uncertainty"] for r in out] == pytest.approx(uncertainty)
    assert [r["overall"] for r in out] == pytest.approx(expected)
    # The profile's own grader compared the answers.
    assert get_default_pool(backend=backend).stats_snapshot()["calls"] > before


def test_rzero_code_reward_time_validity(scripted_solver) -> None:
    # Reward time keeps mathruler's extraction: a box-less question is valid (answer "None") and is
    # sent to the Solver; a question whose last box is empty is invalid (-1 - penalty), even with an
    # earlier non-empty box. (Question generation judges these two the other way round.)
    _, endpoints = scripted_solver
    boxless = f"<question>{QUESTIONS['AGREE']}</question> The answer is 200."
    empty_last = f"<question>{QUESTIONS['SEVEN']}</question> \\boxed{{84}} so \\boxed{{}}"
    assert parse_challenger_output(boxless, "rzero_code") == ParsedQuestion(QUESTIONS["AGREE"], "None", True)
    out = compute_challenger_reward(
        [{"response": boxless}, {"response": empty_last}],
        solver_endpoints_file=endpoints,
        profile="rzero_code",
        solver_votes=10,
    )
    assert [r["valid"] for r in out] == [1.0, 0.0]
    assert [r["m"] for r in out] == [10, 0]  # only the valid question was answered
    assert [r["overall"] for r in out] == pytest.approx([0.0 - 0.5, -1.0 - 0.5])  # AGREE: p 1.0


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
        # math-verify accepts an unreduced fraction, mathruler's grade_answer does not.
        {"response": "<think>a</think> \\boxed{2/4}", "ground_truth": "1/2"},
        # mathruler's extraction needs the exact opener `\boxed{`; last_boxed also reads `\boxed {`.
        {"response": "<think>b</think> \\boxed {6}", "ground_truth": "6"},
        # rzero_code removes whitespace around `<`, `>`, `/` before its fullmatch: a space before
        # <think> keeps the format point there (paper's logged format reads the raw text).
        {"response": " <think>c</think> \\boxed{8}", "ground_truth": "8"},
    ]
    paper = compute_solver_reward(items, profile="paper")
    assert [r["overall"] for r in paper] == [1.0, 1.0, 0.0, 0.0, 1.0, 1.0, 1.0]
    code = compute_solver_reward(items, profile="rzero_code")
    assert [r["accuracy"] for r in code] == [1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0]
    assert [r["format"] for r in code] == [1.0, 0.0, 1.0, 0.0, 1.0, 0.0, 1.0]
    assert [r["overall"] for r in code] == pytest.approx([1.0, 0.9, 0.1, 0.0, 0.1, 0.0, 1.0])
    assert [r["format"] for r in paper][6] == 0.0


def test_format_is_the_authors_fullmatch() -> None:
    assert format_ok("<think>a\nb</think>\n\\boxed{1}")  # DOTALL: newlines anywhere
    assert format_ok("<think></think>\\boxed{1} and more text after")
    assert not format_ok("\\boxed{1}<think></think>")  # the box must follow </think>
    assert not format_ok("\n<think>a</think>\\boxed{1}")  # nothing may precede <think>
    assert not format_ok("<think>a</think> the answer is 1")


def test_rzero_code_removes_whitespace_around_tags_first() -> None:
    """Spec section 2: ``re.sub(r"\\s*(<|>|/)\\s*", r"\\1", text)`` before format and accuracy."""
    items = [
        {"response": "\n<think>a</think>\n\\boxed{7}", "ground_truth": "7"},  # newline before <think>
        {"response": "< think >a< /think > \\boxed{7}", "ground_truth": "7"},  # spaced-out tags
        {"response": "<think>a</think> \\boxed{x \n< 3}", "ground_truth": "x<3"},  # inside the box too
        {"response": "\n<think>a \\boxed{7}", "ground_truth": "7"},  # still no </think>
    ]
    code = compute_solver_reward(items, profile="rzero_code")
    assert [r["format"] for r in code] == [1.0, 1.0, 1.0, 0.0]
    assert [r["accuracy"] for r in code] == [1.0, 1.0, 1.0, 1.0]
    assert [r["overall"] for r in code] == pytest.approx([1.0, 1.0, 1.0, 0.9])
    # The raw text fails the authors' fullmatch: the clean-up is what gives the point.
    assert not format_ok(items[0]["response"]) and not format_ok(items[1]["response"])
