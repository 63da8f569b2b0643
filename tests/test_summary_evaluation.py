"""The run summary opens with the evaluation of the base model and every Solver in the paper's table
layout, the plot across iterations, and where each benchmark's data came from (a generated benchmark
is named as such, not as the benchmark whose slot it takes)."""

from __future__ import annotations

import json
from pathlib import Path

from pipeline.summary import write_run_summary


def _results(folder: Path, label: str, accuracy: float, source: str) -> None:
    folder.mkdir(parents=True)
    entry = {"accuracy": accuracy, "protocol": "greedy", "num_items": 32, "source": source, "max_tokens": 40}
    (folder / "results.json").write_text(json.dumps({"label": label, "benchmarks": {"gsm8k": entry}}))


def test_summary_has_the_table_across_iterations_the_plot_and_the_data(tmp_path: Path) -> None:
    run = tmp_path / "demo"
    generated = str(run / "eval_data" / "arithmetic_32_seed0.jsonl")
    _results(run / "eval_base", "base", 12.5, generated)
    _results(run / "iter_1" / "evaluate", "iter_1", 25.0, generated)
    _results(run / "iter_2" / "evaluate", "iter_2", 31.25, generated)
    md = write_run_summary(run).read_text()
    section = md[md.index("## Evaluation") : md.index("## Iteration 1")]
    assert "### Mathematical reasoning" in section and "### General-domain reasoning" in section
    rows = [line for line in section.splitlines() if line.startswith(("| base", "| iter_"))]
    assert [r.split(" | ")[0] for r in rows[:3]] == ["| base", "| iter_1", "| iter_2"]
    assert "GSM8K (max 40 tokens)" in section and "| 31.25" in section
    assert "![evaluation across iterations](plots/evaluation.png)" in section
    assert (run / "plots" / "evaluation.png").read_bytes()[:4] == b"\x89PNG"
    assert f"- GSM8K: {generated} (generated arithmetic word problems" in section

    # Without evaluations there is no such section (and no plot).
    bare = tmp_path / "bare"
    (bare / "iter_1").mkdir(parents=True)
    assert "## Evaluation" not in write_run_summary(bare).read_text()


def test_a_table_of_zeros_says_why_and_where_a_rise_shows(tmp_path: Path) -> None:
    """The demo's tiny model scores 0.00 before and after: the summary says why in one line and
    points to the real-model learning benchmark; a run that scores anything has no such line."""
    run = tmp_path / "demo"
    generated = str(run / "eval_data" / "arithmetic_32_seed0.jsonl")
    _results(run / "eval_base", "base", 0.0, generated)
    _results(run / "iter_1" / "evaluate", "iter_1", 0.0, generated)
    md = write_run_summary(run).read_text()
    section = md[md.index("## Evaluation") : md.index("## Iteration 1")]
    assert "Every score is 0.00" in section and "scripts/bench_real_learning.sh" in section
    _results(run / "iter_2" / "evaluate", "iter_2", 3.12, generated)
    assert "Every score is 0.00" not in write_run_summary(run).read_text()
