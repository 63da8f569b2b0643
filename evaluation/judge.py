"""Optional LLM-judge re-check of rule-graded answers through any OpenAI-compatible endpoint.

Off by default. For every response the rules marked wrong but whose answer could be extracted,
the judge is asked whether the extracted answer means the same as the gold answer (the gold answer
is given as the reference, the extracted answer as the candidate, never the other way round).
Verdicts are cached on disk by (judge model, question, gold, candidate), so a re-run or another
model that produces the same answer costs no request. Judged accuracy is reported in its own
columns, next to the rule-based score, never instead of it.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import logging
import os
import threading
import urllib.error
import urllib.request
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from evaluation.loaders import Item
from evaluation.scoring import BenchmarkScore
from verl.utils.fs import atomic_write_json

logger = logging.getLogger(__name__)

JUDGE_SYSTEM_PROMPT = (
    "You grade answers to exam questions. You are given a question, the reference answer and a "
    "candidate answer. Decide whether the candidate answer is equivalent to the reference answer "
    "(same value or same meaning; ignore formatting, units written differently and trivial rewording). "
    "Reply with exactly one word: YES or NO."
)


def judge_user_prompt(question: str, gold: str, candidate: str) -> str:
    """The user turn: reference (gold) first, candidate (extracted answer) second."""
    return (
        f"Question:\n{question}\n\nReference answer:\n{gold}\n\nCandidate answer:\n{candidate}\n\nEquivalent?"
    )


def _drop_think_blocks(text: str) -> str:
    """``re.sub(r"<think>.*?</think>", " ", text, flags=re.S)`` with `str.find`: linear, where the
    regex rescans to the end from every ``<think>`` of a reply that never closes one."""
    parts, pos = [], 0
    while (start := text.find("<think>", pos)) >= 0:
        end = text.find("</think>", start + len("<think>"))
        if end < 0:  # no closing tag after this one, so none after a later <think> either
            break
        parts += [text[pos:start], " "]
        pos = end + len("</think>")
    parts.append(text[pos:])
    return "".join(parts)


def parse_verdict(text: str) -> bool | None:
    """YES -> True, NO -> False, anything else -> None (an unusable verdict, counted as wrong).

    A reasoning model's <think>...</think> block is skipped; the first word after it decides.
    """
    text = _drop_think_blocks(text or "")
    words = text.strip().strip("*").split()
    if not words:
        return None
    head = words[0].strip(".,!:*").upper()
    return True if head == "YES" else False if head == "NO" else None


# A verdict is one word; an OpenAI-style reply carrying it is well under this. A larger reply is
# refused rather than read into memory.
MAX_REPLY_BYTES = 1 << 20


class JudgeEndpointError(urllib.error.URLError):
    """The endpoint did something a judge client must not follow (another host, a huge reply)."""


def _is_loopback_host(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def check_judge_url(url: str) -> str:
    """`url` if it is https, or http on loopback; else ValueError naming the fix. The key travels
    in a header, so plain http is allowed only where nothing leaves the machine."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"judge URL {redact_url(url)!r} is not an http(s) URL, e.g. https://host/v1")
    if parts.scheme == "http" and not _is_loopback_host(parts.hostname):
        raise ValueError(
            f"judge URL {redact_url(url)!r} is plain http to another machine: the key and the "
            "answers would travel unencrypted; use https (http is accepted on 127.0.0.1 / localhost)"
        )
    return url


def redact_url(url: str) -> str:
    """`url` without what may be a secret: the user:password part and the query string."""
    parts = urlsplit(url)
    if not parts.hostname:
        return "<unparsable URL>"
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    netloc = host if parts.port is None else f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, "<redacted>" if parts.query else "", ""))


def _origin(url: str) -> tuple[str, str | None, int | None]:
    parts = urlsplit(url)
    return parts.scheme, parts.hostname, parts.port


class _SameOriginRedirects(urllib.request.HTTPRedirectHandler):
    """urllib follows redirects with the request's headers, Authorization included: a redirect to
    another scheme, host or port is refused instead of followed."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        if _origin(newurl) != _origin(req.full_url):
            raise JudgeEndpointError(
                f"the judge endpoint {redact_url(req.full_url)} redirected to {redact_url(newurl)} "
                f"(HTTP {code}); not followed, so the key is not sent there: point --judge-url at "
                "the final address"
            )
        return super().redirect_request(req, fp, code, msg, headers, newurl)


_OPENER = urllib.request.build_opener(_SameOriginRedirects)


def _read_capped(response, limit: int = MAX_REPLY_BYTES) -> bytes:
    data = response.read(limit + 1)
    if len(data) > limit:
        raise JudgeEndpointError(f"the judge's reply is larger than {limit} bytes: refused")
    return data


def chat_completion(
    url: str, body: dict, api_key: str | None, timeout_s: float, retries: int
) -> tuple[str | None, int, Exception | None]:
    """POST one chat-completions request (`url` ends in /chat/completions), retried `retries` times.

    Returns (the first choice's message content or None when every attempt failed, attempts made,
    the last error). Shared by the judge and the run analysis's oracle (analysis/oracle.py).
    """
    check_judge_url(url)
    headers = {"Content-Type": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    data = json.dumps(body).encode("utf-8")
    last_error: Exception | None = None
    for attempt in range(1, retries + 2):
        request = urllib.request.Request(url, data=data, headers=headers, method="POST")
        try:
            with _OPENER.open(request, timeout=timeout_s) as response:
                payload = json.loads(_read_capped(response).decode("utf-8"))
            return payload["choices"][0]["message"]["content"] or "", attempt, None
        except JudgeEndpointError as error:  # the same answer again: not retried
            return None, attempt, error
        except (urllib.error.URLError, TimeoutError, KeyError, IndexError, json.JSONDecodeError) as error:
            last_error = error
    return None, retries + 1, last_error


class LLMJudge:
    """Client of an OpenAI-compatible chat-completions endpoint with an on-disk verdict cache.

    Args:
        base_url: e.g. "http://127.0.0.1:8000/v1" (the "/chat/completions" path is appended);
            https, or http on loopback only. Redirects to another host are refused (the key would
            follow them) and replies over MAX_REPLY_BYTES too.
        model: model name sent in the request.
        api_key: bearer token (None: no Authorization header).
        cache_path: json file of cached verdicts (None: in memory only).
        timeout_s: per-request timeout; retries: extra attempts after a failed request.
        max_tokens: reply budget (raise it for judges that think before answering).
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str | None = None,
        cache_path: str | os.PathLike | None = None,
        timeout_s: float = 60.0,
        retries: int = 2,
        max_workers: int = 8,
        max_tokens: int = 16,
    ) -> None:
        self.url = check_judge_url(base_url.rstrip("/") + "/chat/completions")
        self.model = model
        self.api_key = api_key
        self.cache_path = Path(cache_path) if cache_path else None
        self.timeout_s = timeout_s
        self.retries = retries
        self.max_workers = max_workers
        self.max_tokens = max_tokens
        self.requests_sent = 0
        self.failures = 0
        self._lock = threading.Lock()
        self._cache: dict[str, bool | None] = {}
        if self.cache_path and self.cache_path.exists():
            self._cache = json.loads(self.cache_path.read_text(encoding="utf-8"))

    def _key(self, question: str, gold: str, candidate: str) -> str:
        blob = json.dumps([self.model, question, gold, candidate], ensure_ascii=False)
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()

    def _ask(self, question: str, gold: str, candidate: str) -> bool | None:
        body = {
            "model": self.model,
            "messages": [
                {"role": "system", "content": JUDGE_SYSTEM_PROMPT},
                {"role": "user", "content": judge_user_prompt(question, gold, candidate)},
            ],
            "temperature": 0.0,
            "max_tokens": self.max_tokens,
        }
        content, attempts, last_error = chat_completion(
            self.url, body, self.api_key, self.timeout_s, self.retries
        )
        with self._lock:
            self.requests_sent += attempts
            if content is None:
                self.failures += 1
        if content is None:
            logger.warning("judge request failed after %d attempts: %s", attempts, last_error)
            return None
        return parse_verdict(content)

    def verdicts(self, triples: list[tuple[str, str, str]]) -> list[bool | None]:
        """Verdict for each (question, gold, candidate); cached ones are not requested again.

        A failed request yields None and is not cached, so a later run retries it.
        """
        keys = [self._key(*t) for t in triples]
        todo = {k: t for k, t in zip(keys, triples) if k not in self._cache}
        if todo:
            with ThreadPoolExecutor(max_workers=self.max_workers) as pool:
                answers = list(pool.map(lambda t: self._ask(*t), todo.values()))
            for key, verdict in zip(todo, answers):
                if verdict is not None:
                    self._cache[key] = verdict
            self.save()
        return [self._cache.get(k) for k in keys]

    def save(self) -> None:
        if self.cache_path is not None:
            atomic_write_json(self.cache_path, self._cache)


def apply_judge(judge: LLMJudge, items: Sequence[Item], score: BenchmarkScore) -> float:
    """Re-check one benchmark's rule-wrong answers with the judge; returns judge-accepted accuracy (%).

    A response counts as judge-correct when the rules accepted it, or when its extracted answer
    exists and the judge says it is equivalent to the gold answer. Fills `ItemScore.judge`.
    """
    triples, where = [], []
    for i, (item, s) in enumerate(zip(items, score.items)):
        for j, (pred, ok) in enumerate(zip(s.preds, s.correct)):
            if not ok and pred is not None:
                triples.append((item.question, item.gold, pred))
                where.append((i, j))
    verdicts = judge.verdicts(triples) if triples else []
    for s in score.items:
        s.judge = list(s.correct)
    for (i, j), verdict in zip(where, verdicts):
        score.items[i].judge[j] = verdict is True
    if not score.items:
        return 0.0
    return 100.0 * sum(sum(s.judge) / len(s.judge) for s in score.items if s.judge) / len(score.items)
