"""Atomic file writes: a reader never sees a half-written file, a crash never leaves one.

Temporaries are named `.<name>.<writer pid>.<random>[.tmp]` beside the target. A writer killed
mid-write (SIGKILL runs no cleanup) leaves its temporary behind; the next write of the same target
removes the temporaries of writers that are no longer alive.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def remove_stale_temporaries(path: Path) -> list[Path]:
    """Remove the temporaries of `path` left by writers that died mid-write; return what was removed."""
    prefix = f".{path.name}."
    removed = []
    if not path.parent.is_dir():
        return removed
    for entry in path.parent.iterdir():
        if not entry.name.startswith(prefix):
            continue
        pid = entry.name[len(prefix) :].split(".", 1)[0]
        if not pid.isdigit() or _alive(int(pid)):
            continue  # not a temporary of ours, or its writer is still at work (this process included)
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        removed.append(entry)
    return removed


def _temp_prefix(path: Path) -> str:
    return f".{path.name}.{os.getpid()}."


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> Path:
    """Call `write(tmp_path)` on a temporary name in the same folder, then rename over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(path), suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        # mkstemp creates 0600; give the file the permissions a plain open() would (umask applied).
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    def _write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())

    return atomic_write(path, _write)


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def atomic_write_jsonl(path: str | os.PathLike, rows: list[dict]) -> Path:
    return atomic_write_text(
        path, "".join(json.dumps(r, ensure_ascii=False, default=str) + "\n" for r in rows)
    )


# Written into every folder `atomic_dir` creates: the proof that the project made the folder, so a
# later build may replace it. A folder without it (a user's) is never deleted without `overwrite`.
MARKER_FILE = ".written-by-rzero"
_MARKER_TEXT = (
    "This folder was written by the R-Zero project (verl/utils/fs.py atomic_dir).\n"
    "A rebuild into this folder replaces it; delete this file to protect the folder.\n"
)


class UnsafeTargetError(ValueError):
    """A folder-replacing write was refused: the target holds what the project did not write, or is
    a folder that must never be replaced (the working directory, a parent of it, home, /)."""


def check_replaceable(path: str | os.PathLike, overwrite: bool = False) -> Path:
    """Refuse a target folder that a rebuild must not replace; return it as a Path.

    Refused always: "" (an unset shell variable), "/", the home folder, the working directory and its
    parents. Refused unless `overwrite`: an existing non-empty folder without the project's marker
    (`MARKER_FILE`), or an existing file. Called before any work, so the refusal comes first.
    """
    if str(path).strip() == "":
        raise UnsafeTargetError(
            "the output folder is empty (an unset variable?): name a folder, e.g. --out storage/my-model"
        )
    target = Path(path)
    resolved = target.resolve()
    cwd = Path.cwd().resolve()
    home = Path.home().resolve()
    if resolved == Path(resolved.anchor) or resolved == home or cwd.is_relative_to(resolved):
        raise UnsafeTargetError(
            f"refusing to replace {resolved} (given as {str(path)!r}): it is / , the home folder, the "
            f"working directory or a parent of it; name a new sub-folder instead, e.g. {target / 'model'}"
        )
    if overwrite or not (target.exists() or target.is_symlink()):
        return target
    if not target.is_dir() or target.is_symlink():
        raise UnsafeTargetError(
            f"{target} exists and is not a folder the project wrote: choose another output path, "
            "remove it yourself, or pass --overwrite (overwrite=True) to replace it"
        )
    if any(target.iterdir()) and not (target / MARKER_FILE).is_file():
        raise UnsafeTargetError(
            f"{target} is a non-empty folder that the project did not write (no {MARKER_FILE} in it): "
            "choose another output path, empty or remove it yourself, or pass --overwrite "
            "(overwrite=True) to replace it and everything in it"
        )
    return target


def add_overwrite_argument(parser: Any) -> None:
    """The `--overwrite` flag of every command that writes a model folder (`check_replaceable`)."""
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace --out even if it holds files the project did not write (they are deleted)",
    )


@contextmanager
def atomic_dir(path: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary folder beside `path`; on success it replaces `path` in one rename.

    A crash (or an exception) leaves `path` as it was and removes the temporary folder, so a reader
    never sees a half-written model folder. An existing `path` is replaced only if
    `check_replaceable` allows it (empty, or written by the project, or `overwrite`); it is renamed
    aside first and deleted only once the new folder is in place. The new folder carries
    `MARKER_FILE`, so the project may replace it later.
    """
    path = check_replaceable(path, overwrite)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    tmp = Path(tempfile.mkdtemp(prefix=_temp_prefix(path), dir=path.parent))
    try:
        yield tmp
        (tmp / MARKER_FILE).write_text(_MARKER_TEXT)
        tmp.chmod(0o755)  # mkdtemp creates 0700; a model folder should be readable like any other
        check_replaceable(path, overwrite)  # again: the target may have changed while we built
        aside = None
        if path.exists() or path.is_symlink():
            # A temporary's name (.<name>.<pid>.<8 random>): if this process dies before the
            # delete below, the next write of `path` removes it as a stale temporary.
            aside = path.parent / f"{_temp_prefix(path)}{secrets.token_hex(4)}"
            os.rename(path, aside)
        try:
            os.replace(tmp, path)
        except BaseException:
            if aside is not None:
                os.rename(aside, path)  # put the old folder back: the new one is not in place
            raise
        if aside is not None:
            if aside.is_dir() and not aside.is_symlink():
                shutil.rmtree(aside)
            else:
                aside.unlink()
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
