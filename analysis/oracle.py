"""The oracle of the label-accuracy analysis: a stronger model's answer to every question.

Two kinds, as the evaluation judge takes them:
- an OpenAI-compatible endpoint (`http(s)://.../v1`), its model name, and an API key read from an
  environment variable; each question is sent as the Solver chat (rzero/prompts.py) at temperature
  0, and the answer is the response's last box, extracted the profile's way;
- a local model folder, answered like every other model of the analysis (the project's offline
  engines, the Solver prompt, the one stop rule, greedy) by `analysis.answers`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from evaluation.judge import chat_completion, check_judge_url
from rewards.answer_parsing import extract_answer
from rzero.prompts import solver_messages

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class OracleSpec:
    """Where the oracle's answers come from: `endpoint` (base URL) or `model` (local folder)."""

    source: str
    model_name: str | None = None  # endpoint: the model name sent in each request
    api_key_env: str = "OPENAI_API_KEY"
    max_tokens: int = 4096
    timeout_s: float = 300.0
    retries: int = 2
    max_workers: int = 8

    @property
    def is_endpoint(self) -> bool:
        return self.source.startswith(("http://", "https://"))

    def check(self) -> None:
        """Refuse an unusable oracle before any model loads, naming the fix."""
        if self.is_endpoint:
            check_judge_url(self.source)  # https, or http on loopback only: the key travels along
            if not self.model_name:
                raise ValueError(
                    f"the oracle endpoint {self.source} needs its model name: add --oracle-model NAME"
                )
            return
        if not (Path(self.source) / "config.json").is_file():
            raise ValueError(
                f"--oracle {self.source}: neither an http(s):// endpoint nor a local model folder with "
                "config.json; give the endpoint's base URL (with --oracle-model) or a downloaded model folder"
            )

    def identity(self) -> dict:
        """What an oracle cell's answers depend on (its fingerprint)."""
        return {"oracle": self.source, "oracle_model": self.model_name, "max_tokens": self.max_tokens}


def endpoint_answers(spec: OracleSpec, questions: Sequence[str], profile: str) -> list[str | None]:
    """The endpoint's answer to each question (None where its response has no box).

    Raises when a request failed after its retries (a wrong URL or key must not read as "the oracle
    knows nothing").
    """
    url = spec.source.rstrip("/") + "/chat/completions"
    api_key = os.environ.get(spec.api_key_env)

    def ask(question: str) -> tuple[str | None, Exception | None]:
        body = {
            "model": spec.model_name,
            "messages": solver_messages(question),
            "temperature": 0.0,
            "max_tokens": spec.max_tokens,
        }
        content, _, error = chat_completion(url, body, api_key, spec.timeout_s, spec.retries)
        return content, error

    with ThreadPoolExecutor(max_workers=spec.max_workers) as pool:
        replies = list(pool.map(ask, questions))
    failed = [error for content, error in replies if content is None]
    if failed:
        # Not written as "no answer": a cell is final once written, so a rerun must ask again.
        raise RuntimeError(
            f"{len(failed)} of {len(questions)} requests to the oracle endpoint {url} failed (last error: "
            f"{failed[-1]}); check the URL, --oracle-model and the key in ${spec.api_key_env}, then rerun "
            "(finished cells are kept)"
        )
    return [None if content is None else extract_answer(content, profile) for content, _ in replies]
