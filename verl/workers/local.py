"""Local worker mode: the FSDP worker driven in-process, without Ray.

Each process is one rank. `LocalWorkerGroup` exposes the worker's registered methods with the same
dispatch as the Ray worker group (DataProto arguments padded and split over the ranks, results
gathered and merged in rank order), so a local run computes what the Ray path computes. With a
role without "rollout" (e.g. "actor_ref") nothing imports vLLM or Ray: this is what the device
check (scripts/gpu_check.py) and the CPU tests use to drive the log-prob and update passes.

    set_rank_env(0, 1, free_port())                      # or run_local(fn, world_size, ...)
    group = LocalWorkerGroup(FSDPWorker(config, role="actor_ref"))
    group.init_model()
    batch.union(group.compute_log_prob(batch))
"""

from __future__ import annotations

import functools
import io
import os
import sys
import traceback
from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist

from verl.protocol import DataProto
from verl.single_controller.decorator import Dispatch, dispatch_mode_of, merge_outputs, split_arguments
from verl.single_controller.worker import free_port


def set_rank_env(rank: int, world_size: int, port: int, local_rank: int | None = None) -> None:
    """The torch.distributed environment the worker reads (what the Ray worker group sets)."""
    os.environ.update(
        {
            "RANK": str(rank),
            "WORLD_SIZE": str(world_size),
            "LOCAL_RANK": str(rank if local_rank is None else local_rank),
            "LOCAL_WORLD_SIZE": str(world_size),
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
        }
    )


def _gather(value: Any) -> list[Any]:
    """Every rank's `value`, in rank order (a collective once the process group exists)."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return [value]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, value)
    return out


class LocalWorkerGroup:
    """This process's rank of a worker group: `group.method(...)` as `RayWorkerGroup.method(...)`."""

    def __init__(self, worker: Any, rollout_tp_size: int = 1) -> None:
        self.worker = worker
        self.rollout_tp_size = rollout_tp_size
        for name in dir(type(worker)):
            mode = dispatch_mode_of(getattr(type(worker), name, None))
            if mode is not None:
                setattr(self, name, functools.partial(self._call, name, mode))

    def _call(self, name: str, mode: Dispatch, *args: Any, **kwargs: Any) -> Any:
        method = getattr(self.worker, name)
        if mode in (Dispatch.ONE_TO_ALL, Dispatch.RANK_ZERO):
            outputs = _gather(method(*args, **kwargs))
            return outputs[0] if mode is Dispatch.RANK_ZERO else outputs
        rank, world = self.worker.rank, self.worker.world_size
        tp = self.rollout_tp_size if mode is Dispatch.ROLLOUT_DP_PROTO else 1
        split_args, split_kwargs, pad_size, padded_rows = split_arguments(args, kwargs, world // tp)
        shard = rank // tp
        out = method(*[a[shard] for a in split_args], **{k: v[shard] for k, v in split_kwargs.items()})
        outputs = [o for r, o in enumerate(_gather(out)) if r % tp == 0]
        return merge_outputs(outputs, pad_size, padded_rows)


def _entry(rank: int, world_size: int, port: int, fn: Callable, args: tuple, queue: Any) -> None:
    set_rank_env(rank, world_size, port)
    try:
        # As bytes: a tensor put on a torch.multiprocessing queue is shared through a file
        # descriptor that dies with this process, which may exit before the parent reads it.
        buffer = io.BytesIO()
        torch.save(fn(*args), buffer)
        queue.put((rank, True, buffer.getvalue()))
    except BaseException:  # the parent re-raises it with the rank's traceback
        queue.put((rank, False, traceback.format_exc()))
    finally:
        # A vLLM engine destroys the groups itself at exit (and fails on an already destroyed one).
        if dist.is_initialized() and "vllm" not in sys.modules:
            dist.destroy_process_group()


def run_local(fn: Callable, world_size: int, *args: Any, timeout_s: float = 600.0) -> list[Any]:
    """Run `fn(*args)` as ranks 0..world_size-1 of a fresh process group, one spawned process each
    (on 127.0.0.1, a free port); returns every rank's result. `fn` and its result must pickle."""
    import queue as queue_mod

    import torch.multiprocessing as mp

    ctx = mp.get_context("spawn")
    results: Any = ctx.Queue()
    port = free_port()
    procs = [
        ctx.Process(target=_entry, args=(r, world_size, port, fn, args, results)) for r in range(world_size)
    ]
    for p in procs:
        p.start()
    outputs: dict[int, Any] = {}
    try:
        for _ in range(world_size):
            rank, ok, value = results.get(timeout=timeout_s)
            if not ok:
                raise RuntimeError(f"rank {rank} failed:\n{value}")
            outputs[rank] = torch.load(io.BytesIO(value), weights_only=False)
    except queue_mod.Empty:
        raise TimeoutError(f"local ranks gave no result within {timeout_s:.0f}s") from None
    finally:
        for p in procs:
            p.join(timeout=60)
            if p.is_alive():
                p.kill()
    return [outputs[r] for r in range(world_size)]


def grpo_passes(
    config: Any,
    batch: DataProto,
    role: str = "actor_ref",
    inspect: Callable[[LocalWorkerGroup], dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """One GRPO step's model passes on `batch` in local mode: old log-probs, ref log-probs, one
    actor update, and the log-probs after it. Returns CPU tensors and the update's metrics (the
    same on every rank), plus what `inspect(group)` returns when given (run after the passes).
    `batch` has the rollout's layout plus `advantages` (bs, R)."""
    from verl.workers.fsdp_workers import FSDPWorker

    group = LocalWorkerGroup(FSDPWorker(config, role=role))
    group.init_model()
    batch = batch.select()
    batch.union(group.compute_log_prob(batch))
    if config.algorithm.use_kl_loss:
        batch.union(group.compute_ref_log_prob(batch))
    metrics = group.update_actor(batch).meta_info["metrics"]
    after = group.compute_log_prob(batch.select(["input_ids", "attention_mask", "position_ids", "responses"]))
    return {
        "old_log_probs": batch.batch["old_log_probs"],
        "ref_log_probs": batch.batch.get("ref_log_probs"),
        "new_log_probs": after.batch["old_log_probs"],
        "metrics": metrics,
        **(inspect(group) if inspect is not None else {}),
    }
