"""Question generation: N samples from the Challenger with vLLM (RZERO_SPEC.md section 3).

One response per Challenger prompt (`rzero.prompts.challenger_messages(variant, i)`, i = 0..N-1; the
`persona` variant draws prompt i's persona from `persona_file` seeded by (seed, i)),
temperature 1.0, top_p 0.95, at most 4096 new tokens; every sample is parsed with
`question_generate.parsing.parse_generated` (the profile's generation rule, which in `rzero_code`
is not the reward's) and kept, unparseable ones with valid=false.

Output folder:
    questions.jsonl   one row per sample, in prompt order: {"id", "raw", "question", "answer",
                      "valid", "shard", "finish_reason", "num_tokens"}
    shards/<config fingerprint>/   per-shard rows (+ .meta.json timings, + .log of subprocesses);
                      a shard file present there is complete and is reused by a re-run with the
                      same settings, so an interrupted run loses at most the shards still running
    manifest.json     written last (stage "question_generate"; outputs {"questions": path}; counts
                      generated, valid, invalid and invalid_<reason> per `invalid_reason`, truncated)

Data parallel over GPU groups with `infra.shards.run_shards` (one engine per group, one in-process
engine on CPU). Each engine gets seed + shard. On CPU sampling is also seeded per prompt
(`infra.vllm_engines.request_seeds`), so the samples do not depend on batching or the shard count;
on GPU the engine seed alone drives vLLM's fast batched sampler.
"""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from infra.shards import run_shards, shard_bounds, shard_main, shard_timings
from infra.stage_kit import fingerprint, finished_stage, read_jsonl, read_manifest, write_manifest
from infra.vllm_engines import (
    GENERATE_SEED_STREAM,
    EngineOptions,
    EngineSettings,
    Sample,
    SamplingSettings,
    encode_chats,
    load_tokenizer,
    make_llm,
    request_seeds,
    sample,
    shutdown_llm,
    stop_ids_for,
)
from question_generate.parsing import parse_generated
from rzero.prompts import challenger_messages, challenger_prompts, load_personas
from verl.utils.fs import atomic_write_json, atomic_write_jsonl
from verl.utils.process_memory import peak_rss_mib

logger = logging.getLogger(__name__)

STAGE = "question_generate"
QUESTIONS_FILE = "questions.jsonl"
SHARDS_DIR = "shards"


@dataclass
class GenerateConfig:
    """Everything the stage needs: the driver writes it as json (`python -m question_generate --config`)."""

    model: str
    out_dir: str
    num_questions: int = 8000
    variant: str = "default"
    persona_file: str = ""  # `persona` variant: one persona a line (empty: rzero.prompts.PERSONA_FILE)
    temperature: float = 1.0
    top_p: float = 0.95
    max_tokens: int = 4096
    seed: int = 0
    profile: str = "paper"  # how a sample is parsed (rzero_code: a question block and any \boxed{)
    engine: EngineOptions = field(default_factory=EngineOptions)

    @classmethod
    def from_dict(cls, data: dict) -> GenerateConfig:
        return cls(**{**data, "engine": EngineOptions(**data.get("engine", {}))})

    def sampling_dict(self) -> dict:
        """The settings that decide the samples (recorded in the manifest, fingerprint of the shards)."""
        e = self.engine
        return dict(
            model=str(self.model),
            num_questions=self.num_questions,
            variant=self.variant,
            persona_file=self.persona_file,
            temperature=self.temperature,
            top_p=self.top_p,
            max_tokens=self.max_tokens,
            seed=self.seed,
            profile=self.profile,
            tensor_parallel_size=e.tensor_parallel_size,
            max_model_len=e.max_model_len,
            dtype=e.dtype,
        )


def _generate_shard(spec: dict, shard: int) -> None:
    """Sample the Challenger on prompts [start, end) of `shard`; write its rows and timings."""
    t0 = time.perf_counter()
    start, end = shard_bounds(spec["num_questions"], len(spec["shard_files"]))[shard]
    engine = EngineSettings(**{**spec["engine"], "seed": spec["engine"]["seed"] + shard})
    tokenizer = load_tokenizer(engine.model)
    prompt_ids = challenger_prompt_ids(tokenizer, spec, start, end)
    seeds = request_seeds(spec["seed"], GENERATE_SEED_STREAM, start, end, spec["per_request_seeds"])
    llm = make_llm(engine, spec["on_gpu"])
    t_ready = time.perf_counter()
    settings = SamplingSettings(
        n=1, temperature=spec["temperature"], top_p=spec["top_p"], max_tokens=spec["max_tokens"]
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
        _question_row(start + offset, out, shard, spec["profile"]) for offset, (out,) in enumerate(samples)
    ]
    shard_file = Path(spec["shard_files"][shard])
    # The meta first: the shard file is the shard's completion mark.
    atomic_write_json(
        shard_file.with_suffix(".meta.json"),
        {
            "shard": shard,
            "prompts": end - start,
            "engine_start_s": t_ready - t0,
            "generate_s": t_done - t_ready,
            "response_tokens": sum(s.num_tokens for (s,) in samples),
            "peak_rss_mib": peak_rss_mib()["self"],
        },
    )
    atomic_write_jsonl(shard_file, rows)


def prompt_settings(config: GenerateConfig) -> dict:
    """The Challenger prompt of the shards: variant, seed of the persona draws, and the personas
    (read and checked here: a bad variant, a missing or empty persona file fails before any engine)."""
    challenger_prompts(config.variant, [], config.persona_file, config.seed)
    personas = list(load_personas(config.persona_file)) if config.variant == "persona" else None
    return {"variant": config.variant, "seed": config.seed, "personas": personas}


def challenger_prompt_ids(tokenizer: Any, spec: dict, start: int, end: int) -> list[list[int]]:
    """Token ids of Challenger prompts [start, end) (`spec`: `prompt_settings`), rendered as the
    Challenger's GRPO renders them."""
    chats = [
        challenger_messages(spec["variant"], i, spec.get("personas"), spec["seed"]) for i in range(start, end)
    ]
    return encode_chats(tokenizer, chats)


def _question_row(index: int, out: Sample, shard: int, profile: str) -> dict:
    parsed = parse_generated(out.text, profile)
    return {
        "id": f"q{index:06d}",
        "raw": out.text,
        "question": parsed.question,
        "answer": parsed.answer,
        "valid": parsed.valid,
        "shard": shard,
        "finish_reason": out.finish_reason,
        "num_tokens": out.num_tokens,
    }


INVALID_REASONS = ("empty", "no_question", "no_answer")


def invalid_reason(row: dict) -> str | None:
    """Why a sample is not a usable question: "empty" (nothing but whitespace was generated),
    "no_question" (no non-empty <question> block), "no_answer" (no closed box, or an empty one);
    None for a valid sample."""
    if row["valid"]:
        return None
    if not str(row.get("raw") or "").strip():
        return "empty"
    return "no_answer" if row.get("question") else "no_question"


def shards_folder(config: GenerateConfig, num_shards: int, on_gpu: bool) -> Path:
    """The folder of `config`'s shards, named by everything that decides the samples (sampling,
    prompts, shard count, device, seeding), so a re-run with other settings never picks up stale
    shards."""
    decided = {
        **config.sampling_dict(),
        **prompt_settings(config),
        "num_shards": num_shards,
        "on_gpu": on_gpu,
        **config.engine.seeding_key(),
    }
    return Path(config.out_dir) / SHARDS_DIR / fingerprint(decided)


def generate_questions(config: GenerateConfig) -> dict:
    """Sample `num_questions` Challenger outputs into `<out_dir>/questions.jsonl`; return the manifest.

    A finished manifest in `out_dir` means "skip" (the manifest is returned).
    """
    out = Path(config.out_dir)
    recorded = config.sampling_dict()
    done = finished_stage(out, STAGE, recorded)
    if done is not None:
        return done
    if config.num_questions < 1:
        raise ValueError(f"num_questions must be >= 1, got {config.num_questions}")
    prompts = prompt_settings(config)  # before any engine starts

    t0 = time.perf_counter()
    groups = config.engine.groups()
    on_gpu = groups[0] is not None
    n = len(groups)
    work_dir = shards_folder(config, n, on_gpu)
    work_dir.mkdir(parents=True, exist_ok=True)
    shard_files = [work_dir / f"questions-{k:05d}-of-{n:05d}.jsonl" for k in range(n)]
    spec = {
        **recorded,
        "engine": asdict(config.engine.settings(config.model, config.seed)),
        "on_gpu": on_gpu,
        "per_request_seeds": config.engine.per_request_seeds(),
        **prompts,
        "shard_files": [str(p) for p in shard_files],
    }
    where = f"GPUs {groups}" if on_gpu else "CPU"
    logger.info(
        "%s: %d questions from %s on %s (%d shards) -> %s",
        STAGE,
        config.num_questions,
        config.model,
        where,
        n,
        out,
    )
    ran = run_shards(
        "question_generate.generate", _generate_shard, spec, groups, work_dir, config.engine.isolate
    )
    t_generated = time.perf_counter()

    rows: list[dict] = []
    for path in shard_files:
        rows.extend(read_jsonl(path))
    if len(rows) != config.num_questions:
        raise RuntimeError(
            f"shards hold {len(rows)} rows, expected {config.num_questions}: delete {work_dir} and re-run"
        )
    questions_path = atomic_write_jsonl(out / QUESTIONS_FILE, rows)
    timings = {"start": t0, "generated": t_generated}
    return _finish(config, rows, questions_path, shard_files, ran, groups, timings)


def _finish(config: GenerateConfig, rows, questions_path, shard_files, ran, groups, timings) -> dict:
    """Counts, notes and the manifest (written last)."""
    n = len(groups)
    on_gpu = groups[0] is not None
    valid = sum(1 for r in rows if r["valid"])
    reasons = [invalid_reason(r) for r in rows]
    metas = shard_timings(shard_files)
    response_tokens = sum(m.get("response_tokens", 0) for m in metas)
    generate_s = max((m.get("generate_s", 0.0) for m in metas), default=0.0)
    notes = []
    if len(ran) < n:
        notes.append(f"resumed: {n - len(ran)} of {n} shards were already complete and were reused")
    if generate_s > 0:
        notes.append(
            f"throughput: {len(rows) / generate_s:.1f} questions/s, "
            f"{response_tokens / generate_s:.0f} response tokens/s (slowest shard's sampling time)"
        )
    out = Path(config.out_dir)
    write_manifest(
        out,
        STAGE,
        outputs={"questions": str(questions_path.resolve())},
        inputs={"model": str(config.model)},
        config={**config.sampling_dict(), "devices": groups if on_gpu else "cpu", "shards": n},
        counts={
            "generated": len(rows),
            "valid": valid,
            "invalid": len(rows) - valid,
            # every invalid sample under exactly one reason (empty generation, no question, no answer)
            **{f"invalid_{reason}": reasons.count(reason) for reason in INVALID_REASONS},
            "truncated": sum(1 for r in rows if r.get("finish_reason") == "length"),
            "response_tokens": response_tokens,
        },
        timings_s={
            "total": time.perf_counter() - timings["start"],
            "shards": timings["generated"] - timings["start"],
            "engine_start_max": max((m.get("engine_start_s", 0.0) for m in metas), default=0.0),
            "sampling_max": generate_s,
        },
        notes=notes,
        memory_mib={"shards": [m.get("peak_rss_mib") for m in metas]},
    )
    logger.info(
        "%s: %d generated, %d valid, %d invalid -> %s",
        STAGE,
        len(rows),
        valid,
        len(rows) - valid,
        questions_path,
    )
    return read_manifest(out) or {}


if __name__ == "__main__":
    # A shard process started by `run_shards`; the user-facing CLI is `python -m question_generate`.
    shard_main(sys.argv[1:], _generate_shard)
