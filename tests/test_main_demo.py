"""`bash scripts/main.sh` end to end: the demo iteration on the embedded tiny model, killed with SIGKILL
during question generation and rerun with the same command; then the `single_model` experiment end
to end on top of it, reusing the demo run's stages that it would launch identically (`--reuse-from`).

Checks: finished stages are skipped on the rerun, the interrupted stage restarts cleanly, the run
leaves the new Solver's HF model, the filtered dataset, manifests and the summary; the base model and
the Solver are evaluated offline on the generated arithmetic benchmark, and the summary opens with
the paper-format table and the iteration plot; the generated questions equal what an uninterrupted
generation gives; the Solver servers of the Challenger stage are gone; a second
`questioner_train.sh` on the finished stage does no training and exits 0.

`single_model` (the demo's preset and seed, evaluation included) links the demo run's iteration-1
Challenger, questions and labels, which pipeline/reuse.py links only when the demo launched them with
the very settings the experiment would; its own Solver stage (from the Challenger's output) and
evaluation run here. `pipeline.compare` then tables the two runs. (`no_filter` runs end to end as the
quarter rehearsal, tests/test_rehearsal.py.)
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
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


@dataclass(frozen=True)
class Demo:
    storage: Path
    env: dict
    rerun_log: str  # the rerun's stderr


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory, demo_model_dir: str) -> Demo:
    """The demo run, SIGKILLed during question generation and rerun with the same command."""
    tmp_path = tmp_path_factory.mktemp("main_demo")
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
    # 2. Rerun the same command: finished stages are skipped, the rest runs to the end.
    second = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=1500)
    assert second.returncode == 0, second.stdout[-4000:] + second.stderr[-4000:]
    return Demo(tmp_path / "storage", env, second.stderr)


def test_demo_killed_mid_stage_then_rerun(demo: Demo) -> None:
    tmp_path, env = demo.storage.parent, demo.env
    run = demo.storage / "demo" / "iter_1"
    # The Challenger stage stopped exactly the Solver servers it started, and freed their ports.
    service = json.loads((run / "challenger" / "solver_endpoints.json").read_text())
    assert service["pids"] and not any(_pid_alive(pid) for pid in service["pids"])
    for url in service["endpoints"]:
        with socket.socket() as s:
            # SO_REUSEADDR: closed client connections may linger in TIME_WAIT; a live listener still blocks.
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("127.0.0.1", int(url.rsplit(":", 1)[1])))
            s.listen()

    # 2. The rerun skipped the finished stages and ran the rest to the end.
    assert f"challenger: {run / 'challenger'} is already done" in demo.rerun_log  # the log is on stderr
    for stage in ("challenger", "question_generate", "question_evaluate", "solver"):
        assert read_manifest(run / stage) is not None, stage
    solver = read_manifest(run / "solver")
    assert (Path(solver["outputs"]["model"]) / "model.safetensors").is_file()
    labelled = read_manifest(run / "question_evaluate")
    dataset = Path(labelled["outputs"]["dataset"])
    assert dataset.is_file() and (run / "question_evaluate" / "p_hat_hist.png").is_file()
    run_dir = demo.storage / "demo"
    summary = (run_dir / "summary.md").read_text()
    for stage in ("challenger", "question_generate", "question_evaluate", "solver", "evaluate"):
        assert f"| {stage} | done |" in summary, stage

    # Evaluation of the base model and the Solver on the generated benchmark (no hub), in the
    # paper's layout at the top of the summary, with the plot across iterations.
    generated = list((run_dir / "eval_data").glob("arithmetic_*.jsonl"))
    assert len(generated) == 1 and len(generated[0].read_text().splitlines()) == 32
    for folder, label in ((run_dir / "eval_base", "base"), (run / "evaluate", "iter_1")):
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
    assert (run_dir / "plots" / "evaluation.png").stat().st_size > 0

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


def _ablation(demo: Demo, experiment: str) -> Path:
    """`main.sh BASE TAG --experiment NAME --preset demo --reuse-from <the demo run>`; the run folder."""
    base = str(demo.storage / "tiny-qwen3-rzero")  # the demo's base model (its run.json names it so)
    cmd = ["bash", str(ROOT / "scripts" / "main.sh"), base, experiment, "--experiment", experiment]
    cmd += ["--preset", "configs/pipeline/demo.yaml", "--reuse-from", str(demo.storage / "demo")]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=demo.env, timeout=1500)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    run = demo.storage / experiment
    assert json.loads((run / "run.json").read_text())["experiment"] == experiment
    return run


def _linked(run: Path, demo: Demo, folder: str) -> bool:
    return (run / folder).is_symlink() and (run / folder).resolve() == (
        demo.storage / "demo" / folder
    ).resolve()


def test_single_model_end_to_end_and_the_ablation_table(demo: Demo) -> None:
    run = _ablation(demo, "single_model")
    demo_run = demo.storage / "demo" / "iter_1"
    # iteration 1 of one model in both roles: Challenger_1 from M_0 against M_0 frozen, its questions
    # labelled by M_0 (all three the demo's, launched identically); the Solver stage starts from the
    # Challenger stage's output, and its output M_1 is what is evaluated
    for stage in ("challenger", "question_generate", "question_evaluate"):
        assert _linked(run, demo, f"iter_1/{stage}"), stage
    challenger = read_manifest(demo_run / "challenger")
    assert (
        challenger["inputs"]["challenger_init"]
        == challenger["inputs"]["solver_model"]
        == str(demo.storage / "tiny-qwen3-rzero")
    )
    solver = read_manifest(run / "iter_1" / "solver")
    assert not (run / "iter_1" / "solver").is_symlink()
    assert solver["inputs"]["solver_init"] == challenger["outputs"]["model"]
    assert read_manifest(demo_run / "solver")["inputs"]["solver_init"] == str(
        demo.storage / "tiny-qwen3-rzero"
    )
    evaluated = json.loads((run / "iter_1" / "evaluate" / "stage_config.json").read_text())
    assert evaluated["model"] == solver["outputs"]["model"]

    # The ablation table of the three runs (pipeline.compare), one row per run and iteration.
    proc = subprocess.run(
        [
            str(ROOT / ".venv" / "bin" / "python"),
            "-m",
            "pipeline.compare",
            str(demo.storage / "demo"),
            str(run),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "single_model" in proc.stdout and "rzero" in proc.stdout
