"""`python -m pipeline.compare` (and scripts/compare_runs.sh) on two finished runs written here:
averages checked by hand, a missing benchmark marked, rows named by experiment, files beside the runs."""

from __future__ import annotations

import csv
import io
import json
import subprocess
from pathlib import Path

from pipeline.compare import compare, main

ROOT = Path(__file__).resolve().parents[1]
MATH = {
    "amc23": 40.0,
    "minerva_math": 30.0,
    "math500": 60.0,
    "gsm8k": 80.0,
    "olympiadbench": 35.0,
    "aime2025": 10.0,
    "aime2024": 5.0,
}  # sum 260: MATH AVG 37.142857...


def _results(folder: Path, label: str, scores: dict[str, float]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    benchmarks = {name: {"accuracy": value, "protocol": "greedy"} for name, value in scores.items()}
    (folder / "results.json").write_text(json.dumps({"label": label, "benchmarks": benchmarks}))


def _run(root: Path, tag: str, experiment: str, iterations: dict[int, dict[str, float]]) -> Path:
    run = root / tag
    run.mkdir(parents=True)
    record = {"tag": tag, "experiment": experiment, "base_model": "Qwen/Qwen3-4B-Base"}
    (run / "run.json").write_text(json.dumps(record))
    _results(
        run / "eval_base", "base", {**MATH, "gsm8k": 70.0, "supergpqa": 10.0, "mmlu_pro": 30.0, "bbeh": 5.0}
    )
    for i, scores in iterations.items():
        _results(run / f"iter_{i}" / "evaluate", f"iter_{i}", scores)
    return run


def _fixture(tmp_path: Path) -> list[Path]:
    full = _run(
        tmp_path,
        "full",
        "rzero",
        {
            1: {**MATH, "supergpqa": 20.0, "mmlu_pro": 40.0, "bbeh": 9.0},
            2: {**MATH, "math500": 67.0, "supergpqa": 22.0, "mmlu_pro": 42.0, "bbeh": 10.0},
            10: {**MATH, "supergpqa": 20.0, "mmlu_pro": 40.0, "bbeh": 9.0},
        },
    )
    # no BBEH in this run: marked, and the averages that need it say they are partial
    base_challenger = _run(
        tmp_path, "nochal", "no_rl_challenger", {1: {**MATH, "supergpqa": 21.0, "mmlu_pro": 41.0}}
    )
    (base_challenger / "iter_2").mkdir()  # an iteration still running: named, not a row
    return [full, base_challenger]


def _rows(markdown: str) -> dict[str, list[str]]:
    lines = [line for line in markdown.splitlines() if line.startswith("| ") and "---" not in line]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    return {
        cells[0]: dict(zip(header, cells))
        for cells in ([c.strip() for c in ln.strip("|").split("|")] for ln in lines[1:])
    }


def test_compare_two_runs_averages_by_hand(tmp_path: Path) -> None:
    markdown, table, paths = compare(_fixture(tmp_path))
    rows = _rows(markdown)
    assert list(rows) == [
        "Base Model (Qwen3-4B-Base)",
        "rzero · iter 1",
        "rzero · iter 2",
        "rzero · iter 10",  # numeric order, not iter_10 before iter_2
        "no_rl_challenger · iter 1 (Base Challenger)",
    ]
    base = rows["Base Model (Qwen3-4B-Base)"]
    # base: math sum 250 -> 35.714285...; general (10+30+5)/3 = 15; overall (35.714285+10+30+5)/4 = 20.178571
    assert (base["MATH AVG"], base["General AVG"], base["Overall AVG"]) == ("35.71", "15.00", "20.18")
    one = rows["rzero · iter 1"]
    # 260/7 = 37.142857; (20+40+9)/3 = 23; (37.142857+20+40+9)/4 = 26.535714
    assert (one["MATH AVG"], one["General AVG"], one["Overall AVG"]) == ("37.14", "23.00", "26.54")
    assert (one["MATH"], one["BBEH"], one["MMLU-Pro"]) == ("60.00", "9.00", "40.00")
    two = rows["rzero · iter 2"]
    # 267/7 = 38.142857; (22+42+10)/3 = 24.666667; (38.142857+22+42+10)/4 = 28.035714
    assert (two["MATH AVG"], two["General AVG"], two["Overall AVG"]) == ("38.14", "24.67", "28.04")
    partial = rows["no_rl_challenger · iter 1 (Base Challenger)"]
    # BBEH missing: (21+41)/2 = 31 over 2 of 3; overall (37.142857+21+41)/3 = 33.047619 over 3 of 4
    assert (partial["BBEH"], partial["General AVG"], partial["Overall AVG"]) == ("—", "31.00*", "33.05*")
    assert partial["MATH AVG"] == "37.14"
    assert "—: benchmark not evaluated in that run." in markdown
    assert "\\* average over the benchmarks present only" in markdown
    assert "- nochal iteration 2: not evaluated (no iter_2/evaluate/results.json)" in markdown

    records = {r["model"]: r for r in csv.DictReader(io.StringIO(table))}
    row = records["no_rl_challenger · iter 1 (Base Challenger)"]
    assert (row["experiment"], row["iteration"], row["run"]) == ("no_rl_challenger", "1", "nochal")
    assert (row["bbeh"], row["overall_avg"], row["overall_avg_n"], row["general_avg_n"]) == (
        "",
        "33.05",
        "3",
        "2",
    )
    assert records["rzero · iter 1"]["overall_avg"] == "26.54"
    assert paths == [tmp_path / "compare.md", tmp_path / "compare.csv"]
    assert (tmp_path / "compare.md").read_text() == markdown and (
        tmp_path / "compare.csv"
    ).read_text() == table


def test_compare_cli_and_wrapper(tmp_path: Path, capsys) -> None:
    runs = _fixture(tmp_path)
    assert main([str(r) for r in runs] + ["--out", str(tmp_path / "out")]) == 0
    printed = capsys.readouterr().out
    assert "| rzero · iter 1 |" in printed and "model,run,experiment,iteration" in printed
    assert (tmp_path / "out" / "compare.csv").is_file()
    assert main([str(tmp_path / "nope")]) == 2
    assert "has no run.json" in capsys.readouterr().err
    proc = subprocess.run(
        ["bash", str(ROOT / "scripts" / "compare_runs.sh"), *map(str, runs), "--name", "ablation"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "Overall AVG" in proc.stdout and (tmp_path / "ablation.md").is_file()
