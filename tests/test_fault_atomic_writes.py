"""SIGKILL in the middle of an atomic write (issue 12, fault-injection suite: "no temporary or
half-written file is left").

A process writing through `verl/utils/fs.py` (`atomic_write`, `atomic_dir`) or staging a checkpoint
(`verl/utils/checkpoint.py`) is killed with SIGKILL while its temporary is open; then a new process
writes the same target again, as a rerun does. The target must be whole (the old or the new
content, never a torn one) and no temporary may be left. The writer signals over a pipe that it is
inside the write, so the kill lands there every time.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from fault_kit import temporary_leftovers

# Child: start writing `target` the given way, say "inside" on stdout, then hang until killed.
_WRITER = """
import sys, time
from pathlib import Path
from verl.utils import checkpoint as ckpt
from verl.utils.fs import atomic_dir, atomic_write, atomic_write_json
how, target = sys.argv[1], Path(sys.argv[2])

def hang():
    print("inside", flush=True)
    time.sleep(3600)

if how == "file":
    def write(tmp):
        Path(tmp).write_text('{"half": ')
        hang()
    atomic_write(target, write)
elif how == "dir":
    with atomic_dir(target) as tmp:
        (tmp / "config.json").write_text("{}")
        hang()
elif how == "checkpoint":
    staged = ckpt.staging_dir(target, int(sys.argv[3]))
    (staged / "actor").mkdir()
    hang()
elif how == "rewrite_file":
    atomic_write_json(target, {"whole": True})
elif how == "rewrite_dir":
    with atomic_dir(target) as tmp:
        (tmp / "config.json").write_text('{"whole": true}')
"""


def _writer(how: str, target: Path, *extra: str) -> subprocess.CompletedProcess | None:
    cmd = [sys.executable, "-c", _WRITER, how, str(target), *extra]
    if how.startswith("rewrite"):
        return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=True)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "inside"  # blocks until the writer is mid-write
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    return None


def test_a_killed_checkpoint_save_is_cleaned_up_by_the_next_save(tmp_path: Path) -> None:
    from verl.utils import checkpoint as ckpt

    out = tmp_path / "train"
    _writer("checkpoint", out, "3")
    assert (ckpt.checkpoint_root(out) / ".global_step_3.partial").is_dir()  # what the kill left
    assert ckpt.latest_step(out) is None  # never trusted by resume
    # The resumed run saves another step first (e.g. save_freq changed): the left-over goes anyway.
    staged = ckpt.staging_dir(out, 2)
    ckpt.commit(out, 2, staged, keep_last=2)
    assert temporary_leftovers(tmp_path) == []
    assert ckpt.latest_step(out) == 2


def test_a_killed_file_write_leaves_no_temporary_after_the_rewrite(tmp_path: Path) -> None:
    target = tmp_path / "results.json"
    _writer("file", target)
    assert not target.exists()  # the torn content never reached the target
    _writer("rewrite_file", target)
    assert json.loads(target.read_text()) == {"whole": True}
    assert temporary_leftovers(tmp_path) == []


def test_a_killed_folder_write_leaves_no_temporary_after_the_rewrite(tmp_path: Path) -> None:
    target = tmp_path / "model"
    _writer("dir", target)
    assert not target.exists()
    _writer("rewrite_dir", target)
    assert json.loads((target / "config.json").read_text()) == {"whole": True}
    assert temporary_leftovers(tmp_path) == []
