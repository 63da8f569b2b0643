"""Keys for optional services (Hugging Face, wandb): the environment first, then a local file.

Order: the environment variable (HF_TOKEN, WANDB_API_KEY, ...), then `tokens.local.json` beside
`tokens.json` (git-ignored: the place for a filled-in copy), then `tokens.json` (the committed,
empty template). A key read from a file that others can read is used, with a warning saying how
to fix the file's mode.
"""

from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path

LOCAL_TOKENS_NAME = "tokens.local.json"


class TokenFileError(ValueError):
    """A tokens file exists but cannot be read as a JSON object."""


def token_files(tokens_path: str | os.PathLike) -> list[Path]:
    """The files looked up for `tokens_path`, first one wins: tokens.local.json beside it, then it."""
    path = Path(tokens_path)
    return [path.with_name(LOCAL_TOKENS_NAME), path]


def _exposed(path: Path) -> bool:
    return bool(path.stat().st_mode & (stat.S_IRGRP | stat.S_IROTH))


def read_token(env_var: str | None, tokens_path: str | os.PathLike, key: str) -> str:
    """The value of `env_var`, else `key` of the first tokens file holding it (`token_files`);
    "" if none. Raises TokenFileError for a tokens file that is not a JSON object."""
    if env_var and (value := os.environ.get(env_var, "").strip()):
        return value
    for path in token_files(tokens_path):
        if not path.is_file():
            continue
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise TokenFileError(f"cannot read {path}: {e}") from e
        if not isinstance(data, dict):
            raise TokenFileError(f"cannot read {path}: not a JSON object")
        value = data.get(key, "")
        value = value.strip() if isinstance(value, str) else ""
        if value:
            if _exposed(path):
                print(
                    f"WARNING [tokens] {path} holds a key ('{key}') and other users can read it: "
                    f"run `chmod 600 {path}`, or set {env_var or 'the key'} in the environment instead",
                    file=sys.stderr,
                    flush=True,
                )
            return value
    return ""
