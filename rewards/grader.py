"""Math-aware answer equivalence that can never hang its caller.

Two graders ("backends"), one per profile (RZERO_SPEC.md sections 2 and 4):
- ``math_verify`` (profile ``paper``, evaluation): math-verify's parse + verify;
- ``mathruler`` (profile ``rzero_code``, the authors' code): mathruler's ``grade_answer``, 10 s per
  call as the authors allowed it; each direction of a symmetric comparison is its own call.

math-verify (sympy underneath) can run for minutes, or forever, on some inputs (a power tower such
as ``9^{9^{9^{9}}}`` sends sympy into an uninterruptible big-integer power). Its own timeout uses
``signal.alarm``, which only works in the main thread and cannot interrupt a long C loop. So every
comparison here runs in a worker *process* with a hard deadline: a worker that overruns is killed
(SIGKILL) and replaced, and the comparison counts as "not equal" (RZERO_SPEC section 4).

Layout: worker processes (rewards/grader_worker.py: fresh interpreters, never a bare fork) import
their grader once and answer one pair at a time over a socket pair; one dispatcher thread per pool
hands queued pairs to idle workers, collects results, enforces deadlines and replaces dead or
overrunning workers; callers (any thread) do the cheap checks themselves (math_verify:
`math_verify_grading.cheap_verdict`, string-equal after `normalize_answer` and plain numbers by
value; mathruler: string-equal only; the LRU cache), queue the rest and wait on futures that the
dispatcher always resolves.

Every shortcut only skips work whose outcome is certain: it returns what the backend's grader would
(math_verify's, in each direction: tests/test_grader.py checks it against math-verify itself).
"""

from __future__ import annotations

import collections
import contextlib
import functools
import logging
import os
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait

from rewards.answer_parsing import normalize_answer
from rewards.grader_worker import BACKENDS, spawn_worker
from rewards.math_verify_grading import cheap_verdict

logger = logging.getLogger(__name__)

STAT_KEYS = (
    "calls",
    "cache_hits",
    "string_matches",
    "numeric_shortcuts",
    "verify_calls",
    "timeouts",
    "errors",
    "worker_restarts",
)

# A worker that cannot even start (import error, machine out of memory) this many times in a row
# means the pool cannot work: callers then get a RuntimeError instead of waiting forever.
_MAX_CONSECUTIVE_START_FAILURES = 3
_JOIN_TIMEOUT_S = 5.0

_cached_normalize: Callable[[str], str] = functools.lru_cache(maxsize=1 << 16)(normalize_answer)

PairKey = tuple[str, str, bool]
_MISS = object()  # a cache miss (a cached None is a verdict: "timed out")

# Hard limit per comparison: math-verify's answers here are short (5 s is ample); mathruler gets the
# authors' 10 s per grade_answer call.
DEFAULT_TIMEOUT_S = {"math_verify": 5.0, "mathruler": 10.0}


# ----------------------------------------------------------------------------------------------
# Pool
# ----------------------------------------------------------------------------------------------

_STARTING, _IDLE, _BUSY = "starting", "idle", "busy"


@dataclass
class _Job:
    key: PairKey
    gold: str
    pred: str
    symmetric: bool
    future: Future = field(default_factory=Future)


@dataclass
class _Worker:
    proc: subprocess.Popen
    conn: Connection
    sentinel: int | None  # a pidfd, readable once the process has exited (None where unsupported)
    state: str = _STARTING
    job: _Job | None = None
    deadline: float = 0.0  # monotonic time: end of start-up (starting) or of the job (busy)


def _short(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


# At most this many default workers: each holds ~60-100 MB, and a node's 100+ cores would
# otherwise buy gigabytes of idle graders.
MAX_DEFAULT_WORKERS = 32


def default_grader_workers() -> int:
    """Grader processes when none are asked for: every core but two (left to the caller and the
    dispatcher), at least 2, at most MAX_DEFAULT_WORKERS. On an 8-GPU node the Challenger reward
    votes on 2,048 x 10 answers per step while the GPUs wait: the cores are the budget."""
    return max(2, min(MAX_DEFAULT_WORKERS, (os.cpu_count() or 1) - 2))


class GraderPool:
    """Worker processes that compare answers with one grader, each comparison under a hard timeout.

    Thread-safe: any number of threads may call `equivalent` / `equivalent_many` at once; their
    pairs share the workers and each caller gets its own results. Use as a context manager or call
    `close()`.

    Args:
        num_workers: worker processes (each ~60-100 MB; one CPU core each when busy).
        timeout_s: hard limit per job (math_verify: parse + verify both ways; mathruler: one
            grade_answer call); an overrun kills the worker and the pair counts as not equal.
            None: the backend's `DEFAULT_TIMEOUT_S`.
        cache_size: LRU entries of (a, b, symmetric) -> result; 0 disables the cache.
        startup_timeout_s: limit for a worker to import its grader and report ready.
        backend: "math_verify" (profile paper, evaluation) or "mathruler" (profile rzero_code).
    """

    def __init__(
        self,
        num_workers: int = 2,
        timeout_s: float | None = None,
        cache_size: int = 100_000,
        startup_timeout_s: float = 120.0,
        backend: str = "math_verify",
    ) -> None:
        if backend not in BACKENDS:
            raise ValueError(f"unknown grader backend {backend!r}; expected one of {BACKENDS}")
        if timeout_s is None:
            timeout_s = DEFAULT_TIMEOUT_S[backend]
        if num_workers < 1:
            raise ValueError(f"num_workers must be >= 1, got {num_workers}")
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
        self.backend = backend
        self.num_workers = num_workers
        self.timeout_s = float(timeout_s)
        self.cache_size = int(cache_size)
        self.startup_timeout_s = float(startup_timeout_s)
        self.stats: dict[str, int] = dict.fromkeys(STAT_KEYS, 0)

        self._lock = threading.Lock()  # guards everything below that callers touch
        self._cache: collections.OrderedDict[PairKey, bool | None] = collections.OrderedDict()
        self._inflight: dict[PairKey, Future] = {}
        self._pending: collections.deque[_Job] = collections.deque()
        self._closed = False
        self._broken: str | None = None
        # A forked child inherits this object but not the dispatcher thread: it must not use it.
        self._owner_pid = os.getpid()
        self._start_failures = 0
        # Self-pipe: callers write a byte to wake the dispatcher out of `wait()`.
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)

        self._workers: list[_Worker] = []
        try:
            for _ in range(num_workers):
                self._workers.append(self._start_worker())
        except BaseException:
            for worker in self._workers:
                self._kill(worker)
            raise
        self._thread = threading.Thread(target=self._dispatch_loop, name="grader-pool", daemon=True)
        self._thread.start()

    # -- public API ----------------------------------------------------------------------------

    def equivalent(self, a: str, b: str, symmetric: bool = True) -> bool:
        """True when answers `a` (gold) and `b` are the same answer; see `equivalent_many`."""
        return self.equivalent_many([(a, b)], symmetric=symmetric)[0]

    def equivalent_many(self, pairs: Sequence[tuple[str, str]], symmetric: bool = True) -> list[bool]:
        """Compare many (gold, pred) pairs; uncached ones run in parallel on the workers.

        Answers are compared after `strip()`; an empty answer is never equivalent to anything.
        Cheap first, without a worker (`_cheap_verdict`). Otherwise the backend's grader:
        math_verify ``verify(parse(gold), parse(pred))``, with `symmetric` also ``verify(parse(pred),
        parse(gold))``; mathruler ``grade_answer(pred, gold)``, with `symmetric` also
        ``grade_answer(gold, pred)`` as a separate job with its own timeout (so `calls` counts the
        pair twice). Either direction suffices. A timeout or worker failure gives False.
        """
        if symmetric and self.backend == "mathruler":
            # One job per grade_answer call, as the authors timed each call: a hang in one
            # direction must not cost the other its verdict.
            n = len(pairs)
            both = self.equivalent_many([*pairs, *((b, a) for a, b in pairs)], symmetric=False)
            return [x or y for x, y in zip(both[:n], both[n:])]
        return [verdict is True for verdict in self.verdicts_many(pairs, symmetric)]

    def verdicts_many(self, pairs: Sequence[tuple[str, str]], symmetric: bool = False) -> list[bool | None]:
        """`equivalent_many` with timeouts told apart: None where the grader's call timed out.

        For callers whose next step depends on *why* a pair is not the same (the ``rzero_code``
        labelling skips the reverse direction after a timeout, RZERO_SPEC.md section 2). One job per
        pair as given (mathruler's `symmetric` runs both directions in that one job).
        """
        # (a, b, cache key, cheap verdict, stat that the cheap verdict counts under)
        prepared: list[tuple[str, str, PairKey, bool | None, str]] = []
        for a, b in pairs:
            a, b = (a or "").strip(), (b or "").strip()
            key: PairKey = (min(a, b), max(a, b), True) if symmetric else (a, b, False)
            verdict, stat = self._cheap_verdict(a, b) if a and b else (None, "")
            prepared.append((a, b, key, verdict, stat))

        results: list[bool | None] = [False] * len(prepared)
        waiting: list[tuple[int, Future]] = []
        with self._lock:
            self._raise_if_unusable_locked()
            self.stats["calls"] += len(prepared)
            for i, (a, b, key, verdict, stat) in enumerate(prepared):
                if not a or not b:
                    continue
                if verdict is not None:
                    self.stats[stat] += 1
                    results[i] = verdict
                    continue
                cached = self._cache.get(key, _MISS)
                if cached is not _MISS:
                    self._cache.move_to_end(key)
                    self.stats["cache_hits"] += 1
                    results[i] = cached
                    continue
                future = self._inflight.get(key)
                if future is not None:  # the same pair is already queued (this call or another)
                    self.stats["cache_hits"] += 1
                else:
                    job = _Job(key=key, gold=a, pred=b, symmetric=symmetric)
                    future = job.future
                    self._inflight[key] = future
                    self._pending.append(job)
                    self.stats["verify_calls"] += 1
                waiting.append((i, future))
            if waiting:
                self._wake_locked()
        # The dispatcher resolves every future: with a result, or an exception if the pool closes
        # or breaks, so this wait is bounded by the per-comparison timeout.
        for i, future in waiting:
            results[i] = future.result()
        return results

    def _cheap_verdict(self, a: str, b: str) -> tuple[bool | None, str]:
        """(verdict, stat) when the grader's answer is certain without running it, else (None, "")."""
        if self.backend == "mathruler":
            # grade_answer(x, x) is always True (its first test compares normal forms of the two);
            # nothing else about it is certain, e.g. it refuses 2/4 for 1/2 and accepts x=3 for 3.
            return (True, "string_matches") if a == b else (None, "")
        return cheap_verdict(_cached_normalize(a), _cached_normalize(b))

    def stats_snapshot(self) -> dict[str, int]:
        """A copy of `stats` taken under the lock."""
        with self._lock:
            return dict(self.stats)

    def worker_pids(self) -> list[int]:
        """PIDs of the current worker processes (diagnostics and tests)."""
        with self._lock:
            return [w.proc.pid for w in self._workers]

    def worker_states(self) -> list[tuple[int, str]]:
        """(pid, "starting" | "idle" | "busy") for each worker (diagnostics and tests)."""
        with self._lock:
            return [(w.proc.pid, w.state) for w in self._workers]

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Stop the dispatcher and the workers; queued calls fail with RuntimeError. Idempotent."""
        with self._lock:
            if not self._closed:
                self._closed = True
                self._wake_locked()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join()
        with self._lock:
            # Closed only now, under the lock: callers write to the pipe only under it while open.
            for fd in (self._wake_r, self._wake_w):
                if fd >= 0:
                    os.close(fd)
            self._wake_r = self._wake_w = -1

    def __enter__(self) -> GraderPool:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- caller-side helpers (lock held) ---------------------------------------------------------

    def _raise_if_unusable_locked(self) -> None:
        if os.getpid() != self._owner_pid:
            raise RuntimeError("GraderPool was created in another process (fork); create a new pool")
        if self._closed:
            raise RuntimeError("GraderPool is closed")
        if self._broken is not None:
            raise RuntimeError(f"GraderPool is broken: {self._broken}")

    def _wake_locked(self) -> None:
        # A full pipe already holds a pending wake-up, which is all a write would add.
        with contextlib.suppress(BlockingIOError):
            os.write(self._wake_w, b"\0")

    # -- dispatcher thread ---------------------------------------------------------------------

    def _start_worker(self) -> _Worker:
        proc, conn, sentinel = spawn_worker(self.backend)
        return _Worker(proc, conn, sentinel, deadline=time.monotonic() + self.startup_timeout_s)

    def _dispatch_loop(self) -> None:
        failure: BaseException | None = None
        try:
            while True:
                with self._lock:
                    if self._closed or self._broken is not None:
                        break
                self._assign_jobs()
                # Sentinels too: a dead worker is noticed even if another process holds its pipe.
                watched = [w.conn for w in self._workers]
                watched += [w.sentinel for w in self._workers if w.sentinel is not None]
                ready = wait([*watched, self._wake_r], self._wait_timeout())
                if self._wake_r in ready:
                    self._drain_wake_pipe()
                for worker in list(self._workers):
                    if worker.conn in ready:
                        self._handle_message(worker)
                    elif worker.sentinel is not None and worker.sentinel in ready:
                        self._on_worker_died(worker)
                self._enforce_deadlines()
        except BaseException as exc:  # a bug here must not leave callers waiting forever
            logger.exception("grader dispatcher failed")
            failure = exc
        finally:
            self._shutdown_workers(failure)

    def _assign_jobs(self) -> None:
        for worker in self._workers:
            if worker.state != _IDLE:
                continue
            with self._lock:
                if not self._pending:
                    return
                job = self._pending.popleft()
            try:
                worker.conn.send((job.gold, job.pred, job.symmetric))
            except OSError:  # the worker died since its last message: retry the job elsewhere
                with self._lock:
                    self._pending.appendleft(job)
                self._on_worker_died(worker)
                continue
            worker.state, worker.job = _BUSY, job
            worker.deadline = time.monotonic() + self.timeout_s

    def _wait_timeout(self) -> float | None:
        deadlines = [w.deadline for w in self._workers if w.state in (_STARTING, _BUSY)]
        if not deadlines:
            return None
        return max(0.0, min(deadlines) - time.monotonic())

    def _drain_wake_pipe(self) -> None:
        while True:
            try:
                if not os.read(self._wake_r, 4096):
                    return
            except BlockingIOError:
                return

    def _handle_message(self, worker: _Worker) -> None:
        try:
            kind, payload = worker.conn.recv()
        except (EOFError, OSError):
            self._on_worker_died(worker)
            return
        if kind == "ready":
            worker.state = _IDLE
            self._start_failures = 0
        elif kind == "fatal":
            self._on_start_failure(worker, str(payload))
        elif kind in ("ok", "error"):
            job = worker.job
            worker.state, worker.job = _IDLE, None
            if kind == "error":
                logger.warning("grader error on (%r, %r): %s", _short(job.gold), _short(job.pred), payload)
                with self._lock:
                    self.stats["errors"] += 1
            self._finish(job, kind == "ok" and bool(payload))
        else:
            raise RuntimeError(f"unexpected message from grader worker: {kind!r}")

    def _enforce_deadlines(self) -> None:
        now = time.monotonic()
        for worker in list(self._workers):
            if worker.deadline > now:
                continue
            if worker.state == _BUSY:
                job = worker.job
                logger.warning(
                    "grader timeout after %.1f s on (%r, %r); restarting worker %d",
                    self.timeout_s,
                    _short(job.gold),
                    _short(job.pred),
                    worker.proc.pid,
                )
                with self._lock:
                    self.stats["timeouts"] += 1
                # Replace first (kill + reap + exec take milliseconds), so that the caller sees the
                # restart in `stats` as soon as it has its answer.
                self._replace(worker)
                self._finish(job, None)  # None: timed out (not the same, and known to be a timeout)
            elif worker.state == _STARTING:
                self._on_start_failure(worker, f"no ready signal within {self.startup_timeout_s} s")

    def _on_worker_died(self, worker: _Worker) -> None:
        if worker.state == _STARTING:
            self._on_start_failure(worker, f"exited during start-up (exit code {worker.proc.poll()})")
            return
        job = worker.job
        logger.warning("grader worker %d died (exit code %s)", worker.proc.pid, worker.proc.poll())
        with self._lock:
            self.stats["errors"] += 1
        self._replace(worker)
        if job is not None:
            self._finish(job, False)

    def _on_start_failure(self, worker: _Worker, reason: str) -> None:
        self._start_failures += 1
        logger.error("grader worker failed to start (%d in a row): %s", self._start_failures, reason)
        with self._lock:
            self.stats["errors"] += 1
            if self._start_failures >= _MAX_CONSECUTIVE_START_FAILURES:
                self._broken = reason
        if self._broken is None:
            self._replace(worker)

    def _replace(self, worker: _Worker) -> None:
        """SIGKILL `worker` (a stuck sympy loop ignores anything gentler), reap it, start a new one."""
        self._kill(worker)
        new_worker = self._start_worker()
        with self._lock:
            self._workers[self._workers.index(worker)] = new_worker
            self.stats["worker_restarts"] += 1

    @staticmethod
    def _kill(worker: _Worker) -> None:
        if worker.proc.poll() is None:
            worker.proc.kill()
        try:
            worker.proc.wait(_JOIN_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            logger.error("grader worker %d survived SIGKILL for %.0f s", worker.proc.pid, _JOIN_TIMEOUT_S)
        worker.conn.close()
        if worker.sentinel is not None:
            os.close(worker.sentinel)
            worker.sentinel = None

    def _finish(self, job: _Job, value: bool | None) -> None:
        with self._lock:
            self._inflight.pop(job.key, None)
            if self.cache_size > 0:
                self._cache[job.key] = value
                self._cache.move_to_end(job.key)
                while len(self._cache) > self.cache_size:
                    self._cache.popitem(last=False)
        job.future.set_result(value)

    def _shutdown_workers(self, failure: BaseException | None) -> None:
        # Idle workers stop on request; busy or still-starting ones would not read it soon: kill them.
        for worker in self._workers:
            if worker.state == _IDLE and worker.proc.poll() is None:
                with contextlib.suppress(OSError):  # it may have died this instant; killed below
                    worker.conn.send(None)
        for worker in self._workers:
            if worker.state == _IDLE:
                with contextlib.suppress(subprocess.TimeoutExpired):  # killed just below
                    worker.proc.wait(1.0)
            self._kill(worker)
        with self._lock:
            if failure is not None:
                self._broken = f"dispatcher failed: {failure!r}"
            reason = (
                "GraderPool is closed" if self._broken is None else f"GraderPool is broken: {self._broken}"
            )
            jobs = list(self._pending) + [w.job for w in self._workers if w.job is not None]
            self._pending.clear()
            self._inflight.clear()
        for job in jobs:
            if not job.future.done():
                job.future.set_exception(RuntimeError(reason))
