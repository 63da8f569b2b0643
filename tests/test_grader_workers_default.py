"""Grader workers default from the node's cores (every core but two, 2 to 32) in the Solver reward,
the Challenger reward, labelling and evaluation, instead of a fixed 2: on an 8-GPU node the
Challenger reward votes on 2,048 x 10 answers per step while the GPUs wait."""

from __future__ import annotations

from pathlib import Path

import pytest

import rewards.default_grader as default_grader
import rewards.grader as grader
from pipeline.config import load_pipeline_config
from pipeline.launch import evaluate_config
from rewards.solver_reward import compute_solver_reward


@pytest.mark.parametrize(("cores", "workers"), [(1, 2), (2, 2), (8, 6), (34, 32), (192, 32)])
def test_default_from_cores(monkeypatch: pytest.MonkeyPatch, cores: int, workers: int) -> None:
    monkeypatch.setattr(grader.os, "cpu_count", lambda: cores)
    assert grader.default_grader_workers() == workers


def test_the_solver_reward_sizes_its_pool_from_the_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(grader.os, "cpu_count", lambda: 5)
    monkeypatch.setattr(default_grader, "_default_pools", {})  # a fresh process-wide pool for this test
    rewards = compute_solver_reward(
        [
            {"response": r"so \boxed{\frac{1}{2}}", "ground_truth": "0.5"},  # decided by a grader worker
            {"response": r"\boxed{3}", "ground_truth": "4"},
        ]
    )
    assert [r["overall"] for r in rewards] == [1.0, 0.0]
    pool = default_grader._default_pools["math_verify"]
    try:
        assert pool.num_workers == 3  # 5 cores - 2, not the old fixed 2
    finally:
        pool.close()


def test_pipeline_leaves_evaluation_workers_to_the_default(tmp_path: Path) -> None:
    pipe = load_pipeline_config(None, [])
    assert pipe.eval_grader_workers == 0 and "grader_workers" not in evaluate_config(
        pipe, "m", tmp_path, "base"
    )
    pinned = load_pipeline_config(None, ["eval_grader_workers=4"])
    assert evaluate_config(pinned, "m", tmp_path, "base")["grader_workers"] == 4
