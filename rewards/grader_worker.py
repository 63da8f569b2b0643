"""The grader pool's worker process (rewards/grader.py starts it): it imports one grader, warms it up,
then answers one pair at a time over an inherited socket until told to stop or orphaned."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

BACKENDS = ("math_verify", "mathruler")
# The folder holding the `rewards` package, so that workers import this very code.
_PROJECT_ROOT = str(Path(__file__).resolve().parents[1])
# Orphaned workers (the parent was SIGKILLed) notice within this many seconds and exit.
_ORPHAN_CHECK_S = 2.0


def make_checker(backend: str = "math_verify") -> Callable[[str, str, bool], bool]:
    """The comparison ``check(gold, pred, symmetric)`` of `backend`, built inside a worker."""
    if backend == "mathruler":
        from rewards.mathruler_grading import make_checker
    elif backend == "math_verify":
        from rewards.math_verify_grading import make_checker
    else:
        raise ValueError(f"unknown grader backend {backend!r}; expected one of {BACKENDS}")
    return make_checker()


def _worker_main(conn: Connection, backend: str = "math_verify") -> None:
    """Worker loop: receive ``(gold, pred, symmetric)``, reply ``("ok", bool)`` or ``("error", msg)``.

    Sends ``("ready", pid)`` once the grader is imported and warmed up (so that start-up time never
    counts against a comparison's deadline), or ``("fatal", msg)`` if it cannot start. ``None``
    stops the loop.
    """
    # Ctrl-C goes to the whole process group; the parent pool shuts workers down itself.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # math-verify warns once that its timeout is disabled: here that is intended.
    logging.getLogger("math_verify").setLevel(logging.ERROR)
    try:
        check = make_checker(backend)
        check("\\frac{1}{2}", "0.5", True)  # first parse pays for lazy imports and regex compilation
    except BaseException as exc:
        conn.send(("fatal", f"{type(exc).__name__}: {exc}"))
        return
    conn.send(("ready", os.getpid()))
    while True:
        try:
            msg = conn.recv()
        except EOFError:
            return
        if msg is None:
            return
        gold, pred, symmetric = msg
        try:
            reply: tuple[str, Any] = ("ok", bool(check(gold, pred, symmetric)))
        except Exception as exc:  # an input-dependent failure in sympy: report it, keep serving
            reply = ("error", f"{type(exc).__name__}: {exc}")
        conn.send(reply)


def _exit_when_orphaned(parent_pid: int) -> None:
    """Exit once the parent is gone: a worker stuck in sympy would otherwise spin forever."""
    while os.getppid() == parent_pid:
        time.sleep(_ORPHAN_CHECK_S)
    os._exit(1)


def worker_entry(fd: int, parent_pid: int, backend: str = "math_verify") -> None:
    """Entry point of a worker interpreter: serve on the inherited socket `fd`."""
    threading.Thread(target=_exit_when_orphaned, args=(parent_pid,), daemon=True).start()
    _worker_main(Connection(fd), backend)
    # Skip the interpreter's teardown of sympy & co. (about a second): nothing is left to save.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def spawn_worker(backend: str) -> tuple[subprocess.Popen, Connection, int | None]:
    """Start a worker interpreter for `backend`: (process, our end of its socket, a pidfd or None).

    fork+exec of a fresh interpreter (not a bare fork: callers run in threaded Ray actors and vLLM
    processes), serving on an inherited socket; it exits by itself once this process is gone."""
    parent_sock, child_sock = socket.socketpair()
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (_PROJECT_ROOT, env.get("PYTHONPATH")) if p)
    code = (
        "from rewards.grader_worker import worker_entry; "
        f"worker_entry({child_sock.fileno()}, {os.getpid()}, {backend!r})"
    )
    try:
        proc = subprocess.Popen(
            [sys.executable, "-c", code],
            pass_fds=(child_sock.fileno(),),
            stdin=subprocess.DEVNULL,
            env=env,
            close_fds=True,
        )
    except BaseException:
        parent_sock.close()
        raise
    finally:
        # Drop our copy of the child's end, so that a dead worker reads as EOF on the parent's end.
        child_sock.close()
    sentinel: int | None = None
    with contextlib.suppress(AttributeError, OSError):  # no pidfd (old kernel): EOF and deadlines suffice
        sentinel = os.pidfd_open(proc.pid)
    return proc, Connection(parent_sock.detach()), sentinel
