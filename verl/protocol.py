"""DataProto: the batch object passed between the trainer and its workers.

One DataProto holds B samples as three parts:

- ``batch``: ``dict[str, torch.Tensor]``, every tensor of shape ``(B, ...)``;
- ``non_tensor_batch``: ``dict[str, np.ndarray]``, every array of shape ``(B, ...)``, usually 1-D with
  ``dtype=object`` holding per-sample Python objects (strings, dicts, lists);
- ``meta_info``: ``dict`` of batch-wide values (temperature, step, flags), not indexed by sample.

Plain dicts rather than ``tensordict.TensorDict`` keep the dependency list short; the API follows
verl / EasyR1 so code written against either reads the same here.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

__all__ = ["DataProto", "DataProtoItem", "pad_dataproto_to_divisor", "unpad_dataproto"]

# What __getitem__ / index_select accept as row indices (besides an int for one row).
Index = slice | Sequence[int] | Sequence[bool] | np.ndarray | torch.Tensor


def _to_object_array(values: Sequence[Any]) -> np.ndarray:
    """A 1-D object array of ``len(values)``, shape ``(B,)``.

    ``np.array(values, dtype=object)`` would build a 2-D array from equal-length inner lists;
    filling an empty array keeps one element per sample whatever the elements are.
    """
    out = np.empty(len(values), dtype=object)
    for i, v in enumerate(values):
        out[i] = v
    return out


def _values_equal(a: Any, b: Any) -> bool:
    """Equality that works for tensors, arrays (object arrays included) and plain values."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return (
            isinstance(a, torch.Tensor)
            and isinstance(b, torch.Tensor)
            and a.dtype == b.dtype
            and torch.equal(a.cpu(), b.cpu())
        )
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        if not (isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and a.shape == b.shape):
            return False
        if a.dtype == object or b.dtype == object:
            # Element by element: np.array_equal fails when the elements are arrays themselves.
            return all(_values_equal(x, y) for x, y in zip(a.ravel(), b.ravel()))
        return np.array_equal(a, b)
    result = a == b
    return bool(result) if isinstance(result, (bool, np.bool_)) else False


def _normalize_rows(index: Index, length: int) -> np.ndarray:
    """Row positions (int64, shape ``(K,)``) from a list / array / tensor of ints or a bool mask."""
    if isinstance(index, torch.Tensor):
        index = index.detach().cpu().numpy()
    rows = np.asarray(index)
    if rows.ndim != 1:
        raise ValueError(f"row index must be 1-D, got shape {rows.shape}")
    if rows.dtype == np.bool_:
        if len(rows) != length:
            raise ValueError(f"bool mask has length {len(rows)}, batch has {length} rows")
        return np.flatnonzero(rows)
    if rows.size == 0:
        return rows.astype(np.int64)
    if not np.issubdtype(rows.dtype, np.integer):
        raise TypeError(f"row index must hold ints or bools, got dtype {rows.dtype}")
    if rows.max() >= length or rows.min() < -length:
        raise IndexError(f"row index out of range for a batch of {length} rows")
    return rows.astype(np.int64)


@dataclass
class DataProtoItem:
    """One row of a DataProto: ``batch[k]`` has the row's shape ``(...)`` (first dim removed)."""

    batch: dict[str, torch.Tensor] = field(default_factory=dict)
    non_tensor_batch: dict[str, Any] = field(default_factory=dict)
    meta_info: dict[str, Any] = field(default_factory=dict)


@dataclass(eq=False, repr=False)
class DataProto:
    """A batch of B samples: tensors ``(B, ...)``, per-sample arrays ``(B, ...)`` and batch-wide meta.

    Operations that return a new DataProto give it a shallow copy of ``meta_info``; row selections by
    slice share storage with the original (as torch/numpy slicing does), others copy.
    """

    batch: dict[str, torch.Tensor] = field(default_factory=dict)
    non_tensor_batch: dict[str, np.ndarray] = field(default_factory=dict)
    meta_info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.batch = dict(self.batch)
        self.meta_info = dict(self.meta_info)
        self.non_tensor_batch = {k: self._as_array(k, v) for k, v in self.non_tensor_batch.items()}
        self.check_consistency()

    @staticmethod
    def _as_array(key: str, value: Any) -> np.ndarray:
        if isinstance(value, np.ndarray):
            return value
        if isinstance(value, (list, tuple)):
            return _to_object_array(value)
        raise TypeError(
            f"non_tensor_batch[{key!r}] must be a np.ndarray or a list, got {type(value).__name__}"
        )

    def check_consistency(self) -> None:
        """Raise ValueError unless every tensor and array has the same first dimension."""
        sizes: dict[str, int] = {}
        for key, t in self.batch.items():
            if not isinstance(t, torch.Tensor):
                raise TypeError(f"batch[{key!r}] must be a torch.Tensor, got {type(t).__name__}")
            if t.ndim == 0:
                raise ValueError(f"batch[{key!r}] is a 0-d tensor; put scalars in meta_info")
            sizes[f"batch[{key!r}]"] = t.shape[0]
        for key, a in self.non_tensor_batch.items():
            if a.ndim == 0:
                raise ValueError(f"non_tensor_batch[{key!r}] is a 0-d array; put scalars in meta_info")
            sizes[f"non_tensor_batch[{key!r}]"] = a.shape[0]
        if len(set(sizes.values())) > 1:
            first_name, first_size = next(iter(sizes.items()))
            for name, size in sizes.items():
                if size != first_size:
                    raise ValueError(
                        f"inconsistent batch sizes: {name} has {size} rows, {first_name} has {first_size}"
                    )

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_dict(
        cls,
        tensors: dict[str, torch.Tensor] | None = None,
        non_tensors: dict[str, np.ndarray | list] | None = None,
        meta_info: dict[str, Any] | None = None,
    ) -> DataProto:
        """Build from tensors ``(B, ...)``, per-sample arrays or lists (length B) and meta."""
        return cls(
            batch=dict(tensors or {}),
            non_tensor_batch=dict(non_tensors or {}),
            meta_info=dict(meta_info or {}),
        )

    @classmethod
    def from_single_dict(cls, data: dict[str, Any], meta_info: dict[str, Any] | None = None) -> DataProto:
        """Split one dict by value type: tensors to ``batch``, arrays and lists to ``non_tensor_batch``."""
        tensors: dict[str, torch.Tensor] = {}
        non_tensors: dict[str, np.ndarray | list] = {}
        for key, value in data.items():
            if isinstance(value, torch.Tensor):
                tensors[key] = value
            elif isinstance(value, (np.ndarray, list, tuple)):
                non_tensors[key] = value
            else:
                raise TypeError(f"from_single_dict: value of {key!r} is a {type(value).__name__}")
        return cls.from_dict(tensors, non_tensors, meta_info)

    def _new(self, batch: dict[str, torch.Tensor], non_tensor_batch: dict[str, np.ndarray]) -> DataProto:
        return DataProto(batch=batch, non_tensor_batch=non_tensor_batch, meta_info=dict(self.meta_info))

    # ------------------------------------------------------------------ size and indexing
    def __len__(self) -> int:
        for t in self.batch.values():
            return t.shape[0]
        for a in self.non_tensor_batch.values():
            return a.shape[0]
        return 0

    def __repr__(self) -> str:
        tensors = {k: f"{tuple(t.shape)} {t.dtype} {t.device}" for k, t in self.batch.items()}
        arrays = {k: f"{a.shape} {a.dtype}" for k, a in self.non_tensor_batch.items()}
        return f"DataProto(len={len(self)}, batch={tensors}, non_tensor_batch={arrays}, meta_info={self.meta_info})"

    def __getitem__(self, item: int | Index) -> DataProtoItem | DataProto:
        """``data[i]`` -> DataProtoItem; a slice, int list/array/tensor or bool mask -> DataProto."""
        if isinstance(item, (int, np.integer)) or (isinstance(item, torch.Tensor) and item.ndim == 0):
            i = int(item)
            if not -len(self) <= i < len(self):
                raise IndexError(f"row {i} out of range for a batch of {len(self)} rows")
            return DataProtoItem(
                batch={k: t[i] for k, t in self.batch.items()},
                non_tensor_batch={k: a[i] for k, a in self.non_tensor_batch.items()},
                meta_info=dict(self.meta_info),
            )
        if isinstance(item, slice):
            return self._new(
                {k: t[item] for k, t in self.batch.items()},
                {k: a[item] for k, a in self.non_tensor_batch.items()},
            )
        return self.index_select(item)

    def index_select(self, indices: Index) -> DataProto:
        """New DataProto with rows ``indices`` (ints, possibly repeated, or a bool mask of length B)."""
        if isinstance(indices, slice):
            return self[indices]  # type: ignore[return-value]
        rows = _normalize_rows(indices, len(self))
        return self._new(
            {k: t[torch.as_tensor(rows, device=t.device)] for k, t in self.batch.items()},
            {k: a[rows] for k, a in self.non_tensor_batch.items()},
        )

    def reorder(self, indices: Index) -> None:
        """In place: row ``j`` becomes old row ``indices[j]``."""
        reordered = self.index_select(indices)
        self.batch, self.non_tensor_batch = reordered.batch, reordered.non_tensor_batch

    def shuffle(self, seed: int) -> DataProto:
        """New DataProto with rows in a random order fixed by ``seed``."""
        return self.index_select(np.random.default_rng(seed).permutation(len(self)))

    # ------------------------------------------------------------------ keys
    def select(
        self,
        batch_keys: Iterable[str] | None = None,
        non_tensor_batch_keys: Iterable[str] | None = None,
        meta_info_keys: Iterable[str] | None = None,
        deepcopy: bool = False,
    ) -> DataProto:
        """New DataProto with only the named keys (None = all of that part); KeyError if one is absent.

        Without ``deepcopy`` the tensors and arrays are shared with ``self``.
        """

        def pick(part: dict[str, Any], keys: Iterable[str] | None, name: str) -> dict[str, Any]:
            if keys is None:
                return dict(part)
            missing = [k for k in keys if k not in part]
            if missing:
                raise KeyError(f"{name} has no key(s) {missing}; has {sorted(part)}")
            return {k: part[k] for k in keys}

        batch = pick(self.batch, batch_keys, "batch")
        non_tensor = pick(self.non_tensor_batch, non_tensor_batch_keys, "non_tensor_batch")
        meta = pick(self.meta_info, meta_info_keys, "meta_info")
        if deepcopy:
            batch, non_tensor, meta = copy.deepcopy((batch, non_tensor, meta))
        return DataProto(batch=batch, non_tensor_batch=non_tensor, meta_info=meta)

    def pop(
        self,
        batch_keys: Iterable[str] = (),
        non_tensor_batch_keys: Iterable[str] = (),
        meta_info_keys: Iterable[str] = (),
    ) -> DataProto:
        """Remove the named keys from ``self`` and return them as a new DataProto."""
        popped = self.select(list(batch_keys), list(non_tensor_batch_keys), list(meta_info_keys))
        for k in popped.batch:
            del self.batch[k]
        for k in popped.non_tensor_batch:
            del self.non_tensor_batch[k]
        for k in popped.meta_info:
            del self.meta_info[k]
        return popped

    def union(self, other: DataProto) -> DataProto:
        """In place: add ``other``'s keys to ``self`` and return ``self``.

        A key present in both must hold equal values; different values raise ValueError
        (refuse conflicting keys rather than silently keep one of them).
        """
        # A meta-only DataProto has no rows, so it can join a batch of any length.
        has_rows = (self.batch or self.non_tensor_batch) and (other.batch or other.non_tensor_batch)
        if has_rows and len(self) != len(other):
            raise ValueError(f"union of batches of different lengths: {len(self)} vs {len(other)}")
        for name, mine, theirs in (
            ("batch", self.batch, other.batch),
            ("non_tensor_batch", self.non_tensor_batch, other.non_tensor_batch),
            ("meta_info", self.meta_info, other.meta_info),
        ):
            for key, value in theirs.items():
                if key in mine and not _values_equal(mine[key], value):
                    raise ValueError(f"union: conflicting values for {name}[{key!r}]")
        self.batch.update(other.batch)
        self.non_tensor_batch.update(other.non_tensor_batch)
        self.meta_info.update(other.meta_info)
        return self

    # ------------------------------------------------------------------ splitting and joining
    def chunk(self, chunks: int) -> list[DataProto]:
        """``chunks`` equal consecutive parts of ``len(self) // chunks`` rows each."""
        if chunks <= 0 or len(self) % chunks != 0:
            raise ValueError(
                f"cannot chunk a batch of {len(self)} rows into {chunks} equal parts; "
                "pad it first (pad_to_divisor)"
            )
        return self.split(len(self) // chunks) if len(self) else [self[:] for _ in range(chunks)]  # type: ignore[misc]

    def split(self, split_size: int) -> list[DataProto]:
        """Consecutive parts of ``split_size`` rows; the last one may be smaller."""
        if split_size <= 0:
            raise ValueError(f"split_size must be positive, got {split_size}")
        return [self[i : i + split_size] for i in range(0, len(self), split_size)]  # type: ignore[misc]

    @staticmethod
    def concat(data: Sequence[DataProto]) -> DataProto:
        """Rows of all parts in order; every part must have the same keys. Meta comes from the first."""
        if not data:
            raise ValueError("concat of an empty list")
        first = data[0]
        for i, d in enumerate(data[1:], start=1):
            if set(d.batch) != set(first.batch) or set(d.non_tensor_batch) != set(first.non_tensor_batch):
                raise ValueError(
                    f"concat: part {i} has keys {sorted(d.batch)} / {sorted(d.non_tensor_batch)}, "
                    f"part 0 has {sorted(first.batch)} / {sorted(first.non_tensor_batch)}"
                )
        batch = {k: torch.cat([d.batch[k] for d in data], dim=0) for k in first.batch}
        non_tensor = {
            k: np.concatenate([d.non_tensor_batch[k] for d in data], axis=0) for k in first.non_tensor_batch
        }
        return first._new(batch, non_tensor)

    def repeat(self, repeat_times: int, interleave: bool = True) -> DataProto:
        """New DataProto of ``B * repeat_times`` rows.

        interleave=True repeats each row in place (``[a, a, b, b]``), which keeps the responses to one
        prompt adjacent (GRPO groups); interleave=False tiles the batch (``[a, b, a, b]``).
        """
        if interleave:
            batch = {k: torch.repeat_interleave(t, repeat_times, dim=0) for k, t in self.batch.items()}
            non_tensor = {k: np.repeat(a, repeat_times, axis=0) for k, a in self.non_tensor_batch.items()}
        else:
            batch = {k: t.repeat(repeat_times, *([1] * (t.ndim - 1))) for k, t in self.batch.items()}
            non_tensor = {
                k: np.tile(a, (repeat_times,) + (1,) * (a.ndim - 1)) for k, a in self.non_tensor_batch.items()
            }
        return self._new(batch, non_tensor)

    def pad_to_divisor(self, divisor: int) -> tuple[DataProto, int]:
        """Pad with rows copied from the start (cycling when ``divisor > B``) to a multiple of ``divisor``.

        Returns ``(padded, pad_size)``; ``padded.unpad(pad_size)`` gives back the original rows.
        """
        if divisor <= 0:
            raise ValueError(f"divisor must be positive, got {divisor}")
        pad_size = -len(self) % divisor
        if pad_size == 0:
            return self, 0
        if len(self) == 0:
            raise ValueError("cannot pad an empty batch: there is no row to copy")
        padding = self.index_select(np.arange(pad_size) % len(self))
        return DataProto.concat([self, padding]), pad_size

    def unpad(self, pad_size: int) -> DataProto:
        """Drop the last ``pad_size`` rows (added by ``pad_to_divisor``)."""
        if not 0 <= pad_size <= len(self):
            raise ValueError(f"pad_size {pad_size} not in [0, {len(self)}]")
        return self[: len(self) - pad_size]  # type: ignore[return-value]

    # ------------------------------------------------------------------ devices and storage
    def to(self, device: str | torch.device) -> DataProto:
        """Move every tensor to ``device`` in place; returns ``self`` for chaining."""
        self.batch = {k: t.to(device) for k, t in self.batch.items()}
        return self

    def cpu(self) -> DataProto:
        """Move every tensor to the CPU in place; returns ``self``."""
        return self.to("cpu")


def pad_dataproto_to_divisor(data: DataProto, size_divisor: int) -> tuple[DataProto, int]:
    """Function form of ``DataProto.pad_to_divisor``."""
    return data.pad_to_divisor(size_divisor)


def unpad_dataproto(data: DataProto, pad_size: int) -> DataProto:
    """Function form of ``DataProto.unpad``."""
    return data.unpad(pad_size)
