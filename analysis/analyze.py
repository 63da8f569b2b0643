"""The difficulty and label-accuracy analysis of a finished run (the paper's analysis table).

    python -m analysis RUN_DIR [--per-iteration K] [--seed S] [--oracle URL_OR_FOLDER --oracle-model NAME]

For every iteration i whose labelling stage finished, K kept questions are drawn (seeded) from its
train.parquet. The base model and every iteration's Solver answer every set greedily (Solver prompt,
the project's engines and stop rule): the matrix model x question set of accuracy against the
pseudo-labels, graded with the profile's equivalence as the Solver reward grades. With an oracle:
its answer to every question, the pseudo-label accuracy per iteration (label graded against the
oracle's answer), and the same matrix against the oracle's answers. Per iteration also: diversity
(mean pairwise BLEU as the repetition penalty computes it, distinct 2/3-grams), mean question
length and the p̂ histogram (drawn set, kept questions, every labelled question).

Writes `RUN_DIR/analysis/`: cells/ (one answer file per model x set; a rerun answers only missing
cells), analysis.json, analysis.md, accuracy.png; and puts analysis.md into RUN_DIR/summary.md. It
reads the run's files and changes none of them (summary.md aside, which is a report).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from analysis.answers import ORACLE_ROW, AnswerSettings, fill_cells
from analysis.metrics import accuracy, grade, p_hat_histogram, question_stats
from analysis.oracle import OracleSpec
from analysis.report import render_markdown, update_run_summary, write_plot
from analysis.run_files import RunFiles, read_run
from infra.vllm_engines import EngineOptions
from verl.utils.fs import atomic_write_json, atomic_write_text

logger = logging.getLogger(__name__)

ANALYSIS_DIR = "analysis"
RESULT_FILE = "analysis.json"
MARKDOWN_FILE = "analysis.md"
PLOT_FILE = "accuracy.png"


def _check_models(run: RunFiles) -> None:
    """A Solver folder named by a manifest must still be there (before any engine starts)."""
    for row in run.rows[1:]:
        if not (Path(row.model) / "config.json").is_file():
            raise FileNotFoundError(
                f"{row.name}: the model folder {row.model} named by its solver manifest has no config.json "
                "(moved or deleted?); restore it or rerun that stage"
            )


def _matrix_rows(run: RunFiles, oracle: bool) -> list[str]:
    """The matrix rows: the base model, each Solver, and the oracle (its row against the pseudo-labels
    is how a stronger model fares on them; against its own answers it is the share it answered at all)."""
    return [r.name for r in run.rows] + ([ORACLE_ROW] if oracle else [])


def _grade_all(run: RunFiles, cells: dict, oracle: bool, grader_workers: int) -> dict:
    """Correctness of every answer against the label (and the oracle), and of every label."""
    pairs: list[tuple[str | None, str | None]] = []
    where: list[tuple[str, str, str]] = []  # (kind, row, set)
    for qs in run.sets:
        refs = {"label": qs.labels}
        if oracle:
            refs["oracle"] = cells[(ORACLE_ROW, qs.name)]
            pairs += list(zip(refs["oracle"], qs.labels))  # the label, graded against the oracle
            where.append(("label_accuracy", "", qs.name))
        for name in _matrix_rows(run, oracle):
            for kind, ref in refs.items():
                pairs += list(zip(ref, cells[(name, qs.name)]))
                where.append((kind, name, qs.name))
    verdicts = grade(pairs, run.profile, grader_workers)
    graded: dict[tuple[str, str, str], list[bool]] = {}
    offset = 0
    for kind, row, set_name in where:
        n = len(next(qs for qs in run.sets if qs.name == set_name).questions)
        graded[(kind, row, set_name)] = verdicts[offset : offset + n]
        offset += n
    return graded


def _items(run: RunFiles, cells: dict, graded: dict, oracle: bool) -> dict[str, list[dict]]:
    items: dict[str, list[dict]] = {}
    names = _matrix_rows(run, oracle)
    for qs in run.sets:
        rows = []
        for j, (qid, question, label, p_hat) in enumerate(zip(qs.ids, qs.questions, qs.labels, qs.p_hats)):
            item = {
                "id": qid,
                "question": question,
                "label": label,
                "p_hat": p_hat,
                "answers": {name: cells[(name, qs.name)][j] for name in names},
                "correct_vs_label": {name: graded[("label", name, qs.name)][j] for name in names},
            }
            if oracle:
                item["oracle"] = cells[(ORACLE_ROW, qs.name)][j]
                item["label_correct"] = graded[("label_accuracy", "", qs.name)][j]
                item["correct_vs_oracle"] = {name: graded[("oracle", name, qs.name)][j] for name in names}
            rows.append(item)
        items[qs.name] = rows
    return items


def _record(run: RunFiles, graded: dict, oracle: bool) -> dict:
    """The analysis record: models, sets, matrices, label accuracy and per-set question statistics."""
    names = _matrix_rows(run, oracle)

    def matrix(kind: str) -> dict[str, dict[str, float | None]]:
        return {n: {qs.name: accuracy(graded[(kind, n, qs.name)]) for qs in run.sets} for n in names}

    record = {
        "run_dir": str(run.run_dir),
        "base_model": run.base_model,
        "profile": run.profile,
        "rows": [{"name": r.name, "model": r.model} for r in run.rows],
        "sets": [
            {
                "name": qs.name,
                "iteration": qs.iteration,
                "dataset": qs.dataset,
                "kept": qs.kept,
                "drawn": len(qs.questions),
                "indices": qs.indices,
                "votes": qs.votes,
            }
            for qs in run.sets
        ],
        "matrix_vs_label": matrix("label"),
        "questions": {
            qs.name: {
                "drawn": question_stats(qs.questions, qs.p_hats, qs.votes),
                "kept_p_hat_hist": p_hat_histogram(qs.kept_p_hats, qs.votes),
                "labelled_p_hat_hist": p_hat_histogram(qs.labelled_p_hats, qs.votes),
            }
            for qs in run.sets
        },
        "notes": run.notes,
    }
    if oracle:
        record["label_accuracy"] = {
            qs.name: accuracy(graded[("label_accuracy", "", qs.name)]) for qs in run.sets
        }
        record["matrix_vs_oracle"] = matrix("oracle")
    return record


def analyze_run(
    run_dir: str | Path,
    per_iteration: int = 200,
    seed: int = 0,
    oracle: OracleSpec | None = None,
    max_tokens: int = 4096,
    engine: EngineOptions | None = None,
    grader_workers: int = 2,
) -> dict:
    """Analyse a finished run; returns the analysis record (also written to analysis/analysis.json)."""
    if per_iteration < 1:
        raise ValueError(f"--per-iteration must be >= 1, got {per_iteration}")
    if oracle is not None:
        oracle.check()
    started = time.time()
    run = read_run(run_dir, per_iteration, seed)
    _check_models(run)
    out = run.run_dir / ANALYSIS_DIR
    settings = AnswerSettings(max_tokens=max_tokens, profile=run.profile, engine=engine or EngineOptions())
    cells, computed = fill_cells(out, run.rows, run.sets, settings, oracle)
    with_oracle = oracle is not None
    graded = _grade_all(run, cells, with_oracle, grader_workers)
    record = _record(run, graded, with_oracle)
    record.update(
        per_iteration=per_iteration,
        seed=seed,
        max_tokens=max_tokens,
        oracle=oracle.identity() if oracle is not None else None,
        cells_computed=computed,
    )
    record["items"] = _items(run, cells, graded, with_oracle)
    record["seconds"] = time.time() - started
    atomic_write_json(out / RESULT_FILE, record)
    plot = write_plot(out / PLOT_FILE, record)
    markdown = render_markdown(record, plot.name if plot else None)
    atomic_write_text(out / MARKDOWN_FILE, markdown)
    update_run_summary(run.run_dir, out / MARKDOWN_FILE)
    logger.info("analysis of %s: %d cells answered now -> %s", run.run_dir, len(computed), out / RESULT_FILE)
    return record
