"""The preflight: every problem a run would hit, listed at once with its fix, before anything starts.

The issue's example (`STORAGE_PATH=$(mktemp -d) bash scripts/main.sh /nonexistent/model t1`) exits 2
naming the missing model, the benchmarks without data and the two ways out, and the GPUs the plan
names that do not exist, and creates nothing. A rerun whose settings differ from the tag's run.json
is refused with the differing keys unless --accept-changed-settings. The disk estimate is the
model's parameters x bytes x checkpoints kept x training stages. The stage scripts check their own
models and inputs (exit 2), and a finished stage folder needs no check.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from infra.preflight import check_model, model_parameters
from pipeline.config import load_pipeline_config
from pipeline.driver import main as driver_main
from pipeline.planner import plan_devices
from pipeline.preflight import check_disk, checkpoints_kept, run_record
from verl.trainer.config import PPOConfig

ROOT = Path(__file__).resolve().parents[1]
DEMO = "configs/pipeline/demo.yaml"


def _script(args: list[str], storage: Path, **env: str) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "STORAGE_PATH": str(storage), "RZERO_SKIP_SETUP": "1", **env}
    return subprocess.run(
        ["bash", *args], cwd=storage.parent, env=full_env, capture_output=True, text=True, timeout=300
    )


def test_missing_model_data_and_gpus_are_listed_at_once_and_nothing_starts(tmp_path: Path) -> None:
    storage = tmp_path / "storage"
    started = time.monotonic()
    proc = _script(
        [str(ROOT / "scripts" / "main.sh"), "/nonexistent/model", "t1"],
        storage,
        HF_HUB_OFFLINE="1",
        CUDA_VISIBLE_DEVICES="0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15",
    )
    print(f"main.sh preflight answered in {time.monotonic() - started:.1f} s")
    assert proc.returncode == 2, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stderr
    assert "base model '/nonexistent/model': no such folder" in out
    assert "evaluation data missing for 10 of 10 benchmark(s)" in out and "zwhe99/amc23" in out
    assert "HF_HUB_OFFLINE=1" in out  # offline mode said plainly
    assert "--set eval_data_dir=DIR" in out and "--set evaluate=false" in out  # the two ways out
    assert "the plan uses GPUs 0,1,2" in out  # 16 GPUs named, none (or fewer) on this machine
    assert out.count("fix:") >= 3
    assert not (storage / "t1").exists()  # nothing was started or written


def test_rerun_with_other_settings_is_refused_unless_accepted(
    tiny_model_dir: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setenv("STORAGE_PATH", str(tmp_path))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    args = [tiny_model_dir, "t", "--preset", DEMO, "--set", "evaluate=false"]
    pipe = load_pipeline_config(DEMO, ["evaluate=false"])
    recorded = run_record(tiny_model_dir, "t", pipe, plan_devices([], None, pipe.cpu_ranks), str(ROOT / DEMO))
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "run.json").write_text(json.dumps(recorded))

    # Same settings: the preflight passes (checked with --dry-run: nothing starts).
    assert driver_main([*args, "--dry-run"]) == 0
    assert "rerun of 't' with its recorded settings" in capsys.readouterr().out

    changed = [*args, "--set", "num_questions=10", "--iterations", "2"]
    assert driver_main(changed) == 2
    err = capsys.readouterr().err
    assert "pipeline.num_questions: 48 -> 10" in err and "iterations: 1 -> 2" in err
    assert "--accept-changed-settings" in err
    assert json.loads((tmp_path / "t" / "run.json").read_text()) == recorded  # untouched

    assert driver_main([*changed, "--dry-run", "--accept-changed-settings"]) == 0
    out = capsys.readouterr().out
    assert "are accepted (--accept-changed-settings): iterations: 1 -> 2" in out and "preflight: ok" in out


def test_disk_estimate_is_parameters_x_bytes_x_checkpoints_kept_x_stages(
    tiny_model_dir: str, tmp_path: Path
) -> None:
    from safetensors import safe_open

    with safe_open(str(Path(tiny_model_dir) / "model.safetensors"), "np") as f:
        exact = sum(math.prod(f.get_slice(k).get_shape()) for k in f.keys())  # noqa: SIM118 (not a dict)
    assert model_parameters(tiny_model_dir) == exact
    config = json.loads((Path(tiny_model_dir) / "config.json").read_text())
    estimate_dir = tmp_path / "config_only"
    estimate_dir.mkdir()
    (estimate_dir / "config.json").write_text(json.dumps(config))
    assert abs(model_parameters(str(estimate_dir)) - exact) <= 0.02 * exact  # from config.json alone

    engine = PPOConfig()
    engine.trainer.max_steps, engine.trainer.save_freq, engine.trainer.save_limit = 15, 5, 2
    assert checkpoints_kept(engine) == 2  # 3 saves, the newest 2 kept
    engine.trainer.save_limit = -1
    assert checkpoints_kept(engine) == 3
    engine.trainer.save_freq = -1
    assert checkpoints_kept(engine) == 1  # only the last step
    stages = [("challenger", engine), ("solver", engine)] * 3  # 3 iterations
    params = 4_000_000_000  # a 4B model on GPU: 12 bytes (weights + AdamW) + 2 (bf16 hf/) per parameter
    problems, notes = check_disk(params, stages, on_gpu=True, run_dir=tmp_path / "run")
    assert f"{params * 14 * 6 / (1 << 30):.1f} GiB" in notes[0]
    problems, _ = check_disk(10**15, stages, on_gpu=True, run_dir=tmp_path / "run")
    assert len(problems) == 1 and "not enough disk" in problems[0].what and "save_limit" in problems[0].fix


def test_model_checks_name_what_is_missing(tiny_model_dir: str, tmp_path: Path) -> None:
    assert check_model(tiny_model_dir) == []
    (tmp_path / "config.json").write_text("{}")
    (problem,) = check_model(str(tmp_path), "Solver")
    assert "has no tokenizer files" in problem.what and "no weights" in problem.what


def test_stage_scripts_check_their_models_and_inputs(tmp_path: Path) -> None:
    storage = tmp_path / "storage"
    scripts = ROOT / "scripts"
    proc = _script(
        [str(scripts / "questioner_train.sh"), "/nope/solver", "/nope/init", str(tmp_path / "c")], storage
    )
    assert proc.returncode == 2 and "'/nope/solver': no such folder" in proc.stderr
    assert "'/nope/init': no such folder" in proc.stderr and not (tmp_path / "c").exists()
    proc = _script(
        [str(scripts / "question_evaluate.sh"), "/nope/solver", "/nope/q.jsonl", str(tmp_path / "e")], storage
    )
    assert (
        proc.returncode == 2
        and "'/nope/solver'" in proc.stderr
        and "'/nope/q.jsonl' does not exist" in proc.stderr
    )
    proc = _script(
        [str(scripts / "question_generate.sh"), "/nope/challenger", str(tmp_path / "g"), "8"], storage
    )
    assert proc.returncode == 2 and "'/nope/challenger': no such folder" in proc.stderr
    # A finished stage folder needs no model: the stage's own skip check answers.
    (tmp_path / "g").mkdir()
    (tmp_path / "g" / "manifest.json").write_text(
        json.dumps({"stage": "question_generate", "status": "done"})
    )
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "infra.preflight",
            "--model",
            "/nope/challenger",
            "--unless-done",
            str(tmp_path / "g"),
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0
    proc = _script(
        [str(scripts / "evaluate.sh"), "/nope/model", "gsm8k", "--data", "gsm8k=/nope/gsm8k.jsonl"], storage
    )
    assert proc.returncode == 2 and "model '/nope/model'" in proc.stderr
    assert "gsm8k (openai/gsm8k): local file /nope/gsm8k.jsonl does not exist" in proc.stderr
