"""Experiment loggers: console, metrics.jsonl, TensorBoard and (optional) Weights & Biases.

`Tracker` fans one `log(metrics, step)` call out to every backend listed. The jsonl file is the
record of truth: one fsync'ed line per step, so a crash loses nothing, and a resumed run first drops
the lines of the steps it is about to redo. W&B is strictly optional: without the package, a key or
a login, the run goes on with a single warning.
"""

from __future__ import annotations

import json
import math
import netrc
import numbers
import os
import sys
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from verl.utils.fs import atomic_write_jsonl, atomic_write_text
from verl.utils.tokens import TokenFileError, read_token

VALID_LOGGERS = ("console", "jsonl", "tensorboard", "wandb")
METRICS_FILE = "metrics.jsonl"
# tokens.json at the project root (optional; see its _comment). Env variables take precedence.
DEFAULT_TOKENS_PATH = Path(__file__).resolve().parents[2] / "tokens.json"


def _warn(message: str) -> None:
    print(f"WARNING [logger] {message}", file=sys.stderr, flush=True)


def _to_number(value: Any) -> int | float | None:
    """int/float for numeric values (Python, numpy, 1-element tensors); None for anything else."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    if hasattr(value, "item"):  # numpy arrays / torch tensors; item() refuses > 1 element
        try:
            return _to_number(value.item())
        except (TypeError, ValueError, RuntimeError):
            return None
    return None


def read_metrics(path: str | os.PathLike) -> list[dict]:
    """Rows of a metrics.jsonl file, in file order (`null` where a value was NaN/inf).

    A last line without its newline is what a crash mid-write leaves behind: it is ignored. Any
    other malformed line is an error.
    """
    lines = Path(path).read_text(encoding="utf-8").split("\n")
    rows = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            if i == len(lines) - 1:
                break
            raise ValueError(f"{path}:{i + 1}: malformed metrics line {line[:80]!r}") from None
    return rows


def find_wandb_key(tokens_path: str | os.PathLike | None = None) -> str | None:
    """The W&B API key from WANDB_API_KEY, else the `wandb` entry of tokens.local.json or
    tokens.json; None if none."""
    path = Path(tokens_path) if tokens_path is not None else DEFAULT_TOKENS_PATH
    try:  # the environment, then tokens.local.json, then tokens.json (verl/utils/tokens.py)
        return read_token("WANDB_API_KEY", path, "wandb") or None
    except TokenFileError as e:
        _warn(f"{e}; ignoring it")
        return None


def has_wandb_login() -> bool:
    """True when wandb would find credentials by itself: a netrc entry for its host, or a token file."""
    if os.environ.get("WANDB_IDENTITY_TOKEN_FILE"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname
    path = Path(os.environ.get("NETRC", "~/.netrc")).expanduser()
    if not host or not path.is_file():
        return False
    try:
        entry = netrc.netrc(path).authenticators(host)
    except (OSError, netrc.NetrcParseError):
        return False
    return bool(entry and entry[2])


class Tracker:
    """Log scalar metrics per step to the backends named in `loggers`.

    `resume_step=k` (a run restarting at step k) drops metrics.jsonl lines of steps >= k and hides
    TensorBoard events of steps >= k, so redone steps are not recorded twice.
    """

    def __init__(
        self,
        loggers: list[str] | str,
        output_dir: str | os.PathLike,
        project_name: str,
        experiment_name: str,
        config: dict | None = None,
        *,
        resume_step: int | None = None,
        tokens_path: str | os.PathLike | None = None,
    ) -> None:
        if isinstance(loggers, str):  # "console,jsonl" from a command line
            loggers = [name.strip() for name in loggers.split(",") if name.strip()]
        unknown = [name for name in loggers if name not in VALID_LOGGERS]
        if unknown:
            raise ValueError(f"unknown logger(s) {unknown}; valid names are {list(VALID_LOGGERS)}")
        self.loggers = list(dict.fromkeys(loggers))  # de-duplicated, order kept
        self.output_dir = Path(output_dir)
        self._warned_keys: set[str] = set()
        self._closed = False
        self._jsonl = self._tb = self._wandb_run = None
        if "jsonl" in self.loggers:
            self._jsonl = self._open_jsonl(resume_step)
        if "tensorboard" in self.loggers:
            from torch.utils.tensorboard import SummaryWriter  # lazy: imports tensorboard

            # purge_step hides events >= resume_step left by the interrupted run.
            self._tb = SummaryWriter(log_dir=str(self.output_dir / "tensorboard"), purge_step=resume_step)
        if "wandb" in self.loggers:
            self._wandb_run = self._init_wandb(project_name, experiment_name, config, tokens_path)

    @property
    def metrics_path(self) -> Path:
        return self.output_dir / METRICS_FILE

    def _open_jsonl(self, resume_step: int | None):
        path = self.metrics_path
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists():
            rows = read_metrics(path)
            torn_tail = path.stat().st_size > 0 and not path.read_bytes().endswith(b"\n")
            if resume_step is not None:
                rows = [r for r in rows if r.get("step", -1) < resume_step]
            if resume_step is not None or torn_tail:
                # Rewrite atomically: a crash here leaves either the old file or the new one.
                atomic_write_jsonl(path, rows)
        return open(path, "a", encoding="utf-8")  # held open for the whole run

    def _init_wandb(self, project: str, name: str, config: dict | None, tokens_path):
        mode = os.environ.get("WANDB_MODE", "").strip().lower()
        if mode == "disabled":
            _warn("WANDB_MODE=disabled: not logging to wandb")
            return None
        key = find_wandb_key(tokens_path)
        # Offline runs need no credentials (they are synced later with `wandb sync`).
        if key is None and mode != "offline" and not has_wandb_login():
            _warn(
                "wandb is listed but no API key was found (WANDB_API_KEY, the 'wandb' entry of "
                "tokens.json, or `wandb login`): continuing without wandb"
            )
            return None
        try:
            import wandb
        except ImportError:
            _warn("wandb is listed but the package is not installed: continuing without wandb")
            return None
        # The same run id across restarts, so a resumed run continues its own charts.
        id_file = self.output_dir / "wandb_run_id"
        run_id = id_file.read_text().strip() if id_file.is_file() else uuid.uuid4().hex[:12]
        settings = wandb.Settings(api_key=key) if key and not os.environ.get("WANDB_API_KEY") else None
        try:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            run = wandb.init(
                project=project,
                name=name,
                config=config,
                dir=str(self.output_dir),
                id=run_id,
                resume="allow",
                settings=settings,
            )
        except Exception as e:  # auth, network, server errors: a logger must not end the run
            _warn(f"wandb.init failed ({type(e).__name__}: {e}): continuing without wandb")
            return None
        if not id_file.is_file():
            atomic_write_text(id_file, run_id + "\n")
        return run

    def _numeric(self, metrics: dict[str, Any]) -> dict[str, int | float]:
        out = {}
        for key, value in metrics.items():
            number = _to_number(value)
            if number is None:
                if str(key) not in self._warned_keys:  # once per key, not once per step
                    self._warned_keys.add(str(key))
                    _warn(f"metric {key!r} is not numeric ({type(value).__name__}); not logged")
                continue
            if str(key) != "step":  # the step is the row's own key
                out[str(key)] = number
        return out

    def log(self, metrics: dict[str, Any], step: int) -> None:
        """Record `metrics` for `step` in every backend; non-numeric values are skipped."""
        if self._closed:
            raise RuntimeError("Tracker.log called after finish()")
        data = self._numeric(metrics)
        if "console" in self.loggers:
            print(format_console_line(data, step), flush=True)
        if self._jsonl is not None:
            row = {"step": step}
            row.update({k: (v if math.isfinite(v) else None) for k, v in data.items()})
            self._jsonl.write(json.dumps(row, ensure_ascii=False, allow_nan=False) + "\n")
            self._jsonl.flush()
            os.fsync(self._jsonl.fileno())
        if self._tb is not None:
            for key, value in data.items():
                self._tb.add_scalar(key, value, global_step=step)
            self._tb.flush()
        if self._wandb_run is not None:
            try:
                self._wandb_run.log(data, step=step)
            except Exception as e:  # a wandb outage must not stop training; the jsonl still has it
                _warn(f"wandb.log failed ({type(e).__name__}: {e}): wandb logging stopped")
                self._wandb_run = None

    def finish(self) -> None:
        """Flush and close every backend; calling it again is harmless."""
        if self._closed:
            return
        self._closed = True
        if self._jsonl is not None:
            self._jsonl.close()
        if self._tb is not None:
            self._tb.close()
        if self._wandb_run is not None:
            self._wandb_run.finish()

    def __enter__(self) -> Tracker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.finish()


def format_console_line(metrics: dict[str, int | float], step: int) -> str:
    """`step 3 | reward/mean 0.412 | timing_s/step 2.31`: keys sorted, floats to 4 significant digits."""
    parts = [f"step {step}"]
    for key in sorted(metrics):
        value = metrics[key]
        parts.append(f"{key} {value}" if isinstance(value, int) else f"{key} {value:.4g}")
    return " | ".join(parts)
