"""The solver service and its client around real server processes that are not vLLM: the
stand-in of tests/openai_standin.py (vLLM's routes, its key check and answer shape, in a process that
starts in a fraction of a second), so that ports taken by others, two endpoints and servers dying
mid-request are cheap to test. The real vLLM server is checked in test_solver_service.py.

What runs is the real `SolverService` (supervisor, process groups, readiness, ownership of the port,
key in the environment, watchdog) and the real `SolverClient`; only `command()` names the stand-in.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
from openai_standin import STANDIN, ForeignServer, wait_for_line

from infra.processes import process_group_members
from solver_service.client import SolverClient
from solver_service.server import API_KEY_ENV, PIDS_FILE_NAME, SolverServer, SolverService, SolverServiceError

MODEL = "standin-model"


class StandinService(SolverService):
    """The real service, with the stand-in as each server's command; `first_port` is the port its
    first server tries first (one the test chose), `server_args(server)` more stand-in flags."""

    def __init__(
        self,
        log_dir: Path,
        devices: list[str] | None = None,
        *,
        first_port: int | None = None,
        server_args: Callable[[SolverServer], list[str]] = lambda server: [],
        **kwargs,
    ) -> None:
        kwargs.setdefault("stop_grace_s", 5.0)
        kwargs.setdefault("ready_timeout_s", 60.0)
        super().__init__(MODEL, log_dir, devices, **kwargs)
        self.first_port = first_port
        self.server_args = server_args

    def command(self, server: SolverServer) -> list[str]:
        cmd = [self.python, str(STANDIN), "--port", str(server.port), "--model", self.model_name]
        return [*cmd, "--name", f"server{server.index}", *self.server_args(server)]

    def _pick_port(self) -> int:
        if self.first_port is not None:
            port, self.first_port = self.first_port, None
            return port
        return super()._pick_port()


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir: str):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.fixture(autouse=True)
def no_inherited_key(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test's service makes its own key (a key left by another test must not be reused)."""
    monkeypatch.delenv(API_KEY_ENV, raising=False)


def test_a_foreign_listener_on_the_port_is_refused_with_a_clear_error(tmp_path: Path) -> None:
    """Another program listens on the server's port before the server does, and answers the
    readiness checks as a vLLM server of our model would: the service must not count it as ready."""
    with ForeignServer(MODEL) as foreign:
        service = StandinService(
            tmp_path,
            first_port=foreign.port,
            port_attempts=1,
            server_args=lambda server: ["--start-after-s", "60"],  # ours is still "loading"
        )
        with pytest.raises(SolverServiceError) as info:
            service.start()
    message = str(info.value)
    print(message)
    assert (
        f"port {foreign.port} on 127.0.0.1 is listened on by a process outside the solver service" in message
    )
    assert "(this user)" in message and "1 port(s) tried, giving up" in message
    assert not service.running
    assert not process_group_members(service.servers[0].pid)  # our server was stopped


def test_a_foreign_listener_costs_the_port_and_the_key_never_leaves_the_environment(
    tmp_path: Path, tokenizer
) -> None:
    with ForeignServer(MODEL) as foreign:
        service = StandinService(
            tmp_path,
            first_port=foreign.port,
            port_attempts=2,
            # Only the first attempt is slow to listen: the second must become ready at once.
            server_args=lambda server: ["--start-after-s", "60"] if server.port_attempts == 1 else [],
        )
        with service:
            server = service.servers[0]
            assert server.bind_failures == [foreign.port] and server.port_attempts == 2
            assert server.port != foreign.port
            key = os.environ[API_KEY_ENV]  # exported by start() for the clients
            assert len(key) >= 32
            # The key reached the server in its environment, and nowhere a command line shows it.
            members = process_group_members(server.pid)
            assert len(members) == 2  # the supervisor and the stand-in
            for pid in members:
                assert key not in Path(f"/proc/{pid}/cmdline").read_bytes().decode()
            standin = next(pid for pid in members if pid != server.pid)
            environ = Path(f"/proc/{standin}/environ").read_bytes().split(b"\0")
            assert f"VLLM_API_KEY={key}".encode() in environ
            assert not any(entry.startswith(f"{API_KEY_ENV}=".encode()) for entry in environ)
            with SolverClient(service.endpoints, service.model_name, tokenizer, timeout_s=30) as client:
                assert client.answer(["What is 2 + 3?"], n=2) == [["server0: sample 0", "server0: sample 1"]]
            wrong_key = SolverClient(service.endpoints, service.model_name, tokenizer, api_key="wrong")
            with (
                wrong_key,
                pytest.raises(SolverServiceError, match=rf"refused the API key \(HTTP 401\).*{API_KEY_ENV}"),
            ):
                wrong_key.answer(["What is 2 + 3?"], n=1)
        assert API_KEY_ENV not in os.environ  # restored by stop()
        for path in tmp_path.iterdir():  # logs and the pids file
            assert key not in path.read_text(errors="replace"), path
    assert json.loads((tmp_path / PIDS_FILE_NAME).read_text())["state"] == "stopped"


def test_two_endpoints_balance_and_fail_over_when_one_dies_mid_request(
    tmp_path: Path, tokenizer, caplog: pytest.LogCaptureFixture
) -> None:
    """Two servers (two "GPUs"): requests spread over both; server 0 holds the requests that say
    HOLD and is killed while holding them: they are answered by server 1; the watchdog names the
    dead server; once both are dead the client fails at once, naming the endpoints."""
    service = StandinService(
        tmp_path,
        ["0", "1"],
        server_args=lambda server: ["--hold", "HOLD"] if server.index == 0 else [],
        watch_interval_s=0.1,
    )
    caplog.set_level(logging.ERROR, logger="solver_service.server")
    with service, SolverClient(service.endpoints, MODEL, tokenizer, timeout_s=60, backoff_s=0.1) as client:
        assert len(service.endpoints) == 2
        # Balance: both servers answer a batch, and the answers say who answered.
        answers = client.answer([f"question {i}" for i in range(8)], n=2)
        by_server = Counter(text.split(":")[0] for samples in answers for text in samples)
        per_endpoint = client.stats()["requests_per_endpoint"]
        print(f"balance: {dict(by_server)} answers, {per_endpoint} requests")
        assert sum(by_server.values()) == 16
        assert by_server["server0"] == 2 * per_endpoint[service.endpoints[0]] > 0
        assert by_server["server1"] == 2 * per_endpoint[service.endpoints[1]] > 0
        # One request at a time, both idle: strictly in turn.
        served = [client.answer([f"question {i}"], n=1)[0][0].split(":")[0] for i in range(6)]
        assert Counter(served) == {"server0": 3, "server1": 3}

        # Failover: the first request goes to server 0 (round-robin from the first endpoint).
        before = client.stats()
        outcome: dict[str, object] = {}

        def ask() -> None:
            try:
                outcome["answers"] = client.answer([f"HOLD {i}" for i in range(4)], n=1)
            except BaseException as e:
                outcome["error"] = e

        asker = threading.Thread(target=ask)
        asker.start()
        wait_for_line(service.servers[0].log_path, "(holding it)")
        os.killpg(service.servers[0].pid, signal.SIGKILL)  # dies mid-request, not a clean stop
        asker.join(timeout=120)
        assert not asker.is_alive(), "answer() hung after server 0 died"
        assert "error" not in outcome, outcome.get("error")
        assert outcome["answers"] == [["server1: sample 0"]] * 4  # every held request answered by server 1
        stats = client.stats()
        assert stats["retries"] > before["retries"] and stats["failures"] == before["failures"]
        print(f"failover: {stats}")

        # The service sees the death: check_alive names the server, the watchdog has logged it.
        with pytest.raises(
            SolverServiceError, match=r"solver server 0 \(pid \d+, port \d+.*exited with code"
        ):
            service.check_alive()
        deadline = time.monotonic() + 30
        while not any("solver server 0" in r.getMessage() for r in caplog.records):
            assert time.monotonic() < deadline, "the watchdog never reported server 0's death"
            time.sleep(0.05)
        assert not any("solver server 1" in r.getMessage() for r in caplog.records)

        # Both dead: a clear error at once, naming every endpoint; no waiting out the retries.
        os.killpg(service.servers[1].pid, signal.SIGKILL)
        service.servers[1].process.wait()
        t0 = time.monotonic()
        with pytest.raises(SolverServiceError, match="every solver server refuses connections") as info:
            client.answer(["What is 2 + 3?"], n=1)
        print(f"all dead: failed after {time.monotonic() - t0:.2f} s: {info.value}")
        assert all(endpoint in str(info.value) for endpoint in service.endpoints)


def test_cli_refuses_to_start_without_a_key_in_the_environment(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != API_KEY_ENV}
    cmd = [sys.executable, "-m", "solver_service", "--model", MODEL, "--log-dir", str(tmp_path)]
    cmd += ["--endpoints-file", str(tmp_path / "endpoints.json")]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert f"set {API_KEY_ENV} to a random secret" in done.stderr
    assert not list(tmp_path.iterdir())  # nothing was started or written
