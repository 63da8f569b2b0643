"""`@register(dispatch_mode=...)`: how a worker-group method splits its input and collects outputs.

The single controller calls `worker_group.method(data)`; the worker group looks at the method's
dispatch mode to decide what each rank receives and how the per-rank results are merged:

- ONE_TO_ALL: every rank gets the same arguments; the list of results comes back.
- RANK_ZERO: every rank runs it (collectives need all ranks) but only rank 0's result comes back.
- DP_COMPUTE_PROTO: DataProto arguments are split into world_size equal chunks (padded to a
  divisor first, unpadded after), rank r gets chunk r, and the results are concatenated in order.
- ROLLOUT_DP_PROTO: as DP_COMPUTE_PROTO but over rollout data-parallel groups: ranks in one
  tensor-parallel group get the same chunk (vLLM SPMD needs identical prompts on a TP group), and
  the results of each group's first rank are concatenated.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable)

MAGIC_ATTR = "_verl_dispatch_mode"


class Dispatch(enum.Enum):
    ONE_TO_ALL = "one_to_all"
    RANK_ZERO = "rank_zero"
    DP_COMPUTE_PROTO = "dp_compute_proto"
    ROLLOUT_DP_PROTO = "rollout_dp_proto"


def register(dispatch_mode: Dispatch = Dispatch.ONE_TO_ALL) -> Callable[[F], F]:
    """Mark a worker method as callable through the worker group with the given dispatch mode."""

    def decorator(fn: F) -> F:
        setattr(fn, MAGIC_ATTR, dispatch_mode)
        return fn

    return decorator


def dispatch_mode_of(fn: Callable) -> Dispatch | None:
    return getattr(fn, MAGIC_ATTR, None)


def split_arguments(
    args: tuple, kwargs: dict[str, Any], n_shards: int
) -> tuple[list[list[Any]], dict[str, list[Any]], int, int]:
    """DP dispatch of a call: DataProto arguments padded to a multiple of `n_shards` and chunked,
    other arguments repeated. Returns (args per shard, kwargs per shard, pad_size, padded rows)."""
    from verl.protocol import DataProto, pad_dataproto_to_divisor

    pad_size, padded_rows = 0, None

    def split(value: Any) -> list[Any]:
        nonlocal pad_size, padded_rows
        if not isinstance(value, DataProto):
            return [value] * n_shards
        padded, pad_size = pad_dataproto_to_divisor(value, n_shards)
        padded_rows = len(padded) if padded_rows is None else padded_rows
        return padded.chunk(n_shards)

    split_args = [split(a) for a in args]
    split_kwargs = {k: split(v) for k, v in kwargs.items()}
    return split_args, split_kwargs, pad_size, padded_rows or 0


def merge_outputs(outputs: list[Any], pad_size: int, padded_rows: int) -> Any:
    """Concatenate per-shard DataProto results in shard order and drop the padding rows; other
    results come back as the list. A method may return k rows per input row (rollout.n), so the
    padding rows to drop are pad_size * k."""
    from verl.protocol import DataProto, unpad_dataproto

    if not outputs or not all(isinstance(o, DataProto) for o in outputs):
        return outputs
    merged = DataProto.concat(outputs)
    rows_per_input = len(merged) // padded_rows if padded_rows else 1
    return unpad_dataproto(merged, pad_size * rows_per_input)
