"""Child processes of the project: started so that they die with their parent, stopped by the PIDs
we recorded (never by name), with free loopback ports and log tails for error messages.

Used by the shard runner (engine processes), the Solver service (vLLM servers), evaluation's
data-parallel engines and the grader pool.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable

logger = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"
_PR_SET_PDEATHSIG = 1


def parent_death_signal(sig: signal.Signals = signal.SIGTERM) -> Callable[[], None] | None:
    """A `preexec_fn` that makes the child get `sig` when its parent dies, even by SIGKILL, so a
    killed driver leaves no engine holding its GPUs (Linux `prctl(PR_SET_PDEATHSIG)`; None elsewhere).

    libc is loaded here, in the parent: between fork and exec the child may only call the resolved
    function, not load libraries (another thread of the parent may hold the loader lock).
    """
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL("libc.so.6", use_errno=True).prctl

    def set_signal() -> None:
        prctl(_PR_SET_PDEATHSIG, int(sig))

    return set_signal


def die_with_parent(sig: signal.Signals = signal.SIGTERM) -> None:
    """Call inside a child process (e.g. a multiprocessing target): get `sig` when the parent dies."""
    setter = parent_death_signal(sig)
    if setter is not None:
        setter()


def stop_processes(procs: Iterable[subprocess.Popen], grace_s: float = 20.0) -> None:
    """SIGTERM the still-running processes, then SIGKILL what is left after `grace_s`."""
    procs = list(procs)
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
    deadline = time.monotonic() + grace_s
    for proc in procs:
        try:
            proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def log_tail(path: str | os.PathLike, max_lines: int = 40, max_chars: int = 6000) -> str:
    """The last lines of a (possibly large) log file, for error messages."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 64 * 1024))
            text = f.read().decode("utf-8", errors="replace")
    except OSError as e:
        return f"<log {path} unreadable: {e}>"
    return "\n".join(text.splitlines()[-max_lines:])[-max_chars:]


def find_free_port(host: str = LOOPBACK, exclude: set[int] | None = None) -> int:
    """A port that was free a moment ago (bind to port 0). Another program may still take it before
    our server binds: callers detect that from the server's exit and pick another."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((host, 0))
            port = s.getsockname()[1]
        if not exclude or port not in exclude:
            return port
    raise OSError(f"could not find a free port on {host}")


def process_group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes of a process group, read from /proc.

    Zombies are left out: they hold no resources, and an orphan's zombie may never be reaped when PID 1
    of a container does not reap, so waiting for it would never end."""
    if not os.path.isdir("/proc"):  # not Linux: only "some member exists" can be known
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return []
        return [pgid]
    members = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", encoding="utf-8", errors="replace") as f:
                stat = f.read()
        except OSError:
            continue  # the process ended while we were listing
        # Fields after the command name (which may contain spaces and parentheses): state ppid pgrp ...
        fields = stat[stat.rfind(")") + 2 :].split()
        if len(fields) >= 3 and int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            members.append(int(entry.name))
    return members


def signal_group(pgid: int, sig: signal.Signals) -> None:
    """Send `sig` to a process group; a group that is already gone is not an error."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        logger.debug("process group %d already gone when sending %s", pgid, sig.name)
