"""What an analysis reads of a finished run, found through its record and the stages' manifests.

`run.json` gives the base model and the profile; `iter_<i>/question_evaluate/manifest.json` the kept
questions (`outputs.dataset`, train.parquet) and the labelled ones (`outputs.labelled`);
`iter_<i>/solver/manifest.json` the Solver of iteration i (`outputs.model`). No step folder is
hard-coded: a run whose stages wrote elsewhere is read the same way.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from evaluation.loaders import subsample_indices
from infra.stage_kit import read_jsonl, read_manifest
from verl.utils.dataset import read_records

LABEL_STAGE = "question_evaluate"
SOLVER_STAGE = "solver"


@dataclass
class QuestionSet:
    """The K questions drawn from iteration i's kept questions, with their pseudo-labels and p̂."""

    name: str  # "iter_<i>"
    iteration: int
    dataset: str  # the train.parquet they were drawn from
    kept: int  # questions kept in that iteration
    indices: list[int]  # rows of the dataset drawn (sorted)
    questions: list[str]
    labels: list[str]
    p_hats: list[float]
    ids: list[str]
    kept_p_hats: list[float] = field(default_factory=list)  # every kept question's p̂
    labelled_p_hats: list[float] = field(default_factory=list)  # every valid (labelled) question's p̂
    votes: int | None = None  # m of the labelling stage


@dataclass
class ModelRow:
    """One answering model of the matrix: the base model or the Solver of an iteration."""

    name: str  # "base" or "solver_<i>"
    model: str


@dataclass
class RunFiles:
    run_dir: Path
    base_model: str
    profile: str
    iterations: list[int]
    sets: list[QuestionSet]
    rows: list[ModelRow]
    notes: list[str]


def _iterations(run_dir: Path) -> list[int]:
    found = (int(p.name[5:]) for p in run_dir.iterdir() if p.is_dir() and re.fullmatch(r"iter_\d+", p.name))
    return sorted(found)


def draw_set(dataset: str, iteration: int, k: int, seed: int) -> QuestionSet:
    """A seeded draw of `k` kept questions of one iteration (all of them when fewer are kept)."""
    records = read_records(dataset)
    name = f"iter_{iteration}"
    indices = subsample_indices(len(records), k, seed, name) if records else []
    rows = [records[i] for i in indices]
    return QuestionSet(
        name=name,
        iteration=iteration,
        dataset=dataset,
        kept=len(records),
        indices=indices,
        questions=[str(r["question"]) for r in rows],
        labels=[str(r["answer"]) for r in rows],
        p_hats=[float(r.get("p_hat", float("nan"))) for r in rows],
        ids=[str(r.get("id", i)) for r, i in zip(rows, indices)],
        kept_p_hats=[float(r.get("p_hat", float("nan"))) for r in records],
    )


def read_run(run_dir: str | Path, k: int, seed: int) -> RunFiles:
    """The question sets (K drawn per iteration) and the answering models of a finished run.

    An iteration whose labelling stage has not finished has no question set, one whose Solver stage
    has not finished has no Solver row; each is named in `notes`. Raises when nothing is left.
    """
    run_dir = Path(run_dir)
    record_path = run_dir / "run.json"
    if not record_path.is_file():
        raise FileNotFoundError(
            f"{record_path} not found: give the folder of a run made by scripts/main.sh ($STORAGE_PATH/<tag>)"
        )
    record = json.loads(record_path.read_text())
    notes: list[str] = []
    sets: list[QuestionSet] = []
    rows = [ModelRow("base", str(record["base_model"]))]
    iterations = _iterations(run_dir)
    for i in iterations:
        it = run_dir / f"iter_{i}"
        labelled = read_manifest(it / LABEL_STAGE)
        if labelled is None:
            notes.append(f"iter_{i}: the {LABEL_STAGE} stage has not finished; no question set")
        else:
            qs = draw_set(labelled["outputs"]["dataset"], i, k, seed)
            qs.votes = labelled.get("config", {}).get("votes")
            labelled_file = labelled["outputs"].get("labelled")
            if labelled_file and Path(labelled_file).is_file():
                qs.labelled_p_hats = [float(r["p_hat"]) for r in read_jsonl(labelled_file)]
            if not qs.questions:
                notes.append(f"iter_{i}: no question was kept; its set is empty")
            sets.append(qs)
        solver = read_manifest(it / SOLVER_STAGE)
        if solver is None:
            notes.append(f"iter_{i}: the {SOLVER_STAGE} stage has not finished; no Solver row")
        else:
            rows.append(ModelRow(f"solver_{i}", str(solver["outputs"]["model"])))
    if not any(s.questions for s in sets):
        raise RuntimeError(
            f"{run_dir} has no kept question in any iteration's {LABEL_STAGE} output: nothing to analyse "
            "(run or finish an iteration first)"
        )
    return RunFiles(
        run_dir, str(record["base_model"]), str(record.get("profile", "paper")), iterations, sets, rows, notes
    )
