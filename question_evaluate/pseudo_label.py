"""Pseudo-labels and the Solver's training set (RZERO_SPEC.md section 3, "Pseudo-labels" and "Filter").

The current Solver (before this iteration's Solver training) answers every *valid* generated
question m times (profile: `paper` 10, `rzero_code` 9; temperature 1.0, top_p 1.0, top_k 40, at most
4096 new tokens; prompt = `rzero.prompts.solver_messages`), see `question_evaluate.solver_answers`.
`rewards.voting.majority_vote_many` groups the answers by mathematical equivalence (in killable
grader worker processes) and gives the label (the largest group's answer) and p̂ (its share).
`question_evaluate.filtering` keeps the questions whose p̂ lies in the profile's band and drops the
rest with a reason.

Output folder:
    labelled.jsonl     every valid question: {"id", "question", "challenger_answer", "answers" (m),
                       "label", "p_hat", "group_sizes", "n_answers", "n_nonempty", "kept", "reason"}
    train.parquet      the kept questions: columns question, answer (= label), p_hat, id; read by
                       `datasets.load_dataset("parquet", ...)` and by the engine's loader with
                       data.prompt_key=question, data.answer_key=answer. When nothing is kept the
                       file still holds the typed columns
    p_hat_hist.png     histogram of p̂ over the valid questions, the kept band shaded
    filter_stats.json  kept / dropped by reason, grader timeouts, answer counts
    shards/<fingerprint>/  the Solver's answers per shard (reused by a re-run with the same inputs)
    manifest.json      written last (stage "question_evaluate")

The answering step is a parameter (`answer_fn`), so that voting and filtering can also run on
answers from elsewhere.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from infra.stage_kit import finished_stage, read_jsonl, read_manifest, write_manifest
from infra.vllm_engines import EngineOptions
from question_evaluate.filtering import count_reasons, filter_question
from question_evaluate.outputs import plot_p_hat_histogram, write_dataset
from question_evaluate.solver_answers import AnswerSampling, solver_answers
from rewards.grader import DEFAULT_TIMEOUT_S, default_grader_workers
from rewards.voting import LABEL, VoteResult, grader_backend, make_grader_pool, vote
from rzero.profiles import get_profile
from verl.utils.fs import atomic_write_json, atomic_write_jsonl

logger = logging.getLogger(__name__)

STAGE = "question_evaluate"
GENERATE_STAGE = "question_generate"
QUESTIONS_FILE = "questions.jsonl"
LABELLED_FILE = "labelled.jsonl"
DATASET_FILE = "train.parquet"
HISTOGRAM_FILE = "p_hat_hist.png"
STATS_FILE = "filter_stats.json"
SHARDS_DIR = "shards"

# answer_fn(questions, m) -> for each question, its m answers (None or "" where a response had none).
AnswerFn = Callable[[list[str], int], list[list[str | None]]]


@dataclass
class LabelConfig:
    """Everything the stage needs: the driver writes it as json (`python -m question_evaluate --config`).

    votes None: the profile's m. band None: the profile's band ((0, 1) is the no-filter ablation).
    grader_workers None: `default_grader_workers()`. push_to_hub: also push train.parquet to the
    Hugging Face Hub (checked before any work starts); hub_repo: its name (default from the folder).
    """

    solver: str
    questions: str  # questions.jsonl, or a finished question_generate folder
    out_dir: str
    profile: str = "paper"
    votes: int | None = None
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 40
    max_tokens: int = 4096
    seed: int = 0
    band: tuple[float, float] | None = None
    grader_workers: int | None = None
    grader_timeout_s: float | None = None  # None: the profile's grader's (math-verify 5 s, mathruler 10 s)
    push_to_hub: bool = False
    hub_repo: str | None = None
    engine: EngineOptions = field(default_factory=EngineOptions)

    @classmethod
    def from_dict(cls, data: dict) -> LabelConfig:
        band = data.get("band")
        return cls(
            **{
                **data,
                "band": tuple(band) if band else None,
                "engine": EngineOptions(**data.get("engine", {})),
            }
        )

    def resolved(self) -> tuple[int, tuple[float, float]]:
        """(m, band) after the profile's defaults."""
        profile = get_profile(self.profile)
        votes = int(self.votes if self.votes is not None else profile.votes)
        if votes < 1:
            raise ValueError(f"votes must be >= 1, got {votes}")
        return votes, tuple(self.band) if self.band is not None else profile.band

    def grader_timeout(self) -> float:
        """Seconds per grader call: `grader_timeout_s`, or the profile's grader's (math-verify 5 s,
        mathruler 10 s: the authors' limit per grade_answer call), whoever launches the stage."""
        if self.grader_timeout_s is not None:
            return float(self.grader_timeout_s)
        return DEFAULT_TIMEOUT_S[grader_backend(self.profile)]


def resolve_questions_path(path: str | os.PathLike) -> Path:
    """The questions file: `path` itself, or for a folder the generation manifest's output, else
    `<folder>/questions.jsonl`."""
    p = Path(path)
    if not p.is_dir():
        if not p.is_file():
            raise FileNotFoundError(f"questions file {p} does not exist")
        return p
    manifest = read_manifest(p)
    if manifest is not None:
        if manifest.get("stage") != GENERATE_STAGE:
            raise ValueError(f"{p} holds a finished '{manifest.get('stage')}' stage, not {GENERATE_STAGE}")
        return Path(manifest["outputs"]["questions"])
    if (p / QUESTIONS_FILE).is_file():
        return p / QUESTIONS_FILE
    raise FileNotFoundError(f"{p} holds neither a finished question_generate manifest nor {QUESTIONS_FILE}")


def _default_hub_repo(out_dir: Path) -> str:
    """A hub dataset name from the stage folder, e.g. storage/qwen3-4b/iter_1/question_evaluate ->
    rzero-qwen3-4b-iter_1."""
    parts = [p for p in out_dir.resolve().parts[-3:-1] if p not in ("/", "")]
    return re.sub(r"[^A-Za-z0-9._-]+", "-", "rzero-" + "-".join(parts)).strip("-")


def vote_all(
    answers: list[list[str | None]], profile: str, grader_workers: int | None, timeout_s: float
) -> tuple[list[VoteResult], dict[str, int]]:
    """Majority votes of every question, and the grader's counters.

    The grader pool (worker processes with the profile's grader) starts only when some question has
    two different answers to compare; voting never touches the pool otherwise. In ``rzero_code`` a
    missing answer is the vote "None" (mathruler), so it counts as an answer here too.
    """
    missing = "None" if profile == "rzero_code" else ""
    needs_grader = any(
        len({(missing if a is None else a).strip() for a in answer_list} - {""}) > 1
        for answer_list in answers
    )
    if not needs_grader:
        # pool None: the process-wide pool, started only if asked (it is not)
        return vote(answers, profile, pool=None, stage=LABEL), {}
    with make_grader_pool(profile, grader_workers or default_grader_workers(), timeout_s) as pool:
        return vote(answers, profile, pool=pool, stage=LABEL), pool.stats_snapshot()


def labelled_rows(
    valid_rows: list[dict], answers: list[list[str | None]], votes: list[VoteResult], profile: str, band
) -> list[dict]:
    rows = []
    for row, answer_list, result in zip(valid_rows, answers, votes):
        keep, reason = filter_question(result.label, result.p_hat, row["question"], profile, band=band)
        rows.append(
            {
                "id": row.get("id"),
                "question": row["question"],
                "challenger_answer": row.get("answer"),
                "answers": answer_list,
                "label": result.label,
                "p_hat": result.p_hat,
                "group_sizes": result.group_sizes,
                "n_answers": result.n_answers,
                "n_nonempty": result.n_nonempty,
                "n_counted": result.n_counted,
                "kept": keep,
                "reason": reason,
            }
        )
    return rows


def pseudo_label(config: LabelConfig, answer_fn: AnswerFn | None = None) -> dict:
    """Label, filter and write the Solver's training set into `config.out_dir`; return the manifest.

    A finished manifest there means "skip" (it is returned). `answer_fn(questions, m)` replaces the
    Solver sampling (tests, answers from elsewhere).
    """
    out = Path(config.out_dir)
    votes, band = config.resolved()
    recorded = dict(
        solver=str(config.solver),
        profile=config.profile,
        votes=votes,
        band=list(band),
        temperature=config.temperature,
        top_p=config.top_p,
        top_k=config.top_k,
        max_tokens=config.max_tokens,
        seed=config.seed,
        grader_timeout_s=config.grader_timeout(),
    )
    if (done := finished_stage(out, STAGE, recorded)) is not None:
        return done
    hub_target = None
    if config.push_to_hub:
        from question_evaluate.hub import resolve_hub_credentials  # huggingface_hub: only when pushing

        namespace, token = resolve_hub_credentials()  # fail now, not after an hour of sampling
        hub_target = (f"{namespace}/{config.hub_repo or _default_hub_repo(out)}", token)

    t0 = time.perf_counter()
    questions_file = resolve_questions_path(config.questions)
    all_rows = read_jsonl(questions_file)
    valid_rows = [r for r in all_rows if r.get("valid")]
    questions = [str(r["question"]) for r in valid_rows]
    out.mkdir(parents=True, exist_ok=True)

    sampling_stats: dict[str, Any] = {}
    if not questions:
        answers: list[list[str | None]] = []
    elif answer_fn is not None:
        answers = [list(a) for a in answer_fn(questions, votes)]
    else:
        sampling = AnswerSampling(
            votes,
            config.temperature,
            config.top_p,
            config.top_k,
            config.max_tokens,
            config.seed,
            config.profile,
        )
        answers, sampling_stats = solver_answers(
            config.solver, questions, sampling, config.engine, out / SHARDS_DIR
        )
    if len(answers) != len(questions):
        raise ValueError(f"{len(answers)} answer lists for {len(questions)} questions")
    t_answered = time.perf_counter()
    results, grader_stats = vote_all(answers, config.profile, config.grader_workers, config.grader_timeout())
    t_voted = time.perf_counter()

    labelled = labelled_rows(valid_rows, answers, results, config.profile, band)
    context = {
        "recorded": {**recorded, "answer_source": "vllm" if answer_fn is None else "answer_fn"},
        "questions_file": questions_file,
        "all_rows": all_rows,
        "answers": answers,
        "sampling_stats": sampling_stats,
        "grader_stats": grader_stats,
        "timings": {"start": t0, "answered": t_answered, "voted": t_voted},
        "hub_target": hub_target,
    }
    return _write_outputs(config, votes, band, labelled, context)


def _write_outputs(config: LabelConfig, votes: int, band, labelled: list[dict], ctx: dict) -> dict:
    """labelled.jsonl, train.parquet, the histogram, filter_stats.json, then the manifest (last)."""
    out = Path(config.out_dir)
    kept_rows = [r for r in labelled if r["kept"]]
    reason_counts = count_reasons(r["reason"] for r in labelled)
    dropped = {k: v for k, v in reason_counts.items() if k != "kept"}
    labelled_path = atomic_write_jsonl(out / LABELLED_FILE, labelled)
    dataset_path = write_dataset(out / DATASET_FILE, kept_rows)
    histogram_path = plot_p_hat_histogram(
        out / HISTOGRAM_FILE,
        [r["p_hat"] for r in labelled],
        band,
        votes,
        f"{len(labelled)} valid questions, {len(kept_rows)} kept ({config.profile}, m={votes})",
    )
    answers, sampling_stats, grader_stats = ctx["answers"], ctx["sampling_stats"], ctx["grader_stats"]
    n_empty = sum(1 for a_list in answers for a in a_list if not (a or "").strip())
    stats = {
        "profile": config.profile,
        "votes": votes,
        "band": list(band),
        "questions": len(ctx["all_rows"]),
        "valid": len(labelled),
        "kept": len(kept_rows),
        "dropped": sum(dropped.values()),
        "dropped_by_reason": dropped,
        "grader_timeouts": grader_stats.get("timeouts", 0),
        "grader": grader_stats,
        "answers": {"total": sum(len(a) for a in answers), "empty": n_empty},
        "solver_sampling": sampling_stats,
    }
    stats_path = atomic_write_json(out / STATS_FILE, stats)
    outputs = {
        "dataset": str(dataset_path.resolve()),
        "labelled": str(labelled_path.resolve()),
        "histogram": str(histogram_path.resolve()),
        "filter_stats": str(stats_path.resolve()),
    }
    notes = _notes(labelled, kept_rows, sampling_stats)
    if ctx["hub_target"] is not None:
        from question_evaluate.hub import push_dataset  # huggingface_hub: only when pushing

        outputs["hub_dataset"] = push_dataset(dataset_path, *ctx["hub_target"])
        notes.append(f"pushed to the Hugging Face Hub as {outputs['hub_dataset']}")
    t = ctx["timings"]
    write_manifest(
        out,
        STAGE,
        outputs=outputs,
        inputs={"solver": str(config.solver), "questions": str(ctx["questions_file"].resolve())},
        config=ctx["recorded"],
        counts={
            "questions": stats["questions"],
            "valid": stats["valid"],
            "kept": stats["kept"],
            "dropped": stats["dropped"],
            **{f"dropped_{k}": v for k, v in dropped.items()},
            "grader_timeouts": stats["grader_timeouts"],
            "answers_empty": n_empty,
            # questions the Solver could not read (prompt longer than the engine's context; all m
            # answers empty, dropped as no_answer) and answers cut at max_tokens
            "questions_too_long": sampling_stats.get("prompt_too_long", 0) // max(1, votes),
            "answers_truncated": sampling_stats.get("truncated", 0),
        },
        timings_s={
            "answers": t["answered"] - t["start"],
            "voting": t["voted"] - t["answered"],
            # labelled.jsonl, train.parquet, the histogram, filter_stats.json
            "outputs": time.perf_counter() - t["voted"],
            "total": time.perf_counter() - t["start"],
        },
        notes=notes,
        memory_mib={"shards": sampling_stats.get("shard_peak_rss_mib", [])},
    )
    logger.info(
        "%s: %d valid questions, %d kept, dropped %s -> %s",
        STAGE,
        len(labelled),
        len(kept_rows),
        dropped,
        dataset_path,
    )
    return read_manifest(out) or {}


def _notes(labelled: list[dict], kept_rows: list[dict], sampling_stats: dict) -> list[str]:
    notes = []
    if not labelled:
        notes.append("no valid question to label: the dataset is empty")
    elif not kept_rows:
        notes.append("no question survived the filter: the dataset is empty")
    if sampling_stats.get("shards_reused"):
        notes.append(f"resumed: {sampling_stats['shards_reused']} answer shards were reused")
    if sampling_stats.get("sampling_max_s"):
        rate = sampling_stats["responses"] / sampling_stats["sampling_max_s"]
        notes.append(f"throughput: {rate:.1f} Solver responses/s (slowest shard's sampling time)")
    return notes


__all__ = ["LabelConfig", "pseudo_label", "resolve_questions_path"]
