"""A stand-in for one vLLM OpenAI server, as a real process: `python tests/openai_standin.py --port P
--model NAME [--name ID] [--start-after-s S] [--hold MARKER]`.

It answers what the solver service and its client use, the way vLLM's API server answers it:
`GET /health` (no key), `GET /v1/models` and `POST /v1/completions` behind the key in
$VLLM_API_KEY (`Authorization: Bearer`, 401 otherwise); completions come back prompt-major, n per
prompt, each text naming the server (`ID: sample k`), so a test sees which server answered.

- `--start-after-s S`: bind and listen only S seconds after the start (a server loading its model).
- `--hold MARKER`: a completions request whose prompt contains MARKER is never answered (the process
  holds it until it is killed): a server that dies mid-request.

Each request is logged to stdout (`received <method> <path>`, flushed), which the service sends to
the server's log: a test waits on that instead of sleeping.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

STANDIN = Path(__file__).resolve()


def make_handler(model: str, name: str, hold: str | None, key: str | None) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as uvicorn

        def _send(self, status: int, payload: dict[str, Any]) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _authorised(self) -> bool:
            # vLLM's AuthenticationMiddleware: /v1 paths need the key when one is configured.
            if not key or not self.path.startswith("/v1"):
                return True
            if self.headers.get("Authorization") == f"Bearer {key}":
                return True
            self._send(401, {"error": "Unauthorized"})
            return False

        def do_GET(self) -> None:
            print(f"received GET {self.path}", flush=True)
            if not self._authorised():
                return
            if self.path == "/health":
                self._send(200, {})
            elif self.path == "/v1/models":
                self._send(200, {"object": "list", "data": [{"id": model, "max_model_len": 4096}]})
            else:
                self._send(404, {"error": "not found"})

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            prompts = body["prompt"] if isinstance(body["prompt"], list) else [body["prompt"]]
            held = hold is not None and any(hold in p for p in prompts)
            print(f"received POST {self.path}{' (holding it)' if held else ''}", flush=True)
            if not self._authorised():
                return
            if body.get("model") != model:
                self._send(404, {"error": f"The model `{body.get('model')}` does not exist."})
                return
            while held:  # never answered: the test kills this process
                time.sleep(1.0)
            n = int(body.get("n", 1))
            choices = [
                {"index": p * n + k, "text": f"{name}: sample {k}", "finish_reason": "stop"}
                for p in range(len(prompts))
                for k in range(n)
            ]
            self._send(200, {"object": "text_completion", "model": model, "choices": choices})

        def log_message(self, *args: object) -> None:
            pass  # our own "received" lines say what came in

    return Handler


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--name", default="standin")
    p.add_argument("--start-after-s", type=float, default=0.0)
    p.add_argument("--hold", default=None)
    args = p.parse_args(argv)
    handler = make_handler(args.model, args.name, args.hold, os.environ.get("VLLM_API_KEY"))
    print(f"{args.name}: started", flush=True)
    time.sleep(args.start_after_s)  # "loading the model"
    server = ThreadingHTTPServer(("127.0.0.1", args.port), handler)
    server.daemon_threads = True
    print(f"{args.name}: listening on 127.0.0.1:{args.port}", flush=True)
    server.serve_forever()
    return 0


def wait_for_line(path: Path, text: str, timeout_s: float = 60.0) -> None:
    """Wait until the log at `path` holds `text` (what a server printed once it got there)."""
    deadline = time.monotonic() + timeout_s
    while not (path.exists() and text in path.read_text(errors="replace")):
        if time.monotonic() > deadline:
            raise AssertionError(f"{text!r} not in {path} after {timeout_s:.0f} s")
        time.sleep(0.05)  # poll interval: a log file cannot be waited on


class ForeignServer:
    """An HTTP listener outside any solver service (a thread of the test process), answering
    /health and /v1/models for `model` with any key: what another program on the port could do."""

    def __init__(self, model: str) -> None:
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(model, "foreign", None, None))
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> ForeignServer:
        self.thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.server.shutdown()
        self.server.server_close()


if __name__ == "__main__":
    sys.exit(main())
