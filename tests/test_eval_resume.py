"""Evaluation resumes per benchmark, and `scripts/evaluate.sh` runs on a CPU machine with no KV cache
size given (VLLM_CPU_KVCACHE_SPACE unset: the engine picks one that fits).

Two generated benchmarks (evaluation/synthetic.py) on the tiny model, loaded through the local-data
option under the GSM8K and AMC schemas. The first run generates and scores both. Then the second
benchmark's scores are removed, as if the run had been killed while scoring it: the rerun keeps the
first benchmark untouched (no generation, no scoring) and scores only the second from its saved
responses. The reruns call the script's `python -m evaluation` in this process (they start no
engine, which is checked: the subprocess would add only its start-up). A third run of a finished evaluation (results.json lost) starts neither an engine nor the
grader pool. Settings that change the scores (here the grader timeout) make a benchmark unfinished.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from evaluation.synthetic import make_problems, write_problems
from infra.cpu_kvcache import KVCACHE_ENV

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
ENGINE_STARTED = "for KV cache on node"  # vLLM-cpu's line when it sizes its KV cache


def _evaluate(model: str, out: Path, data: dict[str, str], *extra: str) -> str:
    env = {k: v for k, v in os.environ.items() if k not in (KVCACHE_ENV, "VLLM_ENABLE_V1_MULTIPROCESSING")}
    env.update(OUT_DIR=str(out), EVAL_COMPARE="0")
    cmd = ["bash", str(ROOT / "scripts" / "evaluate.sh"), model, "gsm8k", "amc23", "--offline"]
    cmd += [f"--data={name}={path}" for name, path in data.items()]
    cmd += ["--max-tokens", "24", "--max-model-len", "512", "--grader-workers", "1", *extra]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-6000:]
    return log


def _rerun(
    model: str, out: Path, data: dict[str, str], caplog: pytest.LogCaptureFixture, *extra: str
) -> list:
    """The script's `python -m evaluation` call, in this process (a rerun starts no engine, so the
    subprocess adds nothing); returns the engines it made (the real factory, recorded on the way)."""
    import evaluation.runner
    from evaluation.cli import main as cli_main

    made = []
    real = evaluation.runner.make_engine

    def recording(config):
        made.append(config)
        return real(config)

    argv = ["--model", model, "--out", str(out), "--benchmarks", "gsm8k,amc23", "--offline"]
    argv += [f"--data={name}={path}" for name, path in data.items()]
    argv += ["--max-tokens", "24", "--max-model-len", "512", "--grader-workers", "1", *extra]
    caplog.clear()
    evaluation.runner.make_engine = recording
    try:
        with caplog.at_level("INFO", logger="evaluation.runner"):
            assert cli_main(argv) == 0
    finally:
        evaluation.runner.make_engine = real
    return made


def _state(path: Path) -> tuple[bytes, int]:
    return path.read_bytes(), path.stat().st_mtime_ns


def test_finished_benchmarks_are_kept_and_only_unfinished_ones_run(
    tiny_model_dir: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data = {
        "gsm8k": str(write_problems(tmp_path / "arith_a.jsonl", make_problems(12, seed=1))),
        "amc23": str(write_problems(tmp_path / "arith_b.jsonl", make_problems(6, seed=2))),
    }
    out = tmp_path / "eval"

    # 1. A fresh run, with no KV cache size in the environment.
    log = _evaluate(tiny_model_dir, out, data)
    assert f"CPU KV cache: {KVCACHE_ENV}=1 GiB (picked for this machine" in log
    assert ENGINE_STARTED in log
    first = json.loads((out / "results.json").read_text())
    assert {n: e["num_items"] for n, e in first["benchmarks"].items()} == {"gsm8k": 12, "amc23": 6}
    assert "grader" in first and not any(e["resumed"] for e in first["benchmarks"].values())

    # 2. Killed while scoring amc23: its scores and the run's completion marks are missing.
    for name in ("amc23/metrics.json", "amc23/items.jsonl", "results.json", "manifest.json"):
        (out / name).unlink()
    kept = {name: _state(out / "gsm8k" / name) for name in ("metrics.json", "items.jsonl", "responses.jsonl")}
    engines = _rerun(tiny_model_dir, out, data, caplog)
    assert "gsm8k: finished by an earlier run with these settings; kept" in caplog.text
    assert engines == []  # amc23's responses were saved: it is only scored again
    assert {name: _state(out / "gsm8k" / name) for name in kept} == kept  # not even rewritten
    second = json.loads((out / "results.json").read_text())
    gsm8k, amc23 = second["benchmarks"]["gsm8k"], second["benchmarks"]["amc23"]
    assert gsm8k["resumed"] and not amc23["resumed"] and amc23["reused_responses"]
    assert {n: e["accuracy"] for n, e in second["benchmarks"].items()} == {
        n: e["accuracy"] for n, e in first["benchmarks"].items()
    }
    assert (out / "manifest.json").stat().st_mtime_ns >= (out / "results.json").stat().st_mtime_ns

    # 3. A finished evaluation whose results.json was lost: nothing is generated or scored again.
    (out / "results.json").unlink()
    (out / "manifest.json").unlink()
    engines = _rerun(tiny_model_dir, out, data, caplog)
    third = json.loads((out / "results.json").read_text())
    assert all(e["resumed"] for e in third["benchmarks"].values())
    assert "grader" not in third and engines == []  # no grader pool, no engine

    # 4. A setting that changes the scores makes every benchmark unfinished (responses still reused).
    (out / "results.json").unlink()
    assert _rerun(tiny_model_dir, out, data, caplog, "--grader-timeout", "7") == []
    fourth = json.loads((out / "results.json").read_text())
    assert not any(e["resumed"] for e in fourth["benchmarks"].values())
    assert all(e["reused_responses"] for e in fourth["benchmarks"].values())
