"""The ablation table of finished runs, in the paper's layout: one row per run and iteration.

    python -m pipeline.compare RUN_DIR [RUN_DIR ...] [--out DIR] [--name compare]
    bash scripts/compare_runs.sh RUN_DIR [RUN_DIR ...]

Each run folder is what `scripts/main.sh` leaves ($STORAGE_PATH/<TAG>): `run.json` names its
experiment and base model, `eval_base/results.json` and `iter_<i>/evaluate/results.json` hold the
scores. Rows: the base model once per distinct base model, then each run's iterations in numeric
order, named by experiment (and the paper's row where the experiment has one, e.g. "Base
Challenger"). Columns: the 7 math benchmarks, MATH AVG, SuperGPQA, MMLU-Pro, BBEH, General AVG,
Overall AVG; averages as the paper computes them (evaluation/report.py: MATH AVG = mean of the 7,
Overall AVG = mean(MATH AVG, SuperGPQA, MMLU-Pro, BBEH)); General AVG = mean of the 3 general ones.
A missing benchmark is shown as "—"; an average over fewer parts than the paper's is marked "*"
(with "n of N" in the CSV), never passed off as the full one. Two decimals, as the paper prints.

Writes <out>/<name>.md and <out>/<name>.csv (default: the runs' common parent folder) and prints both.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from evaluation.registry import EXTRA_BENCHMARKS, GENERAL_BENCHMARKS, MATH_BENCHMARKS, REGISTRY
from evaluation.report import MISSING, ReportRow, fmt, row_averages, row_from_results
from pipeline.experiments import DEFAULT_EXPERIMENT, EXPERIMENTS
from verl.utils.fs import atomic_write_text


@dataclass
class CompareRow:
    """One line of the table: which run and iteration (None: the base model), and its scores."""

    name: str
    run: str
    experiment: str
    iteration: int | None
    row: ReportRow


def general_avg(scores: dict[str, float]) -> tuple[float | None, int]:
    """(mean of SuperGPQA, MMLU-Pro, BBEH over those present, how many of the 3)."""
    present = [scores[n] for n in GENERAL_BENCHMARKS if n in scores]
    return (sum(present) / len(present) if present else None), len(present)


def averages(row: ReportRow) -> dict[str, tuple[float | None, int, int]]:
    """{"math_avg" | "general_avg" | "overall_avg": (value, parts present, parts in the paper's)}."""
    paper = row_averages(row)  # the paper's MATH AVG and Overall AVG, written once in evaluation/report.py
    return {
        "math_avg": (*paper["math_avg"], len(MATH_BENCHMARKS)),
        "general_avg": (*general_avg(row.scores), len(GENERAL_BENCHMARKS)),
        "overall_avg": (*paper["overall_avg"], 1 + len(GENERAL_BENCHMARKS)),
    }


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ValueError(f"{path} is unreadable ({e})") from None


def _iterations(run_dir: Path) -> list[int]:
    """Iteration numbers of the run in numeric order (iter_10 after iter_9)."""
    found = [int(p.name[5:]) for p in run_dir.iterdir() if p.is_dir() and re.fullmatch(r"iter_\d+", p.name)]
    return sorted(found)


def collect_rows(run_dirs: list[str | Path]) -> tuple[list[CompareRow], list[str]]:
    """The table's rows and notes (what is not there: an iteration not yet evaluated)."""
    rows: list[CompareRow] = []
    notes: list[str] = []
    bases_seen: set[str] = set()
    runs = [Path(r) for r in run_dirs]
    info = {}
    for run in runs:
        if not (run / "run.json").is_file():
            raise ValueError(
                f"{run} has no run.json: give run folders written by scripts/main.sh ($STORAGE_PATH/<TAG>)"
            )
        info[run] = _read_json(run / "run.json")
    experiments = [info[r].get("experiment", DEFAULT_EXPERIMENT) for r in runs]
    for run, experiment in zip(runs, experiments):
        record = info[run]
        tag = record.get("tag", run.name)
        # two runs of one experiment (e.g. two seeds) are told apart by their tag
        label = experiment if experiments.count(experiment) == 1 else f"{experiment} ({tag})"
        base = str(record.get("base_model", ""))
        if base not in bases_seen and (run / "eval_base" / "results.json").is_file():
            bases_seen.add(base)
            result = row_from_results(_read_json(run / "eval_base" / "results.json"))
            rows.append(CompareRow(f"Base Model ({Path(base).name or base})", tag, "base", None, result))
        paper_rows = EXPERIMENTS[experiment].rows if experiment in EXPERIMENTS else {}
        for i in _iterations(run):
            path = run / f"iter_{i}" / "evaluate" / "results.json"
            if not path.is_file():
                notes.append(f"{tag} iteration {i}: not evaluated (no {path.relative_to(run)})")
                continue
            name = f"{label} · iter {i}" + (f" ({paper_rows[i]})" if i in paper_rows else "")
            rows.append(CompareRow(name, tag, experiment, i, row_from_results(_read_json(path))))
    return rows, notes


def _columns(rows: list[CompareRow]) -> list[str]:
    extras = [n for n in EXTRA_BENCHMARKS if any(n in r.row.scores for r in rows)]
    return [*MATH_BENCHMARKS, "math_avg", *GENERAL_BENCHMARKS, "general_avg", "overall_avg", *extras]


def _title(column: str) -> str:
    names = {"math_avg": "MATH AVG", "general_avg": "General AVG", "overall_avg": "Overall AVG"}
    return names.get(column) or REGISTRY[column].title


def _avg_cell(value: float | None, n: int, full: int) -> str:
    return fmt(value) + ("*" if value is not None and n < full else "")


def render_markdown(rows: list[CompareRow], notes: list[str]) -> str:
    columns = _columns(rows)
    lines = [
        "# Ablation table",
        "",
        "| Model | " + " | ".join(_title(c) for c in columns) + " |",
        "| --- |" + " --- |" * len(columns),
    ]
    partial = missing = False
    for r in rows:
        avg = averages(r.row)
        cells = [r.name]
        for c in columns:
            if c in avg:
                value, n, full = avg[c]
                partial |= value is not None and n < full
                cells.append(_avg_cell(value, n, full))
            else:
                missing |= c not in r.row.scores
                cells.append(fmt(r.row.scores.get(c)))
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Accuracy in percent (strict scores; each run's summary.md has the protocol details)."]
    lines.append(
        "MATH AVG = mean of the 7 math benchmarks; General AVG = mean of SuperGPQA, MMLU-Pro, BBEH; "
        "Overall AVG = mean(MATH AVG, SuperGPQA, MMLU-Pro, BBEH), as in the paper."
    )
    if missing:
        lines.append(f"{MISSING}: benchmark not evaluated in that run.")
    if partial:
        lines.append("\\* average over the benchmarks present only, not the paper's full set.")
    lines += [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n"


def render_csv(rows: list[CompareRow]) -> str:
    columns = _columns(rows)
    header = ["model", "run", "experiment", "iteration"]
    for c in columns:
        header += [c, f"{c}_n"] if c.endswith("_avg") else [c]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    for r in rows:
        avg = averages(r.row)
        record = [r.name, r.run, r.experiment, "" if r.iteration is None else r.iteration]
        for c in columns:
            if c in avg:
                value, n, _ = avg[c]
                record += ["" if value is None else fmt(value), n]
            else:
                record.append("" if c not in r.row.scores else fmt(r.row.scores[c]))
        writer.writerow(record)
    return buffer.getvalue()


def compare(
    run_dirs: list[str | Path], out: str | Path | None = None, name: str = "compare"
) -> tuple[str, str, list[Path]]:
    """(markdown, csv, written paths) of the ablation table of `run_dirs`."""
    if not run_dirs:
        raise ValueError("give at least one run folder")
    rows, notes = collect_rows(run_dirs)
    if not rows:
        raise ValueError(
            f"no evaluation results in {', '.join(map(str, run_dirs))} (evaluate=false runs have none)"
        )
    markdown, table = render_markdown(rows, notes), render_csv(rows)
    folder = Path(out) if out else Path(os.path.commonpath([Path(r).resolve().parent for r in run_dirs]))
    paths = [
        atomic_write_text(folder / f"{name}.md", markdown),
        atomic_write_text(folder / f"{name}.csv", table),
    ]
    return markdown, table, paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.compare", description=__doc__.splitlines()[0])
    parser.add_argument("run_dirs", nargs="+", help="run folders ($STORAGE_PATH/<TAG>)")
    parser.add_argument(
        "--out", default=None, help="folder for <name>.md/.csv (default: the runs' common parent)"
    )
    parser.add_argument("--name", default="compare", help="file name stem (default compare)")
    args = parser.parse_args(argv)
    try:
        markdown, table, paths = compare(args.run_dirs, args.out, args.name)
    except (ValueError, FileNotFoundError) as e:
        print(f"compare: {e}", file=sys.stderr)
        return 2
    print(markdown)
    print(table)
    print("written: " + ", ".join(map(str, paths)), file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
