"""The process-wide grader pools: one per backend, created on first use, closed at exit. The reward
functions of one process (a Ray reward actor) share them, and their answer caches."""

from __future__ import annotations

import atexit
import os
import threading

from rewards.grader import GraderPool

_default_pools: dict[str, GraderPool] = {}
_default_pool_lock = threading.Lock()


def get_default_pool(num_workers: int = 2, backend: str = "math_verify") -> GraderPool:
    """The process-wide pool of `backend`, created on first use (with `num_workers`), closed at exit.

    Later calls return the same pool whatever `num_workers` they pass: the reward functions of one
    process share it (and its answer cache)."""
    with _default_pool_lock:
        pool = _default_pools.get(backend)
        if pool is None or pool.closed or pool._owner_pid != os.getpid():
            pool = _default_pools[backend] = GraderPool(num_workers=num_workers, backend=backend)
            atexit.register(pool.close)
        return pool
