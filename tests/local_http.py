"""A local HTTP server for the tests (loopback, a free port), on a thread, stopped on exit."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


@contextmanager
def serve(handler: type[BaseHTTPRequestHandler], **state: object) -> Iterator[ThreadingHTTPServer]:
    """`handler` served on 127.0.0.1 (port 0: a free one); `state` set as attributes of the server."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    for name, value in state.items():
        setattr(httpd, name, value)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield httpd
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


def solver_endpoints_file(server: ThreadingHTTPServer, path: Path, tokenizer: str, max_model_len: int) -> str:
    """The Solver service's endpoints file (what the Challenger reward reads) naming `server` as the
    one Solver, "scripted", with `tokenizer`'s tokenizer; returns its path."""
    info = {
        "endpoints": [f"http://127.0.0.1:{server.server_address[1]}"],
        "model_name": "scripted",
        "model": tokenizer,
        "max_model_len": max_model_len,
    }
    path.write_text(json.dumps(info))
    return str(path)
