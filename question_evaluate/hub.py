"""Optional upload of the Solver's training set to the Hugging Face Hub (off unless asked for).

The authors' pipeline *required* a hub round trip between stages; here the stages hand each other
local files and this upload is only a convenience (`--push-to-hub`). It needs:

- a namespace: env ``HUGGINGFACENAME``, else ``huggingface_name`` in tokens.local.json / tokens.json;
- a token: env ``HF_TOKEN``, else ``huggingface`` in tokens.local.json / tokens.json (project root).

Environment variables take precedence; tokens.local.json (git-ignored) over tokens.json (the
committed empty template); both files are optional.
"""

from __future__ import annotations

import os
from pathlib import Path

from verl.utils.tokens import TokenFileError, read_token

DEFAULT_TOKENS_PATH = Path(__file__).resolve().parents[1] / "tokens.json"


class HubConfigError(RuntimeError):
    """The push was asked for but the namespace or the token is missing."""


def resolve_hub_credentials(tokens_path: str | os.PathLike | None = None) -> tuple[str, str]:
    """(namespace, token) for pushing; HubConfigError naming what is missing and where to set it."""
    path = Path(tokens_path) if tokens_path is not None else DEFAULT_TOKENS_PATH
    try:  # the environment, then tokens.local.json, then tokens.json (verl/utils/tokens.py)
        namespace = read_token("HUGGINGFACENAME", path, "huggingface_name")
        token = read_token("HF_TOKEN", path, "huggingface")
    except TokenFileError as exc:
        raise HubConfigError(str(exc)) from exc
    missing = []
    if not namespace:
        missing.append("the hub user/organisation (env HUGGINGFACENAME or 'huggingface_name' in tokens.json)")
    if not token:
        missing.append("a write token (env HF_TOKEN or 'huggingface' in tokens.json)")
    if missing:
        raise HubConfigError(
            f"--push-to-hub needs {' and '.join(missing)}; tokens.json looked up at {path}. "
            "Drop --push-to-hub to keep the dataset local only (nothing else needs the hub)."
        )
    return namespace, token


def push_dataset(parquet_path: str | os.PathLike, repo_id: str, token: str, private: bool = True) -> str:
    """Push the parquet file as the `train` split of dataset `repo_id` (private by default); returns repo_id."""
    from datasets import Dataset

    Dataset.from_parquet(str(parquet_path)).push_to_hub(repo_id, split="train", private=private, token=token)
    return repo_id
