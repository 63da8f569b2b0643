"""Loading a checkpoint without running code from it.

A checkpoint folder is data, but pickle is code: `torch.load(weights_only=False)` and
torch.distributed.checkpoint's `.metadata` (a pickle) run whatever a crafted file names. Resume
and the model merger read checkpoints only through this module:

- the per-rank extra state (scheduler, RNG) is saved as tensors and plain Python values
  (`rng_state_to_tensors`) and loaded with `torch.load(weights_only=True)`;
- DCP's metadata is unpickled with an allow-list of the classes DCP itself writes
  (`SafeFileSystemReader`), and its non-tensor items (optimizer hyper-parameters) with
  `weights_only=True` (`SafeLoadPlanner`, `SafeEmptyLoadPlanner`).

A file naming anything else is refused with `UnsafeCheckpointError`. This narrows what a foreign
checkpoint can do; it does not make one trustworthy (README "Safety").
"""

from __future__ import annotations

import io
import os
import pickle
import random
from typing import Any

import numpy as np
import torch
from torch.distributed.checkpoint import FileSystemReader
from torch.distributed.checkpoint._traverse import set_element
from torch.distributed.checkpoint.default_planner import DefaultLoadPlanner
from torch.distributed.checkpoint.format_utils import _EmptyStateDictLoadPlanner
from torch.distributed.checkpoint.metadata import Metadata, StorageMeta

# (module, name) pairs DCP's FileSystemWriter pickles into `.metadata` (torch 2.x).
_METADATA_CLASSES = {
    ("torch.distributed.checkpoint.metadata", name)
    for name in (
        "BytesStorageMetadata",
        "ChunkStorageMetadata",
        "Metadata",
        "MetadataIndex",
        "StorageMeta",
        "TensorProperties",
        "TensorStorageMetadata",
        "_MEM_FORMAT_ENCODING",
    )
} | {
    ("torch.distributed.checkpoint.filesystem", "_StorageInfo"),
    ("torch.serialization", "_get_layout"),
    ("torch", "Size"),
    ("pathlib", "PosixPath"),
    ("pathlib", "PurePosixPath"),
    ("collections", "OrderedDict"),
}


class UnsafeCheckpointError(pickle.UnpicklingError):
    """A checkpoint file names a class or function outside what the project's checkpoints hold."""


class _MetadataUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _METADATA_CLASSES or (
            module == "torch" and isinstance(getattr(torch, name, None), torch.dtype)
        ):
            return super().find_class(module, name)
        raise UnsafeCheckpointError(
            f"checkpoint metadata names {module}.{name}, which a checkpoint of this project never "
            "holds: the file was not written by this project (or by a different torch); load only "
            "checkpoints you trust"
        )


def load_metadata(stream: Any) -> Metadata:
    """Unpickle a DCP `.metadata` stream, allowing only the classes DCP writes there."""
    return _MetadataUnpickler(stream).load()


class SafeFileSystemReader(FileSystemReader):
    """FileSystemReader whose `.metadata` is unpickled with an allow-list (`load_metadata`)."""

    def read_metadata(self, *args: Any, **kwargs: Any) -> Metadata:
        path = self._get_metadata_path(kwargs.get("rank"))
        with self.fs.create_stream(path, "rb") as f:
            metadata = load_metadata(f)
        # As FileSystemReader.read_metadata does:
        if getattr(metadata, "storage_meta", None) is None:
            metadata.storage_meta = StorageMeta()
        metadata.storage_meta.load_id = self.load_id
        return metadata


def safe_reader(checkpoint_dir: str | os.PathLike) -> SafeFileSystemReader:
    """A reader for `checkpoint_dir` whose metadata has been checked: a crafted `.metadata` raises
    `UnsafeCheckpointError` here, not wrapped in DCP's own fallback errors inside `dcp.load`."""
    reader = SafeFileSystemReader(checkpoint_dir)
    reader.read_metadata()
    return reader


def _load_bytes_safely(planner: DefaultLoadPlanner, read_item: Any, value: io.BytesIO) -> None:
    """DefaultLoadPlanner.load_bytes with `weights_only=True`."""
    loaded = torch.load(value, weights_only=True)
    if planner.flatten_state_dict:
        set_element(planner.original_state_dict, planner.mappings[read_item.dest_index.fqn], loaded)
    else:
        planner.state_dict[read_item.dest_index.fqn] = loaded


class SafeLoadPlanner(DefaultLoadPlanner):
    """DefaultLoadPlanner loading the non-tensor items with `weights_only=True`."""

    def load_bytes(self, read_item: Any, value: io.BytesIO) -> None:
        _load_bytes_safely(self, read_item, value)


class SafeEmptyLoadPlanner(_EmptyStateDictLoadPlanner):
    """The planner of `dcp_to_torch_save` (whole checkpoint into an empty dict), loading the
    non-tensor items with `weights_only=True`."""

    def load_bytes(self, read_item: Any, value: io.BytesIO) -> None:
        _load_bytes_safely(self, read_item, value)


def load_full_checkpoint(checkpoint_dir: str | os.PathLike) -> dict[str, Any]:
    """Every item of a DCP checkpoint folder, in one process without a process group (the
    merger's reader)."""
    # As format_utils.dcp_to_torch_save does (dcp.load keeps only the keys already in the dict).
    from torch.distributed.checkpoint.state_dict_loader import _load_state_dict

    state: dict[str, Any] = {}  # the planner fills it, nested as saved
    _load_state_dict(
        state,
        storage_reader=safe_reader(checkpoint_dir),
        planner=SafeEmptyLoadPlanner(),
        no_dist=True,
    )
    return state


# ---- the per-rank extra state ------------------------------------------------------------------


def rng_state_to_tensors(cuda: bool) -> dict[str, Any]:
    """torch/CUDA/numpy/Python RNG states as tensors and plain values (loadable weights_only)."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    version, py_state, gauss_next = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state() if cuda else None,
        "numpy": {
            "name": str(name),
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "python": {
            "version": int(version),
            "state": torch.tensor(py_state, dtype=torch.int64),
            "gauss_next": gauss_next,
        },
    }


def restore_rng_state(rng: dict[str, Any], cuda: bool) -> None:
    """Set the RNGs from `rng_state_to_tensors`'s dict."""
    torch.set_rng_state(rng["torch"])
    if cuda and rng["cuda"] is not None:
        torch.cuda.set_rng_state(rng["cuda"])
    n = rng["numpy"]
    np.random.set_state(
        (n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"])
    )
    p = rng["python"]
    random.setstate((p["version"], tuple(int(x) for x in p["state"].tolist()), p["gauss_next"]))


def load_extra_state(path: str | os.PathLike) -> dict[str, Any]:
    """A rank's extra state file, loaded without unpickling code (weights_only=True)."""
    try:
        return torch.load(path, weights_only=True)
    except pickle.UnpicklingError as e:
        raise UnsafeCheckpointError(
            f"{path} holds more than tensors and plain values, so it is not loaded: it was not "
            "written by this version of the project (checkpoints before the weights-only format "
            "pickled numpy RNG state) or not by this project at all. Start the stage afresh (delete "
            f"the checkpoints folder), or resume from a checkpoint this version wrote. ({e})"
        ) from e
