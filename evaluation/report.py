"""The results table in the paper's layout, a CSV, and a plot across models / iterations.

Averages follow the paper: MATH AVG = mean of the 7 math benchmarks; Overall AVG =
mean(MATH AVG, SuperGPQA, MMLU-Pro, BBEH). They are computed from unrounded scores and printed
with 2 decimals. An average over fewer components than the paper's (a partial run) is printed
with a "*" and explained under the table; the CSV gives the number of components.

Multiple choice (SuperGPQA, MMLU-Pro, GPQA) is reported twice: the strict score (no letter found =
wrong) in the benchmark's column, and beside it the score with a seeded random letter for unparsed
answers ("rand. letter"), which is how the authors' scripts score and so what the paper's numbers
compare with; Overall AVG is given both ways. A benchmark scored on a seeded subset instead of its
full set says "subset of N (seed S)" in its column title (or cell), and a new-token budget other
than the paper's (4096 math, 8192 general) says "max T tokens".
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from evaluation.registry import EXTRA_BENCHMARKS, GENERAL_BENCHMARKS, MATH_BENCHMARKS, REGISTRY
from verl.utils.fs import atomic_write, atomic_write_text

MISSING = "—"


@dataclass
class ReportRow:
    """One model (or iteration) in the table; scores in percent keyed by canonical benchmark name."""

    label: str
    scores: dict[str, float] = field(default_factory=dict)
    protocols: dict[str, str] = field(default_factory=dict)
    judge_scores: dict[str, float] = field(default_factory=dict)
    math_avg_given: float | None = None  # published rows give MATH AVG but not its parts
    # Multiple choice: the score with a seeded random letter for unparsed answers (the authors' way).
    random_letter_scores: dict[str, float] = field(default_factory=dict)
    # Where a benchmark departs from the paper's protocol: "subset of N (seed S)", "max 4096 tokens".
    departures: dict[str, str] = field(default_factory=dict)


# Published numbers for Qwen3-4B-Base (RZERO_SPEC.md section 6 and the paper's math table);
# shown next to a run with `report --paper`.
PAPER_ROWS: list[ReportRow] = [
    ReportRow(
        "paper: Qwen3-4B-Base",
        {
            "amc23": 45.70,
            "minerva_math": 38.24,
            "math500": 68.20,
            "gsm8k": 87.79,
            "olympiadbench": 41.04,
            "aime2025": 10.30,
            "aime2024": 6.70,
            "supergpqa": 20.88,
            "mmlu_pro": 37.38,
            "bbeh": 7.57,
        },
        math_avg_given=42.58,
    ),
    ReportRow(
        "paper: R-Zero iter 1", {"supergpqa": 27.92, "mmlu_pro": 51.69, "bbeh": 9.42}, math_avg_given=48.06
    ),
    ReportRow(
        "paper: R-Zero iter 3", {"supergpqa": 27.55, "mmlu_pro": 51.53, "bbeh": 10.42}, math_avg_given=49.07
    ),
]


# ----------------------------------------------------------------------------- averages


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def math_avg(scores: dict[str, float]) -> tuple[float | None, int]:
    """(mean of the math benchmarks present, how many of the 7 were present)."""
    present = [scores[name] for name in MATH_BENCHMARKS if name in scores]
    return _mean(present), len(present)


def overall_avg(math_average: float | None, scores: dict[str, float]) -> tuple[float | None, int]:
    """(mean of MATH AVG, SuperGPQA, MMLU-Pro, BBEH over those present, how many of the 4)."""
    parts = [] if math_average is None else [math_average]
    parts += [scores[name] for name in GENERAL_BENCHMARKS if name in scores]
    return _mean(parts), len(parts)


def row_averages(
    row: ReportRow, judged: bool = False, random_letter: bool = False
) -> dict[str, tuple[float | None, int]]:
    """{"math_avg": (value, n of 7), "overall_avg": (value, n of 4)} for the rule (or judge) scores;
    `random_letter`: with the multiple-choice scores that draw a letter for unparsed answers."""
    scores = row.judge_scores if judged else row.scores
    if random_letter:
        scores = {**scores, **row.random_letter_scores}
    if row.math_avg_given is not None and not judged:
        m = (row.math_avg_given, len(MATH_BENCHMARKS))
    else:
        m = math_avg(scores)
    return {"math_avg": m, "overall_avg": overall_avg(m[0], scores)}


def fmt(value: float | None) -> str:
    """Two decimals, or a dash for a missing value."""
    return MISSING if value is None else f"{value:.2f}"


def _fmt_avg(value: float | None, n: int, full: int) -> str:
    return fmt(value) + ("*" if value is not None and n < full else "")


# ----------------------------------------------------------------------------- rows from results


def departure_label(name: str, entry: dict) -> str:
    """How a results.json benchmark entry departs from the paper's protocol ("" if it does not):
    "subset of N (seed S)" for a seeded subset, "max T tokens" for another new-token budget."""
    parts = []
    limit, rows, n = entry.get("limit"), entry.get("source_rows"), entry.get("num_items")
    if limit is not None and n is not None and (rows is None or n < rows - entry.get("skipped_empty", 0)):
        parts.append(f"subset of {n} (seed {entry.get('seed', 0)})")
    budget = entry.get("max_tokens")
    if budget is not None and name in REGISTRY and budget != REGISTRY[name].max_new_tokens:
        parts.append(f"max {budget} tokens")
    return ", ".join(parts)


def row_from_results(results: dict, label: str | None = None) -> ReportRow:
    """A table row from a results.json written by `evaluation.runner`."""
    row = ReportRow(label or results.get("label") or results.get("model", "?"))
    for name, entry in results.get("benchmarks", {}).items():
        row.scores[name] = float(entry["accuracy"])
        row.protocols[name] = entry.get("protocol", "")
        if entry.get("judge_accuracy") is not None:
            row.judge_scores[name] = float(entry["judge_accuracy"])
        if entry.get("accuracy_random_letter") is not None:
            row.random_letter_scores[name] = float(entry["accuracy_random_letter"])
        if departure := departure_label(name, entry):
            row.departures[name] = departure
    return row


def _natural_key(text: str) -> list:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


def find_results(paths: Iterable[str | Path]) -> list[Path]:
    """results.json files: given directly, or found under the given folders (natural order)."""
    found: list[Path] = []
    for path in map(Path, paths):
        if path.is_file():
            found.append(path)
        elif path.is_dir():
            found.extend(sorted(path.rglob("results.json"), key=lambda p: _natural_key(str(p))))
        else:
            raise FileNotFoundError(path)
    return found


def load_rows(paths: Iterable[str | Path]) -> list[ReportRow]:
    return [row_from_results(json.loads(p.read_text(encoding="utf-8"))) for p in find_results(paths)]


# ----------------------------------------------------------------------------- markdown / csv


def _table(header: list[str], body: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(["---"] * len(header)) + " |"]
    return lines + ["| " + " | ".join(cells) + " |" for cells in body]


def _annotation(row: ReportRow, name: str) -> str:
    """What sets a score apart: a non-greedy protocol, a subset, another token budget."""
    protocol = row.protocols.get(name)
    parts = [protocol] if protocol and protocol != "greedy" else []
    if row.departures.get(name):
        parts.append(row.departures[name])
    return ", ".join(parts)


def _column_title(name: str, rows: Sequence[ReportRow], suffix: str = "") -> str:
    """Benchmark title, with its annotation when it is the same non-empty one in every row."""
    title = REGISTRY[name].title + suffix
    annotations = {_annotation(r, name) for r in rows if name in r.scores}
    if len(annotations) == 1:
        (annotation,) = annotations
        if annotation:
            title += f" ({annotation})"
    return title


def _cell(
    row: ReportRow, name: str, rows: Sequence[ReportRow], judged: bool = False, random_letter: bool = False
) -> str:
    scores = row.judge_scores if judged else row.random_letter_scores if random_letter else row.scores
    if name not in scores:
        return MISSING
    text = fmt(scores[name])
    annotation = _annotation(row, name)
    if len({_annotation(r, name) for r in rows if name in r.scores}) > 1 and annotation:
        text += f" ({annotation})"  # mixed protocols in one column: label each cell
    return text


def render_markdown(rows: Sequence[ReportRow], title: str = "Evaluation results") -> str:
    """Two tables as in the paper (math; general), an LLM-judge table when there are judge scores."""
    extras = [n for n in EXTRA_BENCHMARKS if any(n in r.scores for r in rows)]
    lines = [f"# {title}", "", "## Mathematical reasoning", ""]
    header = ["Model", "AVG"] + [_column_title(n, rows) for n in MATH_BENCHMARKS]
    body = []
    partial = False
    for row in rows:
        avg, n = row_averages(row)["math_avg"]
        partial |= avg is not None and n < len(MATH_BENCHMARKS)
        body.append(
            [row.label, _fmt_avg(avg, n, len(MATH_BENCHMARKS))]
            + [_cell(row, b, rows) for b in MATH_BENCHMARKS]
        )
    lines += _table(header, body)

    lines += ["", "## General-domain reasoning", ""]
    general, body = _general_table(rows, extras)
    lines += general
    partial |= body

    if any(r.judge_scores for r in rows):
        judged = [
            n
            for n in (*MATH_BENCHMARKS, *GENERAL_BENCHMARKS, *extras)
            if any(n in r.judge_scores for r in rows)
        ]
        lines += [
            "",
            "## LLM-judge re-check (rule-based score above; these columns add judge-accepted answers)",
            "",
        ]
        header = ["Model", "MATH AVG (judge)"] + [f"{REGISTRY[n].title} (judge)" for n in judged]
        body = []
        for row in rows:
            m, mn = row_averages(row, judged=True)["math_avg"]
            body.append(
                [row.label, _fmt_avg(m, mn, len(MATH_BENCHMARKS))]
                + [_cell(row, b, rows, True) for b in judged]
            )
        lines += _table(header, body)

    notes = ["", "Scores are accuracy in percent; mean@k is the mean over k sampled responses per question."]
    if partial:
        notes.append("\\* average over the benchmarks present only (the paper's averages use all 7 / all 4).")
    if any(r.random_letter_scores for r in rows):
        notes.append(
            "Multiple choice: the benchmark's column is the strict score (no letter found = wrong); "
            '"rand. letter" columns give a seeded random letter to each unparsed answer, as the '
            "authors' scripts do (unseeded), so they compare with the paper's numbers."
        )
    if any("subset of" in d for r in rows for d in r.departures.values()):
        notes.append(
            '"subset of N (seed S)": scored on a seeded random subset, not on the full set as the paper.'
        )
    if any("tokens" in d for r in rows for d in r.departures.values()):
        notes.append('"max T tokens": a new-token budget other than the paper\'s (4096 math, 8192 general).')
    return "\n".join(lines + notes) + "\n"


def _general_table(rows: Sequence[ReportRow], extras: Sequence[str]) -> tuple[list[str], bool]:
    """The general-domain table (strict scores, then the random-letter columns when there are any)
    and whether an average in it is partial."""
    names = (*GENERAL_BENCHMARKS, *extras)
    lettered = [n for n in names if any(n in r.random_letter_scores for r in rows)]
    header = ["Model", "Overall AVG", "MATH AVG"] + [_column_title(n, rows) for n in names]
    if lettered:
        header += ["Overall AVG (rand. letter)"]
        header += [_column_title(n, rows, " (rand. letter)") for n in lettered]
    body = []
    partial = False
    full = 1 + len(GENERAL_BENCHMARKS)
    for row in rows:
        averages = row_averages(row)
        (m, mn), (o, on) = averages["math_avg"], averages["overall_avg"]
        partial |= o is not None and on < full
        cells = [row.label, _fmt_avg(o, on, full), _fmt_avg(m, mn, len(MATH_BENCHMARKS))]
        cells += [_cell(row, b, rows) for b in names]
        if lettered:
            o_letter, on_letter = row_averages(row, random_letter=True)["overall_avg"]
            cells.append(_fmt_avg(o_letter, on_letter, full))
            cells += [_cell(row, b, rows, random_letter=True) for b in lettered]
        body.append(cells)
    return _table(header, body), partial


def csv_columns(rows: Sequence[ReportRow]) -> list[str]:
    names = [
        n
        for n in (*MATH_BENCHMARKS, *GENERAL_BENCHMARKS, *EXTRA_BENCHMARKS)
        if any(n in r.scores for r in rows)
    ]
    judged = [n for n in names if any(n in r.judge_scores for r in rows)]
    lettered = [n for n in names if any(n in r.random_letter_scores for r in rows)]
    columns = ["model", "overall_avg", "overall_avg_n", "math_avg", "math_avg_n", *names]
    columns += [f"{n}_protocol" for n in names]
    if lettered:
        columns += ["overall_avg_random_letter", *[f"{n}_random_letter" for n in lettered]]
    if any(r.departures for r in rows):
        columns += [f"{n}_departure" for n in names]
    if judged:
        columns += ["math_avg_judge", *[f"{n}_judge" for n in judged]]
    return columns


def render_csv(rows: Sequence[ReportRow]) -> str:
    """One line per row; scores with 2 decimals, empty where missing; protocol and judge columns."""
    columns = csv_columns(rows)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        averages = row_averages(row)
        record: dict[str, str | int] = {"model": row.label}
        record["math_avg"], record["math_avg_n"] = fmt(averages["math_avg"][0]), averages["math_avg"][1]
        record["overall_avg"], record["overall_avg_n"] = (
            fmt(averages["overall_avg"][0]),
            averages["overall_avg"][1],
        )
        for column in columns:
            if column in row.scores:
                record[column] = fmt(row.scores[column])
            elif column.endswith("_protocol"):
                record[column] = row.protocols.get(column[: -len("_protocol")], "")
            elif column.endswith("_departure"):
                record[column] = row.departures.get(column[: -len("_departure")], "")
            elif column.endswith("_random_letter") and column != "overall_avg_random_letter":
                value = row.random_letter_scores.get(column[: -len("_random_letter")])
                record[column] = fmt(value) if value is not None else ""
            elif column.endswith("_judge") and column != "math_avg_judge":
                value = row.judge_scores.get(column[: -len("_judge")])
                record[column] = fmt(value) if value is not None else ""
        if "overall_avg_random_letter" in columns:
            record["overall_avg_random_letter"] = fmt(row_averages(row, random_letter=True)["overall_avg"][0])
        if "math_avg_judge" in columns:
            record["math_avg_judge"] = fmt(row_averages(row, judged=True)["math_avg"][0])
        writer.writerow({k: ("" if v == MISSING else v) for k, v in record.items()})
    return buffer.getvalue()


# ----------------------------------------------------------------------------- plot and files


def write_plot(rows: Sequence[ReportRow], path: str | Path) -> Path:
    """Line plot of MATH AVG, Overall AVG and each benchmark across the rows (models / iterations)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [r.label for r in rows]
    x = list(range(len(rows)))
    fig, ax = plt.subplots(figsize=(max(6.0, 1.2 * len(rows) + 3), 4.5))
    for key, name in (("math_avg", "MATH AVG"), ("overall_avg", "Overall AVG")):
        ys = [row_averages(r)[key][0] for r in rows]
        ax.plot(x, [float("nan") if y is None else y for y in ys], marker="o", linewidth=2.5, label=name)
    for bench in (*MATH_BENCHMARKS, *GENERAL_BENCHMARKS, *EXTRA_BENCHMARKS):
        ys = [r.scores.get(bench) for r in rows]
        if any(y is not None for y in ys):
            ys_plot = [float("nan") if y is None else y for y in ys]
            ax.plot(x, ys_plot, marker=".", linewidth=1, alpha=0.7, label=REGISTRY[bench].title)
    ax.set_xticks(x)
    ax.set_xticklabels(labels, rotation=20, ha="right")
    ax.set_ylabel("accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=120))
    plt.close(fig)
    return Path(path)


def write_reports(
    rows: Sequence[ReportRow], out_dir: str | Path, stem: str = "summary", title: str | None = None
) -> list[Path]:
    """<stem>.md and <stem>.csv in out_dir, and <stem>.png when there are several rows."""
    out = Path(out_dir)
    paths = [
        atomic_write_text(out / f"{stem}.md", render_markdown(rows, title or "Evaluation results")),
        atomic_write_text(out / f"{stem}.csv", render_csv(rows)),
    ]
    if len(rows) > 1:
        paths.append(write_plot(rows, out / f"{stem}.png"))
    return paths
