"""Children die with their parent, and what a previous attempt left running is reaped.

Each test kills a real parent process with SIGKILL and checks, from /proc, that the children it had
started (and what those started) are gone: the Solver server's supervisor with a server that ignores
SIGTERM and forks an "engine core" (what vLLM's API server does while its engine starts), a shard
process of the shard runner with an engine child, the grader pool's workers, evaluation's
data-parallel worker with a real vLLM engine core (slow), and a whole Challenger stage with its real
Solver server (slow). The reaper stops a recorded stale process and leaves alone a record whose start
time does not match (a reused PID).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from infra.processes import (
    descendants,
    is_recorded_process,
    process_group_members,
    process_record,
    reap_recorded,
)
from infra.supervise import supervised_command
from solver_service.server import PIDS_FILE_NAME, SolverServiceError, reap_previous_attempt

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable

# A server like vLLM's API server during engine start-up: it ignores SIGTERM, forks an "engine core"
# that forks a "worker"; it writes its PID to argv[1] once everything runs.
STUBBORN_SERVER = textwrap.dedent(
    """
    import os, signal, sys, time
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if os.fork() == 0:
        if os.fork() == 0:
            time.sleep(600)
            os._exit(0)
        time.sleep(600)
        os._exit(0)
    with open(sys.argv[1] + ".tmp", "w") as f:
        f.write(str(os.getpid()))
    os.rename(sys.argv[1] + ".tmp", sys.argv[1])
    time.sleep(600)
    """
)

# An owner that starts argv[1:] in its own session with PR_SET_PDEATHSIG, prints its PID, and waits.
OWNER = textwrap.dedent(
    """
    import subprocess, sys, time
    from infra.processes import parent_death_signal
    proc = subprocess.Popen(sys.argv[1:], start_new_session=True, preexec_fn=parent_death_signal())
    print(proc.pid, flush=True)
    time.sleep(600)
    """
)


def _wait_for(condition, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {timeout_s:.0f} s waiting for {what}"
        time.sleep(0.05)  # polling /proc or a file: there is nothing to wait on


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:  # gone meanwhile
        return ""


def _sleeper(**popen_kwargs) -> subprocess.Popen:
    return subprocess.Popen([PY, "-c", "import time; time.sleep(600)"], **popen_kwargs)


def _group_gone(pgid: int, timeout_s: float) -> bool:
    try:
        _wait_for(lambda: not process_group_members(pgid), timeout_s, f"process group {pgid} to end")
    except AssertionError:
        return False
    return True


def _start_owner(cmd: list[str]) -> tuple[subprocess.Popen, int]:
    owner = subprocess.Popen([PY, "-c", OWNER, *cmd], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    return owner, int(owner.stdout.readline())


def test_supervisor_takes_a_stubborn_server_group_down_when_its_owner_is_sigkilled(tmp_path: Path) -> None:
    # Control: PR_SET_PDEATHSIG alone. The server ignores the SIGTERM and keeps its children.
    ready = tmp_path / "bare.pid"
    owner, pgid = _start_owner([PY, "-c", STUBBORN_SERVER, str(ready)])
    try:
        _wait_for(lambda: ready.exists() and len(process_group_members(pgid)) == 3, 30, "the bare server")
        owner.kill()
        owner.wait()
        assert not _group_gone(pgid, 2.0), "expected the bare server to survive its owner"
    finally:
        os.killpg(pgid, signal.SIGKILL)

    # Under the supervisor: the whole group (server, engine core, worker) goes.
    ready = tmp_path / "supervised.pid"
    owner, pgid = _start_owner(supervised_command([PY, "-c", STUBBORN_SERVER, str(ready)], grace_s=1.0))
    try:
        _wait_for(lambda: ready.exists() and len(process_group_members(pgid)) == 4, 30, "the server")
        owner.kill()
        owner.wait()
        assert _group_gone(pgid, 20.0), f"left running: {process_group_members(pgid)}"
    finally:
        if process_group_members(pgid):
            os.killpg(pgid, signal.SIGKILL)


def test_supervisor_stops_what_a_killed_server_leaves_and_reports_its_exit(tmp_path: Path) -> None:
    """The server dies by SIGKILL (OOM killer, a crash): its engine core and worker are orphans that the
    supervisor (a child subreaper) kills; it exits with the server's status, 128 + 9."""
    ready = tmp_path / "server.pid"
    supervisor = subprocess.Popen(
        supervised_command([PY, "-c", STUBBORN_SERVER, str(ready)], grace_s=1.0), start_new_session=True
    )
    try:
        _wait_for(lambda: ready.exists() and len(process_group_members(supervisor.pid)) == 4, 30, "server")
        os.kill(int(ready.read_text()), signal.SIGKILL)
        assert supervisor.wait(timeout=30) == 128 + signal.SIGKILL
        assert _group_gone(supervisor.pid, 5.0)
    finally:
        if process_group_members(supervisor.pid):
            os.killpg(supervisor.pid, signal.SIGKILL)


def test_shard_process_takes_its_engine_child_along_when_the_runner_is_sigkilled(tmp_path: Path) -> None:
    (tmp_path / "engine_shard.py").write_text(
        textwrap.dedent(
            """
            import os, subprocess, sys, time
            from pathlib import Path
            from infra.shards import shard_main

            def shard_fn(spec, k):
                core = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
                Path(spec["pids"]).write_text(f"{os.getpid()} {core.pid}")
                time.sleep(600)

            if __name__ == "__main__":
                shard_main(None, shard_fn)
            """
        )
    )
    pids = tmp_path / "pids"
    spec = {"shard_files": [str(tmp_path / "shard-0.json")], "pids": str(pids)}
    runner_code = (
        "import json, sys; from pathlib import Path; from infra.shards import run_shards; "
        "from engine_shard import shard_fn; "
        f"run_shards('engine_shard', shard_fn, json.loads({json.dumps(json.dumps(spec))}), [None], "
        f"Path({str(tmp_path)!r}), isolate=True)"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)])}
    runner = subprocess.Popen([PY, "-c", runner_code], env=env, cwd=tmp_path)
    records: list[dict] = []
    try:
        _wait_for(lambda: pids.exists() and pids.read_text().strip(), 60, "the shard and its engine child")
        records = [process_record(int(pid)) for pid in pids.read_text().split()]
        assert all(records)
        runner.kill()
        runner.wait()
        _wait_for(lambda: not any(is_recorded_process(r) for r in records), 20, "shard and engine child")
    finally:
        reap_recorded([r for r in records if r], grace_s=1.0)


def test_grader_workers_exit_when_their_pool_owner_is_sigkilled() -> None:
    """An idle worker and one stuck in sympy (a power tower math-verify cannot finish) both go."""
    code = (
        "import threading, time; from rewards.grader import GraderPool\n"
        "pool = GraderPool(num_workers=2, timeout_s=600)\n"
        "assert pool.equivalent('\\\\frac{1}{2}', '0.5')\n"
        "threading.Thread(target=pool.equivalent, args=('9^{9^{9^{9}}}', '9^{9^{9^{8}}}'), daemon=True).start()\n"
        "while 'busy' not in [state for _, state in pool.worker_states()]: time.sleep(0.05)\n"
        "print(' '.join(map(str, pool.worker_pids())), flush=True)\n"
        "time.sleep(600)\n"
    )
    owner = subprocess.Popen([PY, "-c", code], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    records = [process_record(int(pid)) for pid in owner.stdout.readline().split()]
    try:
        assert len(records) == 2 and all(records)
        owner.kill()
        owner.wait()
        _wait_for(lambda: not any(is_recorded_process(r) for r in records), 20, "the grader workers")
    finally:
        reap_recorded([r for r in records if r], grace_s=1.0)


def _write_previous_attempt(path: Path, owner: dict | None, processes: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    servers = [{"index": 0, "pid": processes[0]["pid"]}]
    path.write_text(
        json.dumps({"owner": owner, "processes": processes, "state": "ready", "servers": servers})
    )


def test_reaper_stops_a_recorded_stale_server_and_spares_a_reused_pid(tmp_path: Path) -> None:
    stale = _sleeper(start_new_session=True)  # a server a crashed attempt left behind
    other = _sleeper(start_new_session=True)  # a program that got a recorded PID afterwards
    try:
        stale_record = process_record(stale.pid)
        reused = {"pid": other.pid, "start_time": process_record(other.pid)["start_time"] - 1}
        finished = subprocess.run([PY, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
        dead_owner = {"pid": int(finished.stdout), "start_time": 1}  # the previous attempt's owner, gone
        pids_file = tmp_path / "solver_service" / PIDS_FILE_NAME
        _write_previous_attempt(pids_file, dead_owner, [stale_record, reused])

        assert reap_previous_attempt(pids_file, grace_s=5.0) == [stale.pid]
        assert stale.wait(timeout=10) == -signal.SIGTERM
        assert other.poll() is None  # same PID as a record, other start time: left alone

        # A recorded owner that still runs: the folder is in use, nothing is touched.
        _write_previous_attempt(pids_file, process_record(other.pid), [process_record(other.pid)])
        with pytest.raises(SolverServiceError, match="is still running: stop that run first"):
            reap_previous_attempt(pids_file)
        assert other.poll() is None
    finally:
        for proc in (stale, other):
            proc.kill()
            proc.wait()


@pytest.mark.slow
def test_evaluation_worker_takes_vllm_engine_core_along_when_its_parent_is_sigkilled(
    tiny_model_dir: str, tmp_path: Path
) -> None:
    """The GPU case on CPU: vLLM in multiprocess mode forks an engine core that does not watch its
    parent; the data-parallel worker's SIGTERM (from PR_SET_PDEATHSIG) must stop it."""
    code = textwrap.dedent(
        f"""
        import multiprocessing as mp, os, time
        from dataclasses import asdict
        from evaluation.generate import EngineConfig, _worker_main
        if __name__ == "__main__":
            os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "1"
            ctx = mp.get_context("spawn")
            parent, child = ctx.Pipe()
            config = EngineConfig(model={tiny_model_dir!r}, max_model_len=256, enforce_eager=True)
            worker = ctx.Process(target=_worker_main, args=(child, 0, "", asdict(config)))
            worker.start()
            status, payload = parent.recv()
            print("WORKER", status, worker.pid, flush=True)
            time.sleep(600)
        """
    )
    script = tmp_path / "owner.py"
    script.write_text(code)
    env = {k: v for k, v in os.environ.items() if k != "VLLM_ENABLE_V1_MULTIPROCESSING"}
    owner = subprocess.Popen([PY, str(script)], stdout=subprocess.PIPE, text=True, cwd=ROOT, env=env)
    records: list[dict] = []
    try:
        line = ""
        while not line.startswith("WORKER"):  # vLLM logs to stdout as well
            line = owner.stdout.readline()
            assert line, "the owner exited before its worker was ready"
        _, status, worker = line.split()
        assert status == "ready"
        records = [r for pid in [int(worker), *descendants(int(worker))] if (r := process_record(pid))]
        assert len(records) >= 2, "expected vLLM's engine core beside the worker"
        owner.kill()
        owner.wait()
        _wait_for(lambda: not any(is_recorded_process(r) for r in records), 60, "worker and engine core")
    finally:
        reap_recorded(records, grace_s=1.0)


@pytest.mark.slow
def test_challenger_stage_sigkilled_with_its_solver_server_up_leaves_no_server(
    tiny_model_dir: str, tmp_path: Path
) -> None:
    """The issue's scenario: the driver's whole process group is SIGKILLed while the Challenger stage
    runs against its Solver server (which has its own process group). Before that, the stage's start
    reaps a server recorded by a "previous attempt" and spares a record whose start time differs.
    The stage runs with no VLLM_CPU_KVCACHE_SPACE in its environment: the server picks its own."""
    out = tmp_path / "challenger"
    pids_file = out / "solver_service" / PIDS_FILE_NAME
    stale, other = _sleeper(start_new_session=True), _sleeper(start_new_session=True)
    reused = {"pid": other.pid, "start_time": process_record(other.pid)["start_time"] + 1}
    _write_previous_attempt(pids_file, {"pid": 1, "start_time": -1}, [process_record(stale.pid), reused])
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("VLLM_CPU_KVCACHE_SPACE", "VLLM_ENABLE_V1_MULTIPROCESSING")
    }
    cmd = ["bash", str(ROOT / "scripts" / "questioner_train.sh"), tiny_model_dir, tiny_model_dir, str(out)]
    cmd += ["--preset", "configs/pipeline/demo.yaml"]
    records: list[dict] = []
    with open(tmp_path / "stage.log", "wb") as log:
        driver = subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:

        def ready() -> bool:
            assert driver.poll() is None, (tmp_path / "stage.log").read_text()[-4000:]
            service = json.loads(pids_file.read_text())  # the seeded file says "ready" too: not its owner
            return service.get("state") == "ready" and service["owner"]["pid"] != 1

        _wait_for(ready, 900, "the Solver server of the Challenger stage")
        assert stale.poll() == -signal.SIGTERM  # the previous attempt's server was reaped at start
        assert other.poll() is None  # a PID whose start time differs from the record was left alone
        service = json.loads(pids_file.read_text())
        records = service["processes"]
        assert len(records) >= 3  # the supervisor, the API server and vLLM's engine core
        assert "VLLM_CPU_KVCACHE_SPACE=1 GiB (picked for this machine" in (tmp_path / "stage.log").read_text()
        tree = [r for pid in descendants(driver.pid) if (r := process_record(pid))]
        os.killpg(driver.pid, signal.SIGKILL)  # the whole driver process group, as in the issue
        driver.wait()
        _wait_for(
            lambda: not any(is_recorded_process(r) for r in records), 60, "the Solver server's processes"
        )
        assert not process_group_members(service["servers"][0]["pgid"])
        # Every other process the stage had started (Ray's, the trainer ranks') goes too.
        others = [r for r in tree if r not in records]
        assert others, "the stage's process tree was not captured"
        records = [*records, *others]  # reaped in `finally` if the assertion below fails

        def survivors() -> list[str]:
            alive = [r["pid"] for r in others if is_recorded_process(r)]
            return [f"{pid} {_cmdline(pid)}"[:200] for pid in alive]

        deadline = time.monotonic() + 60
        while survivors() and time.monotonic() < deadline:
            time.sleep(0.05)  # polling /proc: there is nothing to wait on
        assert not survivors(), f"processes of the stage alive 60 s after the kill: {survivors()}"
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
            driver.wait()
        reap_recorded(records, grace_s=1.0)
        for proc in (stale, other):
            proc.kill()
            proc.wait()
