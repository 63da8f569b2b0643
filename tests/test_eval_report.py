"""Report: the paper's arithmetic, the markdown layout, CSV, plot, and the `report` sub-command."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

from evaluation.cli import main as cli_main
from evaluation.report import (
    PAPER_ROWS,
    ReportRow,
    load_rows,
    math_avg,
    overall_avg,
    render_csv,
    render_markdown,
    row_from_results,
    write_reports,
)

# Per-benchmark numbers published for Qwen3-4B-Base.
QWEN3_4B_BASE_MATH = {
    "amc23": 45.70,
    "minerva_math": 38.24,
    "math500": 68.20,
    "gsm8k": 87.79,
    "olympiadbench": 41.04,
    "aime2025": 10.30,
    "aime2024": 6.70,
}


def _table_rows(markdown: str, section: str) -> list[list[str]]:
    """Cells of the table under the '## <section>' heading (header first)."""
    lines = markdown.split(f"## {section}", 1)[1].splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    table = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        table.append([c.strip() for c in line.strip("|").split("|")])
    return [table[0], *table[2:]]


def test_math_avg_reproduces_the_paper() -> None:
    value, n = math_avg(QWEN3_4B_BASE_MATH)
    assert n == 7
    assert value == pytest.approx(297.97 / 7)  # 42.567...
    header, row = _table_rows(
        render_markdown([ReportRow("base", dict(QWEN3_4B_BASE_MATH))]), "Mathematical reasoning"
    )
    assert header == ["Model", "AVG", "AMC", "Minerva", "MATH", "GSM8K", "Olympiad", "AIME25", "AIME24"]
    assert row == ["base", "42.57", "45.70", "38.24", "68.20", "87.79", "41.04", "10.30", "6.70"]


def test_overall_avg_reproduces_the_paper() -> None:
    scores = {"supergpqa": 20.88, "mmlu_pro": 37.38, "bbeh": 7.57}
    value, n = overall_avg(42.58, scores)
    assert n == 4 and value == pytest.approx(108.41 / 4)  # 27.1025
    markdown = render_markdown([ReportRow("base", scores, math_avg_given=42.58)])
    header, row = _table_rows(markdown, "General-domain reasoning")
    assert header == ["Model", "Overall AVG", "MATH AVG", "SuperGPQA", "MMLU-Pro", "BBEH"]
    assert row == ["base", "27.10", "42.58", "20.88", "37.38", "7.57"]
    # The published iteration rows give the published Overall AVG as well.
    rows = {r.label: r for r in PAPER_ROWS}
    md = render_markdown(list(rows.values()))
    body = {cells[0]: cells[1] for cells in _table_rows(md, "General-domain reasoning")[1:]}
    assert body == {
        "paper: Qwen3-4B-Base": "27.10",
        "paper: R-Zero iter 1": "34.27",
        "paper: R-Zero iter 3": "34.64",
    }


def test_partial_runs_are_marked_and_protocols_labelled() -> None:
    row = ReportRow("tiny", {"amc23": 12.5, "gsm8k": 50.0}, {"amc23": "mean@4 T=1", "gsm8k": "greedy"})
    markdown = render_markdown([row])
    header, cells = _table_rows(markdown, "Mathematical reasoning")
    assert "AMC (mean@4 T=1)" in header and "GSM8K" in header
    assert cells[1] == "31.25*" and cells[header.index("Minerva")] == "—"
    assert "average over the benchmarks present only" in markdown
    # Different protocols for one benchmark across rows: each cell carries its own label.
    other = ReportRow("other", {"amc23": 10.0}, {"amc23": "greedy"})
    header, *body = _table_rows(render_markdown([row, other]), "Mathematical reasoning")
    assert "AMC" in header and body[0][header.index("AMC")] == "12.50 (mean@4 T=1)"
    assert body[1][header.index("AMC")] == "10.00"


def test_csv_has_two_decimals_counts_and_judge_columns() -> None:
    rows = [
        ReportRow("a", dict(QWEN3_4B_BASE_MATH) | {"supergpqa": 20.88, "mmlu_pro": 37.38, "bbeh": 7.57}),
        ReportRow("b", {"gsm8k": 1 / 3 * 100}, {"gsm8k": "greedy"}, {"gsm8k": 50.0}),
    ]
    records = list(csv.DictReader(io.StringIO(render_csv(rows))))
    assert records[0]["math_avg"] == "42.57" and records[0]["math_avg_n"] == "7"
    assert records[0]["overall_avg"] == f"{(297.97 / 7 + 20.88 + 37.38 + 7.57) / 4:.2f}"
    assert records[1]["gsm8k"] == "33.33" and records[1]["math_avg_n"] == "1" and records[1]["amc23"] == ""
    assert records[1]["gsm8k_protocol"] == "greedy" and records[1]["gsm8k_judge"] == "50.00"
    assert records[1]["math_avg_judge"] == "50.00" and records[0]["gsm8k_judge"] == ""


def test_judge_scores_get_their_own_table() -> None:
    row = ReportRow("m", {"gsm8k": 40.0}, {"gsm8k": "greedy"}, {"gsm8k": 45.0})
    markdown = render_markdown([row])
    header, cells = _table_rows(markdown, "LLM-judge re-check")
    assert header == ["Model", "MATH AVG (judge)", "GSM8K (judge)"]
    assert cells == ["m", "45.00*", "45.00"]
    rule_header, rule_cells = _table_rows(markdown, "Mathematical reasoning")
    assert rule_cells[rule_header.index("GSM8K")] == "40.00"  # the rule-based score stays as it was


def _results_json(folder: Path, label: str, scores: dict[str, float]) -> Path:
    results = {
        "model": f"/models/{label}",
        "label": label,
        "benchmarks": {
            n: {"accuracy": v, "protocol": "greedy", "judge_accuracy": None} for n, v in scores.items()
        },
    }
    folder.mkdir(parents=True)
    path = folder / "results.json"
    path.write_text(json.dumps(results), encoding="utf-8")
    return path


def test_report_over_several_results_writes_table_csv_and_plot(tmp_path: Path) -> None:
    for i, label in enumerate(["iter_10", "iter_2", "base"]):
        _results_json(tmp_path / "eval" / label, label, {"gsm8k": 10.0 + i, "bbeh": 5.0 + i})
    rows = load_rows([tmp_path / "eval"])
    assert [r.label for r in rows] == ["base", "iter_2", "iter_10"]  # natural order
    assert row_from_results(json.loads((tmp_path / "eval/base/results.json").read_text())).scores == {
        "gsm8k": 12.0,
        "bbeh": 7.0,
    }

    assert cli_main(["report", str(tmp_path / "eval"), "--out", str(tmp_path / "cmp"), "--paper"]) == 0
    md = (tmp_path / "cmp" / "comparison.md").read_text()
    assert "paper: Qwen3-4B-Base" in md and "| iter_10 |" in md
    png = (tmp_path / "cmp" / "comparison.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    assert len(list(csv.DictReader(io.StringIO((tmp_path / "cmp" / "comparison.csv").read_text())))) == 6

    single = write_reports(rows[:1], tmp_path / "one")
    assert [p.name for p in single] == ["summary.md", "summary.csv"]  # a plot needs several rows


def _entry(accuracy: float, **extra: object) -> dict:
    return {"accuracy": accuracy, "protocol": "greedy", "judge_accuracy": None, **extra}


def test_multiple_choice_strict_and_random_letter_side_by_side() -> None:
    results = {
        "label": "base",
        "benchmarks": {
            "supergpqa": _entry(20.0, accuracy_random_letter=22.0, max_tokens=8192),
            "mmlu_pro": _entry(36.0, accuracy_random_letter=37.0, max_tokens=8192),
            "bbeh": _entry(8.0, max_tokens=8192),
        },
    }
    row = row_from_results(results)
    assert row.random_letter_scores == {"supergpqa": 22.0, "mmlu_pro": 37.0} and not row.departures
    markdown = render_markdown([row])
    header, cells = _table_rows(markdown, "General-domain reasoning")
    assert header == [
        "Model",
        "Overall AVG",
        "MATH AVG",
        "SuperGPQA",
        "MMLU-Pro",
        "BBEH",
        "Overall AVG (rand. letter)",
        "SuperGPQA (rand. letter)",
        "MMLU-Pro (rand. letter)",
    ]
    # No math here: Overall AVG over the 3 present (strict 64/3; random letter 67/3), marked partial.
    assert cells == ["base", "21.33*", "—", "20.00", "36.00", "8.00", "22.33*", "22.00", "37.00"]
    assert "seeded random letter" in markdown
    full = ReportRow("full", {"supergpqa": 20.0, "mmlu_pro": 36.0, "bbeh": 8.0}, math_avg_given=40.0)
    full.random_letter_scores = {"supergpqa": 22.0, "mmlu_pro": 37.0}
    record = next(csv.DictReader(io.StringIO(render_csv([full]))))
    assert record["overall_avg"] == "26.00" and record["overall_avg_random_letter"] == "26.75"
    assert record["mmlu_pro"] == "36.00" and record["mmlu_pro_random_letter"] == "37.00"
    assert record["supergpqa_random_letter"] == "22.00" and "bbeh_random_letter" not in record


def test_subsets_and_other_token_budgets_are_labelled() -> None:
    subset = _entry(30.0, limit=1000, num_items=1000, source_rows=12032, seed=3, max_tokens=8192)
    whole = _entry(31.0, limit=None, num_items=12032, source_rows=12032, seed=3, max_tokens=8192)
    short = _entry(50.0, limit=None, num_items=500, source_rows=500, seed=0, max_tokens=2048)
    a = row_from_results({"label": "a", "benchmarks": {"mmlu_pro": subset, "math500": short}})
    b = row_from_results({"label": "b", "benchmarks": {"mmlu_pro": whole}})
    assert a.departures == {"mmlu_pro": "subset of 1000 (seed 3)", "math500": "max 2048 tokens"}
    assert b.departures == {}
    markdown = render_markdown([a])
    header, cells = _table_rows(markdown, "General-domain reasoning")
    assert (
        "MMLU-Pro (subset of 1000 (seed 3))" in header
        and cells[header.index("MMLU-Pro (subset of 1000 (seed 3))")] == "30.00"
    )
    math_header, _ = _table_rows(markdown, "Mathematical reasoning")
    assert "MATH (max 2048 tokens)" in math_header
    assert "seeded random subset" in markdown and "new-token budget" in markdown
    # Rows that differ in protocol: the cell, not the column, carries the label.
    header, *body = _table_rows(render_markdown([a, b]), "General-domain reasoning")
    column = header.index("MMLU-Pro")
    assert body[0][column] == "30.00 (subset of 1000 (seed 3))" and body[1][column] == "31.00"
    records = list(csv.DictReader(io.StringIO(render_csv([a, b]))))
    assert (
        records[0]["mmlu_pro_departure"] == "subset of 1000 (seed 3)"
        and records[1]["mmlu_pro_departure"] == ""
    )
