"""Batch order for the update: rows reordered so that every data-parallel rank gets about the same
number of tokens (`trainer.balance_batch`).

The rollout batch is split over the ranks in contiguous, equal chunks (the DP dispatch), and each
rank then cuts its chunk into mini- and micro-batches in order. So the order of the rows decides
which rows share a micro-batch, which matters where the loss is each micro-batch's own token mean.
EasyR1's trainer (the R-Zero authors' engine) reorders every rollout batch before the split by the
largest differencing method (Karmarkar-Karp) over the sequence lengths (prompt + response tokens),
with equal row counts per rank; this module computes the same partition, so that a run with the
setting on groups rows as theirs does:

1. rows sorted by (length, index); consecutive runs of `k` rows each start a partial solution of
   `k` bins, one row per bin;
2. repeatedly the two partial solutions with the largest spread (largest bin total - smallest; ties:
   the one whose largest bin is larger, bins compared by total, then row count, then members) are
   combined, the largest bin of one with the smallest of the other, and so on;
3. the last one's bins, largest total first, each bin's rows in their original order, are the ranks'
   chunks: rank r gets bin r.

Advantages are grouped by uid and the repetition penalty is over the whole batch, so the new order
changes nothing but the grouping into micro-batches (and the per-rank work).
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field

from verl.protocol import DataProto


@dataclass
class _Bin:
    """Rows given to one rank: (row index, length) in the order they were added."""

    total: int = 0
    members: list[tuple[int, int]] = field(default_factory=list)

    def key(self) -> tuple[int, int, list[tuple[int, int]]]:
        return self.total, len(self.members), self.members


class _Partial:
    """A partial solution: `k` bins, largest first. Ordered for `heapq` (which pops the smallest) so
    that the most unbalanced one is the smallest."""

    def __init__(self, bins: list[_Bin]) -> None:
        self.bins = sorted(bins, key=_Bin.key, reverse=True)

    @property
    def spread(self) -> int:
        return self.bins[0].total - self.bins[-1].total

    def __lt__(self, other: _Partial) -> bool:
        if self.spread != other.spread:
            return self.spread > other.spread
        # Distinct rows in every bin: two largest bins never compare equal, so the order is total
        # and the sequence of combinations does not depend on the heap's layout.
        return self.bins[0].key() > other.bins[0].key()

    def absorb(self, other: _Partial) -> None:
        """Add `other`'s bins to these, smallest of `other` onto the largest here."""
        for mine, theirs in zip(self.bins, reversed(other.bins)):
            mine.total += theirs.total
            mine.members.extend(theirs.members)
        self.bins.sort(key=_Bin.key, reverse=True)


def balanced_partitions(lengths: list[int], k: int) -> list[list[int]]:
    """`k` lists of row indices, `len(lengths) / k` rows each, with token totals as even as the
    largest differencing method makes them; each list in increasing row order (see the module doc)."""
    n = len(lengths)
    if k < 1 or n % k != 0 or n < k:
        raise ValueError(f"cannot split {n} rows into {k} equal parts: rows must be a multiple of the ranks")
    order = sorted(range(n), key=lambda i: (lengths[i], i))
    heap = [
        _Partial([_Bin(lengths[i], [(i, lengths[i])]) for i in order[start : start + k]])
        for start in range(0, n, k)
    ]
    heapq.heapify(heap)
    while len(heap) > 1:
        first, second = heapq.heappop(heap), heapq.heappop(heap)
        first.absorb(second)
        heapq.heappush(heap, first)
    return [sorted(i for i, _ in b.members) for b in heap[0].bins]


def _rank_totals(lengths: list[int], parts: list[list[int]]) -> list[int]:
    return [sum(lengths[i] for i in part) for part in parts]


def balance_batch(batch: DataProto, world_size: int) -> dict[str, float]:
    """Reorder `batch` in place so that the DP split gives rank r the rows of partition r.

    Lengths are the rows' `attention_mask` sums (prompt + response tokens). Returns the per-rank
    token totals before and after, for the step's metrics."""
    mask = batch.batch["attention_mask"]
    lengths = mask.view(mask.shape[0], -1).sum(-1).tolist()
    parts = balanced_partitions(lengths, world_size)
    chunk = len(lengths) // world_size
    before = _rank_totals(lengths, [list(range(r * chunk, (r + 1) * chunk)) for r in range(world_size)])
    batch.reorder([i for part in parts for i in part])
    after = _rank_totals(lengths, parts)
    return {
        "balance/rank_tokens_max": float(max(after)),
        "balance/rank_tokens_min": float(min(after)),
        "balance/rank_tokens_max_before": float(max(before)),
        "balance/rank_tokens_min_before": float(min(before)),
    }
