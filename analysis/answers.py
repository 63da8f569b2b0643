"""Answer cells of the run analysis: one model's greedy answers to one question set, one file each.

`<run>/analysis/cells/<row>__<set>.json` = {"row", "set", "model", "fingerprint", "answers"}: written
atomically once the answers exist, and never recomputed while its fingerprint (model, questions,
token budget, profile) matches, like evaluation's per-benchmark resume. Models are answered with
the pseudo-labelling stage's sampler (`question_evaluate.solver_answers`: the Solver prompt, the
project's offline engines, the one stop rule, data-parallel shards), greedy, one answer each; the
cells of all sets a model still owes are answered with one engine start.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from analysis.oracle import OracleSpec, endpoint_answers
from analysis.run_files import ModelRow, QuestionSet
from infra.stage_kit import fingerprint
from infra.vllm_engines import EngineOptions
from question_evaluate.solver_answers import AnswerSampling, solver_answers
from verl.utils.fs import atomic_write_json

logger = logging.getLogger(__name__)

CELLS_DIR = "cells"
WORK_DIR = "work"
ORACLE_ROW = "oracle"


@dataclass(frozen=True)
class AnswerSettings:
    """How every analysed model answers: greedy, at most `max_tokens` new tokens, on `engine`."""

    max_tokens: int = 4096
    profile: str = "paper"
    engine: EngineOptions = field(default_factory=EngineOptions)


def cell_path(out_dir: Path, row: str, set_name: str) -> Path:
    return out_dir / CELLS_DIR / f"{row}__{set_name}.json"


def _questions_hash(questions: Sequence[str]) -> str:
    return hashlib.sha256("\x00".join(questions).encode()).hexdigest()


def cell_fingerprint(identity: dict, qs: QuestionSet, settings: AnswerSettings) -> str:
    return fingerprint(
        {
            **identity,
            "questions": _questions_hash(qs.questions),
            "max_tokens": settings.max_tokens,
            "profile": settings.profile,
        }
    )


def read_cell(path: Path, expected: str) -> dict | None:
    """The cell's record when it exists and was made by the same model on the same questions."""
    if not path.is_file():
        return None
    record = json.loads(path.read_text())
    if record.get("fingerprint") != expected:
        logger.info("%s was made with other settings or questions; answering again", path.name)
        return None
    return record


def _write_cell(path: Path, row: str, qs: QuestionSet, model: str, fp: str, answers: list) -> None:
    if len(answers) != len(qs.questions):
        raise RuntimeError(f"{len(answers)} answers for the {len(qs.questions)} questions of {qs.name}")
    record = {"row": row, "set": qs.name, "model": model, "fingerprint": fp, "answers": answers}
    atomic_write_json(path, record)


def fill_cells(
    out_dir: Path,
    rows: Sequence[ModelRow],
    sets: Sequence[QuestionSet],
    settings: AnswerSettings,
    oracle: OracleSpec | None = None,
) -> tuple[dict[tuple[str, str], list], list[str]]:
    """Every (row, set) cell's answers, answering only the cells not on disk yet.

    Rows are the models (a local oracle folder joins them as row "oracle"); an endpoint oracle
    answers its cells over HTTP. Returns ({(row, set name): answers}, names of the cells computed
    by this call).
    """
    answering = list(rows)
    if oracle is not None and not oracle.is_endpoint:
        answering.append(ModelRow(ORACLE_ROW, oracle.source))
    cells: dict[tuple[str, str], list] = {}
    pending: dict[str, list[tuple[str, QuestionSet, str]]] = {}  # model -> [(row, set, fingerprint)]
    for row in answering:
        for qs in sets:
            fp = cell_fingerprint({"model": row.model}, qs, settings)
            record = read_cell(cell_path(out_dir, row.name, qs.name), fp)
            if record is not None:
                cells[(row.name, qs.name)] = record["answers"]
            else:
                pending.setdefault(row.model, []).append((row.name, qs, fp))
    computed: list[str] = []
    # One engine start per distinct model folder, for every set it still owes (a folder named by two
    # rows holds the same weights, so greedy answers it once).
    for model, todo in pending.items():
        questions = [q for _, qs, _ in todo for q in qs.questions]
        answers: list = []
        if questions:
            sampling = AnswerSampling(
                votes=1, temperature=0.0, max_tokens=settings.max_tokens, profile=settings.profile
            )
            work = out_dir / WORK_DIR / hashlib.sha256(model.encode()).hexdigest()[:12]
            lists, _ = solver_answers(model, questions, sampling, settings.engine, work)
            answers = [a[0] for a in lists]
        offset = 0
        for row_name, qs, fp in todo:
            part = answers[offset : offset + len(qs.questions)]
            offset += len(qs.questions)
            _write_cell(cell_path(out_dir, row_name, qs.name), row_name, qs, model, fp, part)
            cells[(row_name, qs.name)] = part
            computed.append(f"{row_name}__{qs.name}")
    if oracle is not None and oracle.is_endpoint:
        for qs in sets:
            fp = cell_fingerprint(oracle.identity(), qs, settings)
            path = cell_path(out_dir, ORACLE_ROW, qs.name)
            record = read_cell(path, fp)
            if record is None:
                answers = endpoint_answers(oracle, qs.questions, settings.profile)
                _write_cell(path, ORACLE_ROW, qs, oracle.source, fp, answers)
                record = {"answers": answers}
                computed.append(f"{ORACLE_ROW}__{qs.name}")
            cells[(ORACLE_ROW, qs.name)] = record["answers"]
    return cells, computed
