"""Offline without HF_HUB_OFFLINE (a node with no route to the hub): the preflight asks the hub once,
briefly, then checks only local folders and the HF cache; no call spends a minute retrying with a
warning per retry (measured before: 53-65 s and 40 lines of retry warnings for a dry run)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import infra.preflight as preflight


def _closed_port() -> int:
    with socket.socket() as s:  # bound then closed: nothing listens there
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _offline_env(tmp_path: Path) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE")
    }
    return env | {
        "HF_ENDPOINT": f"http://127.0.0.1:{_closed_port()}",  # refused at once, as an unreachable hub
        "HF_HOME": str(tmp_path / "hf_home"),  # an empty cache
        "STORAGE_PATH": str(tmp_path / "storage"),
        "CUDA_VISIBLE_DEVICES": "",
    }


def test_dry_run_probes_the_hub_once_and_prints_no_retries(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline.driver", "Qwen/Qwen3-4B-Base", "qwen3-4b", "--dry-run"],
        capture_output=True, text=True, env=_offline_env(tmp_path), timeout=300,
    )  # fmt: skip
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert "the Hugging Face hub cannot be reached (127.0.0.1:" in out
    assert "only local folders and the HF cache are checked" in out
    assert "Retry" not in out and "thrown while requesting" not in out  # huggingface_hub's retry noise
    # the findings still name the model, with a fix
    assert "base model 'Qwen/Qwen3-4B-Base': the hub cannot be reached" in out


def test_probe_answers_for_a_listening_endpoint(monkeypatch) -> None:
    from huggingface_hub import constants

    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{server.getsockname()[1]}")
        preflight.hub_unreachable.cache_clear()
        try:
            assert preflight.hub_unreachable() is None
        finally:
            preflight.hub_unreachable.cache_clear()
    monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{_closed_port()}")
    try:
        assert "Connection refused" in (preflight.hub_unreachable() or "")
    finally:
        preflight.hub_unreachable.cache_clear()
