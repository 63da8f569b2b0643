"""The CPU KV cache size every engine entry point picks by itself (VLLM_CPU_KVCACHE_SPACE): enough
for a few full-length sequences of the model, within a quarter of the available memory, at least
1 GiB, and an explicit value always wins. The end-to-end check (scripts/evaluate.sh with the
variable unset) is in tests/test_eval_resume.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from infra.cpu_kvcache import (
    KVCACHE_ENV,
    available_memory_bytes,
    cpu_kvcache_space_gib,
    ensure_cpu_kvcache_env,
)
from solver_service.server import SolverService

GIB = 1 << 30
# Qwen3-4B's attention: 36 layers x 8 KV heads x 128 dims -> 288 KiB per token in float32.
QWEN3_4B = dict(
    num_attention_heads=32,
    num_key_value_heads=8,
    head_dim=128,
    hidden_size=2560,
    num_hidden_layers=36,
    max_position_embeddings=40960,
)


# The embedded tiny model's: 2 layers x 2 KV heads x 32 dims.
TINY = dict(num_attention_heads=4, num_key_value_heads=2, head_dim=32, hidden_size=128, num_hidden_layers=2)


def _model(folder: Path, config: dict) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config))
    return str(folder)


@pytest.fixture()
def big_model(tmp_path: Path) -> str:
    return _model(tmp_path / "big", QWEN3_4B)


def test_size_follows_the_model_and_the_available_memory(big_model: str, tmp_path: Path) -> None:
    tiny_model_dir = _model(tmp_path / "tiny", TINY)
    per_token = 2 * 36 * 8 * 128 * 4
    # 8 sequences of 8192 tokens = 18 GiB wanted: a quarter of 64 GiB caps it, a quarter of 200 does not.
    assert cpu_kvcache_space_gib(big_model, 8192, available_bytes=64 * GIB) == 16
    assert cpu_kvcache_space_gib(big_model, 8192, available_bytes=200 * GIB) == per_token * 8192 * 8 // GIB
    assert cpu_kvcache_space_gib(big_model, 8192, available_bytes=8 * GIB) == 2
    # No max_model_len: the model's own context length (40960 tokens) is what vLLM will use.
    assert cpu_kvcache_space_gib(big_model, None, available_bytes=1024 * GIB) == per_token * 40960 * 8 // GIB
    # The tiny model needs little: vLLM's minimum unit, 1 GiB, even on a machine short of memory.
    assert cpu_kvcache_space_gib(tiny_model_dir, 512, available_bytes=64 * GIB) == 1
    assert cpu_kvcache_space_gib(big_model, 8192, available_bytes=GIB) == 1
    assert cpu_kvcache_space_gib("org/not-a-local-folder", 8192, available_bytes=64 * GIB) == 1
    assert available_memory_bytes() > 0


def test_explicit_value_wins_and_servers_on_cpu_get_one(big_model: str, tmp_path: Path) -> None:
    env: dict[str, str] = {}
    picked = ensure_cpu_kvcache_env(big_model, 8192, env)
    assert env[KVCACHE_ENV] == picked and int(picked) >= 1
    env = {KVCACHE_ENV: "3"}
    assert ensure_cpu_kvcache_env(big_model, 8192, env) == "3" and env[KVCACHE_ENV] == "3"

    service = SolverService(big_model, tmp_path, None, max_model_len=8192)
    (server,) = service.servers
    explicit = SolverService(big_model, tmp_path, None, max_model_len=8192, env={KVCACHE_ENV: "5"})
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv(KVCACHE_ENV, raising=False)
        assert service.server_env(server)[KVCACHE_ENV] == str(cpu_kvcache_space_gib(big_model, 8192))
        assert explicit.server_env(explicit.servers[0])[KVCACHE_ENV] == "5"
        gpu = SolverService(big_model, tmp_path, ["0"], max_model_len=8192)
        assert KVCACHE_ENV not in gpu.server_env(gpu.servers[0])  # the variable is for CPU engines only
