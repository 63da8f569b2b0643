"""Child processes of the project: started so that they die with their parent, stopped by the PIDs
we recorded (never by name), with free loopback ports and log tails for error messages.

Used by the shard runner (engine processes), the Solver service (vLLM servers, run under
`infra.supervise`), evaluation's data-parallel engines and the grader pool.

A recorded process is `{"pid": P, "start_time": T}` with T the process's start time (field 22 of
/proc/P/stat, clock ticks after boot): a stale record is acted on only when both still match, so a
PID the kernel has since given to another program is never signalled (`reap_recorded`).
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator

logger = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"
_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36
_REAP_POLL_S = 0.05  # how often a reaper looks whether the processes it signalled are gone


def parent_death_signal(sig: signal.Signals = signal.SIGTERM) -> Callable[[], None] | None:
    """A `preexec_fn` that makes the child get `sig` when its parent dies, even by SIGKILL, so a
    killed driver leaves no engine holding its GPUs (Linux `prctl(PR_SET_PDEATHSIG)`; None elsewhere).

    libc is loaded here, in the parent: between fork and exec the child may only call the resolved
    function, not load libraries (another thread of the parent may hold the loader lock).
    """
    prctl = _libc_prctl()
    if prctl is None:
        return None

    def set_signal() -> None:
        prctl(_PR_SET_PDEATHSIG, int(sig))

    return set_signal


def _libc_prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    return ctypes.CDLL("libc.so.6", use_errno=True).prctl


def die_with_parent(sig: signal.Signals = signal.SIGTERM) -> None:
    """Call first thing inside a child process that may start processes of its own (an engine
    process whose vLLM forks an engine core): when the parent dies, even by SIGKILL, this process
    gets `sig`, and on SIGTERM it takes its own descendants down before it exits.

    Without the second half, a process killed by the default SIGTERM action leaves vLLM's engine
    core (a child in multiprocess mode, the default on GPUs) running, holding its GPU: the engine
    core does not watch its parent (measured on vLLM 0.32).
    """
    parent = os.getppid()
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _exit_with_descendants)
    prctl = _libc_prctl()
    if prctl is not None:
        prctl(_PR_SET_PDEATHSIG, int(sig))
    if os.getppid() != parent:  # the parent died before prctl took effect: no signal will come
        _exit_with_descendants(signal.SIGTERM, None)


def _exit_with_descendants(signum: int, frame: object) -> None:
    """SIGTERM handler of `die_with_parent`: stop every descendant, then exit 128 + signal."""
    stop_descendants(grace_s=5.0)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(128 + signum)


def become_subreaper() -> bool:
    """Orphaned descendants of this process are re-parented to it (not to init), so they stay in
    view and their PIDs are not reused before it reaps them (Linux `PR_SET_CHILD_SUBREAPER`)."""
    prctl = _libc_prctl()
    return prctl is not None and prctl(_PR_SET_CHILD_SUBREAPER, 1) == 0


def _proc_stat_fields(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name: [state, ppid, pgrp, ...]; None if gone."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8", errors="replace") as f:
            stat = f.read()
    except OSError:
        return None
    # The command name (field 2) may contain spaces and parentheses: split after its last ")".
    return stat[stat.rfind(")") + 2 :].split()


def _live_processes() -> Iterator[tuple[int, list[str]]]:
    """(pid, stat fields after the name) of every live (non-zombie) process in /proc."""
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            fields = _proc_stat_fields(int(entry.name))  # None: it ended while we were listing
            if fields is not None and len(fields) >= 20 and fields[0] not in ("Z", "X"):
                yield int(entry.name), fields


def process_start_time(pid: int) -> int | None:
    """Start time of a live (non-zombie) process in clock ticks after boot (/proc/<pid>/stat field
    22); None when there is no such process."""
    fields = _proc_stat_fields(pid)
    if fields is None or len(fields) < 20 or fields[0] in ("Z", "X"):
        return None
    return int(fields[19])  # field 22 of the line = index 19 after the name (fields 3..)


def process_record(pid: int) -> dict[str, int] | None:
    """`{"pid", "start_time"}` of a live process, to be written into a pids file."""
    start = process_start_time(pid)
    return None if start is None else {"pid": pid, "start_time": start}


def is_recorded_process(record: dict) -> bool:
    """The recorded process still runs: same PID and same start time (a reused PID does not match)."""
    pid, start = record.get("pid"), record.get("start_time")
    return isinstance(pid, int) and start is not None and process_start_time(pid) == start


def descendants(pid: int | None = None) -> list[int]:
    """Live descendants of `pid` (default: this process), parents before children."""
    root = os.getpid() if pid is None else pid
    children: dict[int, list[int]] = {}
    for pid, fields in _live_processes():
        children.setdefault(int(fields[1]), []).append(pid)
    found, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def stop_descendants(grace_s: float = 5.0) -> None:
    """SIGTERM every descendant of this process, SIGKILL those left after `grace_s`."""
    if not os.path.isdir("/proc"):
        return
    records = [r for pid in descendants() if (r := process_record(pid)) is not None]
    reap_recorded(records, grace_s)


def reap_recorded(records: Iterable[dict], grace_s: float = 10.0) -> list[int]:
    """Stop the recorded processes that still run (PID *and* start time match): SIGTERM, then
    SIGKILL after `grace_s`. Returns the PIDs that were signalled; other records are left alone.

    Each process is held through a pidfd opened before its start time is compared, so the signal
    reaches exactly the process that was checked, even if it exits and its PID is reused meanwhile.
    """
    held = []
    for record in records:
        handle = _open_if_recorded(record)
        if handle is not None:
            held.append(handle)
    for pid, fd in held:
        _send(pid, fd, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    left = list(held)
    while left:
        left = [(pid, fd) for pid, fd in left if process_start_time(pid) is not None]
        if not left or time.monotonic() > deadline:
            break
        time.sleep(_REAP_POLL_S)
    for pid, fd in left:
        logger.warning("pid %d did not exit within %.0f s of SIGTERM: SIGKILL", pid, grace_s)
        _send(pid, fd, signal.SIGKILL)
    for _, fd in held:
        if fd is not None:
            os.close(fd)
    return [pid for pid, _ in held]


class OwnerStillRunning(RuntimeError):
    """A pids file's owner still runs: its processes are in use, not stale."""


def pids_file_content(processes: Iterable[dict], **extra: object) -> dict:
    """What a pids file holds: its owner (this process) and the records of the processes it
    started, with any other fields; `reap_pids_file` reads it back."""
    return {"owner": process_record(os.getpid()), "processes": list(processes), **extra}


def reap_pids_file(path: str | os.PathLike, grace_s: float = 20.0) -> list[int]:
    """Stop what a previous attempt recorded in a pids file and left running (records whose PID and
    start time still match); returns their PIDs. Raises OwnerStillRunning when the recorded owner
    itself still runs (then its processes are not stale)."""
    try:
        with open(path, encoding="utf-8") as f:
            previous = json.load(f)
    except FileNotFoundError:
        return []
    except (OSError, ValueError) as e:
        logger.warning("unreadable pids file %s (%s): nothing to reap", path, e)
        return []
    owner = previous.get("owner") or {}
    if owner.get("pid") != os.getpid() and is_recorded_process(owner):
        raise OwnerStillRunning(f"process {owner['pid']} that wrote {path} is still running")
    stopped = reap_recorded(previous.get("processes", []), grace_s)
    if stopped:
        logger.warning(
            "stopped %d process(es) a previous attempt left running: %s (%s)", len(stopped), stopped, path
        )
    return stopped


def _open_if_recorded(record: dict) -> tuple[int, int | None] | None:
    """(pid, pidfd or None) of the recorded process if it still runs, else None."""
    pid = record.get("pid")
    if not isinstance(pid, int) or pid <= 0 or pid == os.getpid():
        return None
    fd = None
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return None
    except (AttributeError, OSError):  # no pidfd (old kernel): compare, then signal by PID
        fd = None
    if not is_recorded_process(record):
        if fd is not None:
            os.close(fd)
        return None
    return pid, fd


def _send(pid: int, fd: int | None, sig: signal.Signals) -> None:
    try:
        if fd is not None:
            signal.pidfd_send_signal(fd, sig)
        else:
            os.kill(pid, sig)
    except ProcessLookupError:
        pass  # exited meanwhile


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
    return [pid for pid, fields in _live_processes() if int(fields[2]) == pgid]


def signal_group(pgid: int, sig: signal.Signals) -> None:
    """Send `sig` to a process group; a group that is already gone is not an error."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        logger.debug("process group %d already gone when sending %s", pgid, sig.name)


# ---------------------------------------------------------------- who listens on a loopback port

_TCP_LISTEN = "0A"  # state column of /proc/net/tcp(6)
# Local addresses (as /proc/net/tcp(6) writes them) of a listener that takes connections to
# 127.0.0.1: the address itself, the IPv4 wildcard, the IPv6 wildcard (dual-stack) and the
# IPv4-mapped loopback address.
_RECEIVES_LOOPBACK = {
    "tcp": ("0100007F", "00000000"),
    "tcp6": ("00000000000000000000000000000000", "0000000000000000FFFF00000100007F"),
}


def loopback_listeners(port: int) -> dict[int, int]:
    """`{socket inode: owner uid}` of every TCP socket listening on `port` that takes connections
    to 127.0.0.1 (bound to it, to a wildcard address, or to its IPv4-mapped IPv6 form), read from
    /proc/net/tcp and /proc/net/tcp6 (this process's network namespace). Empty: nobody listens."""
    found: dict[int, int] = {}
    for table, addresses in _RECEIVES_LOOPBACK.items():
        try:
            with open(f"/proc/net/{table}", encoding="ascii") as f:
                lines = f.read().splitlines()[1:]
        except FileNotFoundError:  # no IPv6 in this kernel
            continue
        for line in lines:
            fields = line.split()
            if len(fields) < 10 or fields[3] != _TCP_LISTEN:
                continue
            address, _, port_hex = fields[1].partition(":")
            if int(port_hex, 16) == port and address.upper() in addresses:
                found[int(fields[9])] = int(fields[7])
    return found


def socket_inodes(pids: Iterable[int]) -> dict[int, int]:
    """`{socket inode: pid}` of the sockets the given processes hold open (their /proc/<pid>/fd
    links `socket:[inode]`); processes that ended or whose fds we may not read are skipped."""
    found: dict[int, int] = {}
    for pid in pids:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:  # closed meanwhile
                continue
            if target.startswith("socket:["):
                found[int(target[8:-1])] = pid
    return found


def foreign_listeners(port: int, pgid: int) -> tuple[list[str], bool]:
    """Who listens on 127.0.0.1:`port` besides the processes of group `pgid`.

    Returns (descriptions of the listening sockets no member of the group holds, whether a member
    holds one). A server counts as ready only when the list is empty and the flag is true: another
    program (another local user's, too) may bind the port first and answer readiness checks."""
    listeners = loopback_listeners(port)
    if not listeners:
        return [], False
    ours = socket_inodes(process_group_members(pgid))
    foreign = [
        f"socket inode {inode} of uid {uid}" + (" (this user)" if uid == os.getuid() else " (another user)")
        for inode, uid in sorted(listeners.items())
        if inode not in ours
    ]
    return foreign, any(inode in ours for inode in listeners)
