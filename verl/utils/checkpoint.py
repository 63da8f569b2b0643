"""Checkpoint folders: `<output_dir>/checkpoints/global_step_<k>/` plus a `latest` tracker.

A step's folder is written under a temporary name and renamed when complete; the tracker
(`latest_checkpointed_iteration.txt`) is updated after the rename, so a crash at any moment
leaves either the previous checkpoint or the new one, never a half-written one that resume trusts.
Each folder holds `actor/` (sharded model + optimizer, scheduler + RNG per rank), `trainer_state.json`
(step, data-loader position) and, when enabled, `hf/` (a plain HF model folder).
"""

from __future__ import annotations

import errno
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from verl.utils.fs import atomic_write_text

TRACKER = "latest_checkpointed_iteration.txt"
_STEP_DIR = re.compile(r"^global_step_(\d+)$")
_PARTIAL_DIR = re.compile(r"^\.global_step_\d+\.partial$")


def checkpoint_root(output_dir: str | Path) -> Path:
    return Path(output_dir) / "checkpoints"


def step_dir(output_dir: str | Path, step: int) -> Path:
    return checkpoint_root(output_dir) / f"global_step_{step}"


def latest_step(output_dir: str | Path) -> int | None:
    """The step named by the tracker, if its folder exists; else None."""
    tracker = checkpoint_root(output_dir) / TRACKER
    if not tracker.is_file():
        return None
    step = int(tracker.read_text().strip())
    return step if step_dir(output_dir, step).is_dir() else None


def saved_steps(output_dir: str | Path) -> list[int]:
    root = checkpoint_root(output_dir)
    if not root.is_dir():
        return []
    return sorted(int(m.group(1)) for p in root.iterdir() if (m := _STEP_DIR.match(p.name)) and p.is_dir())


def staging_dir(output_dir: str | Path, step: int) -> Path:
    """A fresh temporary folder for step `step`. Left-overs of saves that were killed are removed
    first, whatever their step (one run writes into an output folder at a time)."""
    root = checkpoint_root(output_dir)
    if root.is_dir():
        for stale in root.iterdir():
            if _PARTIAL_DIR.match(stale.name) and stale.is_dir():
                shutil.rmtree(stale)
    tmp = root / f".global_step_{step}.partial"
    tmp.mkdir(parents=True)
    return tmp


class CheckpointSaveError(RuntimeError):
    """A checkpoint could not be written; the message says which, where, why, and what is left."""


# What a full disk looks like from a writer: ENOSPC/EDQUOT/EFBIG from the OS, or torch's zip writer
# noticing the short write that preceded it ("unexpected pos 704 vs 598").
_DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
_SHORT_WRITE = re.compile(r"unexpected pos \d+ vs \d+")
_ERROR_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Interrupt)(\([\w.]*\))?: ")


def describe_save_failure(output_dir: str | Path, step: int, error: BaseException) -> str:
    """A message for a failed save of `step`: the cause, the free space where it was written, and
    the checkpoint a rerun would resume from."""
    root = checkpoint_root(output_dir)
    text = str(error)
    # A worker's error arrives wrapped (Ray: the remote traceback in the message): its root cause is
    # the last "SomeError: ..." line.
    causes = [line.strip() for line in text.splitlines() if _ERROR_LINE.match(line.strip())]
    first_line = causes[-1] if causes else f"{type(error).__name__}: {text.splitlines()[0] if text else ''}"
    disk_full = getattr(error, "errno", None) in _DISK_FULL_ERRNOS or any(
        marker in text for marker in ("No space left on device", "Disk quota exceeded", "File too large")
    )
    if disk_full:
        first_line += " (the disk, a quota or the file-size limit is full)"
    elif _SHORT_WRITE.search(text):
        first_line += " (a write was cut short: most likely the disk, a quota or the file-size limit is full)"
    try:
        usage = shutil.disk_usage(root if root.exists() else Path(output_dir))
        space = f"{usage.free / 2**30:.2f} GiB free of {usage.total / 2**30:.2f} GiB"
    except OSError as e:
        space = f"free space unknown ({e})"
    previous = latest_step(output_dir)
    kept = (
        f"the checkpoint of step {previous} ({step_dir(output_dir, previous)}) is intact and a rerun "
        "resumes from it"
        if previous is not None
        else "no earlier checkpoint exists: a rerun starts from step 0"
    )
    return (
        f"writing the checkpoint of step {step} to {step_dir(output_dir, step)} failed: {first_line}; "
        f"{root}: {space}; {kept}. The partial step-{step} files were removed."
    )


@contextmanager
def staged_checkpoint(output_dir: str | Path, step: int) -> Iterator[Path]:
    """A fresh staging folder for step `step` (see `staging_dir`); the caller writes everything into
    it, then `commit`s. If writing fails, the staging folder is removed (it may fill what is left of
    a full disk) and `CheckpointSaveError` says which checkpoint failed, why, and what is still
    there (the previous checkpoint and the tracker are untouched)."""
    staged = staging_dir(output_dir, step)
    try:
        yield staged
    except Exception as e:
        shutil.rmtree(staged, ignore_errors=True)
        raise CheckpointSaveError(describe_save_failure(output_dir, step, e)) from e


def commit(output_dir: str | Path, step: int, staged: Path, keep_last: int) -> Path:
    """Rename the staged folder into place, update the tracker, then prune old checkpoints."""
    final = step_dir(output_dir, step)
    if final.exists():
        shutil.rmtree(final)
    staged.rename(final)
    atomic_write_text(checkpoint_root(output_dir) / TRACKER, f"{step}\n")
    if keep_last > 0:
        for old in saved_steps(output_dir)[:-keep_last]:
            shutil.rmtree(step_dir(output_dir, old), ignore_errors=True)
    return final
