"""A group of Ray actors, one per rank, driven by the single controller.

Methods of the worker class decorated with `@register(dispatch_mode=...)` become methods of the
group: `group.generate_sequences(batch)` splits `batch` over the ranks, runs the method on every
rank and merges the results (see `decorator.Dispatch`).
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Callable
from typing import Any

import ray
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from verl.single_controller.decorator import Dispatch, dispatch_mode_of, merge_outputs, split_arguments
from verl.single_controller.resource_pool import ResourcePool

# Environment the workers need whatever the launcher's environment was.
_PASS_THROUGH_ENV = (
    "HF_HUB_OFFLINE",
    "HF_DATASETS_OFFLINE",
    "TRANSFORMERS_OFFLINE",
    "HF_HOME",
    "TOKENIZERS_PARALLELISM",
    "VLLM_CPU_KVCACHE_SPACE",
    "VLLM_ENABLE_V1_MULTIPROCESSING",
    "VLLM_LOGGING_LEVEL",
    "WANDB_MODE",
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER",
    "PYTHONHASHSEED",
    "CUBLAS_WORKSPACE_CONFIG",
    "NCCL_DEBUG",
)


class RayWorkerGroup:
    """Spawn `resource_pool.world_size` actors of `worker_cls` and expose its registered methods."""

    def __init__(
        self,
        resource_pool: ResourcePool,
        worker_cls: type,
        init_args: tuple = (),
        init_kwargs: dict | None = None,
        rollout_tp_size: int = 1,
        env: dict[str, str] | None = None,
    ) -> None:
        self.resource_pool = resource_pool
        self.world_size = resource_pool.world_size
        if self.world_size % rollout_tp_size:
            raise ValueError(
                f"world size {self.world_size} is not divisible by rollout TP size {rollout_tp_size}"
            )
        self.rollout_tp_size = rollout_tp_size
        self.workers: list[ray.actor.ActorHandle] = []
        # Seconds spent in this process splitting/sending and merging data-parallel calls, summed
        # since the caller last cleared it (the trainer, once per step).
        self.transfer_s: dict[str, float] = {}
        remote_cls = ray.remote(worker_cls)
        pgs = resource_pool.placement_groups()
        loopback = resource_pool.nnodes == 1
        base_env = {k: os.environ[k] for k in _PASS_THROUGH_ENV if k in os.environ}
        base_env.update(env or {})
        master: tuple[str, int] | None = None
        for rank in range(self.world_size):
            node, local = divmod(rank, resource_pool.devices_per_node)
            rank_env = {
                **base_env,
                "RANK": str(rank),
                "WORLD_SIZE": str(self.world_size),
                # Ray gives each GPU actor exactly one visible device, so its local device is 0.
                "LOCAL_RANK": "0" if resource_pool.use_gpu else str(local),
                "LOCAL_WORLD_SIZE": str(resource_pool.devices_per_node),
            }
            if master is not None:
                rank_env["MASTER_ADDR"], rank_env["MASTER_PORT"] = master[0], str(master[1])
            actor = remote_cls.options(
                num_cpus=resource_pool.cpus_per_device,
                num_gpus=1 if resource_pool.use_gpu else 0,
                scheduling_strategy=PlacementGroupSchedulingStrategy(
                    placement_group=pgs[node], placement_group_bundle_index=local
                ),
                runtime_env={"env_vars": rank_env},
            ).remote(*init_args, **(init_kwargs or {}))
            self.workers.append(actor)
            if rank == 0:
                master = ray.get(actor.setup_master.remote(loopback))
        self._bind(worker_cls)

    # ---- dispatch -------------------------------------------------------------------------------

    def _bind(self, worker_cls: type) -> None:
        for name in dir(worker_cls):
            fn = getattr(worker_cls, name, None)
            mode = dispatch_mode_of(fn) if callable(fn) else None
            if mode is not None:
                setattr(self, name, functools.partial(self._call, name, mode))

    def _dp_groups(self, mode: Dispatch) -> tuple[int, Callable[[int], int]]:
        """Number of data shards and the shard each rank gets."""
        if mode is Dispatch.ROLLOUT_DP_PROTO:
            return self.world_size // self.rollout_tp_size, lambda rank: rank // self.rollout_tp_size
        return self.world_size, lambda rank: rank

    def _call(self, name: str, mode: Dispatch, *args: Any, **kwargs: Any) -> Any:
        if mode in (Dispatch.ONE_TO_ALL, Dispatch.RANK_ZERO):
            outputs = ray.get([getattr(w, name).remote(*args, **kwargs) for w in self.workers])
            return outputs[0] if mode is Dispatch.RANK_ZERO else outputs
        n_shards, shard_of = self._dp_groups(mode)
        t0 = time.perf_counter()
        split_args, split_kwargs, pad_size, padded_rows = split_arguments(args, kwargs, n_shards)
        futures = []
        for rank, worker in enumerate(self.workers):
            shard = shard_of(rank)
            futures.append(
                getattr(worker, name).remote(
                    *[a[shard] for a in split_args], **{k: v[shard] for k, v in split_kwargs.items()}
                )
            )
        t_sent = time.perf_counter()
        outputs = ray.get(futures)
        t_got = time.perf_counter()
        # Ranks of one tensor-parallel group return identical results: keep each group's first.
        outputs = [
            out
            for rank, out in enumerate(outputs)
            if mode is Dispatch.DP_COMPUTE_PROTO or rank % self.rollout_tp_size == 0
        ]
        merged = merge_outputs(outputs, pad_size, padded_rows)
        # Driver-side Ray overhead (the workers' compute is inside the wait between t_sent and t_got):
        # splitting the batch and serialising the shards into the object store, merging the replies.
        self.transfer_s["dispatch"] = self.transfer_s.get("dispatch", 0.0) + t_sent - t0
        self.transfer_s["merge"] = self.transfer_s.get("merge", 0.0) + time.perf_counter() - t_got
        return merged

    def shutdown(self) -> None:
        for worker in self.workers:
            ray.kill(worker)
        self.workers = []
        self.resource_pool.release()
