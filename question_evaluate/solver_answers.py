"""The Solver's m answers per question, sampled with vLLM data-parallel over the GPU groups.

Exactly like question generation (`infra.shards`, one engine per group, seed + shard; per-question
seeds on CPU only: `infra.vllm_engines.request_seeds`); each
answer is the last \\boxed{} of a response (None without one).
"""

from __future__ import annotations

import hashlib
import logging
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from infra.shards import run_shards, shard_bounds, shard_main, shard_timings
from infra.stage_kit import fingerprint, read_jsonl
from infra.vllm_engines import (
    ANSWER_SEED_STREAM,
    EngineOptions,
    EngineSettings,
    SamplingSettings,
    encode_chats,
    load_tokenizer,
    make_llm,
    request_seeds,
    sample,
    shutdown_llm,
    stop_ids_for,
)
from rewards.answer_parsing import extract_answer
from rzero.prompts import solver_messages
from verl.utils.fs import atomic_write_json, atomic_write_jsonl
from verl.utils.process_memory import peak_rss_mib

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class AnswerSampling:
    """The Solver's sampling for pseudo-labels (RZERO_SPEC.md section 3)."""

    votes: int
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 40
    max_tokens: int = 4096
    seed: int = 0
    profile: str = "paper"  # how an answer is extracted (rewards.answer_parsing.extract_answer)


def solver_prompt_ids(tokenizer: Any, questions: list[str]) -> list[list[int]]:
    """Prompt token ids of the Solver chats (rzero.prompts), rendered as the GRPO engine renders them."""
    return encode_chats(tokenizer, [solver_messages(q) for q in questions])


def _answer_shard(spec: dict, shard: int) -> None:
    """Sample m responses for the questions of `shard`; write their boxed answers and timings."""
    t0 = time.perf_counter()
    questions = spec["questions"]
    start, end = shard_bounds(len(questions), len(spec["shard_files"]))[shard]
    engine = EngineSettings(**{**spec["engine"], "seed": spec["engine"]["seed"] + shard})
    tokenizer = load_tokenizer(engine.model)
    prompt_ids = solver_prompt_ids(tokenizer, questions[start:end])
    seeds = request_seeds(spec["seed"], ANSWER_SEED_STREAM, start, end, spec["per_request_seeds"])
    llm = make_llm(engine, spec["on_gpu"])
    t_ready = time.perf_counter()
    settings = SamplingSettings(
        n=spec["votes"],
        temperature=spec["temperature"],
        top_p=spec["top_p"],
        top_k=spec["top_k"],
        max_tokens=spec["max_tokens"],
    )
    samples = sample(
        llm,
        prompt_ids,
        seeds,
        settings,
        stop_ids=stop_ids_for(engine.model, tokenizer),
        use_tqdm=shard == spec.get("progress_shard", 0),
    )
    t_done = time.perf_counter()
    shutdown_llm(llm)
    rows = [
        {
            "index": start + offset,
            "answers": [extract_answer(s.text, spec["profile"]) for s in group],
            "finish_reasons": [s.finish_reason for s in group],
            "num_tokens": [s.num_tokens for s in group],
        }
        for offset, group in enumerate(samples)
    ]
    shard_file = Path(spec["shard_files"][shard])
    atomic_write_json(
        shard_file.with_suffix(".meta.json"),
        {
            "shard": shard,
            "questions": end - start,
            "engine_start_s": t_ready - t0,
            "generate_s": t_done - t_ready,
            "response_tokens": sum(s.num_tokens for group in samples for s in group),
            "peak_rss_mib": peak_rss_mib()["self"],
        },
    )
    atomic_write_jsonl(shard_file, rows)  # last: the shard's completion mark


def solver_answers(
    solver_model: str,
    questions: list[str],
    sampling: AnswerSampling,
    engine: EngineOptions,
    work_root: Path,
) -> tuple[list[list[str | None]], dict[str, Any]]:
    """`sampling.votes` boxed answers per question from the Solver, and sampling statistics.

    Shards live in `work_root/<fingerprint of model, questions and settings>/`; complete ones are
    reused. Returns (answers per question, {"responses", "truncated", "prompt_too_long",
    "response_tokens", "shards", "shards_reused", "engine_start_max_s", "sampling_max_s"}).
    """
    groups = engine.groups()
    on_gpu = groups[0] is not None
    n = len(groups)
    settings: EngineSettings = engine.settings(solver_model, sampling.seed)
    questions_hash = hashlib.sha256("\x00".join(questions).encode()).hexdigest()
    decided = {
        **asdict(sampling),
        **asdict(settings),
        "questions": questions_hash,
        "num_shards": n,
        "on_gpu": on_gpu,
        **engine.seeding_key(),
    }
    work_dir = work_root / fingerprint(decided)
    work_dir.mkdir(parents=True, exist_ok=True)
    shard_files = [work_dir / f"answers-{k:05d}-of-{n:05d}.jsonl" for k in range(n)]
    spec = {
        **asdict(sampling),
        "engine": asdict(settings),
        "on_gpu": on_gpu,
        "per_request_seeds": engine.per_request_seeds(),
        "questions": questions,
        "shard_files": [str(p) for p in shard_files],
    }
    where = f"GPUs {groups}" if on_gpu else "CPU"
    logger.info(
        "%d answers to each of %d questions from %s on %s (%d shards)",
        sampling.votes,
        len(questions),
        solver_model,
        where,
        n,
    )
    ran = run_shards(
        "question_evaluate.solver_answers", _answer_shard, spec, groups, work_dir, engine.isolate
    )
    rows: list[dict] = []
    for path in shard_files:
        rows.extend(read_jsonl(path))
    if [r["index"] for r in rows] != list(range(len(questions))):
        raise RuntimeError(
            f"answer shards in {work_dir} do not cover the {len(questions)} questions in order"
        )
    metas = shard_timings(shard_files)
    reasons = [reason for r in rows for reason in r["finish_reasons"]]
    stats = {
        "responses": len(reasons),
        "truncated": reasons.count("length"),
        "prompt_too_long": reasons.count("prompt_too_long"),
        "response_tokens": sum(m.get("response_tokens", 0) for m in metas),
        "shards": n,
        "shards_reused": n - len(ran),
        "engine_start_max_s": max((m.get("engine_start_s", 0.0) for m in metas), default=0.0),
        "sampling_max_s": max((m.get("generate_s", 0.0) for m in metas), default=0.0),
        "shard_peak_rss_mib": [m.get("peak_rss_mib") for m in metas],
    }
    return [r["answers"] for r in rows], stats


if __name__ == "__main__":
    # A shard process started by `run_shards`; the user-facing CLI is `python -m question_evaluate`.
    shard_main(sys.argv[1:], _answer_shard)
