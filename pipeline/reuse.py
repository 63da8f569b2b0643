"""Another run's finished stages, reused where they are the very stage this run would launch
(`main.sh ... --reuse-from RUN_DIR`, pipeline setting `reuse_from`).

The paper's ablations share their first stages with the main loop: `no_filter` trains the same
iteration-1 Challenger and generates the same questions as `rzero`; `single_model` also labels them
with the same model. On 8 GPUs the Challenger stage alone is hours. A stage is reused only when the
other run holds it finished (its manifest) and the settings it was launched with (its
`stage_config.json`, written by the launcher) equal, field by field, the settings this run would
launch it with: the same models and inputs (a reused stage's outputs are the other run's, so
everything downstream compares against them), seeds, shapes and options. Anything else runs here.

The stage folder in this run is then a symbolic link to the other run's folder: nothing is copied,
and nothing in the other run is written (a finished stage is only read). The summary names the link.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

from infra.stage_kit import read_manifest, read_stage_config
from pipeline.launch import STAGE_CONFIG  # the launcher's record of a stage's settings
from verl.trainer.config import ConfigError

logger = logging.getLogger("driver")


def canonical(value: Any) -> Any:
    """A stage config as its stage_config.json reads back, with absolute paths resolved (the same
    folder named through a symlinked storage path compares equal)."""
    if is_dataclass(value) and not isinstance(value, type):
        value = asdict(value)
    value = json.loads(json.dumps(value, sort_keys=True, default=str))
    return _resolve_paths(value)


def _resolve_paths(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _resolve_paths(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_resolve_paths(v) for v in value]
    if isinstance(value, str) and value.startswith("/"):
        return os.path.realpath(value)
    return value


def check_reuse_source(source: str, run_dir: Path, base_model: str) -> Path:
    """The run folder `reuse_from` names, checked before anything starts."""
    path = Path(source).expanduser()
    record = path / "run.json"
    if not record.is_file():
        raise ConfigError(
            f"reuse_from={source}: no run.json there; give the folder of a run of this project "
            "($STORAGE_PATH/<TAG>)"
        )
    if path.resolve() == run_dir.resolve():
        raise ConfigError(f"reuse_from={source} is this run's own folder; name another run")
    other = json.loads(record.read_text()).get("base_model")
    if other != base_model:
        raise ConfigError(
            f"reuse_from={source} ran on base model {other}, this run on {base_model}: none of its "
            "stages could be reused; name a run of the same base model or leave reuse_from out"
        )
    return path


def differing_settings(recorded: dict, wanted: dict) -> list[str]:
    """Top-level settings of a stage config that differ (for the log)."""
    return sorted(k for k in set(recorded) | set(wanted) if recorded.get(k) != wanted.get(k))


def link_if_same(source_run: Path, run_dir: Path, rel: str, stage: str, build: Callable[[Path], Any]) -> bool:
    """Link `run_dir/rel` to `source_run/rel` when that is the finished `stage` this run would launch.

    build(stage_dir) gives the config this run would launch the stage with in `stage_dir`; it is built
    for the other run's folder, so that the stage's own paths compare equal. Returns True if linked.
    """
    out, other = run_dir / rel, source_run / rel
    if out.exists() or out.is_symlink():
        return False  # this run has (or is running) its own
    manifest = read_manifest(other)
    if manifest is None or manifest.get("stage") != stage or not (other / STAGE_CONFIG).is_file():
        return False
    recorded, wanted = canonical(read_stage_config(other / STAGE_CONFIG)), canonical(build(other))
    if recorded != wanted:
        logger.info(
            "%s: not reused from %s (other settings: %s)",
            rel,
            source_run,
            ", ".join(differing_settings(recorded, wanted)),
        )
        return False
    out.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(other.resolve(), out, target_is_directory=True)
    logger.info("%s: reused from %s (finished, launched with the same settings); nothing runs", rel, other)
    return True
