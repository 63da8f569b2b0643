"""LLM judge against a real local HTTP server that answers like the chat-completions API."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from local_http import serve

from evaluation.judge import LLMJudge, apply_judge, judge_user_prompt, parse_verdict
from evaluation.loaders import Item
from evaluation.scoring import BenchmarkScore, ItemScore

# The fake judge accepts these (reference, candidate) pairs, in this order only.
EQUIVALENT = {("one half", "1/2"), ("Paris", "paris, France")}


class _ChatHandler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.requests.append(
            {"path": self.path, "auth": self.headers.get("Authorization"), "body": body}
        )
        user = body["messages"][-1]["content"]
        match = re.search(r"Reference answer:\n(.*)\n\nCandidate answer:\n(.*)\n\nEquivalent\?", user, re.S)
        if match is None or match.group(2) == "boom":
            self.send_response(500)
            self.end_headers()
            return
        verdict = "YES" if (match.group(1), match.group(2)) in EQUIVALENT else "NO."
        payload = {
            "id": "x",
            "object": "chat.completion",
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": verdict}, "finish_reason": "stop"}
            ],
        }
        data = json.dumps(payload).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args) -> None:  # keep pytest output clean
        pass


@pytest.fixture
def server() -> Iterator[ThreadingHTTPServer]:
    with serve(_ChatHandler, requests=[]) as httpd:
        yield httpd


def _url(httpd: ThreadingHTTPServer) -> str:
    return f"http://127.0.0.1:{httpd.server_address[1]}/v1"


def test_verdicts_use_gold_as_reference_and_are_cached(server: ThreadingHTTPServer, tmp_path: Path) -> None:
    cache = tmp_path / "judge_cache.json"
    judge = LLMJudge(_url(server), "judge-model", api_key="secret", cache_path=cache, retries=0)
    triples = [("q1", "one half", "1/2"), ("q2", "1/2", "one half"), ("q3", "Paris", "paris, France")]
    assert judge.verdicts(triples) == [True, False, True]  # (gold, candidate) order matters
    assert len(server.requests) == 3
    first = server.requests[0]
    assert first["path"] == "/v1/chat/completions" and first["auth"] == "Bearer secret"
    assert first["body"]["model"] == "judge-model" and first["body"]["temperature"] == 0.0
    assert judge_user_prompt("q1", "one half", "1/2") in [
        r["body"]["messages"][-1]["content"] for r in server.requests
    ]

    # Same triples again, from this judge and from a fresh one reading the cache file: no requests.
    assert judge.verdicts(triples) == [True, False, True]
    again = LLMJudge(_url(server), "judge-model", cache_path=cache)
    assert again.verdicts(triples[::-1]) == [True, False, True][::-1]
    assert len(server.requests) == 3
    # Another judge model does not reuse these verdicts.
    LLMJudge(_url(server), "other-model", cache_path=cache).verdicts(triples[:1])
    assert len(server.requests) == 4


def test_failed_requests_give_none_are_counted_and_not_cached(
    server: ThreadingHTTPServer, tmp_path: Path
) -> None:
    judge = LLMJudge(_url(server), "m", cache_path=tmp_path / "c.json", retries=1)
    assert judge.verdicts([("q", "x", "boom")]) == [None]
    assert judge.failures == 1 and len(server.requests) == 2  # one retry
    assert judge.verdicts([("q", "x", "boom")]) == [None]
    assert len(server.requests) == 4


def test_apply_judge_only_rechecks_rule_wrong_parsed_answers(server: ThreadingHTTPServer) -> None:
    judge = LLMJudge(_url(server), "m", retries=0)
    items = [Item("a", 0, "q-a", "one half"), Item("b", 1, "q-b", "Paris")]
    score = BenchmarkScore(
        [
            ItemScore(["1/2", "one half", None, "2"], [False, True, False, False]),
            ItemScore(["paris, France"], [False]),
        ]
    )
    accuracy = apply_judge(judge, items, score)
    sent = [r["body"]["messages"][-1]["content"] for r in server.requests]
    assert sorted(sent) == sorted(
        judge_user_prompt(*t)
        for t in [("q-a", "one half", "1/2"), ("q-a", "one half", "2"), ("q-b", "Paris", "paris, France")]
    )
    assert score.items[0].judge == [True, True, False, False]
    assert score.items[1].judge == [True]
    assert score.items[0].correct == [False, True, False, False]  # rule verdicts untouched
    assert accuracy == pytest.approx(100 * (0.5 + 1.0) / 2)


def test_parse_verdict() -> None:
    assert (
        parse_verdict("YES") is True and parse_verdict(" yes.") is True and parse_verdict("**No**") is False
    )
    assert parse_verdict("") is None and parse_verdict("Maybe") is None
    assert parse_verdict("<think>The answer is no... wait.</think>\nYES") is True
