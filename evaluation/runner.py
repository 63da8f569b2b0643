"""One evaluation run: for each benchmark load -> prompt -> generate -> score -> write; then the report.

Outputs under `out_dir` (every file written atomically, results.json last as the completion mark):
    <benchmark>/responses.jsonl   raw responses per question (k each), with the generation key
    <benchmark>/items.jsonl       per question: gold, extracted answers, verdicts, score
    <benchmark>/metrics.json      the benchmark's entry of results.json (written as soon as it is done)
    summary.md, summary.csv       the table in the paper's layout
    results.json                  everything above in one file

Resume, per benchmark: a benchmark whose metrics.json (written after its items.jsonl) carries this
run's resume key (generation key + scoring settings + gold answers) is finished and is kept as it is,
without generation or scoring; one whose responses.jsonl carries this run's generation key (model
files, prompts, sampling settings) is scored again without generating. So an interrupted run redoes
only the unfinished benchmarks, and results.json (then the stage manifest) is written last.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from evaluation.generate import Engine, EngineConfig, GenRequest, SamplingConfig, make_engine
from evaluation.judge import LLMJudge, apply_judge, redact_url
from evaluation.loaders import LoadedBenchmark, find_local_file, load_benchmark
from evaluation.prompts import build_messages, render_prompt, stop_settings
from evaluation.registry import get_spec
from evaluation.report import row_averages, row_from_results, write_reports
from evaluation.scoring import score_benchmark
from infra.stage_kit import fingerprint, read_jsonl, write_manifest
from rewards.grader import GraderPool, default_grader_workers
from verl.utils.fs import atomic_write_json, atomic_write_jsonl
from verl.utils.stop_tokens import load_generation_config

logger = logging.getLogger(__name__)

STAGE = "evaluate"


@dataclass
class JudgeConfig:
    """LLM-judge settings (the judge is off unless a RunConfig carries one)."""

    base_url: str
    model: str
    api_key: str | None = None
    cache_path: str | None = None
    timeout_s: float = 60.0
    max_tokens: int = 16


@dataclass
class RunConfig:
    """Everything one evaluation run needs. `k` applies to the benchmarks the paper reports as mean@k
    (AMC, AIME); `k_for` overrides per benchmark ("all" = every benchmark)."""

    engine: EngineConfig
    out_dir: str
    benchmarks: list[str]
    data: dict[str, str] = field(default_factory=dict)
    data_dir: str | None = None
    fields: dict[str, dict[str, str]] = field(default_factory=dict)
    allow_hub: bool = True
    limit: int | None = -1  # -1: the registry default per benchmark; None: all items
    limit_for: dict[str, int | None] = field(default_factory=dict)
    seed: int = 0
    k: int = 1
    k_for: dict[str, int] = field(default_factory=dict)
    temperature: float = 0.0  # for benchmarks evaluated with one response per question
    top_p: float = 1.0
    sample_temperature: float = 0.6  # for mean@k (k > 1)
    sample_top_p: float = 0.95
    top_k: int = -1
    max_tokens: int | None = None  # None: the benchmark's own budget (math 4096, general 8192)
    label: str | None = None
    grader_workers: int | None = None  # None: rewards.grader.default_grader_workers() (cores - 2)
    grader_timeout_s: float = 5.0
    reuse: bool = True
    judge: JudgeConfig | None = None

    def sampling_for(self, name: str) -> SamplingConfig:
        """Sampling of one benchmark: mean@k sampled when its k > 1, else `temperature` (0 = greedy)."""
        spec = get_spec(name)
        k = self.k_for.get(spec.name, self.k_for.get("all", self.k if spec.mean_at_k else 1))
        max_tokens = self.max_tokens if self.max_tokens is not None else spec.max_new_tokens
        if k > 1:
            return SamplingConfig(
                k, self.sample_temperature, self.sample_top_p, self.top_k, max_tokens, self.seed
            )
        return SamplingConfig(1, self.temperature, self.top_p, self.top_k, max_tokens, self.seed)

    def source_for(self, name: str) -> str | None:
        """Local file of a benchmark (--data, then --data-dir), None for the hub copy."""
        if name in self.data:
            return self.data[name]
        if self.data_dir:
            found = find_local_file(name, self.data_dir)
            if found is not None:
                return str(found)
        if not self.allow_hub:
            raise FileNotFoundError(
                f"{name}: no local file (--data {name}=PATH or --data-dir) and hub loading is off"
            )
        return None


def model_fingerprint(model: str) -> dict:
    """Identity of the weights: for a local folder also the size and mtime of each weight file, so a
    checkpoint rewritten in place does not reuse stale responses."""
    path = Path(model)
    info: dict[str, Any] = {"model": model}
    if path.is_dir():
        files = sorted(
            p
            for p in path.iterdir()
            if p.suffix in (".safetensors", ".bin", ".pt") or p.name == "config.json"
        )
        info["files"] = [[p.name, p.stat().st_size, int(p.stat().st_mtime)] for p in files]
    return info


def generation_key(model_info: dict, sampling: SamplingConfig, prompts: list[list[int]], stops: dict) -> str:
    """Short hash of everything that determines the responses (reuse only when it matches)."""
    blob = json.dumps([model_info, asdict(sampling), prompts, stops], sort_keys=True)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]


class EvaluationRun:
    """Runs the benchmarks of a RunConfig one after another with one engine (started on first use)."""

    def __init__(self, config: RunConfig) -> None:
        self.config = config
        self.out = Path(config.out_dir)
        self._engine: Engine | None = None
        self._tokenizer: Any = None
        self._generation_config: Any = False  # not read yet
        self._pool: Any = None
        self._stack: ExitStack | None = None
        self._judge: Any = None
        self._model_info = model_fingerprint(config.engine.model)

    # -- lazily created resources ------------------------------------------------------------

    def tokenizer(self) -> Any:
        if self._tokenizer is None:
            from transformers import AutoTokenizer

            self._tokenizer = AutoTokenizer.from_pretrained(
                self.config.engine.tokenizer or self.config.engine.model
            )
        return self._tokenizer

    def generation_config(self) -> Any:
        """The model's generation_config.json (its EOS ids are stop ids), None when it has none."""
        if self._generation_config is False:
            self._generation_config = load_generation_config(self.config.engine.model)
        return self._generation_config

    def engine(self) -> Engine:
        if self._engine is None:
            self._engine = make_engine(self.config.engine)
        return self._engine

    def grader_pool(self) -> Any:
        """The math-verify worker pool, started on first use (a resumed run may not need it)."""
        if self._pool is None:
            assert self._stack is not None, "grader_pool() is only available inside run()"
            cfg = self.config
            self._pool = self._stack.enter_context(
                GraderPool(
                    num_workers=cfg.grader_workers or default_grader_workers(), timeout_s=cfg.grader_timeout_s
                )
            )
        return self._pool

    # -- one benchmark -----------------------------------------------------------------------

    def _prepare(self, loaded: LoadedBenchmark, sampling: SamplingConfig) -> tuple[list, list, list, str]:
        """Rendered prompts, stop ids and strings, and the generation key of a benchmark."""
        spec = loaded.spec
        rendered = [render_prompt(self.tokenizer(), build_messages(item, spec.name)) for item in loaded.items]
        stop_ids, stop_strings = stop_settings(self.tokenizer(), self.generation_config())
        key = generation_key(
            self._model_info,
            sampling,
            [ids for ids, _, _ in rendered],
            {"ids": stop_ids, "strings": stop_strings},
        )
        return rendered, stop_ids, stop_strings, key

    def resume_key(self, loaded: LoadedBenchmark, gen_key: str) -> str:
        """What a finished benchmark's scores depend on beyond its responses (must match to keep it)."""
        cfg = self.config
        judge = (
            None
            if cfg.judge is None
            else [redact_url(cfg.judge.base_url), cfg.judge.model, cfg.judge.max_tokens]
        )
        scoring = {
            "gen_key": gen_key,
            "metric": loaded.spec.metric,
            "seed": cfg.seed,
            "grader_timeout_s": cfg.grader_timeout_s,
            "judge": judge,
            "gold": [[item.id, item.gold, item.options] for item in loaded.items],
        }
        return fingerprint(scoring)

    def finished_entry(self, loaded: LoadedBenchmark, key: str) -> dict | None:
        """The results.json entry of a benchmark an earlier run finished with the same settings."""
        folder = self.out / loaded.spec.name
        metrics, items = folder / "metrics.json", folder / "items.jsonl"
        if not (self.config.reuse and metrics.is_file() and items.is_file()):
            return None
        try:
            entry = json.loads(metrics.read_text(encoding="utf-8"))
            num_items = sum(1 for line in items.read_text(encoding="utf-8").splitlines() if line.strip())
        except (OSError, ValueError):
            return None
        if entry.get("resume_key") != key or num_items != len(loaded.items):
            return None
        return entry

    def _generate(
        self, loaded: LoadedBenchmark, sampling: SamplingConfig, prepared: tuple[list, list, list, str]
    ) -> tuple[list[dict], bool]:
        """Response rows of a benchmark (reused from responses.jsonl when the key matches)."""
        spec = loaded.spec
        rendered, stop_ids, stop_strings, key = prepared
        path = self.out / spec.name / "responses.jsonl"
        if self.config.reuse and path.exists():
            rows = read_jsonl(path)
            if [r.get("id") for r in rows] == [i.id for i in loaded.items] and all(
                r.get("gen_key") == key for r in rows
            ):
                logger.info("%s: reusing %d responses from %s", spec.name, len(rows), path)
                return rows, True
        requests = [
            GenRequest(ids, sampling, sampling.request_seed(item.index), tuple(stop_ids), tuple(stop_strings))
            for item, (ids, _, _) in zip(loaded.items, rendered)
        ]
        completions = self.engine().generate(requests)
        rows = [
            {
                "id": item.id,
                "index": item.index,
                "gen_key": key,
                "chat_template": used_template,
                "prompt": text,
                "responses": [c.text for c in outs],
                "finish_reasons": [c.finish_reason for c in outs],
                "num_tokens": [c.num_tokens for c in outs],
            }
            for item, (_, text, used_template), outs in zip(loaded.items, rendered, completions)
        ]
        atomic_write_jsonl(path, rows)
        return rows, False

    def load(self, name: str) -> LoadedBenchmark:
        """Items of one benchmark from its local file or the hub, with this run's mapping and limit."""
        cfg = self.config
        spec = get_spec(name)
        limit = cfg.limit_for.get(spec.name, cfg.limit)
        return load_benchmark(
            spec.name, cfg.source_for(spec.name), cfg.fields.get(spec.name), limit, cfg.seed
        )

    def run_benchmark(self, loaded: LoadedBenchmark) -> dict:
        """Generate, score and save one loaded benchmark; returns its results.json entry."""
        started = time.time()
        spec = loaded.spec
        sampling = self.config.sampling_for(spec.name)
        prepared = self._prepare(loaded, sampling)
        key = self.resume_key(loaded, prepared[3])
        if (finished := self.finished_entry(loaded, key)) is not None:
            logger.info("%s: finished by an earlier run with these settings; kept (%s)", spec.name, self.out)
            return {**finished, "resumed": True}
        rows, reused = self._generate(loaded, sampling, prepared)
        responses = [r["responses"] for r in rows]
        pool = self.grader_pool() if spec.metric == "math" else None
        score = score_benchmark(spec.metric, loaded.items, responses, pool, seed=self.config.seed)
        judge_accuracy = None
        if self._judge is not None and spec.metric in ("math", "bbeh"):
            judge_accuracy = apply_judge(self._judge, loaded.items, score)
        items_out = []
        for item, s, r in zip(loaded.items, score.items, rows):
            record = {
                "id": item.id,
                "index": item.index,
                "question": item.question,
                "gold": item.gold,
                "preds": s.preds,
                "correct": s.correct,
                "score": s.score,
                "finish_reasons": r["finish_reasons"],
            }
            if item.options is not None:
                record["options"] = list(item.options)
            if item.category:
                record["category"] = item.category
            if s.judge:
                record["judge"] = s.judge
            if s.correct_random_letter is not None:
                record["correct_random_letter"] = s.correct_random_letter
            items_out.append(record)
        atomic_write_jsonl(self.out / spec.name / "items.jsonl", items_out)
        finish = [f for r in rows for f in r["finish_reasons"]]
        entry = {
            "accuracy": score.accuracy,
            # multiple choice: unparsed answers get a seeded random letter, as the authors' scripts do
            "accuracy_random_letter": score.accuracy_random_letter,
            "metric": spec.metric,
            "num_items": len(loaded.items),
            "num_responses": sum(len(r["responses"]) for r in rows),
            "k": sampling.k,
            "temperature": sampling.temperature,
            "top_p": sampling.top_p if not sampling.greedy else 1.0,
            "protocol": sampling.label,
            "max_tokens": sampling.max_tokens,
            "unparsed": score.unparsed,
            "grader_timeouts": score.grader_timeouts,
            "truncated": sum(f == "length" for f in finish),
            "prompt_too_long": sum(f == "prompt_too_long" for f in finish),
            "judge_accuracy": judge_accuracy,
            "source": loaded.source,
            "source_rows": loaded.num_rows,
            "skipped_empty": loaded.skipped_empty,
            "fields": {k: list(v) for k, v in loaded.fields.items()},
            "gold_rule": loaded.gold,
            "limit": loaded.limit,
            "seed": loaded.seed,
            "reused_responses": reused,
            "resumed": False,
            "resume_key": key,
            "seconds": round(time.time() - started, 2),
        }
        atomic_write_json(self.out / spec.name / "metrics.json", entry)
        logger.info(
            "%s: %.2f (%s, %d items, %d unparsed, %d grader timeouts)",
            spec.name, entry["accuracy"], sampling.label, len(loaded.items), score.unparsed, score.grader_timeouts,
        )  # fmt: skip
        return entry

    # -- whole run ---------------------------------------------------------------------------

    def run(self) -> dict:
        """Evaluate every benchmark, write the summary files, then results.json (the completion mark)."""
        cfg = self.config
        names = [get_spec(n).name for n in cfg.benchmarks]
        label = cfg.label or Path(cfg.engine.model.rstrip("/")).name
        results: dict[str, Any] = {
            "model": cfg.engine.model,
            "label": label,
            "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "engine": asdict(cfg.engine),
            "seed": cfg.seed,
            "benchmarks": {},
        }
        # Load every benchmark first: a missing file or a bad field mapping fails in seconds, not
        # after hours of generation for the benchmarks before it.
        loaded = [self.load(name) for name in names]
        # results.json marks a finished run: drop an old one first, so an interrupted re-run is
        # never mistaken for a finished one.
        (self.out / "manifest.json").unlink(missing_ok=True)
        (self.out / "results.json").unlink(missing_ok=True)
        with ExitStack() as stack:
            self._stack = stack
            if cfg.judge is not None:
                j = cfg.judge
                cache = j.cache_path or str(self.out / "judge_cache.json")
                self._judge = LLMJudge(
                    j.base_url, j.model, j.api_key, cache, timeout_s=j.timeout_s, max_tokens=j.max_tokens
                )
            try:
                for benchmark in loaded:
                    results["benchmarks"][benchmark.spec.name] = self.run_benchmark(benchmark)
            finally:
                if self._engine is not None:
                    self._engine.close()
                    self._engine = None
            if self._pool is not None:
                results["grader"] = self._pool.stats_snapshot()
            self._stack = None
        if self._judge is not None:
            results["judge"] = {
                "base_url": redact_url(cfg.judge.base_url),  # never a user:password or ?key=
                "model": cfg.judge.model,
                "requests_sent": self._judge.requests_sent,
                "failures": self._judge.failures,
            }
        row = row_from_results(results, label)
        averages = row_averages(row)
        results["math_avg"], results["math_avg_n"] = averages["math_avg"]
        results["overall_avg"], results["overall_avg_n"] = averages["overall_avg"]
        results["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S")
        write_reports([row], self.out, title=f"Evaluation of {label}")
        atomic_write_json(self.out / "results.json", results)
        self._write_manifest(results)
        return results

    def _write_manifest(self, results: dict) -> None:
        """The stage's completion mark, written last (the driver's skip check reads it)."""
        write_manifest(
            self.out,
            STAGE,
            outputs={
                "results": str((self.out / "results.json").resolve()),
                "summary": str(self.out / "summary.md"),
            },
            inputs={"model": self.config.engine.model},
            config={"benchmarks": list(results["benchmarks"]), "seed": self.config.seed},
            counts={name: entry["num_items"] for name, entry in results["benchmarks"].items()},
            timings_s={"total": sum(entry["seconds"] for entry in results["benchmarks"].values())},
        )
