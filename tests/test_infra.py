"""The shared layer's pure pieces: visible GPUs, device groups, shard bounds, seeds, the stage kit."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from infra.devices import device_groups, parse_devices, visible_gpus
from infra.shards import shard_bounds
from infra.stage_kit import fingerprint, finished_stage, read_stage_config, write_manifest, write_stage_config
from infra.vllm_engines import EngineOptions, request_seed


def test_visible_gpus_follow_cuda_visible_devices(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,5")
    assert visible_gpus() == ["2", "5"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert visible_gpus() == []
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "-1")
    assert visible_gpus() == []


def test_device_groups(monkeypatch: pytest.MonkeyPatch) -> None:
    assert device_groups([]) == [None]  # CPU: one engine
    assert device_groups(["0", "1", "2", "3"]) == ["0", "1", "2", "3"]
    assert device_groups(["0", "1", "2", "3"], tensor_parallel_size=2) == ["0,1", "2,3"]
    assert device_groups(["4", "5", "6", "7"], tensor_parallel_size=4) == ["4,5,6,7"]
    with pytest.raises(ValueError, match="tensor-parallel groups of 2"):
        device_groups(["0", "1", "2"], tensor_parallel_size=2)
    # max_groups = data-parallel size (evaluation's --data-parallel-size)
    assert device_groups(["4", "5", "6"], 1, max_groups=2) == ["4", "5"]
    with pytest.raises(ValueError, match="needs 12 GPUs"):
        device_groups([str(i) for i in range(8)], 4, max_groups=3)
    # None = every visible GPU.
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1,2,3")
    assert device_groups(None, 2) == ["0,1", "2,3"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert device_groups(None) == [None]


def test_parse_devices() -> None:
    assert parse_devices(None) is None and parse_devices("") is None
    assert parse_devices("cpu") == [] and parse_devices("none") == []
    assert parse_devices("0, 1,3") == ["0", "1", "3"]


def test_shard_bounds_cover_the_items_in_order() -> None:
    assert shard_bounds(10, 3) == [(0, 4), (4, 7), (7, 10)]
    assert shard_bounds(8000, 8) == [(i * 1000, (i + 1) * 1000) for i in range(8)]
    assert shard_bounds(2, 4) == [(0, 1), (1, 2), (2, 2), (2, 2)]
    with pytest.raises(ValueError):
        shard_bounds(5, 0)
    for n in range(0, 30):
        for parts in range(1, 6):
            bounds = shard_bounds(n, parts)
            assert bounds[0][0] == 0 and bounds[-1][1] == n
            assert all(a[1] == b[0] for a, b in itertools.pairwise(bounds))
            sizes = [e - s for s, e in bounds]
            assert max(sizes) - min(sizes) <= 1


def test_request_seeds_are_stable_and_distinct() -> None:
    seeds = [request_seed(0, 0, i) for i in range(1000)]
    assert seeds == [request_seed(0, 0, i) for i in range(1000)]
    assert len(set(seeds)) == 1000 and all(0 <= s < 2**31 for s in seeds)
    # Another run seed or another stage's stream is not a shifted copy of this one.
    assert not set(seeds) & {request_seed(1, 0, i) for i in range(1000)}
    assert not set(seeds) & {request_seed(0, 1, i) for i in range(1000)}


def test_skip_check_and_stage_config_round_trip(tmp_path: Path) -> None:
    assert finished_stage(tmp_path, "question_generate") is None
    write_manifest(tmp_path, "question_generate", outputs={"questions": "q.jsonl"}, config={"seed": 1})
    assert finished_stage(tmp_path, "question_generate", {"seed": 2})["outputs"] == {"questions": "q.jsonl"}
    with pytest.raises(ValueError, match="give the 'solver' stage its own folder"):
        finished_stage(tmp_path, "solver")
    assert fingerprint({"a": 1, "b": 2}) == fingerprint({"b": 2, "a": 1}) != fingerprint({"a": 2, "b": 2})
    path = write_stage_config(tmp_path / "stage_config.json", EngineOptions(devices=["0"], max_model_len=64))
    assert EngineOptions(**read_stage_config(path)) == EngineOptions(devices=["0"], max_model_len=64)
