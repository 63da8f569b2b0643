"""Token-budget micro-batching: rows grouped so that each micro-batch holds at most N tokens.

A fixed number of rows per micro-batch must be sized for the longest possible rows (prompt +
response at their maximum), which wastes most of the memory on typical batches and still needs
tiny micro-batches for 4k-token responses. Grouping rows by their real length under a token budget
(as EasyR1's dynamic batching does) keeps memory bounded by the budget whatever the lengths.

Costs, per micro-batch:
- packed (padding-free): the sum of the rows' real lengths.
- padded: rows x (longest real prompt + longest real response), the trimmed width the padded
  forward runs on (see verl/workers/actor/forward.py).

Every rank must run the same number of micro-batches (each forward and backward is a collective
under FSDP), so callers agree on the largest count first (`dist.all_reduce(MAX)`) and then split
their own groups up to that count with `split_to_count`.
"""

from __future__ import annotations

from collections.abc import Sequence


def micro_batch_cost(
    rows: Sequence[int], prompt_lengths: Sequence[int], response_lengths: Sequence[int], padded: bool
) -> int:
    """Tokens the forward of these rows processes (see the module docstring)."""
    if not rows:
        return 0
    if padded:
        return len(rows) * (max(prompt_lengths[r] for r in rows) + max(response_lengths[r] for r in rows))
    return sum(prompt_lengths[r] + response_lengths[r] for r in rows)


def budget_partition(
    prompt_lengths: Sequence[int], response_lengths: Sequence[int], max_tokens: int, padded: bool
) -> list[list[int]]:
    """Row indices grouped into micro-batches of cost <= max_tokens (a row above it goes alone).

    Rows are taken longest first: packed groups fill bins first-fit (few, full micro-batches),
    padded groups are runs of similar length (little padding). Each group is in ascending row order.
    """
    if max_tokens <= 0:
        raise ValueError(f"max_tokens must be > 0, got {max_tokens}")
    order = sorted(
        range(len(prompt_lengths)), key=lambda r: prompt_lengths[r] + response_lengths[r], reverse=True
    )
    groups: list[list[int]] = []
    if padded:
        for row in order:
            if (
                groups
                and micro_batch_cost([*groups[-1], row], prompt_lengths, response_lengths, True) <= max_tokens
            ):
                groups[-1].append(row)
            else:
                groups.append([row])
    else:
        loads: list[int] = []
        for row in order:
            size = prompt_lengths[row] + response_lengths[row]
            slot = next((i for i, load in enumerate(loads) if load + size <= max_tokens), None)
            if slot is None:
                groups.append([row])
                loads.append(size)
            else:
                groups[slot].append(row)
                loads[slot] += size
    return [sorted(g) for g in groups]


def split_to_count(
    groups: list[list[int]],
    count: int,
    prompt_lengths: Sequence[int],
    response_lengths: Sequence[int],
    padded: bool,
) -> list[list[int]]:
    """Split the costliest groups in two until there are `count` groups (count <= number of rows).

    Splitting never raises a group's cost, so a partition within the budget stays within it.
    """
    groups = [list(g) for g in groups]
    if count < len(groups):
        raise ValueError(f"cannot merge {len(groups)} micro-batches into {count}")
    if count > sum(len(g) for g in groups):
        raise ValueError(f"{count} micro-batches need at least {count} rows")
    while len(groups) < count:
        splittable = [i for i, g in enumerate(groups) if len(g) > 1]
        i = max(
            splittable, key=lambda j: micro_batch_cost(groups[j], prompt_lengths, response_lengths, padded)
        )
        by_length = sorted(groups[i], key=lambda r: prompt_lengths[r] + response_lengths[r], reverse=True)
        # Alternate rows so that both halves get a similar share of long and short rows.
        groups[i : i + 1] = [sorted(by_length[0::2]), sorted(by_length[1::2])]
    return groups
