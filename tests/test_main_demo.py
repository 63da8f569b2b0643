"""`bash scripts/main.sh` end to end: the demo iteration on the embedded tiny model, killed with SIGKILL
during question generation and rerun with the same command.

Checks: finished stages are skipped on the rerun, the interrupted stage restarts cleanly, the run
leaves the new Solver's HF model, the filtered dataset, manifests and the summary; the base model and
the Solver are evaluated offline on the generated arithmetic benchmark, and the summary opens with
the paper-format table and the iteration plot; the generated questions equal what an uninterrupted
generation gives; the Solver servers of the Challenger stage are gone; a second
`questioner_train.sh` on the finished stage does no training and exits 0.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from infra.stage_kit import read_manifest

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (exited, not yet reaped by its parent) counts as gone
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except FileNotFoundError:
        return False


def test_demo_killed_mid_stage_then_rerun(tmp_path: Path, demo_model_dir: str) -> None:
    env = {**os.environ, "STORAGE_PATH": str(tmp_path / "storage"), "RZERO_SKIP_SETUP": "1"}
    # The demo's base model, built once per test run (main.sh reuses a built one, as on a rerun).
    shutil.copytree(demo_model_dir, tmp_path / "storage" / "tiny-qwen3-rzero")
    run = tmp_path / "storage" / "demo" / "iter_1"
    cmd = ["bash", str(ROOT / "scripts" / "main.sh")]

    # 1. Start the demo; SIGKILL the whole job once question generation is under way.
    with open(tmp_path / "first.log", "w") as log:
        proc = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=tmp_path, start_new_session=True
        )
        deadline = time.monotonic() + 1500
        while not (read_manifest(run / "challenger") and (run / "question_generate").exists()):
            assert proc.poll() is None, (tmp_path / "first.log").read_text()[-4000:]
            assert time.monotonic() < deadline, "the Challenger stage did not finish in 25 minutes"
            time.sleep(0.5)  # polling the stage folders: the readiness signal here is a file
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert read_manifest(run / "question_generate") is None

    # The Challenger stage stopped exactly the Solver servers it started, and freed their ports.
    service = json.loads((run / "challenger" / "solver_endpoints.json").read_text())
    assert service["pids"] and not any(_pid_alive(pid) for pid in service["pids"])
    for url in service["endpoints"]:
        with socket.socket() as s:
            # SO_REUSEADDR: closed client connections may linger in TIME_WAIT; a live listener still blocks.
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("127.0.0.1", int(url.rsplit(":", 1)[1])))
            s.listen()

    # 2. Rerun the same command: finished stages are skipped, the rest runs to the end.
    second = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=1500)
    assert second.returncode == 0, second.stdout[-4000:] + second.stderr[-4000:]
    assert f"challenger: {run / 'challenger'} is already done" in second.stderr  # the log is on stderr
    for stage in ("challenger", "question_generate", "question_evaluate", "solver"):
        assert read_manifest(run / stage) is not None, stage
    solver = read_manifest(run / "solver")
    assert (Path(solver["outputs"]["model"]) / "model.safetensors").is_file()
    labelled = read_manifest(run / "question_evaluate")
    dataset = Path(labelled["outputs"]["dataset"])
    assert dataset.is_file() and (run / "question_evaluate" / "p_hat_hist.png").is_file()
    demo = tmp_path / "storage" / "demo"
    summary = (demo / "summary.md").read_text()
    for stage in ("challenger", "question_generate", "question_evaluate", "solver", "evaluate"):
        assert f"| {stage} | done |" in summary, stage

    # Evaluation of the base model and the Solver on the generated benchmark (no hub), in the
    # paper's layout at the top of the summary, with the plot across iterations.
    generated = list((demo / "eval_data").glob("arithmetic_*.jsonl"))
    assert len(generated) == 1 and len(generated[0].read_text().splitlines()) == 32
    for folder, label in ((demo / "eval_base", "base"), (run / "evaluate", "iter_1")):
        results = json.loads((folder / "results.json").read_text())
        assert results["label"] == label and read_manifest(folder) is not None
        gsm8k = results["benchmarks"]["gsm8k"]
        assert gsm8k["num_items"] == 32 and gsm8k["source"] == str(generated[0])
        assert len((folder / "gsm8k" / "items.jsonl").read_text().splitlines()) == 32
    table = summary[summary.index("## Evaluation") : summary.index("## Iteration 1")]
    assert "### Mathematical reasoning" in table and "### General-domain reasoning" in table
    assert "| base |" in table and "| iter_1 |" in table and "GSM8K" in table
    assert "generated arithmetic word problems" in table
    assert "![evaluation across iterations](plots/evaluation.png)" in table
    assert (demo / "plots" / "evaluation.png").stat().st_size > 0

    # 3. The restarted generation equals an uninterrupted one (seeded): same questions, same counts.
    from infra.stage_kit import read_stage_config
    from question_generate.generate import GenerateConfig, generate_questions

    generated = read_manifest(run / "question_generate")
    fresh = tmp_path / "fresh_generation"
    # The same settings the driver launched the stage with (its stage_config.json), fresh folder.
    recorded = read_stage_config(run / "question_generate" / "stage_config.json")
    generate_questions(GenerateConfig.from_dict({**recorded, "out_dir": str(fresh)}))
    assert (fresh / "questions.jsonl").read_text() == Path(generated["outputs"]["questions"]).read_text()
    assert read_manifest(fresh)["counts"] == generated["counts"]

    # 4. The Challenger stage script on a finished stage: no training, exit 0.
    again = subprocess.run(
        [
            "bash",
            str(ROOT / "scripts" / "questioner_train.sh"),
            "unused-solver",
            "unused-init",
            str(run / "challenger"),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert again.returncode == 0 and "is already done (manifest.json); skipping" in again.stderr
