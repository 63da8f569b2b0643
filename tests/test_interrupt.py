"""Ctrl-C during a stage: the driver says the stage was interrupted and that the same command
resumes (not "failed ... fix the cause"), the stage ends with one line instead of a traceback, and
both exit 130. Ctrl-C is what a terminal sends: SIGINT to the whole foreground process group."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# A stage module (python -m fake_stage --config FILE) that says it is running, then waits, with the
# real stages' entry wrapper.
FAKE_STAGE = """
import sys, time
from pathlib import Path
from infra.stage_kit import stage_entry

def main():
    Path(sys.argv[2]).with_name("running").write_text("yes")
    while True:
        time.sleep(0.1)

sys.exit(stage_entry(main, "fake stage"))
"""

# The driver's side: the one way a stage is launched, and the driver's own handling of the outcome.
DRIVER = """
import sys
from pathlib import Path
import pipeline.launch as launch
launch.STAGE_MODULES["question_generate"] = "fake_stage"
try:
    launch.run_stage("question_generate", Path(sys.argv[1]), {"x": 1})
except launch.StageInterrupted as e:
    print(f"DRIVER: {e}", flush=True)
    sys.exit(launch.EXIT_INTERRUPTED)
"""


def test_ctrl_c_during_a_stage_says_interrupted_and_how_to_resume(tmp_path: Path) -> None:
    (tmp_path / "mods").mkdir()
    (tmp_path / "mods" / "fake_stage.py").write_text(FAKE_STAGE)
    stage_dir = tmp_path / "iter_1" / "question_generate"
    env = {**os.environ, "PYTHONPATH": f"{tmp_path / 'mods'}:{ROOT}"}
    driver = subprocess.Popen(
        [sys.executable, "-c", DRIVER, str(stage_dir)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT,
        start_new_session=True,  # its own process group: the test's Ctrl-C reaches it and the stage only
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not (stage_dir / "running").exists():  # wait until the stage runs
            assert driver.poll() is None, driver.communicate()
            assert time.monotonic() < deadline, "the fake stage did not start"
            time.sleep(0.1)
        os.killpg(driver.pid, signal.SIGINT)  # Ctrl-C in the terminal
        out, err = driver.communicate(timeout=120)
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
    assert driver.returncode == 130, out + err
    assert "DRIVER: stage question_generate interrupted after" in out
    assert "rerun the same command to resume" in out and "fix the cause" not in out + err
    assert "fake stage: interrupted" in err and "Traceback" not in err
