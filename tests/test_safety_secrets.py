"""Keys stay where they belong (issue 20, item 7).

Tokens: the environment first, then the git-ignored tokens.local.json, then the committed empty
tokens.json; a key in a file others can read is warned about. The judge client (against real local
HTTP servers): no redirect to another host is followed (urllib would send the Authorization header
along), http only on loopback, replies capped, URLs written without their secrets.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from local_http import serve

from evaluation.judge import MAX_REPLY_BYTES, LLMJudge, check_judge_url, redact_url
from question_evaluate.hub import resolve_hub_credentials
from verl.utils.logger import find_wandb_key
from verl.utils.tokens import LOCAL_TOKENS_NAME

ROOT = Path(__file__).resolve().parents[1]


# ---- tokens -------------------------------------------------------------------------------------


def test_the_committed_tokens_json_is_the_empty_template_and_the_local_copy_is_ignored() -> None:
    data = json.loads((ROOT / "tokens.json").read_text())
    assert all(v == "" for k, v in data.items() if not k.startswith("_"))
    ignored = subprocess.run(["git", "check-ignore", "-q", LOCAL_TOKENS_NAME], cwd=ROOT, capture_output=True)
    assert ignored.returncode == 0, f"{LOCAL_TOKENS_NAME} must be git-ignored"


def test_environment_then_local_file_then_tokens_json(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    for var in ("WANDB_API_KEY", "HF_TOKEN", "HUGGINGFACENAME"):
        monkeypatch.delenv(var, raising=False)
    tokens = tmp_path / "tokens.json"
    tokens.write_text(
        json.dumps({"wandb": "from-template", "huggingface": "hf-template", "huggingface_name": "me"})
    )
    tokens.chmod(0o600)
    assert find_wandb_key(tokens) == "from-template"
    local = tmp_path / LOCAL_TOKENS_NAME
    local.write_text(json.dumps({"wandb": "from-local", "huggingface": ""}))
    local.chmod(0o600)
    assert find_wandb_key(tokens) == "from-local"  # the local copy wins
    assert resolve_hub_credentials(tokens) == ("me", "hf-template")  # an empty local entry falls through
    monkeypatch.setenv("WANDB_API_KEY", "from-env")
    monkeypatch.setenv("HF_TOKEN", "hf-env")
    assert find_wandb_key(tokens) == "from-env"  # the environment wins over both
    assert resolve_hub_credentials(tokens) == ("me", "hf-env")
    assert "WARNING" not in capsys.readouterr().err  # 0600 files: nothing to warn about


def test_a_key_in_a_file_others_can_read_is_warned_about(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    tokens = tmp_path / "tokens.json"
    tokens.write_text(json.dumps({"wandb": ""}))
    tokens.chmod(0o644)
    assert find_wandb_key(tokens) is None
    assert "WARNING" not in capsys.readouterr().err  # the empty template is no secret
    tokens.write_text(json.dumps({"wandb": "k"}))
    assert find_wandb_key(tokens) == "k"
    err = capsys.readouterr().err
    assert "other users can read it" in err and f"chmod 600 {tokens}" in err and "WANDB_API_KEY" in err


# ---- the judge client ---------------------------------------------------------------------------


class _Recorder(BaseHTTPRequestHandler):
    """Answers YES; or redirects (`redirect_to`), or sends an oversized reply (`huge`)."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        self.server.auth.append(self.headers.get("Authorization"))
        if self.server.redirect_to:
            self.send_response(307)
            self.send_header("Location", self.server.redirect_to)
            self.end_headers()
            return
        content = "YES" + (" " * (MAX_REPLY_BYTES + 10) if self.server.huge else "")
        data = json.dumps({"choices": [{"message": {"content": content}}]}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def start() -> Iterator[Callable[..., ThreadingHTTPServer]]:
    """start(redirect_to=None, huge=False): a recording server on loopback, stopped after the test."""
    with ExitStack() as stack:

        def _start(redirect_to: str | None = None, huge: bool = False) -> ThreadingHTTPServer:
            return stack.enter_context(serve(_Recorder, auth=[], redirect_to=redirect_to, huge=huge))

        yield _start


def _base(httpd: ThreadingHTTPServer) -> str:
    return f"http://127.0.0.1:{httpd.server_address[1]}/v1"


def test_the_key_does_not_follow_a_redirect_to_another_host(
    start: Callable[..., ThreadingHTTPServer], caplog: pytest.LogCaptureFixture
) -> None:
    other = start()
    # Another origin (here another port; any other host or scheme is refused the same way).
    redirecting = start(redirect_to=f"http://localhost:{other.server_address[1]}/steal")
    judge = LLMJudge(_base(redirecting), "m", api_key="secret-key", retries=2)
    assert judge.verdicts([("q", "1", "2")]) == [None]
    assert redirecting.auth == ["Bearer secret-key"]  # asked once: a refusal is not retried
    assert other.auth == []  # the other host never saw the request, let alone the key
    assert judge.failures == 1 and "redirected" in caplog.text


def test_a_huge_reply_is_refused(start: Callable[..., ThreadingHTTPServer]) -> None:
    huge = start(huge=True)
    judge = LLMJudge(_base(huge), "m", retries=2)
    assert judge.verdicts([("q", "1", "2")]) == [None]
    assert len(huge.auth) == 1 and judge.failures == 1


def test_http_only_on_loopback() -> None:
    for url in ("http://judge.example.com/v1", "http://10.0.0.5:8000/v1", "ftp://x/v1", "judge:8000"):
        with pytest.raises(ValueError, match=r"https|not an http"):
            LLMJudge(url, "m")
    for url in ("https://judge.example.com/v1", "http://127.0.0.1:8000/v1", "http://localhost:1/v1"):
        assert check_judge_url(url) == url


def test_judge_cli_refuses_plain_http_to_another_machine(tmp_path: Path) -> None:
    from evaluation.cli import main

    argv = ["--model", str(tmp_path), "--judge-url", "http://judge.example.com/v1", "--judge-model", "j"]
    with pytest.raises(SystemExit, match="use https"):
        main(argv)


def test_urls_are_recorded_without_their_secrets() -> None:
    assert redact_url("https://user:pw@judge.example.com:8443/v1?api-key=s3cret") == (
        "https://judge.example.com:8443/v1?<redacted>"
    )
    assert redact_url("http://127.0.0.1:8000/v1") == "http://127.0.0.1:8000/v1"
    assert redact_url("http://[::1]:8000/v1") == "http://[::1]:8000/v1"
