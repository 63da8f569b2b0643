"""Batch order for the update (verl/trainer/balance.py, `trainer.balance_batch`): the rollout batch
reordered so that each data-parallel rank gets about the same number of tokens, as EasyR1's trainer
does before the DP split; on in `rzero_code`, off in `paper` (prompt order)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from verl.protocol import DataProto
from verl.single_controller.decorator import split_arguments
from verl.trainer.balance import balance_batch, balanced_partitions
from verl.trainer.config import CONFIG_DIR, load_config

# Row lengths (prompt + response tokens) of a small rollout batch, split over 2 ranks.
LENGTHS = [5, 1, 4, 2, 3, 3, 7, 1]
# By hand, the largest differencing method with 4 rows a rank:
#   sorted (length, row): (1,1) (1,7) (2,3) (3,4) (3,5) (4,2) (5,0) (7,6); pairs of consecutive
#   rows start four 2-bin solutions: {7}{1} spread 0, {4}{3} spread 1, {2}{5} spread 1, {6}{0} spread 2.
#   Combine the two most unbalanced, largest bin with smallest: {6}{0} + {2}{5} -> {6,5}=10 {0,2}=9;
#   then (spread 1, ties broken by the larger largest bin) that one + {4}{3} -> {6,5,3}=12 {0,2,4}=12;
#   then + {7}{1} -> {6,5,3,1}=13 {0,2,4,7}=13. Rank 0 gets rows 1,3,5,6, rank 1 rows 0,2,4,7.
EXPECTED_PARTS = [[1, 3, 5, 6], [0, 2, 4, 7]]


def _batch(lengths: list[int]) -> DataProto:
    width = max(lengths) + 2
    mask = torch.tensor([[1] * n + [0] * (width - n) for n in lengths])
    return DataProto.from_dict(
        {"attention_mask": mask, "row": torch.arange(len(lengths))},
        {"uid": np.array([f"u{i // 2}" for i in range(len(lengths))], dtype=object)},
    )


def test_partitions_by_hand() -> None:
    assert balanced_partitions(LENGTHS, 2) == EXPECTED_PARTS
    assert balanced_partitions(LENGTHS, 1) == [list(range(8))]  # one rank: prompt order
    assert balanced_partitions([3, 3, 3, 3], 4) == [[3], [2], [1], [0]]
    with pytest.raises(ValueError, match="multiple of the ranks"):
        balanced_partitions(LENGTHS, 3)


def test_the_dp_split_of_the_reordered_batch_on_two_ranks() -> None:
    batch = _batch(LENGTHS)
    metrics = balance_batch(batch, 2)
    assert batch.batch["row"].tolist() == [1, 3, 5, 6, 0, 2, 4, 7]
    # The rows keep their own data: the uid of row i is still u{i // 2}.
    assert batch.non_tensor_batch["uid"].tolist() == [f"u{i // 2}" for i in [1, 3, 5, 6, 0, 2, 4, 7]]
    # Prompt order would give rank 0 rows 0-3 (12 tokens) and rank 1 rows 4-7 (14).
    assert metrics == {
        "balance/rank_tokens_max": 13.0,
        "balance/rank_tokens_min": 13.0,
        "balance/rank_tokens_max_before": 14.0,
        "balance/rank_tokens_min_before": 12.0,
    }
    # The dispatch that the Ray and the local worker groups use hands rank r partition r.
    (shards,), _, pad, _ = split_arguments((batch,), {}, 2)
    assert pad == 0
    assert [s.batch["row"].tolist() for s in shards] == EXPECTED_PARTS
    assert [int(s.batch["attention_mask"].sum()) for s in shards] == [13, 13]


def test_the_trainer_reorders_only_when_asked(tiny_model_dir: str, tmp_path: Path) -> None:
    from verl.trainer.ray_trainer import RayPPOTrainer
    from verl.utils.toy_task import make_toy_dataset

    data = make_toy_dataset(str(tmp_path / "train.parquet"), n=16, seed=0)
    for on in (False, True):
        config = load_config(
            [
                f"config={CONFIG_DIR / 'toy.yaml'}",
                f"worker.actor.model.model_path={tiny_model_dir}",
                f"data.train_files={data}",
                f"trainer.output_dir={tmp_path / f'run_{on}'}",
                f"trainer.balance_batch={str(on).lower()}",
            ]
        )
        trainer = RayPPOTrainer(config)  # no workers: the step's reorder needs none
        assert trainer.world_size == 2
        batch = _batch(LENGTHS)
        metrics = trainer._balance_batch(batch)
        assert batch.batch["row"].tolist() == ([1, 3, 5, 6, 0, 2, 4, 7] if on else list(range(8)))
        assert ("balance/rank_tokens_max" in metrics) == on
