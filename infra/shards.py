"""The data-parallel shard runner: one engine per device group, each on a contiguous slice of the work.

Used by question generation and pseudo-labelling. A shard's output file is its completion mark
(written atomically), so an interrupted run redoes only the shards that had not finished. With GPUs
every shard runs in its own process (`python -m <module> --shard-spec SPEC --shard k`) with
CUDA_VISIBLE_DEVICES set to its group; the processes die with their parent (PR_SET_PDEATHSIG), and
take the engine processes they started with them (`infra.processes.die_with_parent`).
On a CPU machine a single shard runs in-process unless `isolate` asks for a subprocess; several CPU
shards (`EngineOptions.cpu_shards`) run at once, one process each, as on GPUs.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from infra.processes import die_with_parent, log_tail, parent_death_signal, stop_processes
from verl.utils.fs import atomic_write_json

logger = logging.getLogger(__name__)

_STOP_GRACE_S = 20.0  # between SIGTERM and SIGKILL when a run is aborted
_POLL_S = 1.0

ShardFn = Callable[[dict, int], None]


def shard_bounds(num_items: int, num_shards: int) -> list[tuple[int, int]]:
    """Contiguous [start, end) ranges covering `num_items`, sizes differing by at most one."""
    if num_shards < 1:
        raise ValueError(f"num_shards must be >= 1, got {num_shards}")
    base, extra = divmod(num_items, num_shards)
    bounds, start = [], 0
    for k in range(num_shards):
        end = start + base + (1 if k < extra else 0)
        bounds.append((start, end))
        start = end
    return bounds


def run_shards(
    module: str,
    shard_fn: ShardFn,
    spec: dict[str, Any],
    groups: Sequence[str | None],
    work_dir: Path,
    isolate: bool | None = None,
) -> list[int]:
    """Run every shard of `spec` whose output file (spec["shard_files"][k]) does not exist yet.

    `shard_fn(spec, k)` does one shard's work and writes spec["shard_files"][k] atomically. With GPUs
    or several shards (groups not [None]) or `isolate`, all shards run at once as subprocesses of `module` (whose
    `__main__` calls `shard_main`); the first writes to this terminal (its progress bar stands for
    all: shards are equal-sized), the others to <work_dir>/shard-k.log.

    Returns the shard indices that were run (the others were already complete). Raises
    RuntimeError naming the failed shards (with their log tails); the other shards are stopped.
    """
    shard_files = [Path(p) for p in spec["shard_files"]]
    if len(shard_files) != len(groups):
        raise ValueError(f"{len(shard_files)} shard files for {len(groups)} device groups")
    todo = [k for k, path in enumerate(shard_files) if not path.is_file()]
    if not todo:
        return []
    if groups == [None] and not isolate:  # one CPU engine: in this process
        for k in todo:
            shard_fn(spec, k)
        return todo

    spec = {**spec, "progress_shard": todo[0]}
    spec_path = atomic_write_json(work_dir / "spec.json", spec)
    procs, logs = _start_shards(module, spec_path, groups, todo, work_dir)
    try:
        failed = _wait_all(procs, shard_files)
    except BaseException:
        stop_processes(procs.values(), _STOP_GRACE_S)
        raise
    if failed:
        stop_processes(procs.values(), _STOP_GRACE_S)
        details = "\n".join(
            f"--- shard {k} (exit code {code}):\n{log_tail(logs[k]) if k in logs else '(output above)'}"
            for k, code in failed
        )
        raise RuntimeError(f"{len(failed)} of {len(todo)} shards failed:\n{details}")
    return todo


def _start_shards(
    module: str, spec_path: Path, groups: Sequence[str | None], todo: list[int], work_dir: Path
) -> tuple[dict[int, subprocess.Popen], dict[int, Path]]:
    preexec = parent_death_signal()
    procs: dict[int, subprocess.Popen] = {}
    logs: dict[int, Path] = {}
    try:
        for k in todo:
            env = dict(os.environ)
            if groups[k] is not None:
                env["CUDA_VISIBLE_DEVICES"] = str(groups[k])
            cmd = [sys.executable, "-m", module, "--shard-spec", str(spec_path), "--shard", str(k)]
            if k == todo[0]:
                procs[k] = subprocess.Popen(cmd, env=env, preexec_fn=preexec)
                continue
            logs[k] = work_dir / f"shard-{k:05d}.log"
            with open(logs[k], "w") as log_file:
                procs[k] = subprocess.Popen(
                    cmd, env=env, stdout=log_file, stderr=subprocess.STDOUT, preexec_fn=preexec
                )
    except BaseException:
        stop_processes(procs.values(), _STOP_GRACE_S)
        raise
    if logs:
        logger.info(
            "%d shard processes on devices %s; logs: %s/shard-*.log",
            len(procs),
            [groups[k] for k in todo],
            work_dir,
        )
    return procs, logs


def _wait_all(procs: dict[int, subprocess.Popen], shard_files: list[Path]) -> list[tuple[int, int | None]]:
    """Wait for every shard process; stop at the first failure. Returns [(shard, exit code)] of failures.

    A process that exits 0 without writing its shard file counts as failed.
    """
    running = dict(procs)
    while running:
        for k, proc in list(running.items()):
            try:
                code = proc.wait(_POLL_S)
            except subprocess.TimeoutExpired:
                continue
            del running[k]
            if code != 0 or not shard_files[k].is_file():
                return [(k, code)]
    return []


def shard_main(argv: Sequence[str] | None, shard_fn: ShardFn) -> NoReturn:
    """Entry point of a shard process: `--shard-spec SPEC --shard K`; exits the process."""
    # The runner started us with PR_SET_PDEATHSIG; this also takes down what the engine forks
    # (vLLM's engine core in multiprocess mode) when we are stopped or our parent dies.
    die_with_parent()
    parser = argparse.ArgumentParser(description="run one shard (internal)")
    parser.add_argument("--shard-spec", required=True)
    parser.add_argument("--shard", type=int, required=True)
    args = parser.parse_args(argv)
    spec = json.loads(Path(args.shard_spec).read_text())
    shard_fn(spec, args.shard)
    # The shard file is written and fsynced: skip the interpreter's teardown of vLLM and torch
    # (seconds per shard), which has nothing left to save.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def shard_timings(shard_files: Sequence[Path]) -> list[dict]:
    """The .meta.json of each shard (timings, token counts); {} where absent."""
    metas = []
    for path in shard_files:
        meta_path = path.with_suffix(".meta.json")
        metas.append(json.loads(meta_path.read_text()) if meta_path.is_file() else {})
    return metas
