"""Helpers of the fault-injection suite (tests/test_fault_*.py): start `scripts/main.sh` in its own
session, wait for a marked point, SIGKILL the whole process group, and check what the attempt left.

Every process of an attempt carries `RZERO_FAULT_ATTEMPT=<id>` in its environment (inherited by the
stage processes, vLLM servers and engines, Ray's raylet and workers, grader workers), so the
processes of an attempt are found in /proc even when they left the driver's process group or were
re-parented. Temporary names are those of `verl/utils/fs.py` (`.<name>.<random>.tmp` files,
`.<name>.<random>` folders) and of `verl/utils/checkpoint.py` (`.global_step_<k>.partial`).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
MAIN_SH = ROOT / "scripts" / "main.sh"
ATTEMPT_ENV = "RZERO_FAULT_ATTEMPT"
# atomic_write: mkstemp(prefix=".<name>.", suffix=".tmp"); atomic_dir: mkdtemp(prefix=".<name>.")
# (8 random characters); checkpoint staging: .global_step_<k>.partial.
TEMP_FILE = re.compile(r"^\..+\.[A-Za-z0-9_]{8}\.tmp$")
TEMP_DIR = re.compile(r"^\..+\.[A-Za-z0-9_]{8}$")
PARTIAL_CHECKPOINT = re.compile(r"^\.global_step_\d+\.partial$")
# Keys of metrics.jsonl that measure wall time, not the computation.
TIMING_PREFIXES = ("timing_s/", "perf/")


# ---- processes --------------------------------------------------------------------------------


def _stat_fields(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name (state is [0], start time is [19])."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(errors="replace")
    except OSError:
        return None
    return stat[stat.rfind(")") + 2 :].split()


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return "?"


@dataclass(frozen=True)
class Proc:
    pid: int
    start_ticks: int  # process start time: a reused PID has another one
    cmdline: str


def attempt_processes(attempt_id: str) -> list[Proc]:
    """Live (non-zombie) processes whose environment carries this attempt's id."""
    needle = f"{ATTEMPT_ENV}={attempt_id}".encode()
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes()
        except OSError:
            continue  # gone, or not ours to read
        if needle not in environ.split(b"\0"):
            continue
        fields = _stat_fields(pid)
        if fields is None or fields[0] in ("Z", "X"):
            continue  # a zombie holds no resources (and PID 1 of a container may never reap it)
        found.append(Proc(pid, int(fields[19]), _cmdline(pid)))
    return found


def wait_until_gone(procs: list[Proc], timeout_s: float) -> list[Proc]:
    """Poll until none of `procs` is alive (same PID and start time, not a zombie); the survivors."""
    deadline = time.monotonic() + timeout_s
    while True:
        alive = []
        for p in procs:
            fields = _stat_fields(p.pid)
            if fields is not None and int(fields[19]) == p.start_ticks and fields[0] not in ("Z", "X"):
                alive.append(p)
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.5)  # polling /proc: process exit has no other signal we can wait on here


def kill_stragglers(procs: list[Proc]) -> None:
    """Clean-up after a failed check: SIGKILL exactly these processes (by PID and start time)."""
    for p in procs:
        fields = _stat_fields(p.pid)
        if fields is not None and int(fields[19]) == p.start_ticks:
            with contextlib.suppress(ProcessLookupError):
                os.kill(p.pid, signal.SIGKILL)


# ---- running the driver -----------------------------------------------------------------------


@dataclass
class Attempt:
    """One run of `bash scripts/main.sh ARGS` in its own session, logging to `log`."""

    proc: subprocess.Popen
    log: Path
    attempt_id: str
    started: float = field(default_factory=time.monotonic)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def tail(self, chars: int = 6000) -> str:
        return self.log_text()[-chars:]


def driver_env(storage: Path, attempt_id: str, extra: dict[str, str] | None = None) -> dict[str, str]:
    return {
        **os.environ,
        "STORAGE_PATH": str(storage),
        "RZERO_SKIP_SETUP": "1",
        ATTEMPT_ENV: attempt_id,
        **(extra or {}),
    }


def start(cmd: list[str], storage: Path, log: Path, cwd: Path) -> Attempt:
    """Start `cmd` in its own session (so that a kill of its process group reaches the whole job)."""
    attempt_id = uuid.uuid4().hex
    with open(log, "w") as out:
        proc = subprocess.Popen(
            cmd,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=driver_env(storage, attempt_id),
            cwd=cwd,
            start_new_session=True,
        )
    return Attempt(proc, log, attempt_id)


def start_driver(args: list[str], storage: Path, log: Path, cwd: Path) -> Attempt:
    return start(["bash", str(MAIN_SH), *args], storage, log, cwd)


def run_to_end(cmd: list[str], storage: Path, log: Path, cwd: Path, timeout_s: float) -> Attempt:
    """Run `cmd` to its end (a rerun); a run that overstays is killed and fails the test."""
    attempt = start(cmd, storage, log, cwd)
    try:
        attempt.proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        kill_attempt(attempt)
        raise AssertionError(f"the run did not finish in {timeout_s:.0f} s:\n{attempt.tail()}") from None
    return attempt


def run_driver(args: list[str], storage: Path, log: Path, cwd: Path, timeout_s: float) -> Attempt:
    return run_to_end(["bash", str(MAIN_SH), *args], storage, log, cwd, timeout_s)


def wait_for(attempt: Attempt, condition: Callable[[], Any], what: str, timeout_s: float, poll_s=0.2) -> Any:
    """Poll `condition` (a file or log line marking a point) until truthy; fail if the run ends first."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if attempt.proc.poll() is not None:
            raise AssertionError(
                f"the run exited ({attempt.proc.returncode}) before {what}:\n{attempt.tail()}"
            )
        if time.monotonic() > deadline:
            kill_attempt(attempt)
            raise AssertionError(f"no {what} within {timeout_s:.0f} s:\n{attempt.tail()}")
        time.sleep(poll_s)  # polling files / the log: the readiness signals here are files


def kill_attempt(attempt: Attempt) -> list[Proc]:
    """SIGKILL the attempt's whole process group; returns its processes as they were at the kill."""
    procs = attempt_processes(attempt.attempt_id)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(attempt.proc.pid, signal.SIGKILL)
    attempt.proc.wait()
    return procs


def assert_no_process_left(
    attempt: Attempt, timeout_s: float = 90.0, what: str = "the killed attempt"
) -> None:
    """Every process of the attempt exits within `timeout_s` (bounded poll); survivors are named,
    then killed so that they do not disturb the next test."""
    survivors = wait_until_gone(attempt_processes(attempt.attempt_id), timeout_s)
    if survivors:
        kill_stragglers(survivors)
        raise AssertionError(
            f"{len(survivors)} process(es) of {what} still alive {timeout_s:.0f} s later:\n"
            + "\n".join(f"  pid {p.pid}: {p.cmdline[:200]}" for p in survivors)
        )


# ---- what a run leaves on disk ----------------------------------------------------------------


def temporary_leftovers(root: Path) -> list[Path]:
    """Temporary files and folders of the atomic writers, and staged checkpoints, under `root`."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        for name in filenames:
            if TEMP_FILE.match(name):
                found.append(Path(dirpath) / name)
        for name in list(dirnames):
            if PARTIAL_CHECKPOINT.match(name) or TEMP_DIR.match(name):
                found.append(Path(dirpath) / name)
                dirnames.remove(name)
    return found


def unreadable_files(root: Path) -> list[str]:
    """json / jsonl / parquet / safetensors files under `root` that do not parse completely
    (a half-written file); Ray's and vLLM's own logs are not looked at."""
    bad = []
    for path in root.rglob("*"):
        if not path.is_file() or TEMP_FILE.match(path.name):
            continue
        try:
            if path.suffix == ".json":
                json.loads(path.read_text())
            elif path.suffix == ".jsonl":
                # file iteration splits at "\n" only, as the project's readers do (str.splitlines
                # would also split inside a string holding U+0085 or U+2028)
                with open(path, encoding="utf-8") as f:
                    for line in f:
                        if line.strip():
                            json.loads(line)
            elif path.suffix == ".parquet":
                import pyarrow.parquet as pq

                pq.read_table(path)
            elif path.suffix == ".safetensors":
                from safetensors import safe_open

                with safe_open(str(path), "pt") as f:
                    for key in f.keys():  # noqa: SIM118 (safe_open has no __iter__)
                        f.get_tensor(key)
        except Exception as e:  # any parse error is the finding
            bad.append(f"{path}: {type(e).__name__}: {e}")
    return bad


def manifests(root: Path) -> dict[str, dict]:
    """Every manifest.json under `root`, keyed by its folder relative to `root`."""
    return {str(p.parent.relative_to(root)): json.loads(p.read_text()) for p in root.rglob("manifest.json")}


def missing_manifest_files(root: Path) -> list[str]:
    """Paths named in a manifest's outputs (and inputs under `root`) that do not exist."""
    missing = []
    for where, manifest in manifests(root).items():
        for section in ("outputs", "inputs"):
            for key, value in (manifest.get(section) or {}).items():
                if not isinstance(value, str) or not value.startswith("/"):
                    continue
                if section == "inputs" and not value.startswith(str(root)):
                    continue
                if not Path(value).exists():
                    missing.append(f"{where}/manifest.json {section}.{key} = {value}")
    return missing


def check_storage_clean(root: Path) -> None:
    """No temporary or half-written file under `root`, and every manifest names files that exist."""
    leftovers = temporary_leftovers(root)
    assert not leftovers, f"temporary files left: {leftovers}"
    bad = unreadable_files(root)
    assert not bad, "half-written files:\n" + "\n".join(bad)
    missing = missing_manifest_files(root)
    assert not missing, "manifests name missing files:\n" + "\n".join(missing)


# ---- preparing a run from another one -----------------------------------------------------------


def copy_run(src_storage: Path, dst_storage: Path, tag: str, keep_stages: list[str]) -> None:
    """A new storage holding the base model and, of iteration 1, only `keep_stages` of `src_storage`
    (plus `eval_base`), with every path inside rewritten to the new storage: the later stages then
    run again from the same inputs."""
    dst_storage.mkdir(parents=True, exist_ok=True)
    for name in os.listdir(src_storage):
        if name != tag:
            shutil.copytree(src_storage / name, dst_storage / name, symlinks=True)
    src_run, dst_run = src_storage / tag, dst_storage / tag
    (dst_run / "iter_1").mkdir(parents=True)
    shutil.copy2(src_run / "run.json", dst_run / "run.json")
    if (src_run / "eval_base").is_dir():
        shutil.copytree(src_run / "eval_base", dst_run / "eval_base")
    for stage in keep_stages:  # those the source ran (the demo may not evaluate)
        if (src_run / "iter_1" / stage).is_dir():
            shutil.copytree(src_run / "iter_1" / stage, dst_run / "iter_1" / stage)
    old, new = str(src_storage), str(dst_storage)
    for path in dst_run.rglob("*.json"):
        text = path.read_text()
        if old in text:
            path.write_text(text.replace(old, new))


# ---- comparing two runs -------------------------------------------------------------------------


def comparable_metrics(path: Path) -> list[dict]:
    from verl.utils.logger import read_metrics

    return [{k: v for k, v in m.items() if not k.startswith(TIMING_PREFIXES)} for m in read_metrics(path)]


def normalised(value: Any, storage: Path) -> Any:
    """`value` (json-like) with the storage root replaced by a placeholder."""
    return json.loads(json.dumps(value, default=str).replace(str(storage), "<storage>"))


# ---- malformed Challenger outputs ---------------------------------------------------------------

# The five malformed outputs of the issue, as the Challenger could hand them over.
BINARY = bytes(range(256)).decode("latin-1") + "\ufffd\x00\x1b[31m"
MALFORMED = {
    # rambles until max_tokens, never writes a question block
    "long_output": ("I will think about a question. " * 3300)[:100_000],
    "binary": f"<question>What is {BINARY} plus 3?</question> \\boxed{{7}}",
    "unbalanced": "<question>Solve {x + {y = 2 for {x</question> The answer is \\boxed{{12}",
    "long_question": "<question>" + ("seven " * 8400)[:50_000] + "</question> \\boxed{7}",
    "empty": "",
}
# finish_reason and token count as the engine would report them
FINISH = {"long_output": ("length", 4096), "empty": ("stop", 0)}
NORMAL = [
    "<question>Ada has 12 apples and buys 5 more. How many apples does she have?</question> \\boxed{17}",
    "<question>What is 6 times 7?</question> \\boxed{42}",
    "<question>Ben has 30 cards and gives away 8. How many are left?</question> \\boxed{22}",
]


def raw_outputs() -> list[str]:
    return [*NORMAL, *MALFORMED.values()]


def write_generation_shard(config, texts: list[str], names: list[str] | None = None) -> Path:
    """The shard file the generation stage would write for these samples (its completion mark), built
    with the stage's own row builder; the stage run afterwards reuses it."""
    from infra.vllm_engines import Sample
    from question_generate.generate import _question_row, shards_folder

    work = shards_folder(config, num_shards=1, on_gpu=False)
    names = names or [f"normal{i}" for i in range(len(NORMAL))] + list(MALFORMED)
    rows = []
    for i, (name, text) in enumerate(zip(names, texts)):
        reason, tokens = FINISH.get(name, ("stop", max(1, len(text) // 4)))  # tokens: a rough count
        rows.append(_question_row(i, Sample(text, reason, tokens), 0, config.profile))
    work.mkdir(parents=True, exist_ok=True)
    shard = work / "questions-00000-of-00001.jsonl"
    shard.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return shard
