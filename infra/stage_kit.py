"""The stage kit: manifests (the completion mark of a stage, written last, read by the next stage),
the skip check, settings fingerprints and jsonl reading.

`<stage_dir>/manifest.json` = {"stage", "status": "done", "inputs", "outputs", "config", "counts",
"timings_s", "notes", "finished_at", "peak_rss_mib"} (the stage process's peak RSS and its largest
finished child's, plus what the stage adds, e.g. each Solver server's). A stage writes all its
outputs first (atomically), then the manifest; a stage folder without a manifest is unfinished,
whatever else it holds. Downstream stages
take their input paths from `outputs` here, never from hard-coded step folders.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from verl.utils.fs import atomic_write_json
from verl.utils.process_memory import peak_rss_mib

MANIFEST = "manifest.json"

logger = logging.getLogger(__name__)


def write_manifest(
    stage_dir: str | Path,
    stage: str,
    outputs: dict[str, Any],
    inputs: dict[str, Any] | None = None,
    config: dict[str, Any] | None = None,
    counts: dict[str, Any] | None = None,
    timings_s: dict[str, float] | None = None,
    notes: list[str] | None = None,
    memory_mib: dict[str, Any] | None = None,
) -> Path:
    """Write the completion mark (call it after every output is in place).

    `memory_mib`: peak RSS of the stage's other processes (MiB), recorded beside its own."""
    record = {
        "stage": stage,
        "status": "done",
        "inputs": inputs or {},
        "outputs": outputs,
        "config": config or {},
        "counts": counts or {},
        "timings_s": timings_s or {},
        "notes": notes or [],
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "peak_rss_mib": {**peak_rss_mib(), **(memory_mib or {})},
    }
    return atomic_write_json(Path(stage_dir) / MANIFEST, record)


def read_manifest(stage_dir: str | Path) -> dict[str, Any] | None:
    """The manifest of a finished stage, or None when the stage has not finished."""
    path = Path(stage_dir) / MANIFEST
    if not path.is_file():
        return None
    record = json.loads(path.read_text())
    return record if record.get("status") == "done" else None


def is_done(stage_dir: str | Path) -> bool:
    return read_manifest(stage_dir) is not None


def require_output(stage_dir: str | Path, key: str) -> str:
    """An output path of a finished stage; a clear error when the stage has not finished."""
    record = read_manifest(stage_dir)
    if record is None:
        raise FileNotFoundError(f"{stage_dir} has no finished manifest ({MANIFEST}): run that stage first")
    if key not in record["outputs"]:
        raise KeyError(f"{stage_dir}/{MANIFEST} has no output '{key}' (outputs: {sorted(record['outputs'])})")
    return str(record["outputs"][key])


def finished_stage(stage_dir: str | Path, stage: str, requested: dict[str, Any] | None = None) -> dict | None:
    """The skip check of every stage: the finished manifest of `stage` in `stage_dir`, or None.

    A finished folder of another stage is an error (two stages never share a folder). When the stage
    is finished, say so, and name the requested settings that differ from the recorded ones.
    """
    manifest = read_manifest(stage_dir)
    if manifest is None:
        return None
    if manifest.get("stage") != stage:
        raise ValueError(
            f"{stage_dir} already holds the finished manifest of stage '{manifest.get('stage')}': "
            f"give the '{stage}' stage its own folder"
        )
    recorded = manifest.get("config", {})
    differ = sorted(k for k, v in (requested or {}).items() if k in recorded and recorded[k] != v)
    logger.info("%s: %s is already done (%s); skipping", stage, stage_dir, MANIFEST)
    if differ:
        logger.warning(
            "%s: the finished run used other settings for %s; delete %s to redo it",
            stage,
            ", ".join(differ),
            Path(stage_dir) / MANIFEST,
        )
    return manifest


def fingerprint(config: dict[str, Any]) -> str:
    """Short stable hash of a settings dict (names work folders of one configuration)."""
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:12]


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def write_stage_config(path: str | Path, config: Any) -> Path:
    """The stage-launch convention: the driver writes a stage's settings (a dataclass) as json, and
    runs `python -m <stage> --config FILE`."""
    from dataclasses import asdict, is_dataclass

    return atomic_write_json(Path(path), asdict(config) if is_dataclass(config) else dict(config))


def read_stage_config(path: str | Path) -> dict[str, Any]:
    """The settings a stage was launched with (see `write_stage_config`)."""
    return json.loads(Path(path).read_text())


# Exit status of a stage stopped by Ctrl-C (128 + SIGINT, as a shell reports it).
EXIT_INTERRUPTED = 130


def stage_entry(main: Callable[[], int], name: str) -> int:
    """Run a stage's `main`; Ctrl-C ends it with one line and EXIT_INTERRUPTED instead of a
    traceback (the driver, which got the same Ctrl-C, says how to resume)."""
    try:
        return main()
    except KeyboardInterrupt:
        print(f"{name}: interrupted", file=sys.stderr, flush=True)
        return EXIT_INTERRUPTED
