"""Resume and the model merger unpickle no code from a checkpoint (issue 20, item 5).

The per-rank extra state (scheduler, RNG) is tensors and plain values loaded with
`weights_only=True`; DCP's `.metadata` pickle is read through an allow-list; its non-tensor items
with `weights_only=True`. A crafted file that would run a command is refused before it runs.
"""

from __future__ import annotations

import os
import pickle
import random
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.state_dict import get_state_dict

from verl.utils.checkpoint_safe import (
    SafeLoadPlanner,
    UnsafeCheckpointError,
    load_extra_state,
    load_full_checkpoint,
    restore_rng_state,
    rng_state_to_tensors,
    safe_reader,
)


class _Payload:
    """Unpickling this runs `os.system`: what a crafted checkpoint file would do."""

    def __init__(self, witness: Path) -> None:
        self.witness = witness

    def __reduce__(self):
        return (os.system, (f"touch {self.witness}",))


def _save_dcp(path: Path) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    optim = torch.optim.AdamW(model.parameters(), lr=0.01)
    model(torch.ones(1, 3)).sum().backward()
    optim.step()
    model_sd, optim_sd = get_state_dict(model, optim)
    dcp.save({"model": model_sd, "optim": optim_sd}, checkpoint_id=str(path), no_dist=True)
    return model, optim


def test_rng_state_round_trips_through_a_weights_only_file(tmp_path: Path) -> None:
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    np.random.randn()  # a cached Gaussian in numpy's state
    path = tmp_path / "extra.pt"
    torch.save({"rng": rng_state_to_tensors(cuda=False)}, path)
    expected = (random.random(), np.random.randn(3).tolist(), torch.rand(3).tolist())
    random.seed(9), np.random.seed(9), torch.manual_seed(9)
    restore_rng_state(load_extra_state(path)["rng"], cuda=False)
    assert (random.random(), np.random.randn(3).tolist(), torch.rand(3).tolist()) == expected


def test_a_crafted_extra_state_file_is_refused_without_running(tmp_path: Path) -> None:
    witness = tmp_path / "ran"
    path = tmp_path / "extra_state_rank0.pt"
    torch.save({"lr_scheduler": _Payload(witness)}, path)
    with pytest.raises(pickle.UnpicklingError):
        load_extra_state(path)
    assert not witness.exists()


def test_dcp_resume_reads_a_real_checkpoint_through_the_safe_reader(tmp_path: Path) -> None:
    saved, _ = _save_dcp(tmp_path / "actor")
    model = torch.nn.Linear(3, 2)
    optim = torch.optim.AdamW(model.parameters(), lr=0.5)
    model_sd, optim_sd = get_state_dict(model, optim)
    state = {"model": model_sd, "optim": optim_sd}
    reader = safe_reader(tmp_path / "actor")
    dcp.load(state, storage_reader=reader, planner=SafeLoadPlanner(), no_dist=True)
    torch.testing.assert_close(state["model"]["weight"], saved.weight.detach())
    assert state["optim"]["param_groups"][0]["lr"] == 0.01  # a non-tensor item, loaded weights_only
    merged = load_full_checkpoint(tmp_path / "actor")  # the merger's reader
    torch.testing.assert_close(merged["model"]["bias"], saved.bias.detach())


def test_crafted_dcp_metadata_is_refused_without_running(tmp_path: Path) -> None:
    _save_dcp(tmp_path / "actor")
    witness = tmp_path / "ran"
    (tmp_path / "actor" / ".metadata").write_bytes(pickle.dumps(_Payload(witness)))
    with pytest.raises(UnsafeCheckpointError, match=r"os\.system|posix\.system"):
        load_full_checkpoint(tmp_path / "actor")
    with pytest.raises(UnsafeCheckpointError):
        safe_reader(tmp_path / "actor")  # what resume (FSDPWorker.load_checkpoint) reads through
    assert not witness.exists()


def test_model_merger_refuses_a_crafted_checkpoint(tmp_path: Path) -> None:
    from scripts.model_merger import load_sharded_model_state

    _save_dcp(tmp_path / "step" / "actor")
    witness = tmp_path / "ran"
    (tmp_path / "step" / "actor" / ".metadata").write_bytes(pickle.dumps(_Payload(witness)))
    with pytest.raises(UnsafeCheckpointError):
        load_sharded_model_state(tmp_path / "step")
    assert not witness.exists()
